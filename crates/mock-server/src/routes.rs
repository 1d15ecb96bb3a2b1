//! The simulator's HTTP routes, in the original's order and with its JSON error bodies:
//!
//! | route | single mode | multi mode |
//! |---|---|---|
//! | `POST /shutdown` | 200, then the server stops gracefully | same |
//! | `POST /service/{name}` | 400 `single_mode_no_create` | create or replace (201) |
//! | `DELETE /service/{name}` | 400 `single_mode_no_create` | 200, or 404 `service_not_found` |
//! | `GET /service/{name}/stats` | the service's stats | same, or 404 `service_not_found` |
//! | `GET`/`POST /mock/{name…}` | 400 `invalid_params` | call the service |
//! | `GET`/`POST /` | call the default service | 400 `invalid_params` |
//! | `/mock/{name}/v1/…` | 400 `invalid_params` | an `openai` or `anthropic` service's routes |
//! | `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/messages`, `/v1/messages/count_tokens`, `/v1/models` | the default service's provider routes | 404 `not_found` |
//! | `GET /stats` | the default service's stats | every service's stats |
//! | any other path, any method (`/v1/answer/7`) | a generic default service answers; a provider's 404 `not_found` | 404 `not_found` |
//! | an unknown method on a route above, or any other `/service/…` | 404 `not_found` | same |

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Definition};
use crate::provider::ProviderService;
use crate::service::{Service, SharedService};
use crate::stats::Stats;

/// Whether one default service answers at `/`, or named services at `/mock/{name}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Single,
    #[default]
    Multi,
}

/// The name of single mode's service.
pub const DEFAULT_SERVICE: &str = "default";

/// A running service of either kind.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Generic(SharedService),
    Provider(Arc<ProviderService>),
}

impl Backend {
    pub fn new(name: &str, definition: Definition) -> Self {
        match definition {
            Definition::Generic(config) => Backend::Generic(Arc::new(Service::new(name, config))),
            Definition::Provider(config) => Backend::Provider(Arc::new(ProviderService::new(name, config))),
        }
    }

    pub fn stats(&self) -> Stats {
        match self {
            Backend::Generic(service) => service.stats(),
            Backend::Provider(service) => service.stats(),
        }
    }

    pub fn arrivals(&self) -> Vec<std::time::Duration> {
        match self {
            Backend::Generic(service) => service.arrivals(),
            Backend::Provider(service) => service.arrivals(),
        }
    }

    pub fn definition(&self) -> Definition {
        match self {
            Backend::Generic(service) => Definition::Generic(service.config().clone()),
            Backend::Provider(service) => Definition::Provider(service.config().clone()),
        }
    }

    /// Answers `request`; `path` is what follows the service's name (`/v1/…`), if anything.
    async fn call(&self, path: &str, request: Request) -> Response {
        match self {
            Backend::Generic(service) => service.call(request).await,
            Backend::Provider(service) => service.call(path, request).await,
        }
    }
}

/// What the routes share.
#[derive(Debug)]
pub(crate) struct Simulator {
    pub mode: Mode,
    pub services: RwLock<HashMap<String, Backend>>,
    pub shutdown: CancellationToken,
}

impl Simulator {
    pub fn service(&self, name: &str) -> Option<Backend> {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The service `/mock/{path}` calls, and the rest of the path: a whole name, or a provider
    /// service's name followed by its routes (names may contain slashes, so the longest wins).
    fn resolve<'p>(&self, path: &'p str) -> Option<(Backend, &'p str)> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        if let Some(service) = services.get(path) {
            return Some((service.clone(), ""));
        }
        let mut end = path.len();
        while let Some(at) = path[..end].rfind('/') {
            if let Some(service @ Backend::Provider(_)) = services.get(&path[..at]) {
                return Some((service.clone(), &path[at..]));
            }
            end = at;
        }
        None
    }

    pub fn put(&self, name: &str, definition: Definition) -> bool {
        let service = Backend::new(name, definition);
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), service)
            .is_some()
    }

    pub fn remove(&self, name: &str) -> bool {
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }
}

/// The simulator's routes.
pub(crate) fn router(simulator: Arc<Simulator>) -> Router {
    Router::new()
        .route("/shutdown", post(shutdown))
        .route("/service/", post(empty_name).delete(empty_name))
        .route("/service/{name}", post(create).delete(delete))
        .route("/service/{name}/stats", get(service_stats))
        .route("/mock/{*name}", get(call_named).post(call_named))
        .route("/", get(call_default).post(call_default))
        .route("/stats", get(stats))
        .route("/v1/chat/completions", post(call_default_provider))
        .route("/v1/completions", post(call_default_provider))
        .route("/v1/embeddings", post(call_default_provider))
        .route("/v1/messages", post(call_default_provider))
        .route("/v1/messages/count_tokens", post(call_default_provider))
        .route("/v1/models", get(call_default_provider))
        .route("/mock", any(call_named_bare))
        .route("/{*path}", any(call_any_path))
        .with_state(simulator)
}

