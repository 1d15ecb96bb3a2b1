//! A real HTTP server on 127.0.0.1:0 that records the calls task handlers make to it:
//! `GET /start/{task}` and `GET /end/{task}`. It counts starts per task and notices when one task
//! runs twice at the same time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::get;

/// What the recorder saw.
#[derive(Clone, Debug, Default)]
pub struct Calls {
    /// Starts per task id.
    pub starts: HashMap<i64, u32>,
    /// Tasks currently between start and end.
    pub active: HashMap<i64, u32>,
    /// Tasks seen running twice at once.
    pub overlaps: Vec<i64>,
}

/// The recorder's shared state.
pub type Recorder = Arc<Mutex<Calls>>;

/// A copy of what the recorder has seen so far.
pub fn snapshot(recorder: &Recorder) -> Calls {
    recorder.lock().expect("recorder lock").clone()
}

/// Starts a recorder; returns its state and base URL.
pub async fn start() -> (Recorder, String) {
    let calls: Recorder = Arc::default();
    let router = axum::Router::new()
        .route("/start/{task}", get(on_start))
        .route("/end/{task}", get(on_end))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind recorder");
    let addr: SocketAddr = listener.local_addr().expect("recorder address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("recorder") });
    (calls, format!("http://{addr}"))
}

async fn on_start(State(calls): State<Recorder>, Path(task): Path<i64>) -> &'static str {
    let mut calls = calls.lock().expect("recorder lock");
    *calls.starts.entry(task).or_default() += 1;
    let active = calls.active.entry(task).or_default();
    *active += 1;
    if *active > 1 {
        calls.overlaps.push(task);
    }
    "ok"
}

async fn on_end(State(calls): State<Recorder>, Path(task): Path<i64>) -> &'static str {
    let mut calls = calls.lock().expect("recorder lock");
    if let Some(active) = calls.active.get_mut(&task) {
        *active = active.saturating_sub(1);
    }
    "ok"
}
