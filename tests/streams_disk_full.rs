//! `tem streams serve --data-dir` on a disk that fills up: appends are refused with 507 and a
//! JSON error while it is full, reads go on, and once space is freed the same stream takes
//! appends again — holding every acknowledged append and nothing else, before and after a
//! restart. The disk is a 2 MiB tmpfs the test mounts, so it runs as root only; elsewhere it
//! says why it skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use tem_e2e::binary::start_server;

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Kills the server when the test ends (before the tmpfs is unmounted).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mount_small_tmpfs(dir: &Path) -> Result<Mounted, String> {
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|error| format!("cannot run mount: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "mount -t tmpfs failed (not root?): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(Mounted(dir.to_owned()))
}

fn start(data: &Path) -> (Server, String) {
    let args: [&std::ffi::OsStr; 6] = [
        "streams".as_ref(),
        "serve".as_ref(),
        "--port".as_ref(),
        "0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ];
    let (child, url) = start_server(args);
    (Server(child), url)
}

/// A self-describing 4 KiB message.
fn message(n: usize) -> String {
    let mut text = format!("<{n:06}>");
    text.extend(std::iter::repeat_n(char::from(b'a' + (n % 26) as u8), 4088));
    text
}

async fn append(http: &reqwest::Client, url: &str, body: String) -> reqwest::Response {
    http.post(url)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("append")
}

async fn read_all(http: &reqwest::Client, url: &str) -> String {
    let mut data = String::new();
    let mut offset = "-1".to_owned();
    for _ in 0..1000 {
        let response = http
            .get(format!("{url}?offset={offset}"))
            .send()
            .await
            .expect("read");
        assert_eq!(response.status(), 200, "reads work");
        offset = response.headers()["stream-next-offset"]
            .to_str()
            .expect("offset")
            .to_owned();
        let done = response.headers().contains_key("stream-up-to-date");
        data.push_str(&response.text().await.expect("body"));
        if done {
            return data;
        }
    }
    panic!("the stream did not end within 1,000 reads");
}

#[tokio::test]
async fn a_full_disk_refuses_appends_with_507_and_the_stream_recovers_once_space_is_freed() {
    let mount_point = tempfile::tempdir().expect("tempdir");
    let _mounted = match mount_small_tmpfs(mount_point.path()) {
        Ok(mounted) => mounted,
        Err(reason) => {
            eprintln!("skipping the full-disk test: {reason}");
            return;
        }
    };
    let data = mount_point.path().join("data");
    let (server, url) = start(&data);
    let http = reqwest::Client::new();
    let stream = format!("{url}/v1/stream/filling");
    let created = http
        .put(&stream)
        .header("content-type", "text/plain")
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let mut acked = Vec::new();
    for n in 0..4 {
        assert_eq!(append(&http, &stream, message(n)).await.status(), 204);
        acked.push(message(n));
    }

    // Fill the disk with another file.
    let filler_path = mount_point.path().join("filler");
    let mut filler = std::fs::File::create(&filler_path).expect("filler");
    let chunk = vec![b'x'; 16 * 1024];
    let mut filled = false;
    for _ in 0..1000 {
        if filler.write_all(&chunk).and_then(|()| filler.sync_all()).is_err() {
            filled = true;
            break;
        }
    }
    assert!(filled, "2 MiB filled within 16 MB of writes");

    // Appends land in the space the segment reserved ahead, then are refused with 507.
    let mut n = acked.len();
    let refused = loop {
        let response = append(&http, &stream, message(n)).await;
        match response.status().as_u16() {
            204 => acked.push(message(n)),
            _ => break response,
        }
        n += 1;
        assert!(n < 600, "the stream never ran out of space");
    };
    assert_eq!(refused.status(), 507, "a full disk is 507 Insufficient Storage");
    let error: serde_json::Value = refused.json().await.expect("a JSON error");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("filling")),
        "{error}"
    );
    assert_eq!(read_all(&http, &stream).await, acked.concat(), "reads still work");
    assert_eq!(
        append(&http, &stream, message(n)).await.status(),
        507,
        "still full"
    );

    // Space comes back: the same stream takes appends again, without a restart.
    drop(filler);
    std::fs::remove_file(&filler_path).expect("free the space");
    for _ in 0..3 {
        n += 1;
        assert_eq!(append(&http, &stream, message(n)).await.status(), 204);
        acked.push(message(n));
    }
    assert_eq!(
        read_all(&http, &stream).await,
        acked.concat(),
        "every acknowledged append, and nothing that was refused"
    );

    drop(server);
    let (_server, url) = start(&data);
    let stream = format!("{url}/v1/stream/filling");
    assert_eq!(
        read_all(&http, &stream).await,
        acked.concat(),
        "after a restart too"
    );
    n += 1;
    assert_eq!(append(&http, &stream, message(n)).await.status(), 204);
}
