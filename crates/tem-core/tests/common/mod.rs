//! Helpers shared by the engine's integration tests: a fresh on-disk database per test and a
//! small real HTTP server on 127.0.0.1:0.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tem_core::{Engine, EngineOptions};
use tempfile::TempDir;

/// A fresh SQLite file in its own temporary directory (kept alive by the returned guard).
pub async fn engine() -> (TempDir, Engine) {
    engine_with(EngineOptions::default()).await
}

pub async fn engine_with(options: EngineOptions) -> (TempDir, Engine) {
    // Logs when RUST_LOG asks for them (e.g. RUST_LOG=tem_core=debug), silent otherwise.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = db_url(&dir);
    let engine = Engine::open_with(&url, options).await.expect("open engine");
    (dir, engine)
}

pub fn db_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("tem.db").display())
}

/// Serves `router` on 127.0.0.1:0 until the test ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

/// Polls `check` every 10 ms until it returns true, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The most values of `times` (ms) inside any half-open window `[t, t + window)`.
pub fn max_in_window(times: &[std::time::Instant], window: Duration) -> usize {
    times
        .iter()
        .map(|&start| {
            times
                .iter()
                .filter(|&&t| t >= start && t < start + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}
