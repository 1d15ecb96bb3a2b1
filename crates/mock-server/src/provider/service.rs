//! One LLM-shaped service: what happens to a request, in the providers' order.
//!
//! 1. The route (404 in the provider's shape), then the key when one is configured (401;
//!    Anthropic also wants `anthropic-version`).
//! 2. The body: JSON, each field checked (400 naming it); a model the service does not list
//!    (when it lists any) is 404.
//! 3. Concurrency: over `maxConcurrency` in flight is OpenAI 503 / Anthropic 529.
//! 4. The answer is drawn (seeded), so the request's whole cost is known; the limits take it
//!    or refuse it whole (429 saying which limit, with `retry-after`).
//! 5. The latency model paces the answer: all at once after the whole answer's time, or as
//!    server-sent events, token by token. Rate-limit headers ride on 200s and 429s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use tokio::time::Instant;

use super::ask::{Answer, Ask, Endpoint};
use super::config::{Provider, ProviderConfig};
use super::latency::Pace;
use super::problem::Problem;
use super::quota::{Gauges, Quota};
use super::{anthropic, headers, openai, sse, tokens};
use crate::stats::{ArrivalLog, Stats, StatusCounts, TokenStats};

/// The largest request body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A running LLM-shaped service.
#[derive(Debug)]
pub struct ProviderService {
    name: String,
    config: ProviderConfig,
    in_flight: Arc<AtomicU64>,
    statuses: StatusCounts,
    quota: Mutex<Quota>,
    arrivals: ArrivalLog,
}

