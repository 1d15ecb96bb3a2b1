//! Live reads through real HTTP: a long-poll wakes on an append (not on its timeout), many idle
//! waiters all wake on one append, SSE connections are recycled, and shutdown ends live reads
//! at once instead of holding the server open.

use std::time::{Duration, Instant};

use reqwest::Client;
use streams_server::StreamServer;

async fn server(long_poll: Duration) -> StreamServer {
    StreamServer::builder()
        .long_poll_timeout(long_poll)
        .sse_lifetime(Duration::from_millis(300))
        .bind("127.0.0.1:0")
        .await
        .expect("start")
}

async fn create(http: &Client, url: &str) -> String {
    let response = http
        .put(url)
        .header("content-type", "text/plain")
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), 201);
    response.headers()["stream-next-offset"]
        .to_str()
        .expect("offset")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_at_the_tail_is_answered_by_the_next_append() {
    // A timeout far beyond the test's deadline: only the append can answer in time.
    let server = server(Duration::from_secs(120)).await;
    let http = Client::new();
    let url = format!("{}/v1/stream/wake", server.url());
    let tail = create(&http, &url).await;
    let waiters: Vec<_> = (0..200)
        .map(|_| {
            let (http, poll) = (http.clone(), format!("{url}?offset={tail}&live=long-poll"));
            tokio::spawn(async move {
                let response = http.get(poll).send().await.expect("poll");
                (response.status().as_u16(), response.text().await.expect("body"))
            })
        })
        .collect();
    let appended = http
        .post(&url)
        .header("content-type", "text/plain")
        .body("news")
        .send()
        .await
        .expect("POST");
    assert_eq!(appended.status(), 204);
    for waiter in waiters {
        assert_eq!(waiter.await.expect("task"), (200, "news".to_owned()));
    }
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn a_long_poll_that_sees_nothing_times_out_with_204_and_a_cursor() {
    let server = server(Duration::from_millis(100)).await;
    let http = Client::new();
    let url = format!("{}/v1/stream/quiet", server.url());
    let tail = create(&http, &url).await;
    let response = http
        .get(format!("{url}?offset={tail}&live=long-poll"))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["stream-next-offset"].to_str().expect("ascii"),
        tail
    );
    assert_eq!(response.headers()["stream-up-to-date"], "true");
    let cursor: u64 = response.headers()["stream-cursor"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!(cursor > 0);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn sse_connections_are_recycled() {
    let server = server(Duration::from_secs(30)).await;
    let http = Client::new();
    let url = format!("{}/v1/stream/sse", server.url());
    create(&http, &url).await;
    let response = http
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .expect("SSE");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let started = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the server ends the connection")
        .expect("body");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(body.starts_with("event: control\ndata:{"), "{body}");
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_live_reads_and_finishes_promptly() {
    let server = server(Duration::from_secs(120)).await;
    let http = Client::new();
    let url = format!("{}/v1/stream/closing", server.url());
    let tail = create(&http, &url).await;
    let poll = tokio::spawn({
        let (http, poll) = (http.clone(), format!("{url}?offset={tail}&live=long-poll"));
        async move { http.get(poll).send().await.expect("poll").status().as_u16() }
    });
    let mut sse = http
        .get(format!("{url}?offset={tail}&live=sse"))
        .send()
        .await
        .expect("SSE");
    let first = sse.chunk().await.expect("bytes").expect("a first event");
    assert!(String::from_utf8_lossy(&first).contains("upToDate"));
    // Stop only once both readers are parked on the stream.
    let stream = server.store().lookup("/v1/stream/closing").await.expect("stream");
    for _ in 0..1000 {
        if stream.live_readers() >= 2 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(stream.live_readers(), 2, "both readers wait on the stream");
    drop(stream);
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("stop does not wait for live readers")
        .expect("stop");
    assert!(stopped.elapsed() < Duration::from_secs(5));
    assert_eq!(poll.await.expect("task"), 204);
    while sse.chunk().await.expect("the SSE body ends cleanly").is_some() {}
}
