//! Fault injection, for testing clients against a misbehaving server: errors, delays, dropped
//! connections, truncated or corrupted bodies — per path, for a number of requests, optionally
//! by method and with a probability. Available to library users directly, and over HTTP
//! (`POST|DELETE /_test/inject-error`) when test endpoints are enabled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;

/// What to do to requests for one path.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Answer with this status instead of serving the request.
    pub status: Option<u16>,
    /// How many matching requests it applies to (default 1).
    pub count: Option<u32>,
    /// `Retry-After` seconds on the injected error.
    pub retry_after: Option<u64>,
    /// Wait this long before acting (or serving).
    pub delay_ms: Option<u64>,
    /// Plus a random 0..=jitter ms.
    pub jitter_ms: Option<u64>,
    /// Cut the connection instead of answering.
    #[serde(default)]
    pub drop_connection: bool,
    /// Serve the request, but send only this many body bytes.
    pub truncate_body_bytes: Option<usize>,
    /// Serve the request, but flip about 3 % of the body's bits.
    #[serde(default)]
    pub corrupt_body: bool,
    /// Only for this method (e.g. `POST`).
    pub method: Option<String>,
    /// Chance (0..1) that a matching request is hit; only hits use up `count`.
    pub probability: Option<f64>,
}

impl Fault {
    fn check(&self) -> Result<(), String> {
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err("probability must be between 0 and 1".into());
        }
        if let Some(status) = self.status
            && !(100..=599).contains(&status)
        {
            return Err("status must be an HTTP status (100-599)".into());
        }
        if self.count == Some(0) {
            return Err("count must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    remaining: u32,
}

/// The faults armed on a server: at most one per path (a new one replaces the old).
#[derive(Debug, Default, Clone)]
pub struct Faults {
    armed: Arc<Mutex<HashMap<String, Armed>>>,
    /// Whether any fault is armed: requests skip the lock when none is (the usual case).
    any: Arc<AtomicBool>,
}

impl Faults {
    /// Arms `fault` for requests to `path`.
    pub fn inject(&self, path: &str, fault: Fault) -> Result<(), String> {
        fault.check()?;
        let remaining = fault.count.unwrap_or(1);
        let mut armed = self.lock();
        armed.insert(path.to_owned(), Armed { fault, remaining });
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        let mut armed = self.lock();
        armed.clear();
        self.any.store(false, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Armed>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fault that hits a request, if any (using up one of its count). Cheap when none is
    /// armed: one atomic load.
    pub fn take(&self, path: &str, method: &str) -> Option<Fault> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut armed = self.lock();
        let entry = armed.get_mut(path)?;
        if entry
            .fault
            .method
            .as_deref()
            .is_some_and(|m| !m.eq_ignore_ascii_case(method))
        {
            return None;
        }
        if let Some(p) = entry.fault.probability
            && !rand::rng().random_bool(p)
        {
            return None;
        }
        let fault = entry.fault.clone();
        entry.remaining -= 1;
        if entry.remaining == 0 {
            armed.remove(path);
            self.any.store(!armed.is_empty(), Ordering::Release);
        }
        Some(fault)
    }
}

/// Serves a request through `fault`: delay, then drop, an injected status, or the real answer
/// (`serve`) truncated or corrupted.
pub async fn around(fault: Fault, serve: impl Future<Output = Response>) -> Response {
    let delay = fault.delay_ms.unwrap_or(0) + fault.jitter_ms.map_or(0, |j| rand::rng().random_range(0..=j));
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if fault.drop_connection {
        // A body that fails makes hyper abort the connection: the client sees it cut.
        let failing =
            futures::stream::once(async { Err::<bytes::Bytes, _>(std::io::Error::other("injected drop")) });
        return Response::new(Body::from_stream(failing));
    }
    if let Some(status) = fault.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(serde_json::json!({ "error": "injected fault" }))).into_response();
        if let Some(secs) = fault.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }
    let response = serve.await;
    if fault.truncate_body_bytes.is_none() && !fault.corrupt_body {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut bytes = bytes.to_vec();
    if let Some(keep) = fault.truncate_body_bytes {
        bytes.truncate(keep);
    }
    if fault.corrupt_body {
        let mut rng = rand::rng();
        for byte in &mut bytes {
            for bit in 0..8 {
                if rng.random_bool(0.03) {
                    *byte ^= 1 << bit;
                }
            }
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// The HTTP API's request: a fault plus the path it applies to.
#[derive(Debug, serde::Deserialize)]
pub struct InjectRequest {
    path: String,
    #[serde(flatten)]
    fault: serde_json::Value,
}

/// `POST /_test/inject-error`.
pub async fn inject_endpoint(State(faults): State<Faults>, body: axum::body::Bytes) -> Response {
    let bad = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    };
    let request: InjectRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return bad(format!(
                "body: {error} (expected {{\"path\": \"/stream\", \"status\": 503, ...}})"
            ));
        }
    };
    let fault: Fault = match serde_json::from_value(request.fault) {
        Ok(fault) => fault,
        Err(error) => return bad(format!("fault: {error}")),
    };
    let mut response = match faults.inject(&request.path, fault) {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(message) => bad(message),
    };
    crate::headers::stamp(response.headers_mut());
    response
}

/// `DELETE /_test/inject-error`.
pub async fn clear_endpoint(State(faults): State<Faults>) -> Response {
    faults.clear();
    let mut response = Json(serde_json::json!({ "ok": true })).into_response();
    crate::headers::stamp(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_used_up_by_its_count_and_respects_its_method() {
        let faults = Faults::default();
        let fault = Fault {
            status: Some(503),
            count: Some(2),
            method: Some("POST".into()),
            ..Fault::default()
        };
        faults.inject("/s", fault).expect("valid");
        assert!(faults.take("/s", "GET").is_none());
        assert!(faults.take("/s", "POST").is_some());
        assert!(faults.take("/s", "post").is_some());
        assert!(faults.take("/s", "POST").is_none());
    }

    #[test]
    fn invalid_faults_are_refused() {
        let faults = Faults::default();
        let fault = Fault {
            probability: Some(2.0),
            ..Fault::default()
        };
        assert!(faults.inject("/s", fault).is_err());
    }
}
