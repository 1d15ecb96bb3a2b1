//! `tem streams serve --data-dir` killed with SIGKILL in the middle of a stream of concurrent
//! appends: after a restart every acknowledged append is readable, byte for byte, where its
//! acknowledgement said it ends, and the stream holds only whole messages — a write the crash
//! tore is cut off, never half visible.
//!
//! The test reads offsets as byte positions (`…_<bytes>`), which is this server's documented
//! offset format; clients in general must treat offsets as opaque.

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tem_e2e::binary::start_server;
use tokio::sync::watch;

const WRITERS: usize = 16;
/// Appends acknowledged before the kill: enough that many are in flight when it lands.
const ACKED_BEFORE_KILL: usize = 1500;
/// Bound on each writer, whatever happens.
const MAX_PER_WRITER: usize = 5_000;

/// An acknowledged append: the offset its acknowledgement gave (where it ends) and its bytes.
type Acked = (u64, Vec<u8>);

fn start(dir: &std::path::Path) -> (Child, String) {
    let args: [&std::ffi::OsStr; 6] = [
        "streams".as_ref(),
        "serve".as_ref(),
        "--port".as_ref(),
        "0".as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ];
    start_server(args)
}

/// A self-describing message of varying length: `[w=WW s=SSSSSS n=NNNN]` + NNNN filler bytes + `;`.
fn message(writer: usize, seq: usize) -> Vec<u8> {
    let fill = 1 + (writer * 131 + seq * 37) % 700;
    let mut out = format!("[w={writer:02} s={seq:06} n={fill:04}]").into_bytes();
    out.extend(std::iter::repeat_n(b'a' + (seq % 26) as u8, fill));
    out.push(b';');
    out
}

/// Splits a stream into messages; panics on anything that is not a whole message.
fn parse(stream: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let header = std::str::from_utf8(&stream[at..(at + 22).min(stream.len())]).expect("a header");
        assert!(
            header.len() == 22 && header.starts_with("[w="),
            "partial or foreign bytes at {at}: {header:?}"
        );
        let writer: usize = header[3..5].parse().expect("writer");
        let seq: usize = header[8..14].parse().expect("seq");
        let fill: usize = header[17..21].parse().expect("fill");
        let len = 22 + fill + 1;
        assert!(at + len <= stream.len(), "a partial message is visible at {at}");
        assert_eq!(
            &stream[at..at + len],
            message(writer, seq).as_slice(),
            "message at {at}"
        );
        found.push((writer, seq, at));
        at += len;
    }
    found
}

fn offset_bytes(offset: &str) -> u64 {
    offset
        .rsplit('_')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an offset")
}

async fn read_all(http: &reqwest::Client, url: &str) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offset = "-1".to_owned();
    for _ in 0..10_000 {
        let response = http
            .get(format!("{url}?offset={offset}"))
            .send()
            .await
            .expect("read");
        assert_eq!(response.status(), 200);
        let next = response.headers()["stream-next-offset"]
            .to_str()
            .expect("offset")
            .to_owned();
        let done = response.headers().contains_key("stream-up-to-date");
        data.extend_from_slice(&response.bytes().await.expect("body"));
        offset = next;
        if done {
            return data;
        }
    }
    panic!("the stream did not end within 10,000 reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_appends_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, url) = start(dir.path());
    let stream = format!("{url}/v1/stream/crash");
    let http = reqwest::Client::new();
    let created = http
        .put(&stream)
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (http, stream, acked, count_tx) =
                (http.clone(), stream.clone(), acked.clone(), count_tx.clone());
            tokio::spawn(async move {
                for seq in 0..MAX_PER_WRITER {
                    let body = message(writer, seq);
                    let sent = http
                        .post(&stream)
                        .header("content-type", "application/octet-stream")
                        .body(body.clone())
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    if response.status() != 204 {
                        return;
                    }
                    let end =
                        offset_bytes(response.headers()["stream-next-offset"].to_str().expect("offset"));
                    acked.lock().expect("lock").push((end, body));
                    count_tx.send_modify(|n| *n += 1);
                }
            })
        })
        .collect();

    tokio::time::timeout(
        Duration::from_secs(60),
        count_rx.wait_for(|n| *n >= ACKED_BEFORE_KILL),
    )
    .await
    .expect("enough appends acknowledged within 60 s")
    .expect("writers alive");
    server.kill().expect("SIGKILL the server");
    server.wait().expect("reap");
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    let (mut restarted, url) = start(dir.path());
    let stream = format!("{url}/v1/stream/crash");
    let data = read_all(&http, &stream).await;
    let messages = parse(&data);
    for (end, body) in &acked {
        let end = *end as usize;
        assert!(
            end <= data.len(),
            "acknowledged append ending at {end} is missing (stream has {} bytes)",
            data.len()
        );
        assert_eq!(
            &data[end - body.len()..end],
            body.as_slice(),
            "acknowledged append ending at {end}"
        );
    }
    assert!(messages.len() >= acked.len());

    // The recovered stream takes appends again, right after its last whole message.
    let body = message(99, 0);
    let response = http
        .post(&stream)
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .expect("append after restart");
    assert_eq!(response.status(), 204);
    let end = offset_bytes(response.headers()["stream-next-offset"].to_str().expect("offset"));
    assert_eq!(end as usize, data.len() + body.len());
    restarted.kill().expect("stop");
    let _ = restarted.wait();
}
