//! An API on 127.0.0.1:0 that answers `/items/{id}` (any method) with what it was sent, counts
//! the calls per id, and can take a fixed time per call. Tests check what `tem run-batch`
//! really sent, and how many times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use serde_json::{Value, json};

/// What the API has seen.
#[derive(Clone, Default)]
pub struct EchoApi {
    calls: Arc<Mutex<HashMap<String, u32>>>,
    /// Value the `authorization` header must have for `"authorized": true`.
    expected_auth: Arc<String>,
    delay: Duration,
}

impl EchoApi {
    /// Calls per id so far.
    pub fn calls(&self) -> HashMap<String, u32> {
        self.calls.lock().expect("echo lock").clone()
    }

    /// Calls of all ids so far.
    pub fn total(&self) -> u32 {
        self.calls.lock().expect("echo lock").values().sum()
    }
}

/// Starts the API; returns it and its base URL.
pub async fn start(expected_auth: &str, delay: Duration) -> (EchoApi, String) {
    let api = EchoApi {
        expected_auth: Arc::new(expected_auth.to_owned()),
        delay,
        ..EchoApi::default()
    };
    let router = axum::Router::new()
        .route("/items/{id}", axum::routing::any(answer))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo api");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("echo api") });
    (api, format!("http://{addr}"))
}

async fn answer(
    State(api): State<EchoApi>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    *api.calls
        .lock()
        .expect("echo lock")
        .entry(id.clone())
        .or_default() += 1;
    if !api.delay.is_zero() {
        tokio::time::sleep(api.delay).await;
    }
    // Whether the secret arrived, never the secret itself: results are stored.
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == api.expected_auth.as_bytes());
    axum::Json(json!({
        "id": id,
        "method": method.as_str(),
        "authorized": authorized,
        "body": serde_json::from_str::<Value>(&body).ok(),
    }))
}