/// A place among the requests in flight, given back when the answer is fully sent (or dropped).
struct Slot(Arc<AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProviderService {
    /// A service named `name`, its limits starting empty now.
    pub fn new(name: &str, config: ProviderConfig) -> Self {
        tokens::warm_up();
        ProviderService {
            name: name.to_owned(),
            quota: Mutex::new(Quota::new(&config)),
            config,
            in_flight: Arc::new(AtomicU64::new(0)),
            statuses: StatusCounts::new(),
            arrivals: ArrivalLog::new(Instant::now()),
        }
    }

    /// When each request arrived (offsets from the service's creation), refused ones included.
    pub fn arrivals(&self) -> Vec<std::time::Duration> {
        self.arrivals.snapshot()
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// What the service saw.
    pub fn stats(&self) -> Stats {
        let (requests, by_status) = self.statuses.snapshot();
        let quota = self.lock();
        let (max_accepted_in_window, peak_concurrency) = quota.accepted();
        let (input, output) = quota.tokens();
        Stats {
            service: self.name.clone(),
            requests,
            by_status,
            peak_concurrency,
            max_accepted_in_window,
            window_ms: self.config.window_ms,
            limit: self.config.limits.rpm.unwrap_or(0),
            max_spent_in_budget_window: None,
            tokens: Some(TokenStats {
                input,
                output,
                limits: quota.peaks(),
            }),
        }
    }

    /// Answers `request`, whose path below the service's prefix is `path` (`/v1/…`).
    pub async fn call(&self, path: &str, request: Request) -> Response {
        self.arrivals.arrived(Instant::now());
        let (parts, body) = request.into_parts();
        let method = parts.method.as_str();
        let endpoint = match self.config.provider {
            Provider::Openai => openai::route(method, path),
            Provider::Anthropic => anthropic::route(method, path),
        };
        let Some(endpoint) = endpoint else {
            return self.problem(
                &Problem::NoRoute {
                    method: method.to_owned(),
                    path: path.to_owned(),
                },
                None,
            );
        };
        if let Err(problem) = self.authorize(&parts.headers) {
            return self.problem(&problem, None);
        }
        if endpoint == Endpoint::Models {
            let body = match self.config.provider {
                Provider::Openai => openai::models(self.model_names()),
                Provider::Anthropic => anthropic::models(self.model_names()),
            };
            return self.json(StatusCode::OK, HeaderMap::new(), body);
        }
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(body) => body,
            Err(e) => return self.problem(&Problem::Json(format!("the body could not be read: {e}")), None),
        };
        let ask = match self.config.provider {
            Provider::Openai => openai::parse(endpoint, &body, self.config.default_max_tokens),
            Provider::Anthropic => anthropic::parse(endpoint, &body),
        };
        let ask = match ask {
            Ok(ask) => ask,
            Err(problem) => return self.problem(&problem, None),
        };
        if !self.config.models.is_empty() && !self.config.models.contains_key(&ask.model) {
            return self.problem(&Problem::NoModel(ask.model.clone()), None);
        }
        if endpoint == Endpoint::CountTokens {
            return self.json(StatusCode::OK, HeaderMap::new(), anthropic::count_tokens(&ask));
        }

        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = Slot(self.in_flight.clone());
        if self.config.max_concurrency.is_some_and(|cap| in_flight > cap) {
            return self.problem(&Problem::Overloaded, None);
        }
        let answer = Answer::draw(&ask, self.config.seed);
        let (verdict, gauges) = self
            .lock()
            .admit(Instant::now(), &ask.model, &answer.cost(&ask), in_flight);
        if let Err(refusal) = verdict {
            return self.problem(&Problem::Limited(refusal), Some(&gauges));
        }
        self.respond(&ask, &answer, &gauges, slot).await
    }

    async fn respond(&self, ask: &Ask, answer: &Answer, gauges: &Gauges, slot: Slot) -> Response {
        let pace = Pace::draw(&self.config.latency);
        let id = random_id();
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut headers = HeaderMap::with_capacity(12);
        self.rate_headers(&mut headers, gauges);
        if ask.stream {
            let events = match self.config.provider {
                Provider::Openai => openai::stream(ask, answer, &id, created, &pace),
                Provider::Anthropic => anthropic::stream(ask, answer, &id, &pace),
            };
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            self.request_id(&mut headers);
            self.statuses.count(200);
            return (StatusCode::OK, headers, sse::body(events, slot)).into_response();
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace.total(answer.tokens())).await;
        }
        drop(slot);
        let json = match self.config.provider {
            Provider::Openai => openai::answer(ask, answer, &id, created, self.config.seed),
            Provider::Anthropic => anthropic::answer(ask, answer, &id),
        };
        self.json(StatusCode::OK, headers, json)
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let Some(expected) = &self.config.api_key else {
            return Ok(());
        };
        let given = match self.config.provider {
            Provider::Openai => openai::key(headers),
            Provider::Anthropic => anthropic::key(headers),
        };
        if given != Some(expected.as_str()) {
            return Err(Problem::Unauthorized {
                given: given.map(str::to_owned),
            });
        }
        if self.config.provider == Provider::Anthropic && !anthropic::has_version(headers) {
            return Err(Problem::NoVersion);
        }
        Ok(())
    }

    fn model_names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        if !self.config.models.is_empty() {
            return Box::new(self.config.models.keys().map(String::as_str));
        }
        match self.config.provider {
            Provider::Openai => Box::new(openai::DEFAULT_MODELS.iter().copied()),
            Provider::Anthropic => Box::new(anthropic::DEFAULT_MODELS.iter().copied()),
        }
    }

    fn rate_headers(&self, headers: &mut HeaderMap, gauges: &Gauges) {
        if !self.config.rate_limit_headers {
            return;
        }
        match self.config.provider {
            Provider::Openai => headers::openai(headers, gauges),
            Provider::Anthropic => headers::anthropic(headers, gauges, SystemTime::now()),
        }
    }

    /// The provider's error answer for `problem`, with the gauges' headers when it has them.
    fn problem(&self, problem: &Problem, gauges: Option<&Gauges>) -> Response {
        let (status, body) = match self.config.provider {
            Provider::Openai => openai::render(problem),
            Provider::Anthropic => anthropic::render(problem),
        };
        let mut headers = HeaderMap::new();
        if let Some(gauges) = gauges {
            self.rate_headers(&mut headers, gauges);
        }
        if let Problem::Limited(_) = problem {
            match problem.retry_after() {
                Some(wait) => {
                    headers::retry_after(&mut headers, wait, self.config.provider == Provider::Openai)
                }
                // It can never fit: retrying cannot help.
                None => {
                    headers.insert("x-should-retry", HeaderValue::from_static("false"));
                }
            }
        }
        self.json(status, headers, body)
    }

    fn json(&self, status: StatusCode, mut headers: HeaderMap, body: String) -> Response {
        self.statuses.count(status.as_u16());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.request_id(&mut headers);
        (status, headers, Body::from(body)).into_response()
    }

    fn request_id(&self, headers: &mut HeaderMap) {
        let name = match self.config.provider {
            Provider::Openai => "x-request-id",
            Provider::Anthropic => "request-id",
        };
        if let Ok(id) = HeaderValue::try_from(format!("req_{}", random_id())) {
            headers.insert(name, id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Quota> {
        self.quota.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// 24 random letters and digits, as the providers' ids carry.
fn random_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
