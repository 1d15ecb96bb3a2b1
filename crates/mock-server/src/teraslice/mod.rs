//! A mock of the Teraslice cluster REST API (the endpoints ts-topy reads), following real
//! Teraslice where ts-topy's own mock deviates: UTC `…Z` timestamps, dashed UUIDs, 404
//! `{"error":404,"message":…}` for an unknown job or execution, `?status=` filtering,
//! controllers only for the running group, `_slicer_stats` kept for terminal executions,
//! counters that only grow, and statuses computed from elapsed time. Reproducible with a seed;
//! time can be driven by a [`ManualClock`] in tests.
//!
//! Routes (also served without the `/v1` prefix, as Teraslice does): `GET /v1`,
//! `GET /v1/cluster/state`, `GET /v1/cluster/controllers` (alias `/v1/cluster/slicers`),
//! `GET /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/ex`, `GET /v1/ex/{id}`,
//! `POST /v1/data/refresh` (mock-only); serving alone, also `GET /` and `POST /shutdown`.

mod generate;
mod lifecycle;
mod model;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use lifecycle::{ExStatus, Millis, Timing};

use generate::World;

/// The Teraslice version the mock claims to be.
pub const TERASLICE_VERSION: &str = "3.18.0";

/// Where the mock's "now" comes from.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Millis + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", (self.0)())
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        }))
    }

    /// A clock a test moves by hand, starting at `start` (ms since the epoch).
    pub fn manual(start: Millis) -> (Clock, ManualClock) {
        let now = Arc::new(AtomicI64::new(start));
        let reader = now.clone();
        (
            Clock(Arc::new(move || reader.load(Ordering::SeqCst))),
            ManualClock(now),
        )
    }

    fn now(&self) -> Millis {
        (self.0)()
    }
}

/// The hand that moves a [`Clock::manual`].
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
            Ordering::SeqCst,
        );
    }

    /// The clock's reading.
    pub fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// How the Teraslice mock draws and runs its cluster.
#[derive(Clone, Debug)]
pub struct TerasliceOptions {
    /// The RNG seed (random when `None`); the same seed gives the same cluster.
    pub seed: Option<u64>,
    pub clock: Clock,
    /// How long the timed status steps take.
    pub timing: Timing,
}

impl Default for TerasliceOptions {
    fn default() -> Self {
        TerasliceOptions {
            seed: None,
            clock: Clock::system(),
            timing: Timing::default(),
        }
    }
}

#[derive(Debug)]
struct Mock {
    world: Mutex<World>,
    clock: Clock,
    seed: u64,
    refreshes: AtomicU64,
}

impl Mock {
    /// The world advanced to now, and now.
    fn world(&self) -> (std::sync::MutexGuard<'_, World>, Millis) {
        let now = self.clock.now();
        let mut world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        world.advance(now);
        (world, now)
    }
}

/// The mock's routes, under `/v1` and at the root; `GET /` too when it serves alone.
pub(crate) fn router(options: TerasliceOptions, serve_root: bool, shutdown: CancellationToken) -> Router {
    let seed = options.seed.unwrap_or_else(rand::random);
    let now = options.clock.now();
    tracing::info!(seed, "teraslice mock: cluster generated");
    let mock = Arc::new(Mock {
        world: Mutex::new(World::generate(seed, now, options.timing)),
        clock: options.clock,
        seed,
        refreshes: AtomicU64::new(0),
    });
    let api = Router::new()
        .route("/cluster/state", get(cluster_state))
        .route("/cluster/controllers", get(controllers))
        .route("/cluster/slicers", get(controllers))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/ex", get(executions))
        .route("/ex/{id}", get(execution))
        .route("/data/refresh", post(refresh))
        .with_state(mock);
    let mut router = Router::new()
        .route("/v1", get(info))
        .nest("/v1", api.clone())
        .merge(api);
    if serve_root {
        // Serving alone, it also owns the root and the graceful stop.
        router = router
            .route(
                "/",
                get(|| async {
                    axum::Json(json!({ "message": "Mock Teraslice API Server", "version": "1.0.0" }))
                }),
            )
            .route(
                "/shutdown",
                post(move || async move {
                    shutdown.cancel();
                    axum::Json(json!({ "status": "shutting_down" }))
                }),
            );
    }
    router
}

/// Real Teraslice's error body.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "error": status.as_u16(), "message": message.into() });
    (status, axum::Json(body)).into_response()
}

async fn info() -> Response {
    axum::Json(json!({
        "arch": std::env::consts::ARCH,
        "clustering_type": "native",
        "name": "tem-teraslice-mock",
        "node_version": "v22.14.0",
        "platform": std::env::consts::OS,
        "teraslice_version": TERASLICE_VERSION,
    }))
    .into_response()
}

async fn cluster_state(State(mock): State<Arc<Mock>>) -> Response {
    let (world, now) = mock.world();
    axum::Json(model::cluster_state(&world, now)).into_response()
}

async fn controllers(State(mock): State<Arc<Mock>>) -> Response {
    let (world, now) = mock.world();
    let mut list: Vec<Value> = world
        .executions
        .iter()
        .filter(|ex| ex.status_at(now, &world.timing).is_running_group())
        .map(|ex| model::controller(&world, ex, now))
        .collect();
    // Teraslice's order: name, then started, descending.
    list.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["name"].as_str().unwrap_or("").to_owned(),
                v["started"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(b).cmp(&key(a))
    });
    axum::Json(list).into_response()
}