/// 404 `not_found` for every unknown route and method, as the original.
pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found")
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({ "error": code }))).into_response()
}

fn invalid(error: ConfigError) -> Response {
    let body = json!({ "error": "invalid_params", "field": error.field, "message": error.message });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn shutdown(State(sim): State<Arc<Simulator>>) -> Response {
    // Graceful: the server stops accepting and finishes what is in flight (this answer too).
    sim.shutdown.cancel();
    (StatusCode::OK, axum::Json(json!({ "status": "shutting_down" }))).into_response()
}

async fn empty_name() -> Response {
    invalid(ConfigError {
        field: "name".to_owned(),
        message: "the service name must not be empty".to_owned(),
    })
}

async fn create(State(sim): State<Arc<Simulator>>, Path(name): Path<String>, body: Bytes) -> Response {
    if sim.mode == Mode::Single {
        return error(StatusCode::BAD_REQUEST, "single_mode_no_create");
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return invalid(ConfigError {
                field: "(body)".to_owned(),
                message: format!("is not valid JSON: {e}"),
            });
        }
    };
    // The API speaks camelCase, as the original; tem.toml's snake_case is accepted as well.
    let config = match Definition::from_json_any_case(&value, crate::KeyCase::Camel) {
        Ok(config) => config,
        Err(e) => return invalid(e),
    };
    let replaced = sim.put(&name, config);
    let body = json!({ "service": name, "status": "created", "replaced": replaced });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn delete(State(sim): State<Arc<Simulator>>, Path(name): Path<String>) -> Response {
    if sim.mode == Mode::Single {
        return error(StatusCode::BAD_REQUEST, "single_mode_no_create");
    }
    if sim.remove(&name) {
        (
            StatusCode::OK,
            axum::Json(json!({ "service": name, "status": "deleted" })),
        )
            .into_response()
    } else {
        error(StatusCode::NOT_FOUND, "service_not_found")
    }
}

async fn service_stats(State(sim): State<Arc<Simulator>>, Path(name): Path<String>) -> Response {
    match sim.service(&name) {
        Some(service) => axum::Json(service.stats()).into_response(),
        None => error(StatusCode::NOT_FOUND, "service_not_found"),
    }
}

async fn call_named(
    State(sim): State<Arc<Simulator>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    if sim.mode == Mode::Single {
        return error(StatusCode::BAD_REQUEST, "invalid_params");
    }
    match sim.resolve(&name) {
        Some((service, rest)) => service.call(rest, request).await,
        None => error(StatusCode::NOT_FOUND, "service_not_found"),
    }
}

async fn call_default(State(sim): State<Arc<Simulator>>, request: Request) -> Response {
    if sim.mode == Mode::Multi {
        return error(StatusCode::BAD_REQUEST, "invalid_params");
    }
    match sim.service(DEFAULT_SERVICE) {
        Some(service) => service.call("/", request).await,
        None => error(StatusCode::NOT_FOUND, "service_not_found"),
    }
}

/// `/mock` without a name: as `/mock/{name}` with an unknown one in multi mode.
async fn call_named_bare(State(sim): State<Arc<Simulator>>) -> Response {
    if sim.mode == Mode::Single {
        return error(StatusCode::BAD_REQUEST, "invalid_params");
    }
    error(StatusCode::NOT_FOUND, "service_not_found")
}

/// Any other path: single mode's generic service answers it, so a client's real paths
/// (`/v1/answer/{id}`) can be tried against it unchanged. The control routes' own prefix
/// (`/service/…`) never reaches the service.
async fn call_any_path(State(sim): State<Arc<Simulator>>, request: Request) -> Response {
    if sim.mode == Mode::Multi || request.uri().path().starts_with("/service/") {
        return not_found().await;
    }
    match sim.service(DEFAULT_SERVICE) {
        Some(service @ Backend::Generic(_)) => {
            let path = request.uri().path().to_owned();
            service.call(&path, request).await
        }
        _ => not_found().await,
    }
}

/// A provider route at the root: the single-mode service's, when it is a provider's.
async fn call_default_provider(State(sim): State<Arc<Simulator>>, request: Request) -> Response {
    if sim.mode == Mode::Multi {
        return not_found().await;
    }
    match sim.service(DEFAULT_SERVICE) {
        Some(Backend::Provider(service)) => {
            let path = request.uri().path().to_owned();
            service.call(&path, request).await
        }
        _ => not_found().await,
    }
}

async fn stats(State(sim): State<Arc<Simulator>>) -> Response {
    if sim.mode == Mode::Single {
        return match sim.service(DEFAULT_SERVICE) {
            Some(service) => axum::Json(service.stats()).into_response(),
            None => error(StatusCode::NOT_FOUND, "service_not_found"),
        };
    }
    let services = sim.services.read().unwrap_or_else(|e| e.into_inner());
    let all: HashMap<&str, _> = services
        .iter()
        .map(|(name, s)| (name.as_str(), s.stats()))
        .collect();
    axum::Json(all).into_response()
}
