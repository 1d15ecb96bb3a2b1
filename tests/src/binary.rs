//! The real `tem` binary, built on demand: integration tests of another package do not get
//! `CARGO_BIN_EXE_tem`, so this asks cargo for it (a no-op when it is up to date) once per
//! test process, in the same profile as the tests.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The path of the `tem` executable, built if needed.
pub fn tem() -> PathBuf {
    static TEM: OnceLock<PathBuf> = OnceLock::new();
    TEM.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target");
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "--package",
                "tem-cli",
                "--bin",
                "tem",
                "--target-dir",
            ])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for the tem binary");
        assert!(status.success(), "building the tem binary failed");
        profile_dir.join("tem")
    })
    .clone()
}

/// Starts `tem ARGS` — a server command that prints its URL on its first line — and returns the
/// process with that URL. The rest of its output is drained, as a terminal would.
pub fn start_server<I, S>(args: I) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(tem())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tem");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("the first line");
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in `{first}`"))
        .to_owned();
    (child, url)
}
