//! The file-backed store through real HTTP: what a restart recovers (data, producer state,
//! closure, forks, soft deletes), torn tails and orphans, expiry across a restart, and group
//! commit (concurrent appends share fsyncs).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use reqwest::{Client, Response};
use streams_server::{Clock, StreamServer};

async fn start(dir: &Path) -> StreamServer {
    start_with_clock(dir, Clock::system()).await
}

async fn start_with_clock(dir: &Path, clock: Clock) -> StreamServer {
    StreamServer::builder()
        .data_dir(dir)
        .clock(clock)
        .long_poll_timeout(Duration::from_millis(500))
        .bind("127.0.0.1:0")
        .await
        .expect("start")
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

async fn put(http: &Client, url: &str, content_type: &str, body: &str) -> Response {
    http.put(url)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("PUT")
}

async fn post(http: &Client, url: &str, content_type: &str, body: &str, extra: &[(&str, &str)]) -> Response {
    let mut request = http
        .post(url)
        .header("content-type", content_type)
        .body(body.to_owned());
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.expect("POST")
}

async fn read(http: &Client, url: &str) -> (u16, String) {
    let response = http.get(format!("{url}?offset=-1")).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn a_restart_recovers_data_producers_closure_forks_and_soft_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Client::new();
    let producer = [
        ("producer-id", "p1"),
        ("producer-epoch", "3"),
        ("producer-seq", "0"),
    ];
    let (text, json, closed, source, fork, retired) = {
        let server = start(dir.path()).await;
        let base = format!("{}/v1/stream", server.url());
        let text = format!("{base}/text");
        assert_eq!(put(&http, &text, "text/plain", "hello ").await.status(), 201);
        assert_eq!(
            post(&http, &text, "text/plain", "world", &producer)
                .await
                .status(),
            200
        );
        let json = format!("{base}/json");
        assert_eq!(
            put(&http, &json, "application/json", "[1, 2]").await.status(),
            201
        );
        assert_eq!(
            post(
                &http,
                &json,
                "application/json",
                r#"[{"a": 3}]"#,
                &[("stream-seq", "0001")]
            )
            .await
            .status(),
            204
        );
        let closed = format!("{base}/closed");
        assert_eq!(put(&http, &closed, "text/plain", "the end").await.status(), 201);
        assert_eq!(
            post(&http, &closed, "text/plain", "", &[("stream-closed", "true")])
                .await
                .status(),
            204
        );
        let source = format!("{base}/source");
        assert_eq!(put(&http, &source, "text/plain", "shared").await.status(), 201);
        let fork = format!("{base}/fork");
        let forked = http
            .put(&fork)
            .header("stream-forked-from", "/v1/stream/source")
            .send()
            .await
            .expect("fork");
        assert_eq!(forked.status(), 201);
        assert_eq!(post(&http, &fork, "text/plain", "+own", &[]).await.status(), 204);
        assert_eq!(
            post(&http, &source, "text/plain", "+later", &[]).await.status(),
            204
        );
        let retired = format!("{base}/retired");
        assert_eq!(put(&http, &retired, "text/plain", "x").await.status(), 201);
        assert_eq!(http.delete(&retired).send().await.expect("delete").status(), 204);
        // The fork keeps its source alive after the source is deleted: a soft delete.
        let kept = format!("{base}/kept");
        assert_eq!(put(&http, &kept, "text/plain", "kept").await.status(), 201);
        let kept_fork = http
            .put(format!("{base}/kept-fork"))
            .header("stream-forked-from", "/v1/stream/kept")
            .send()
            .await
            .expect("fork");
        assert_eq!(kept_fork.status(), 201);
        assert_eq!(http.delete(&kept).send().await.expect("delete").status(), 204);
        server.stop().await.expect("stop");
        (text, json, closed, source, fork, retired)
    };

    let server = start(dir.path()).await;
    let moved = |url: &str| format!("{}{}", server.url(), &url[url.find("/v1/").expect("path")..]);
    assert_eq!(read(&http, &moved(&text)).await, (200, "hello world".into()));
    assert_eq!(read(&http, &moved(&json)).await, (200, r#"[1,2,{"a":3}]"#.into()));
    // Producer state came back with the data: the retry is a duplicate, the next seq is accepted.
    let retry = post(&http, &moved(&text), "text/plain", "world", &producer).await;
    assert_eq!(
        (retry.status().as_u16(), header(&retry, "producer-seq")),
        (204, Some("0".into()))
    );
    let next = [
        ("producer-id", "p1"),
        ("producer-epoch", "3"),
        ("producer-seq", "1"),
    ];
    assert_eq!(
        post(&http, &moved(&text), "text/plain", "!", &next)
            .await
            .status(),
        200
    );
    // Stream-Seq too.
    let stale = post(
        &http,
        &moved(&json),
        "application/json",
        "4",
        &[("stream-seq", "0001")],
    )
    .await;
    assert_eq!(stale.status(), 409);
    let closed_read = http
        .get(format!("{}?offset=-1", moved(&closed)))
        .send()
        .await
        .expect("GET");
    assert_eq!(header(&closed_read, "stream-closed").as_deref(), Some("true"));
    assert_eq!(
        post(&http, &moved(&closed), "text/plain", "more", &[])
            .await
            .status(),
        409
    );
    assert_eq!(read(&http, &moved(&source)).await, (200, "shared+later".into()));
    assert_eq!(read(&http, &moved(&fork)).await, (200, "shared+own".into()));
    assert_eq!(read(&http, &moved(&retired)).await.0, 404);
    let base = format!("{}/v1/stream", server.url());
    assert_eq!(read(&http, &format!("{base}/kept")).await.0, 410);
    assert_eq!(
        read(&http, &format!("{base}/kept-fork")).await,
        (200, "kept".into())
    );
    // Deleting the last fork collects the soft-deleted source, and that too survives a restart.
    assert_eq!(
        http.delete(format!("{base}/kept-fork"))
            .send()
            .await
            .expect("delete")
            .status(),
        204
    );
    assert_eq!(read(&http, &format!("{base}/kept")).await.0, 404);
    server.stop().await.expect("stop");
    let server = start(dir.path()).await;
    let base = format!("{}/v1/stream", server.url());
    assert_eq!(read(&http, &format!("{base}/kept")).await.0, 404);
    assert_eq!(
        read(&http, &format!("{base}/text")).await,
        (200, "hello world!".into())
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_orphan_segments_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Client::new();
    {
        let server = start(dir.path()).await;
        let url = format!("{}/v1/stream/s", server.url());
        assert_eq!(put(&http, &url, "text/plain", "whole").await.status(), 201);
        assert_eq!(
            post(&http, &url, "text/plain", "+record", &[]).await.status(),
            204
        );
        server.stop().await.expect("stop");
    }
    let segments = dir.path().join("segments");
    let segment = std::fs::read_dir(&segments)
        .expect("segments")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    // A record whose write was cut short, where the next record goes: after the last record,
    // in the zeros the file reserves ahead (a length promising more than follows).
    let bytes = std::fs::read(&segment).expect("read segment");
    let records_end = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    assert!(bytes.len() > records_end, "the segment reserves space ahead");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open");
    file.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6], records_end as u64)
        .expect("torn bytes");
    drop(file);
    let orphan = segments.join("00000000000000ff.seg");
    std::fs::write(&orphan, b"left by a create that never committed").expect("orphan");

    let server = start(dir.path()).await;
    let url = format!("{}/v1/stream/s", server.url());
    assert_eq!(read(&http, &url).await, (200, "whole+record".into()));
    assert!(!orphan.exists(), "the orphan segment is removed");
    let appended = post(&http, &url, "text/plain", "!", &[]).await;
    assert_eq!(
        header(&appended, "stream-next-offset").as_deref(),
        Some("0000000000000000_0000000000000013")
    );
    assert_eq!(read(&http, &url).await, (200, "whole+record!".into()));
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn streams_that_expired_while_the_server_was_down_are_gone_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Client::new();
    // 2030-01-01T00:00:00Z, by a clock the test moves: no waiting for time to pass.
    let clock = Clock::manual(1_893_456_000_000);
    {
        let server = start_with_clock(dir.path(), clock.clone()).await;
        let url = format!("{}/v1/stream/brief", server.url());
        let created = http
            .put(&url)
            .header("content-type", "text/plain")
            .header("stream-expires-at", "2030-01-01T00:00:00.300Z")
            .send()
            .await
            .expect("PUT");
        assert_eq!(created.status(), 201);
        let lasting = format!("{}/v1/stream/lasting", server.url());
        assert_eq!(put(&http, &lasting, "text/plain", "stays").await.status(), 201);
        server.stop().await.expect("stop");
    }
    clock.advance(299);
    {
        let server = start_with_clock(dir.path(), clock.clone()).await;
        let url = format!("{}/v1/stream/brief", server.url());
        assert_eq!(read(&http, &url).await.0, 200, "not yet expired");
        server.stop().await.expect("stop");
    }
    clock.advance(1);
    let server = start_with_clock(dir.path(), clock.clone()).await;
    assert_eq!(
        read(&http, &format!("{}/v1/stream/brief", server.url())).await.0,
        404
    );
    assert_eq!(
        read(&http, &format!("{}/v1/stream/lasting", server.url())).await,
        (200, "stays".into())
    );
    let segments = std::fs::read_dir(dir.path().join("segments"))
        .expect("segments")
        .count();
    assert_eq!(segments, 1, "the expired stream's segment is deleted");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn an_idle_ttl_runs_from_the_last_access_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Client::new();
    let clock = Clock::manual(1_893_456_000_000);
    let path = "/v1/stream/idle";
    {
        let server = start_with_clock(dir.path(), clock.clone()).await;
        let url = format!("{}{path}", server.url());
        let created = http
            .put(&url)
            .header("content-type", "text/plain")
            .header("stream-ttl", "10")
            .body("kept alive by reads")
            .send()
            .await
            .expect("PUT");
        assert_eq!(created.status(), 201);
        // A read 6 s in renews the 10 s window: it now ends at 16 s.
        clock.advance(6_000);
        assert_eq!(read(&http, &url).await.0, 200);
        server.stop().await.expect("stop");
    }
    // Restarted at 15.999 s: neither the creation time nor the restart decides, the read does.
    clock.advance(9_999);
    {
        let server = start_with_clock(dir.path(), clock.clone()).await;
        let head = http
            .head(format!("{}{path}", server.url()))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), 200, "alive until 10 s after the last read");
        server.stop().await.expect("stop");
    }
    // A HEAD does not renew the window: at 16 s the stream is gone, after another restart.
    clock.advance(1);
    let server = start_with_clock(dir.path(), clock.clone()).await;
    assert_eq!(read(&http, &format!("{}{path}", server.url())).await.0, 404);
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let http = Client::new();
    let url = format!("{}/v1/stream/busy", server.url());
    assert_eq!(put(&http, &url, "application/json", "").await.status(), 201);
    let appends: Vec<_> = (0..256)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                post(&http, &url, "application/json", &i.to_string(), &[])
                    .await
                    .status()
            })
        })
        .collect();
    for append in appends {
        assert_eq!(append.await.expect("task"), 204);
    }
    let stream = server.store().lookup("/v1/stream/busy").await.expect("stream");
    let syncs = stream.syncs();
    assert!(
        (1..256).contains(&syncs),
        "256 concurrent appends took {syncs} fsyncs"
    );
    let (status, body) = read(&http, &url).await;
    assert_eq!(status, 200);
    let mut numbers: Vec<u64> = serde_json::from_str(&body).expect("one JSON array");
    numbers.sort_unstable();
    assert_eq!(numbers, (0..256).collect::<Vec<_>>());
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn damage_before_the_tail_or_a_missing_segment_makes_only_that_stream_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = Client::new();
    {
        let server = start(dir.path()).await;
        let base = format!("{}/v1/stream", server.url());
        // ids 1, 2, 3, 4 in creation order: segments/000…0N.seg.
        assert_eq!(
            put(&http, &format!("{base}/damaged"), "text/plain", "first")
                .await
                .status(),
            201
        );
        for more in ["+second", "+third"] {
            let appended = post(&http, &format!("{base}/damaged"), "text/plain", more, &[]).await;
            assert_eq!(appended.status(), 204);
        }
        assert_eq!(
            put(&http, &format!("{base}/missing"), "text/plain", "gone")
                .await
                .status(),
            201
        );
        let fork = http
            .put(format!("{base}/fork-of-damaged"))
            .header("stream-forked-from", "/v1/stream/damaged")
            .send()
            .await
            .expect("fork");
        assert_eq!(fork.status(), 201);
        assert_eq!(
            put(&http, &format!("{base}/healthy"), "text/plain", "fine")
                .await
                .status(),
            201
        );
        server.stop().await.expect("stop");
    }
    let segment = |id: u64| dir.path().join("segments").join(format!("{id:016x}.seg"));
    // One bit of the first record's data flips: acknowledged records follow it.
    let mut bytes = std::fs::read(segment(1)).expect("read");
    let at = bytes
        .windows(5)
        .position(|w| w == b"first")
        .expect("the first record's data");
    bytes[at] ^= 1;
    std::fs::write(segment(1), &bytes).expect("damage");
    std::fs::remove_file(segment(2)).expect("lose a segment");

    for _restart in 0..2 {
        let server = start(dir.path()).await;
        let base = format!("{}/v1/stream", server.url());
        for (name, why) in [
            ("damaged", "damaged"),
            ("missing", "missing"),
            ("fork-of-damaged", "unavailable"),
        ] {
            let url = format!("{base}/{name}");
            let response = http.get(format!("{url}?offset=-1")).send().await.expect("GET");
            assert_eq!(response.status(), 500, "{name}");
            let body: serde_json::Value = response.json().await.expect("a JSON error");
            let error = body["error"].as_str().expect("error text");
            assert!(error.contains(why) && error.contains(name), "{name}: {error}");
            let recreate = put(&http, &url, "text/plain", "over it").await;
            assert_eq!(recreate.status(), 500, "{name} is not replaced by a new stream");
            let append = post(&http, &url, "text/plain", "more", &[]).await;
            assert_eq!(append.status(), 500, "{name}");
        }
        assert_eq!(
            read(&http, &format!("{base}/healthy")).await,
            (200, "fine".into())
        );
        let created = put(&http, &format!("{base}/new"), "text/plain", "new").await;
        assert!([200, 201].contains(&created.status().as_u16()));
        server.stop().await.expect("stop");
        // Nothing was cut or removed: the damage is left for an operator, twice over.
        assert_eq!(std::fs::read(segment(1)).expect("kept"), bytes);
        assert!(segment(3).exists(), "the fork's segment is kept");
    }
}