/// `size`, `from` and `sort`, checked as Teraslice's search layer does.
struct Page {
    from: usize,
    size: usize,
    sort_field: String,
    descending: bool,
}

/// A bad query parameter, answered 422 with this message.
fn page(query: &HashMap<String, String>) -> Result<Page, String> {
    const WINDOW: usize = 10_000;
    let integer = |name: &str, default: usize| -> Result<usize, String> {
        match query.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{name} must be a non-negative integer, got `{raw}`")),
        }
    };
    let size = integer("size", 100)?;
    let from = integer("from", 0)?;
    if !(1..=WINDOW).contains(&size) {
        return Err(format!("size must be from 1 to {WINDOW}, got {size}"));
    }
    if from + size > WINDOW {
        return Err(format!(
            "from + size must not exceed {WINDOW} (the result window), got {}",
            from + size
        ));
    }
    let sort = query.get("sort").map_or("_updated:desc", String::as_str);
    let (field, direction) = sort.split_once(':').unwrap_or((sort, "desc"));
    if !matches!(field, "_updated" | "_created" | "name") || !matches!(direction, "asc" | "desc") {
        return Err(format!(
            "sort must be FIELD:asc|desc with FIELD one of _updated, _created, name; got `{sort}`"
        ));
    }
    Ok(Page {
        from,
        size,
        sort_field: field.to_owned(),
        descending: direction == "desc",
    })
}

fn paged(mut items: Vec<Value>, page: &Page, id_field: &str) -> Response {
    items.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v[&page.sort_field].as_str().unwrap_or("").to_owned(),
                v[id_field].as_str().unwrap_or("").to_owned(),
            )
        };
        let ordering = key(a).cmp(&key(b));
        if page.descending {
            ordering.reverse()
        } else {
            ordering
        }
    });
    let items: Vec<Value> = items.into_iter().skip(page.from).take(page.size).collect();
    axum::Json(items).into_response()
}

async fn jobs(State(mock): State<Arc<Mock>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let page = match page(&query) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, message),
    };
    let active = match query.get("active").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("active must be true or false, got `{other}`"),
            );
        }
    };
    match query.get("deleted").map(String::as_str) {
        None | Some("false") => {}
        // The mock deletes no jobs.
        Some("true") => return axum::Json(Vec::<Value>::new()).into_response(),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("deleted must be true or false, got `{other}`"),
            );
        }
    }
    let (world, _) = mock.world();
    let items = world
        .jobs
        .iter()
        .filter(|job| active.is_none_or(|a| job.active == a))
        .map(model::job)
        .collect();
    paged(items, &page, "job_id")
}

async fn job(State(mock): State<Arc<Mock>>, Path(id): Path<String>) -> Response {
    let (world, _) = mock.world();
    match world.jobs.iter().find(|job| job.job_id == id) {
        Some(job) => axum::Json(model::job(job)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("job {id} not found")),
    }
}

async fn executions(State(mock): State<Arc<Mock>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let page = match page(&query) {
        Ok(page) => page,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, message),
    };
    let mut wanted = Vec::new();
    for status in query.get("status").map(String::as_str).unwrap_or("").split(',') {
        let status = status.trim();
        if status.is_empty() {
            continue;
        }
        match ExStatus::parse(status) {
            Some(status) => wanted.push(status),
            None => {
                let known: Vec<&str> = ExStatus::ALL.iter().map(|s| s.as_str()).collect();
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown status `{status}`; expected one of {}", known.join(", ")),
                );
            }
        }
    }
    let (world, now) = mock.world();
    let items = world
        .executions
        .iter()
        .filter(|ex| wanted.is_empty() || wanted.contains(&ex.status_at(now, &world.timing)))
        .map(|ex| model::execution(&world, ex, now))
        .collect();
    paged(items, &page, "ex_id")
}

async fn execution(State(mock): State<Arc<Mock>>, Path(id): Path<String>) -> Response {
    let (world, now) = mock.world();
    match world.executions.iter().find(|ex| ex.ex_id == id) {
        Some(ex) => axum::Json(model::execution(&world, ex, now)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("execution context {id} not found")),
    }
}

async fn refresh(State(mock): State<Arc<Mock>>) -> Response {
    let refreshes = mock.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
    let now = mock.clock.now();
    // Refreshes are reproducible too: the n-th refresh of a seed always draws the same world.
    let seed = mock
        .seed
        .wrapping_add(refreshes.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut world = mock.world.lock().unwrap_or_else(|e| e.into_inner());
    let timing = world.timing;
    *world = World::generate(seed, now, timing);
    let controllers = world
        .executions
        .iter()
        .filter(|ex| ex.status_at(now, &world.timing).is_running_group())
        .count();
    axum::Json(json!({
        "message": "All data refreshed",
        "counts": {
            "nodes": world.nodes.len(),
            "controllers": controllers,
            "jobs": world.jobs.len(),
            "execution_contexts": world.executions.len(),
        }
    }))
    .into_response()
}
