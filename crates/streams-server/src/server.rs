//! Starting and stopping a streams server, in-process or from `tem streams serve`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streams_server::Error> {
//! use std::time::Duration;
//! use streams_server::StreamServer;
//! let server = StreamServer::builder()
//!     .long_poll_timeout(Duration::from_millis(500))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let url = format!("{}/v1/stream/events", server.url());
//! // ... PUT, POST and read `url`, then:
//! server.stop().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cursor::CursorOptions;
use crate::error::Error;
use crate::faults::{self, Fault, Faults};
use crate::hooks::{LifecycleEvent, LifecycleHook};
use crate::http::{self, AppState};
use crate::options::ServerOptions;
use crate::store::Store;

/// The default name of the registry stream.
pub const REGISTRY_PATH: &str = "/v1/stream/__registry__";

/// How often expired streams are dropped and access times recorded.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a streams server serves, and how.
#[derive(Default)]
pub struct StreamServerBuilder {
    options: ServerOptions,
    data_dir: Option<PathBuf>,
    hooks: Vec<LifecycleHook>,
    registry: Option<String>,
    test_endpoints: bool,
    clock: Clock,
}

/// A running streams server.
#[derive(Debug)]
pub struct StreamServer {
    addr: SocketAddr,
    store: Arc<Store>,
    faults: Faults,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
}

impl StreamServer {
    /// An in-memory server with the protocol's defaults (30 s long-poll).
    pub fn builder() -> StreamServerBuilder {
        StreamServerBuilder::default()
    }
}

impl StreamServerBuilder {
    /// Keep streams in `dir` (segment files + `meta.db`); appends are acknowledged once durable.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// How long a long-poll waits at the tail before answering 204.
    pub fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.options.long_poll_timeout = timeout;
        self
    }

    /// How long an SSE connection lives before the server ends it.
    pub fn sse_lifetime(mut self, lifetime: Duration) -> Self {
        self.options.sse_lifetime = lifetime;
        self
    }

    /// The long-poll cursor clock.
    pub fn cursor_options(mut self, cursor: CursorOptions) -> Self {
        self.options.cursor = cursor;
        self
    }

    /// Request bodies above `bytes` answer 413.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.options.max_body_bytes = bytes;
        self
    }

    /// A catch-up read returns at most about `bytes` (whole messages for JSON and text).
    pub fn max_read_bytes(mut self, bytes: usize) -> Self {
        self.options.max_read_bytes = bytes.max(1);
        self
    }

    /// Calls `hook` after every create and delete.
    pub fn hook(mut self, hook: impl Fn(&LifecycleEvent) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Records creates and deletes as JSON messages in the stream at `path`
    /// (e.g. [`REGISTRY_PATH`]).
    pub fn registry(mut self, path: impl Into<String>) -> Self {
        self.registry = Some(path.into());
        self
    }

    /// Judges stream lifetimes by `clock` (the system clock unless a test moves one by hand).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Serves `POST|DELETE /_test/inject-error` (never enable this in production).
    pub fn test_endpoints(mut self, enabled: bool) -> Self {
        self.test_endpoints = enabled;
        self
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and starts serving.
    pub async fn bind(self, addr: &str) -> Result<StreamServer, Error> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener).await
    }

    /// Opens the store (recovering a data directory) and starts serving on `listener`.
    pub async fn serve(self, listener: TcpListener) -> Result<StreamServer, Error> {
        let store = Arc::new(match &self.data_dir {
            Some(dir) => Store::open_dir(dir, self.hooks, self.registry, self.clock).await?,
            None => Store::in_memory(self.hooks, self.registry, self.clock),
        });
        let shutdown = CancellationToken::new();
        let faults = Faults::default();
        let state = AppState {
            store: store.clone(),
            options: Arc::new(self.options),
            shutdown: shutdown.clone(),
            faults: faults.clone(),
        };
        let mut router = http::router(state);
        if self.test_endpoints {
            let endpoints = axum::Router::new()
                .route(
                    "/_test/inject-error",
                    post(faults::inject_endpoint).delete(faults::clear_endpoint),
                )
                .with_state(faults.clone());
            router = endpoints.merge(router);
        }
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        });
        let sweeper = spawn_sweeper(store.clone(), shutdown.clone());
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        tracing::info!(%addr, durable = store.is_durable(), "streams server listening");
        Ok(StreamServer {
            addr,
            store,
            faults,
            shutdown,
            task,
            sweeper,
        })
    }
}

fn spawn_sweeper(store: Arc<Store>, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => store.sweep().await,
                () = shutdown.cancelled() => {
                    // One last pass records the final access times.
                    store.sweep().await;
                    return;
                }
            }
        }
    })
}

impl StreamServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store, for programs that embed the server.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Arms `fault` for requests to `path` (replacing any fault already there).
    pub fn inject_fault(&self, path: &str, fault: Fault) -> Result<(), Error> {
        self.faults.inject(path, fault).map_err(|message| Error::DataDir {
            path: path.to_owned(),
            message,
        })
    }

    /// Disarms every injected fault.
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// Ends live reads, finishes in-flight requests (appends included), and stops.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// A token that stops the server when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server stops (after [`StreamServer::shutdown_token`] is cancelled). Once
    /// it returns, the store is closed — a data directory's lock is free for the next server —
    /// unless the embedding program still holds [`StreamServer::store`].
    pub async fn wait(self) -> Result<(), Error> {
        let served = self.task.await;
        // A server that failed on its own still stops its sweeper.
        self.shutdown.cancel();
        if self.sweeper.await.is_err() {
            tracing::warn!("the sweeper task ended abnormally");
        }
        match served {
            Ok(result) => Ok(result?),
            Err(join) => Err(Error::Io(std::io::Error::other(join))),
        }
    }
}
