//! The simulator on a real socket: every route and error body, 503 at exactly max+1, each rate
//! algorithm with its headers, the budget, the configured error status, graceful shutdown.

use std::time::Duration;

use mock_server::{Algorithm, MockClient, MockServer, ServiceConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn multi() -> MockServer {
    MockServer::builder().bind("127.0.0.1:0").await.unwrap()
}

async fn body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn service(limit: u64, window_ms: u64, algorithm: &str) -> Value {
    json!({
        "maxConcurrency": 100,
        "rateLimit": { "limit": limit, "windowMs": window_ms, "algorithm": algorithm },
        "delayMs": [0, 0]
    })
}

#[tokio::test]
async fn multi_mode_routes_and_errors() {
    let server = multi().await;
    let http = reqwest::Client::new();
    let url = server.url();

    let (status, created) = body(
        http.post(format!("{url}/service/llm"))
            .json(&service(100, 1000, "token_bucket"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, created["status"].as_str()),
        (StatusCode::CREATED, Some("created"))
    );
    let (status, called) = body(http.get(format!("{url}/mock/llm")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(called["data"], "ok");
    assert!(called["requestId"].as_str().unwrap().contains('-'));
    assert!(called["meta"]["ts"].as_u64().is_some() && called["meta"]["rt"].as_u64().is_some());
    // POST calls too, and a service's name may contain slashes.
    server
        .put_service("models/gpt", ServiceConfig::new(1, 10, 1000))
        .unwrap();
    let (status, _) = body(http.post(format!("{url}/mock/models/gpt")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    let (status, bad) = body(
        http.post(format!("{url}/service/bad"))
            .json(&json!({"maxConcurrency": 1, "rateLimit": {"limit": 0, "windowMs": 10}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (bad["error"].as_str(), bad["field"].as_str()),
        (Some("invalid_params"), Some("rateLimit.limit"))
    );
    let (status, bad) = body(
        http.post(format!("{url}/service/bad"))
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("(body)"))
    );
    let (status, bad) = body(
        http.post(format!("{url}/service/"))
            .json(&service(1, 1, "token_bucket"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_params"))
    );

    let (status, missing) = body(http.get(format!("{url}/mock/nope")).send().await.unwrap()).await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("service_not_found"))
    );
    let (status, root) = body(http.get(format!("{url}/")).send().await.unwrap()).await;
    assert_eq!(
        (status, root["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_params"))
    );
    for (method, path) in [
        ("GET", "/nowhere"),
        ("GET", "/shutdown"),
        ("PUT", "/mock/llm"),
        ("PATCH", "/service/llm"),
    ] {
        let response = http
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .send()
            .await
            .unwrap();
        let (status, nf) = body(response).await;
        assert_eq!(
            (status, nf["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{method} {path}"
        );
    }

    let (status, deleted) = body(http.delete(format!("{url}/service/llm")).send().await.unwrap()).await;
    assert_eq!(
        (status, deleted["status"].as_str()),
        (StatusCode::OK, Some("deleted"))
    );
    let (status, gone) = body(http.delete(format!("{url}/service/llm")).send().await.unwrap()).await;
    assert_eq!(
        (status, gone["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("service_not_found"))
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn single_mode_routes() {
    let server = MockServer::builder()
        .single(ServiceConfig::new(10, 100, 1000))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = server.url();
    assert_eq!(
        http.get(format!("{url}/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        http.post(format!("{url}/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let (status, e) = body(
        http.post(format!("{url}/service/x"))
            .json(&service(1, 1, "token_bucket"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("single_mode_no_create"))
    );
    let (status, e) = body(http.delete(format!("{url}/service/x")).send().await.unwrap()).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("single_mode_no_create"))
    );
    let (status, e) = body(http.get(format!("{url}/mock/x")).send().await.unwrap()).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_params"))
    );
    for (method, path) in [("GET", "/v1/answer/7"), ("DELETE", "/a/b?c=d"), ("PUT", "/x")] {
        let response = http
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{method} {path}: any path reaches the service"
        );
    }
    for (method, path) in [("GET", "/shutdown"), ("GET", "/service/x/y"), ("PUT", "/stats")] {
        let response = http
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "{method} {path}: control routes stay apart"
        );
    }
    let (status, stats) = body(http.get(format!("{url}/stats")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (stats["requests"].as_u64(), stats["byStatus"]["200"].as_u64()),
        (Some(5), Some(5))
    );
}

#[tokio::test]
async fn an_echo_service_answers_with_the_request_it_received() {
    let mut config = ServiceConfig::new(10, 100, 1000);
    config.echo = true;
    let server = MockServer::builder()
        .service("echo", config)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let (status, shown) = body(
        http.post(format!("{}/mock/echo?q=1", server.url()))
            .header("x-trace", "abc")
            .json(&json!({"id": 7}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["method"], "POST");
    assert_eq!(shown["path"], "/mock/echo");
    assert_eq!(shown["query"], "q=1");
    assert_eq!(shown["headers"]["x-trace"], "abc");
    assert_eq!(shown["json"]["id"], 7);
    assert_eq!(server.stats("echo").unwrap().requests, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_request_over_max_concurrency_gets_503_exactly() {
    let mut config = ServiceConfig::new(3, 1000, 1000);
    config.delay_ms = [400, 400];
    let server = MockServer::builder()
        .service("slow", config)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/mock/slow", server.url());
    // Three fill the slots and stay 400 ms; once they are in, the fourth is refused.
    let first: Vec<_> = (0..3).map(|_| tokio::spawn(http.get(&url).send())).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.stats("slow").unwrap().peak_concurrency < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first three never got in"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, refused) = body(http.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("concurrency_limit_exceeded")
        )
    );
    for request in first {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // The slots are free again.
    assert_eq!(http.get(&url).send().await.unwrap().status(), StatusCode::OK);
    let stats = server.stats("slow").unwrap();
    assert_eq!(stats.peak_concurrency, 3);
    assert_eq!((stats.by_status["200"], stats.by_status["503"]), (4, 1));
}

/// Sends `n` requests one after another; returns the statuses and the last 429's headers.
async fn hammer(
    url: &str,
    n: usize,
) -> (
    Vec<u16>,
    Option<reqwest::header::HeaderMap>,
    Vec<reqwest::header::HeaderMap>,
) {
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut refused = None;
    let mut accepted = Vec::new();
    for _ in 0..n {
        let response = http.get(url).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response.headers().clone());
        } else {
            accepted.push(response.headers().clone());
        }
    }
    (statuses, refused, accepted)
}

#[tokio::test]
async fn the_token_bucket_starts_full_and_answers_429_with_headers() {
    let server = multi().await;
    let client = MockClient::new(server.url());
    let config = ServiceConfig::from_json(&service(5, 60_000, "token_bucket")).unwrap();
    client.create_service("tb", &config).await.unwrap();
    let (statuses, refused, accepted) = hammer(&format!("{}/mock/tb", server.url()), 8).await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let remaining: Vec<&str> = accepted
        .iter()
        .map(|h| h["x-ratelimit-remaining"].to_str().unwrap())
        .collect();
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let refused = refused.unwrap();
    assert_eq!(refused["x-ratelimit-limit"], "5");
    // One token per 12 s: Retry-After is whole seconds, rounded up.
    let retry: u64 = refused["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((11..=12).contains(&retry), "Retry-After {retry}");
    let stats = client.stats("tb").await.unwrap();
    assert_eq!(stats.max_accepted_in_window, 5);
}

#[tokio::test]
async fn sliding_and_fixed_windows_refuse_past_their_limit() {
    let server = multi().await;
    let client = MockClient::new(server.url());
    for (name, algorithm) in [("sliding", "sliding_window"), ("fixed", "fixed_window")] {
        let config = ServiceConfig::from_json(&service(5, 300, algorithm)).unwrap();
        assert_eq!(
            config.rate_limit.algorithm,
            if name == "sliding" {
                Algorithm::SlidingWindow
            } else {
                Algorithm::FixedWindow
            }
        );
        client.create_service(name, &config).await.unwrap();
        let url = format!("{}/mock/{name}", server.url());
        let http = reqwest::Client::new();
        let started = tokio::time::Instant::now();
        let mut statuses = Vec::new();
        // (sent, answered) of every accepted call, as the client saw them: one at a time, so
        // the service accepted each somewhere inside its own span.
        let mut accepted = Vec::new();
        while started.elapsed() < Duration::from_millis(1000) {
            let sent = tokio::time::Instant::now();
            let status = http.get(&url).send().await.unwrap().status().as_u16();
            if status == 200 {
                accepted.push((sent, tokio::time::Instant::now()));
            }
            statuses.push(status);
        }
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!(statuses.contains(&429), "{name} refused nothing");
        // 5 per 300 ms for ~1 s: about 20 (a fixed window can add one edge burst).
        assert!((10..=30).contains(&ok), "{name} accepted {ok}");
        if name == "sliding" {
            // Six accepts within 300 ms would break the window: the sixth accepted call came
            // back no sooner than 300 ms after the first of those six was sent.
            for (i, pair) in accepted.windows(6).enumerate() {
                let (first_sent, _) = pair[0];
                let (_, sixth_answered) = pair[5];
                assert!(
                    sixth_answered - first_sent >= Duration::from_millis(300),
                    "accepts {i}..{} all within {:?}",
                    i + 5,
                    sixth_answered - first_sent
                );
            }
        }
    }
}

#[tokio::test]
async fn the_budget_spends_the_cost_from_a_header_or_json_field() {
    let server = multi().await;
    let http = reqwest::Client::new();
    let config = json!({
        "maxConcurrency": 10,
        "rateLimit": { "limit": 100, "windowMs": 1000 },
        "delayMs": [0, 0],
        "budget": { "limit": 10, "windowMs": 60000, "costHeader": "x-cost", "costField": "tokens" }
    });
    http.post(format!("{}/service/llm", server.url()))
        .json(&config)
        .send()
        .await
        .unwrap();
    let url = format!("{}/mock/llm", server.url());
    let by_header = |cost: u64| http.post(&url).header("x-cost", cost.to_string()).send();
    assert_eq!(by_header(6).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        by_header(6).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let by_field = http
        .post(&url)
        .json(&json!({ "tokens": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(by_field.status(), StatusCode::OK);
    assert_eq!(
        by_header(1).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let stats = server.stats("llm").unwrap();
    assert_eq!(stats.max_spent_in_budget_window, Some(10));
}

#[tokio::test]
async fn random_errors_answer_their_configured_status_and_headers_are_switchable() {
    let server = multi().await;
    let http = reqwest::Client::new();
    let config = json!({
        "maxConcurrency": 10,
        "rateLimit": { "limit": 1, "windowMs": 60000 },
        "delayMs": [0, 0],
        "errorSimulation": { "rate": 1.0, "statusCode": 503, "errorMessage": "upstream busy" }
    });
    http.post(format!("{}/service/flaky", server.url()))
        .json(&config)
        .send()
        .await
        .unwrap();
    let (status, error) = body(
        http.get(format!("{}/mock/flaky", server.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("upstream busy"))
    );

    let quiet = json!({
        "maxConcurrency": 10,
        "rateLimit": { "limit": 1, "windowMs": 60000 },
        "delayMs": [0, 0],
        "headers": { "retryAfter": false, "rateLimitOnSuccess": false }
    });
    http.post(format!("{}/service/quiet", server.url()))
        .json(&quiet)
        .send()
        .await
        .unwrap();
    let (statuses, refused, accepted) = hammer(&format!("{}/mock/quiet", server.url()), 2).await;
    assert_eq!(statuses, [200, 429]);
    assert!(accepted[0].get("x-ratelimit-limit").is_none());
    let refused = refused.unwrap();
    assert!(refused.get("retry-after").is_none());
    assert_eq!(
        refused["x-ratelimit-remaining"], "0",
        "429 headers stay on unless switched off"
    );
}

#[tokio::test]
async fn shutdown_stops_the_server_gracefully() {
    let mut config = ServiceConfig::new(10, 100, 1000);
    config.delay_ms = [300, 300];
    let server = MockServer::builder()
        .service("slow", config)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = server.url();
    let http = reqwest::Client::new();
    let in_flight = tokio::spawn(http.get(format!("{url}/mock/slow")).send());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.stats("slow").unwrap().peak_concurrency == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, answer) = body(http.post(format!("{url}/shutdown")).send().await.unwrap()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (StatusCode::OK, Some("shutting_down"))
    );
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        in_flight.await.unwrap().unwrap().status(),
        StatusCode::OK,
        "in-flight requests finish"
    );
    assert!(
        reqwest::Client::new()
            .get(format!("{url}/stats"))
            .send()
            .await
            .is_err(),
        "no longer listening"
    );
}
