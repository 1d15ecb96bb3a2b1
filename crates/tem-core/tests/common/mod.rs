//! Helpers shared by the engine's integration tests: a fresh database per test on either
//! backend (a SQLite file, or a Postgres database created and dropped), and a small real HTTP
//! server on 127.0.0.1:0.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tem_core::{Engine, EngineOptions};
use tempfile::TempDir;

/// Runs one test on both backends: `async fn name(backend) { … }` becomes the module `name`
/// with the tests `sqlite` and `postgres`, each binding `backend` to its [`Backend`].
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            async fn sqlite() {
                let $backend = $crate::common::Backend::Sqlite;
                $body
            }

            $(#[$meta])*
            async fn postgres() {
                let $backend = $crate::common::Backend::Postgres;
                $body
            }
        }
    };
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh database on the Postgres server at `TEM_TEST_POSTGRES`
    /// (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the test ends.
    Postgres,
}

use tem_test_support::postgres as postgres_db;

/// A fresh database for one test; dropped with it.
pub struct Db {
    url: String,
    dir: TempDir,
    _postgres: Option<postgres_db::TestDatabase>,
}

impl Db {
    /// The URL to open it with (another engine on it is another process's view).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A temporary directory that lives as long as the database.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A fresh, empty database.
pub async fn fresh_db(backend: Backend) -> Db {
    let dir = tempfile::tempdir().expect("temp dir");
    match backend {
        Backend::Sqlite => Db {
            url: format!("sqlite://{}", dir.path().join("tem.db").display()),
            dir,
            _postgres: None,
        },
        Backend::Postgres => {
            let database = postgres_db::TestDatabase::create().await;
            Db {
                url: database.url().to_owned(),
                dir,
                _postgres: Some(database),
            }
        }
    }
}

/// A fresh database on `backend` and an engine on it.
pub async fn engine(backend: Backend) -> (Db, Engine) {
    engine_with(backend, EngineOptions::default()).await
}

pub async fn engine_with(backend: Backend, options: EngineOptions) -> (Db, Engine) {
    // Logs when RUST_LOG asks for them (e.g. RUST_LOG=tem_core=debug), silent otherwise.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let db = fresh_db(backend).await;
    let engine = Engine::open_with(db.url(), options).await.expect("open engine");
    (db, engine)
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

/// Measures how late this runtime runs a 5 ms timer while a test runs: the stall the test
/// itself suffered, from which a timing bound can be judged (a safety property never is).
pub struct StallMonitor {
    worst: std::sync::Arc<std::sync::Mutex<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl StallMonitor {
    pub fn start() -> StallMonitor {
        let worst = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let seen = worst.clone();
        let task = tokio::spawn(async move {
            let tick = Duration::from_millis(5);
            loop {
                let before = std::time::Instant::now();
                tokio::time::sleep(tick).await;
                let late = before.elapsed().saturating_sub(tick);
                let mut worst = seen.lock().unwrap();
                *worst = (*worst).max(late);
            }
        });
        StallMonitor { worst, task }
    }

    /// The longest a timer fired late so far.
    pub fn worst(&self) -> Duration {
        *self.worst.lock().unwrap()
    }
}

impl Drop for StallMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A window shortened by a measured stall. Starts recorded up to `stall` after the limiter let
/// them go fit the limit in any window `stall` shorter than the limiter's: eleven recorded in
/// `[t, t + window - stall)` would mean eleven let go in `[t - stall, t + window - stall)`.
pub fn shrunk(window: Duration, stall: Duration) -> Duration {
    window.saturating_sub(stall)
}
