//! One simulated API: what happens to a request, in the original's order.
//!
//! 1. A random error (`errorSimulation.rate`), answered with its configured status (the
//!    original always sent 500); it takes no slot and no quota.
//! 2. Concurrency: a request beyond `maxConcurrency` in flight gets 503.
//! 3. Rate (and budget): a request over the quota gets 429, with `Retry-After` and
//!    `X-RateLimit-*`; nothing is taken from the quota for it.
//! 4. Latency, uniform in `delayMs`; then 200 with the original's body (or, with `echo`, the
//!    request as JSON).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::config::ServiceConfig;
use crate::echo::echo;
use crate::limit::{Decision, Limiter, SlidingWindow, limiter};
use crate::stats::{ArrivalLog, Recorder, Stats, StatusCounts};

/// A running simulated service.
#[derive(Debug)]
pub struct Service {
    name: String,
    config: ServiceConfig,
    in_flight: AtomicU64,
    statuses: StatusCounts,
    arrivals: ArrivalLog,
    quota: Mutex<Quota>,
}

#[derive(Debug)]
struct Quota {
    rate: Box<dyn Limiter>,
    budget: Option<SlidingWindow>,
    recorder: Recorder,
}

/// Leaves the concurrency count when the request ends, however it ends (a client that hangs up
/// mid-delay included).
struct Slot<'a>(&'a AtomicU64);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service {
    /// A service named `name` with `config`, its quota starting full now.
    pub fn new(name: &str, config: ServiceConfig) -> Self {
        let now = Instant::now();
        let window = Duration::from_millis(config.rate_limit.window_ms);
        let budget_window = config.budget.as_ref().map(|b| Duration::from_millis(b.window_ms));
        Service {
            name: name.to_owned(),
            quota: Mutex::new(Quota {
                rate: limiter(&config.rate_limit, now),
                budget: config
                    .budget
                    .as_ref()
                    .map(|b| SlidingWindow::new(b.limit, Duration::from_millis(b.window_ms))),
                recorder: Recorder::new(name, config.rate_limit.limit, window, budget_window),
            }),
            config,
            in_flight: AtomicU64::new(0),
            statuses: StatusCounts::new(),
            arrivals: ArrivalLog::new(now),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// What the service has seen so far.
    pub fn stats(&self) -> Stats {
        self.lock().recorder.snapshot(&self.statuses)
    }

    /// When each request arrived (offsets from the service's creation), refused ones included;
    /// the first million.
    pub fn arrivals(&self) -> Vec<Duration> {
        self.arrivals.snapshot()
    }

    /// Answers one request. The body is read only when the budget takes its cost from it, or
    /// the service echoes it.
    pub async fn call(&self, request: axum::extract::Request) -> Response {
        self.arrivals.arrived(Instant::now());
        let (parts, body) = request.into_parts();
        let wanted = self.config.echo
            || self
                .config
                .budget
                .as_ref()
                .is_some_and(|b| b.cost_field.is_some());
        let body = if wanted {
            axum::body::to_bytes(body, MAX_BODY).await.unwrap_or_default()
        } else {
            Bytes::new()
        };
        self.answer_request(&parts, &body).await
    }

    async fn answer_request(&self, parts: &Parts, body: &Bytes) -> Response {
        let headers = &parts.headers;
        let started_ms = epoch_ms();
        let started = Instant::now();

        if let Some(error) = &self.config.error_simulation
            && error.rate > 0.0
            && rand::rng().random::<f64>() < error.rate
        {
            let status = StatusCode::from_u16(error.status_code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return self.answer(status, json!({ "error": error.error_message }), HeaderMap::new());
        }

        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _slot = Slot(&self.in_flight);
        if in_flight > self.config.max_concurrency {
            return self.answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "concurrency_limit_exceeded" }),
                HeaderMap::new(),
            );
        }

        let cost = self.cost(headers, body);
        let decision = {
            let mut quota = self.lock();
            let now = Instant::now();
            let mut decision = quota.rate.try_acquire(now, 1);
            if decision.allowed
                && let Some(budget) = &mut quota.budget
            {
                let spent = budget.try_acquire(now, cost);
                if !spent.allowed {
                    quota.rate.refund(1);
                    decision = spent;
                }
            }
            if decision.allowed {
                quota.recorder.accepted(now, in_flight, cost);
            }
            decision
        };
        if !decision.allowed {
            let mut extra = HeaderMap::new();
            if self.config.headers.retry_after {
                extra.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(decision.retry_after)));
            }
            if self.config.headers.rate_limit_on_429 {
                self.rate_headers(&mut extra, &decision);
            }
            let body = json!({
                "error": "rate_limit_exceeded",
                "retryAfterMs": u64::try_from(decision.retry_after.as_millis()).unwrap_or(u64::MAX),
            });
            return self.answer(StatusCode::TOO_MANY_REQUESTS, body, extra);
        }

        let [min, max] = self.config.delay_ms;
        if max > 0 {
            let delay = if max > min {
                rand::rng().random_range(min..=max)
            } else {
                min
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.config.headers.rate_limit_on_success {
            self.rate_headers(&mut headers, &decision);
        }
        if self.config.echo {
            self.statuses.count(200);
            return (StatusCode::OK, headers, axum::Json(echo(parts, body))).into_response();
        }
        // The original's success body, written directly: it is the hot path of every benchmark.
        let body = format!(
            r#"{{"requestId":"{}","meta":{{"ts":{started_ms},"rt":{}}},"data":"ok"}}"#,
            request_id(started_ms),
            started.elapsed().as_millis()
        );
        self.statuses.count(200);
        (StatusCode::OK, headers, body).into_response()
    }

    fn rate_headers(&self, headers: &mut HeaderMap, decision: &Decision) {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.config.rate_limit.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(ceil_secs(decision.reset)));
        // The IETF draft's policy states the window too, which X-RateLimit-* never does.
        let window_ms = self.config.rate_limit.window_ms;
        if window_ms.is_multiple_of(1000)
            && let Ok(policy) = HeaderValue::from_str(&format!(
                "{};w={}",
                self.config.rate_limit.limit,
                window_ms / 1000
            ))
        {
            headers.insert(RATELIMIT_POLICY, policy);
        }
    }

    fn answer(&self, status: StatusCode, body: serde_json::Value, headers: HeaderMap) -> Response {
        self.statuses.count(status.as_u16());
        (status, headers, axum::Json(body)).into_response()
    }

    /// The request's cost against the budget: its cost header, else its JSON body field, else 1.
    fn cost(&self, headers: &HeaderMap, body: &Bytes) -> u64 {
        let Some(budget) = &self.config.budget else {
            return 1;
        };
        if let Some(name) = &budget.cost_header
            && let Some(cost) = headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        {
            return cost;
        }
        if let Some(field) = &budget.cost_field
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(cost) = json.get(field).and_then(serde_json::Value::as_u64)
        {
            return cost;
        }
        1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Quota> {
        self.quota.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Largest request body read for a budget cost field or an echo.
const MAX_BODY: usize = 1024 * 1024;

/// The service's shared handle.
pub type SharedService = Arc<Service>;

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Whole seconds, rounded up: a client that waits this long will fit.
fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The original's request id: the start time and six random characters, both base 36.
fn request_id(started_ms: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut time = Vec::new();
    let mut n = started_ms;
    loop {
        time.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    time.reverse();
    let mut rng = rand::rng();
    let tail: String = (0..6).map(|_| DIGITS[rng.random_range(0..36)] as char).collect();
    format!("{}-{tail}", String::from_utf8_lossy(&time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_the_originals() {
        let id = request_id(1_700_000_000_000);
        let (time, tail) = id.split_once('-').unwrap();
        assert_eq!(u64::from_str_radix(time, 36).unwrap(), 1_700_000_000_000);
        assert_eq!(tail.len(), 6);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
