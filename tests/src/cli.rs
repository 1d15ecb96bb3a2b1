//! Driving the real `tem` binary from a test: a command with no `TEM_*` settings leaking in, a
//! bounded wait for its end, and bounded polling for the events a test waits on.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::binary::tem;

/// `tem ARGS` in `dir`, with piped output and no TEM_* settings from the test's environment.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(tem());
    command
        .current_dir(dir)
        .args(args)
        .env_remove("TEM_CONFIG")
        .env_remove("TEM_DB")
        .env_remove("TEM_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `tem ARGS` in `dir` to its end (bounded).
pub async fn run(dir: &Path, args: &[&str]) -> Output {
    finish(command(dir, args).spawn().expect("start tem")).await
}

/// Waits (bounded) for a started `tem` to end, with its output.
pub async fn finish(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("tem finished in time")
        .expect("tem output")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `lines` as a JSONL file `name` in `dir`.
pub fn write_input(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write input");
    path
}

/// `n` lines `{"id": "iN", "n": N}`.
pub fn item_lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"id": "i{i}", "n": {i}}}"#)).collect()
}

/// Waits (bounded: a minute) until `ready` holds, checking every 10 ms.
pub async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `signal` (`INT`, `TERM`, `STOP`, `CONT`, …) to the process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid}");
}
