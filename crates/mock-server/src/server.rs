//! Starting and stopping a mock server, in-process or from `tem mock-server`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mock_server::Error> {
//! use mock_server::{MockServer, ServiceConfig};
//! let server = MockServer::builder()
//!     .service("llm", ServiceConfig::new(4, 10, 1000))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let url = format!("{}/mock/llm", server.url());
//! // ... call it, then check it was never overrun:
//! let stats = server.stats("llm").expect("the service exists");
//! assert!(stats.max_accepted_in_window <= 10);
//! server.stop().await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Definition;
use crate::error::Error;
use crate::routes::{self, DEFAULT_SERVICE, Mode, Simulator};
use crate::stats::Stats;
use crate::teraslice::{self, TerasliceOptions};

/// What a mock server serves.
#[derive(Debug, Default)]
pub struct MockServerBuilder {
    mode: Mode,
    services: Vec<(String, Definition)>,
    teraslice: Option<TerasliceOptions>,
    simulator: bool,
}

/// A running mock server.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    simulator: Arc<Simulator>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// The simulator's mode and services.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServerState {
    pub mode: Mode,
    pub services: BTreeMap<String, Definition>,
}

impl MockServer {
    /// A multi-mode simulator with no services yet; add some, or switch mode.
    pub fn builder() -> MockServerBuilder {
        MockServerBuilder {
            simulator: true,
            ..Default::default()
        }
    }
}

impl MockServerBuilder {
    /// Single mode: `config` answers at `/` (a provider's, at its routes `/v1/…`).
    pub fn single(mut self, config: impl Into<Definition>) -> Self {
        self.mode = Mode::Single;
        self.services = vec![(DEFAULT_SERVICE.to_owned(), config.into())];
        self
    }

    /// Adds (multi mode) a service answering at `/mock/{name}` (a provider's at `/mock/{name}/v1/…`).
    pub fn service(mut self, name: impl Into<String>, config: impl Into<Definition>) -> Self {
        self.services.push((name.into(), config.into()));
        self
    }

    /// Mounts the Teraslice cluster mock under `/v1` beside the simulator.
    pub fn teraslice(mut self, options: TerasliceOptions) -> Self {
        self.teraslice = Some(options);
        self
    }

    /// Serves only the Teraslice mock (as `tem mock-server --teraslice`).
    pub fn teraslice_only(mut self, options: TerasliceOptions) -> Self {
        self.teraslice = Some(options);
        self.simulator = false;
        self
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and starts serving.
    pub async fn bind(self, addr: &str) -> Result<MockServer, Error> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener).await
    }

    /// Starts serving on `listener`.
    pub async fn serve(self, listener: TcpListener) -> Result<MockServer, Error> {
        let mut services = HashMap::new();
        for (name, config) in self.services {
            config.validate()?;
            services.insert(name.clone(), routes::Backend::new(&name, config));
        }
        let shutdown = CancellationToken::new();
        let simulator = Arc::new(Simulator {
            mode: self.mode,
            services: RwLock::new(services),
            shutdown: shutdown.clone(),
        });
        let mut router = axum::Router::new();
        if self.simulator {
            router = router.merge(routes::router(simulator.clone()));
        }
        if let Some(options) = self.teraslice {
            router = router.merge(teraslice::router(options, !self.simulator, shutdown.clone()));
        }
        let router = router
            .fallback(routes::not_found)
            .method_not_allowed_fallback(routes::not_found);
        let addr = listener.local_addr()?;
        let stop = shutdown.clone();
        // Answers go out at once: a response is one write, and Nagle would only delay it.
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        tracing::info!(%addr, mode = ?simulator.mode, "mock server listening");
        Ok(MockServer {
            addr,
            simulator,
            shutdown,
            task,
        })
    }
}

impl MockServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A service's statistics.
    pub fn stats(&self, name: &str) -> Option<Stats> {
        self.simulator.service(name).map(|s| s.stats())
    }

    /// When each request reached service `name`, refused ones included, as offsets from the
    /// service's creation in arrival order (the first million): what a client's pacing did,
    /// independent of what the service's limiter let through.
    pub fn arrivals(&self, name: &str) -> Option<Vec<std::time::Duration>> {
        self.simulator.service(name).map(|s| s.arrivals())
    }

    /// The mode and every service's configuration.
    pub fn state(&self) -> ServerState {
        let services = self.simulator.services.read().unwrap_or_else(|e| e.into_inner());
        ServerState {
            mode: self.simulator.mode,
            services: services
                .iter()
                .map(|(n, s)| (n.clone(), s.definition()))
                .collect(),
        }
    }

    /// Creates or replaces a service (any mode: this is the host's own hand, not the API).
    pub fn put_service(&self, name: &str, config: impl Into<Definition>) -> Result<(), Error> {
        let config = config.into();
        config.validate()?;
        self.simulator.put(name, config);
        Ok(())
    }

    /// Stops gracefully: no new connections, in-flight requests finish.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after `POST /shutdown`, or [`MockServer::stop`]).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(result) => Ok(result?),
            Err(join) => Err(Error::Io(std::io::Error::other(join))),
        }
    }
}
