//! One `tem streams serve` per `--data-dir`: a second server on a directory another one serves
//! refuses to start, naming the holder's pid, and the first keeps serving. A killed holder
//! leaves no stale lock behind.

use std::process::Stdio;
use std::time::Duration;

use tem_e2e::binary::{start_server, tem};

fn serve_args(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["streams", "serve", "--port", "0", "--data-dir"]
        .iter()
        .map(Into::into)
        .collect();
    args.push(dir.into());
    args
}

#[tokio::test]
async fn a_second_server_on_one_data_dir_refuses_to_start_and_names_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut first, url) = start_server(serve_args(dir.path()));
    let http = reqwest::Client::new();
    let stream = format!("{url}/v1/stream/owned");
    let created = http
        .put(&stream)
        .header("content-type", "text/plain")
        .body("first")
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);

    let second = tokio::process::Command::new(tem())
        .args(serve_args(dir.path()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the second server");
    let output = tokio::time::timeout(Duration::from_secs(60), second.wait_with_output())
        .await
        .expect("the second server exits instead of serving")
        .expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.id())) && stderr.contains("--data-dir"),
        "the message names the holder's pid and the flag: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "the second server never listened"
    );

    // The first one still serves, and its data is untouched.
    let appended = http
        .post(&stream)
        .header("content-type", "text/plain")
        .body("+more")
        .send()
        .await
        .expect("append");
    assert_eq!(appended.status(), 204);
    let read = http
        .get(format!("{stream}?offset=-1"))
        .send()
        .await
        .expect("read");
    assert_eq!(read.text().await.expect("body"), "first+more");

    // A holder killed outright leaves no stale lock: the next server starts and recovers.
    first.kill().expect("SIGKILL the first server");
    first.wait().expect("reap");
    let (mut next, url) = start_server(serve_args(dir.path()));
    let read = http
        .get(format!("{url}/v1/stream/owned?offset=-1"))
        .send()
        .await
        .expect("read after restart");
    assert_eq!(read.text().await.expect("body"), "first+more");
    next.kill().expect("stop");
    let _ = next.wait();
}
