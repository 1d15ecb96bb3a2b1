//! JSON mode through HTTP, where it is easy to get wrong: escapes that end strings, top-level
//! scalars, and size-limited reads that must end on message boundaries — across a fork too.

use reqwest::Client;
use streams_server::StreamServer;

const JSON: &str = "application/json";

async fn server(max_read_bytes: usize) -> StreamServer {
    StreamServer::builder()
        .max_read_bytes(max_read_bytes)
        .bind("127.0.0.1:0")
        .await
        .expect("start")
}

async fn put(http: &Client, url: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut request = http.put(url).header("content-type", JSON).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("PUT").status().as_u16()
}

async fn post(http: &Client, url: &str, body: &str) -> (u16, String) {
    let response = http
        .post(url)
        .header("content-type", JSON)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get("stream-next-offset")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (status, next)
}

/// Reads from the start in chunks; each chunk must be a JSON array. Returns the chunks.
async fn chunks(http: &Client, url: &str) -> Vec<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    let mut offset = "-1".to_owned();
    for _ in 0..1000 {
        let response = http
            .get(format!("{url}?offset={offset}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200);
        offset = response.headers()["stream-next-offset"]
            .to_str()
            .expect("offset")
            .to_owned();
        let done = response.headers().contains_key("stream-up-to-date");
        let text = response.text().await.expect("body");
        let chunk: Vec<serde_json::Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON array ({e}): {text}"));
        out.push(chunk);
        if done {
            return out;
        }
    }
    panic!("the stream did not end within 1,000 reads");
}

#[tokio::test]
async fn escaped_backslashes_before_quotes_end_strings_where_json_says() {
    let server = server(1 << 20).await;
    let http = Client::new();
    let url = format!("{}/v1/stream/escapes", server.url());
    assert_eq!(put(&http, &url, &[], "").await, 201);
    // A string ending in an escaped backslash, then one with an escaped quote after one, then
    // spaces inside strings (kept) and outside (dropped).
    let body = r#"[ "a\\" , "c d" , "e\\\"f g" , {"k \\": "v\" w"} ]"#;
    assert_eq!(post(&http, &url, body).await.0, 204);
    let read = http
        .get(format!("{url}?offset=-1"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert_eq!(read, r#"["a\\","c d","e\\\"f g",{"k \\":"v\" w"}]"#);
    let parsed: serde_json::Value = serde_json::from_str(&read).expect("valid JSON");
    assert_eq!(
        parsed,
        serde_json::json!(["a\\", "c d", "e\\\"f g", {"k \\": "v\" w"}])
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn top_level_scalars_are_one_message_each() {
    let server = server(1 << 20).await;
    let http = Client::new();
    let url = format!("{}/v1/stream/scalars", server.url());
    assert_eq!(put(&http, &url, &[], "7").await, 201);
    for body in [
        r#" "text [not an array]" "#,
        "true",
        "null",
        "-1.5e3",
        r#""""#,
        "[[]]",
    ] {
        assert_eq!(post(&http, &url, body).await.0, 204, "{body}");
    }
    for bad in ["1 2", "tru", "\"open", "[1,]", "01"] {
        assert_eq!(post(&http, &url, bad).await.0, 400, "{bad}");
    }
    let all: Vec<serde_json::Value> = chunks(&http, &url).await.concat();
    assert_eq!(
        all,
        serde_json::json!([7, "text [not an array]", true, null, -1500.0, "", []])
            .as_array()
            .expect("array")
            .clone()
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn size_limited_reads_cut_on_message_boundaries_across_a_fork() {
    // 40-byte reads: a few messages each, never a part of one.
    let server = server(40).await;
    let http = Client::new();
    let source = format!("{}/v1/stream/source", server.url());
    let messages: Vec<String> = (0..12)
        .map(|i| format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(i)))
        .collect();
    assert_eq!(put(&http, &source, &[], "").await, 201);
    let mut offsets = Vec::new();
    for message in &messages[..6] {
        let (status, next) = post(&http, &source, message).await;
        assert_eq!(status, 204);
        offsets.push(next);
    }
    // Fork after the fourth message, then both go on.
    let fork = format!("{}/v1/stream/fork", server.url());
    let headers = [
        ("stream-forked-from", "/v1/stream/source"),
        ("stream-fork-offset", offsets[3].as_str()),
    ];
    assert_eq!(put(&http, &fork, &headers, "").await, 201);
    for message in &messages[6..] {
        assert_eq!(post(&http, &fork, message).await.0, 204);
    }
    assert_eq!(post(&http, &source, r#"{"later":true}"#).await.0, 204);

    let expected: Vec<serde_json::Value> = messages[..4]
        .iter()
        .chain(&messages[6..])
        .map(|m| serde_json::from_str(m).expect("message"))
        .collect();
    let read = chunks(&http, &fork).await;
    assert!(read.len() > 3, "the limit splits the read: {} chunks", read.len());
    assert!(
        read.iter().all(|chunk| !chunk.is_empty()),
        "every chunk holds a whole message"
    );
    assert_eq!(
        read.concat(),
        expected,
        "whole messages, in order, none of the source's later ones"
    );

    // A message larger than the limit still comes whole, on its own.
    let big = format!(r#"{{"big":"{}"}}"#, "y".repeat(100));
    assert_eq!(post(&http, &fork, &big).await.0, 204);
    let last = chunks(&http, &fork).await.concat();
    assert_eq!(
        last.last(),
        Some(&serde_json::from_str::<serde_json::Value>(&big).expect("big"))
    );

    // A fork offset inside a message would cut it in two: refused.
    let inside = offsets[3].rsplit_once('_').map(|(head, bytes)| {
        let bytes: u64 = bytes.parse().expect("bytes");
        format!("{head}_{:016}", bytes - 3)
    });
    let inside = inside.expect("an offset");
    let headers = [
        ("stream-forked-from", "/v1/stream/source"),
        ("stream-fork-offset", inside.as_str()),
    ];
    let misplaced = format!("{}/v1/stream/misplaced", server.url());
    assert_eq!(put(&http, &misplaced, &headers, "").await, 400);
    server.stop().await.expect("stop");
}
