//! The real `tem` binary, built on demand: integration tests of another package do not get
//! `CARGO_BIN_EXE_tem`, so this asks cargo for it (a no-op when it is up to date) once per
//! test process, in the same profile as the tests.

use std::path::PathBuf;
use std::process::Command;
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
