//! Using the server as a library: fault injection (direct and over HTTP), lifecycle hooks and
//! the registry stream, the body limit and path validation.

use std::sync::{Arc, Mutex};

use reqwest::Client;
use streams_server::{Fault, LifecycleKind, REGISTRY_PATH, StreamServer};

#[tokio::test]
async fn injected_faults_hit_the_named_path_and_method_for_their_count() {
    let server = StreamServer::builder().bind("127.0.0.1:0").await.expect("start");
    let http = Client::new();
    let url = format!("{}/v1/stream/flaky", server.url());
    let created = http
        .put(&url)
        .header("content-type", "text/plain")
        .body("data")
        .send()
        .await
        .expect("PUT");
    assert_eq!(created.status(), 201);
    let fault = Fault {
        status: Some(503),
        count: Some(2),
        retry_after: Some(7),
        method: Some("GET".into()),
        ..Fault::default()
    };
    server.inject_fault("/v1/stream/flaky", fault).expect("inject");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = http.get(format!("{url}?offset=-1")).send().await.expect("GET");
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "7");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 200]);

    server
        .inject_fault(
            "/v1/stream/flaky",
            Fault {
                truncate_body_bytes: Some(2),
                ..Fault::default()
            },
        )
        .expect("inject");
    let truncated = http.get(format!("{url}?offset=-1")).send().await.expect("GET");
    assert_eq!(truncated.text().await.expect("body"), "da");

    server
        .inject_fault(
            "/v1/stream/flaky",
            Fault {
                drop_connection: true,
                ..Fault::default()
            },
        )
        .expect("inject");
    let dropped = async { http.get(format!("{url}?offset=-1")).send().await?.bytes().await };
    assert!(dropped.await.is_err(), "the connection is cut");
    server
        .inject_fault(
            "/v1/stream/flaky",
            Fault {
                status: Some(500),
                count: Some(5),
                ..Fault::default()
            },
        )
        .expect("inject");
    server.clear_faults();
    assert_eq!(
        http.get(format!("{url}?offset=-1"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_test_endpoint_exists_only_when_enabled_and_names_bad_fields() {
    let http = Client::new();
    let plain = StreamServer::builder().bind("127.0.0.1:0").await.expect("start");
    let refused = http
        .post(format!("{}/_test/inject-error", plain.url()))
        .json(&serde_json::json!({ "path": "/v1/stream/x", "status": 500 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), 404, "no test endpoints unless asked for");
    plain.stop().await.expect("stop");

    let server = StreamServer::builder()
        .test_endpoints(true)
        .bind("127.0.0.1:0")
        .await
        .expect("start");
    let endpoint = format!("{}/_test/inject-error", server.url());
    let bad = http
        .post(&endpoint)
        .json(&serde_json::json!({ "path": "/v1/stream/x", "statu": 500 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("body").contains("statu"));
    let armed = http
        .post(&endpoint)
        .json(&serde_json::json!({ "path": "/v1/stream/x", "status": 418 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(armed.status(), 200);
    let hit = http
        .head(format!("{}/v1/stream/x", server.url()))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(hit.status(), 418);
    assert_eq!(http.delete(&endpoint).send().await.expect("DELETE").status(), 200);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn hooks_and_the_registry_stream_see_creates_and_deletes() {
    let seen: Arc<Mutex<Vec<(LifecycleKind, String)>>> = Arc::default();
    let server = StreamServer::builder()
        .hook({
            let seen = seen.clone();
            move |event| seen.lock().expect("lock").push((event.kind, event.path.clone()))
        })
        .registry(REGISTRY_PATH)
        .bind("127.0.0.1:0")
        .await
        .expect("start");
    let http = Client::new();
    let url = format!("{}/v1/stream/watched", server.url());
    assert_eq!(http.put(&url).send().await.expect("PUT").status(), 201);
    assert_eq!(http.put(&url).send().await.expect("PUT again").status(), 200);
    assert_eq!(http.delete(&url).send().await.expect("DELETE").status(), 204);
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            (LifecycleKind::Created, "/v1/stream/watched".to_owned()),
            (LifecycleKind::Deleted, "/v1/stream/watched".to_owned())
        ]
    );
    let registry: serde_json::Value = http
        .get(format!("{}{REGISTRY_PATH}?offset=-1", server.url()))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let kinds: Vec<(&str, &str)> = registry
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().expect("type"),
                e["path"].as_str().expect("path"),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("created", "/v1/stream/watched"),
            ("deleted", "/v1/stream/watched")
        ]
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn oversized_bodies_and_bad_paths_are_refused_with_the_reason() {
    let server = StreamServer::builder()
        .max_body_bytes(1024)
        .bind("127.0.0.1:0")
        .await
        .expect("start");
    let http = Client::new();
    let url = format!("{}/v1/stream/small", server.url());
    assert_eq!(
        http.put(&url)
            .header("content-type", "text/plain")
            .send()
            .await
            .expect("PUT")
            .status(),
        201
    );
    let big = http
        .post(&url)
        .header("content-type", "text/plain")
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("POST");
    assert_eq!(big.status(), 413);
    let body: serde_json::Value = big.json().await.expect("JSON error");
    assert_eq!(body["field"], "body");
    let fine = http
        .post(&url)
        .header("content-type", "text/plain")
        .body(vec![b'x'; 1024])
        .send()
        .await
        .expect("POST");
    assert_eq!(fine.status(), 204);
    let nul = http
        .put(format!("{}/v1/stream/a%00b", server.url()))
        .send()
        .await
        .expect("PUT");
    assert_eq!(nul.status(), 400);
    let body: serde_json::Value = nul.json().await.expect("JSON error");
    assert_eq!(body["field"], "path");
    // An empty stream name (a path ending in `/`, or an empty segment) names no stream.
    for empty in ["/v1/stream/", "/v1//stream/x"] {
        let url = format!("{}{empty}", server.url());
        let created = http
            .put(&url)
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .expect("PUT");
        assert_eq!(created.status(), 400, "{empty}");
        let body: serde_json::Value = created.json().await.expect("JSON error");
        assert_eq!(body["field"], "path", "{empty}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("empty")),
            "{body}"
        );
        let read = http.get(format!("{url}?offset=-1")).send().await.expect("GET");
        assert_eq!(read.status(), 400, "nothing was created at {empty}");
    }
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn large_reads_are_gzipped_for_clients_that_accept_it() {
    use std::io::Read;
    let server = StreamServer::builder().bind("127.0.0.1:0").await.expect("start");
    let http = Client::new();
    let url = format!("{}/v1/stream/big", server.url());
    let text = "all work and no play ".repeat(500);
    let created = http
        .put(&url)
        .header("content-type", "text/plain")
        .body(text.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(created.status(), 201);
    let gzipped = http
        .get(format!("{url}?offset=-1"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("GET");
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(gzipped.headers()["vary"], "accept-encoding");
    assert_eq!(gzipped.headers()["x-content-type-options"], "nosniff");
    let bytes = gzipped.bytes().await.expect("body");
    assert!(bytes.len() < text.len() / 4);
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut plain)
        .expect("gzip");
    assert_eq!(plain, text);
    let identity = http.get(format!("{url}?offset=-1")).send().await.expect("GET");
    assert!(identity.headers().get("content-encoding").is_none());
    assert_eq!(identity.text().await.expect("body"), text);
    server.stop().await.expect("stop");
}
