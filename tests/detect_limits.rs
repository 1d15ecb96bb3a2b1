//! `tem_core::detect` against the real mock server, across a table of configurations: caps of
//! 1 to 100, rates of 5/s to 1000/s and 600/min by each algorithm, with and without rate-limit
//! headers, a 404 endpoint, a dead port and an endpoint with 10 % random 500s. Each row checks
//! the answer (within ±10 %, exact where headers state it, never more than the truth when it is
//! only a lower bound), the budget, and prints the request count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mock_server::{Algorithm, ErrorSimulation, Headers, MockServer, ServiceConfig};
use tem_core::detect::{DetectError, DetectOptions, DetectedLimits, Finding, detect};

fn service(
    cap: u64,
    limit: u64,
    window_ms: u64,
    algorithm: Algorithm,
    delay_ms: u64,
    headers: bool,
) -> ServiceConfig {
    let mut config = ServiceConfig::new(cap, limit, window_ms);
    config.rate_limit.algorithm = algorithm;
    config.delay_ms = [delay_ms, delay_ms];
    if !headers {
        config.headers = Headers {
            retry_after: false,
            rate_limit_on_429: false,
            rate_limit_on_success: false,
        };
    }
    config
}

async fn run(name: &str, config: ServiceConfig, budget: u32) -> DetectedLimits {
    let server = MockServer::builder()
        .single(config)
        .bind("127.0.0.1:0")
        .await
        .expect("mock");
    let mut options = DetectOptions::new(format!("{}/", server.url()));
    options.max_requests = budget;
    let detected = detect(&options)
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    let concurrency = detected.concurrency.as_ref().map(|c| (c.detected, c.finding));
    let rate = detected
        .rate_limit
        .as_ref()
        .map(|r| (r.requests, r.window_ms, r.finding));
    eprintln!(
        "| {name} | concurrency {concurrency:?} | rate {rate:?} | {:?} | {} of {budget} requests | {} ms |",
        detected.confidence, detected.requests_used, detected.elapsed_ms
    );
    assert!(detected.requests_used <= budget, "{name}: over budget");
    server.stop().await.expect("stop");
    detected
}

fn within(name: &str, found: f64, truth: f64) {
    assert!(
        (found - truth).abs() <= truth * 0.1,
        "{name}: found {found}, truth {truth}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_caps_are_found_exactly_from_both_sides() {
    for (cap, budget) in [(1u64, 300u32), (3, 300), (8, 300), (50, 300), (100, 400)] {
        let name = format!("concurrency {cap}");
        // Latency makes a burst's requests overlap at the server, as any real API's does.
        let detected = run(
            &name,
            service(cap, 100_000, 1000, Algorithm::TokenBucket, 150, true),
            budget,
        )
        .await;
        let concurrency = detected.concurrency.expect("concurrency");
        within(&name, f64::from(concurrency.detected), cap as f64);
        assert_eq!(concurrency.finding, Finding::Exact, "{name}");
        let rate = detected.rate_limit.expect("stated rate");
        assert_eq!(
            (rate.requests, rate.window_ms, rate.finding),
            (100_000, 1000, Finding::Stated)
        );
        assert_eq!(detected.confidence, tem_core::detect::Confidence::High, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stated_rate_limits_are_read_exactly_for_every_algorithm() {
    for (limit, window_ms, algorithm) in [
        (5u64, 1000u64, Algorithm::TokenBucket),
        (50, 1000, Algorithm::FixedWindow),
        (1000, 1000, Algorithm::SlidingWindow),
        (600, 60_000, Algorithm::SlidingWindow),
    ] {
        let name = format!("{limit}/{window_ms}ms {algorithm:?} with headers");
        let detected = run(&name, service(100, limit, window_ms, algorithm, 5, true), 300).await;
        let rate = detected.rate_limit.expect("rate");
        assert_eq!(
            (rate.requests, rate.window_ms, rate.finding),
            (limit, window_ms, Finding::Stated),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstated_rate_limits_are_measured_by_pacing() {
    for (limit, algorithm, budget) in [
        (5u64, Algorithm::TokenBucket, 300u32),
        (5, Algorithm::FixedWindow, 300),
        (5, Algorithm::SlidingWindow, 300),
        (50, Algorithm::TokenBucket, 1000),
    ] {
        let name = format!("{limit}/s {algorithm:?} without headers");
        let detected = run(&name, service(100, limit, 1000, algorithm, 5, false), budget).await;
        let rate = detected.rate_limit.expect("rate");
        assert_eq!(rate.finding, Finding::Exact, "{name}");
        within(
            &name,
            rate.requests as f64 * 1000.0 / rate.window_ms as f64,
            limit as f64,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_beyond_the_budget_are_lower_bounds_never_overestimates() {
    for (limit, window_ms, algorithm) in [
        (1000u64, 1000u64, Algorithm::TokenBucket),
        (600, 60_000, Algorithm::SlidingWindow),
    ] {
        let name = format!("{limit}/{window_ms}ms {algorithm:?} without headers");
        let detected = run(&name, service(100, limit, window_ms, algorithm, 5, false), 300).await;
        // What the budget reached is reported, as a lower bound: never silence, never a limit.
        let rate = detected
            .rate_limit
            .unwrap_or_else(|| panic!("{name}: no rate reported"));
        assert_eq!(rate.finding, Finding::AtLeast, "{name}");
        assert!(rate.requests > 0, "{name}: a bound of nothing");
        // True of the limiter: within that span it lets through at most its quota plus what
        // refills (token bucket) or a window's quota (sliding window, span under a window).
        let allowed = limit + limit * rate.window_ms / window_ms;
        assert!(
            rate.requests <= allowed,
            "{name}: claims {} within {} ms",
            rate.requests,
            rate.window_ms
        );
        assert_eq!(detected.confidence, tem_core::detect::Confidence::Low, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_server_errors_are_noise_not_limits() {
    let mut config = service(8, 100_000, 1000, Algorithm::TokenBucket, 150, true);
    config.error_simulation = Some(ErrorSimulation {
        rate: 0.1,
        status_code: 500,
        error_message: "flaky".into(),
    });
    let detected = run("concurrency 8 with 10% random 500s", config, 300).await;
    within(
        "random 500s",
        f64::from(detected.concurrency.expect("concurrency").detected),
        8.0,
    );
}

#[tokio::test]
async fn a_404_or_a_dead_port_stops_detection_with_an_error() {
    // A real server that answers 404 to everything and counts what it got.
    let hits = Arc::new(AtomicU32::new(0));
    let app = axum::Router::new().fallback({
        let hits = hits.clone();
        move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            (axum::http::StatusCode::NOT_FOUND, "no such route")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    match detect(&DetectOptions::new(format!("http://{addr}/v1/models"))).await {
        Err(DetectError::Refused { status, body }) => {
            assert_eq!(status, 404);
            assert!(body.contains("no such route"));
        }
        other => panic!("a 404 endpoint must be refused, got {other:?}"),
    }
    eprintln!(
        "| 404 endpoint | refused after {} request(s) |",
        hits.load(Ordering::SeqCst)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one request, then stop");
    server.abort();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = listener.local_addr().expect("addr");
    drop(listener);
    let mut options = DetectOptions::new(format!("http://{dead}/"));
    options.request_timeout = Duration::from_secs(5);
    assert!(matches!(detect(&options).await, Err(DetectError::Unreachable(_))));
}

/// `tem detect` as a script runs it: JSON out, values written to a tem.toml that keeps its other
/// settings, and no requests without `--yes` when nobody can answer the prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_json_and_writes_the_config() {
    let server = MockServer::builder()
        .single(service(6, 20, 1000, Algorithm::FixedWindow, 150, true))
        .bind("127.0.0.1:0")
        .await
        .expect("mock");
    let url = format!("{}/", server.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tem.toml");
    std::fs::write(&config, "# my settings\nbase_url = \"https://api.example.com\"\n").expect("write");

    let refused = tokio::process::Command::new(tem_e2e::binary::tem())
        .args(["detect", &url])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run tem detect");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let output = tokio::process::Command::new(tem_e2e::binary::tem())
        .args(["detect", &url, "--yes", "--json", "--write-config"])
        .arg(&config)
        .output()
        .await
        .expect("run tem detect");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(json["detected"]["concurrency"]["detected"], 6);
    assert_eq!(json["concurrency"], 5, "90 % of 6, rounded down");
    assert_eq!(
        json["rate_limit"],
        serde_json::json!({ "requests": 18, "window_ms": 1000 })
    );
    assert_eq!(json["confidence"], "high");
    assert!(json["requests_used"].as_u64().expect("count") <= 300);
    assert!(!json["evidence"].as_array().expect("evidence").is_empty());
    let written = std::fs::read_to_string(&config).expect("read");
    assert!(written.contains("# my settings") && written.contains("base_url"));
    assert!(
        written.contains("concurrency = 5") && written.contains("rate = \"18/s\""),
        "{written}"
    );
    server.stop().await.expect("stop");
}
