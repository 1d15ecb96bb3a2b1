//! Typed task outcomes, and [`classify`]: what an HTTP response means for the task that made it.
//!
//! Outcomes are decided by type, never by searching error messages for "429" or "rate limit".

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// Why an attempt did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A transient failure (5xx other than 502/503/504, 408, a network error): try again later.
    Retryable,
    /// Trying again cannot help (bad request, auth, not found, a corrupt payload).
    NonRetryable,
    /// The remote API said "too many requests" (429); its Retry-After, if any, is honoured.
    RateLimited,
    /// The remote API is overloaded (502, 503, 504); retried with backoff.
    Overloaded,
    /// The attempt ran past its timeout and was cancelled.
    Timeout,
}

impl ErrorKind {
    /// Whether another attempt may succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorKind::NonRetryable)
    }

    /// The name used in the attempt history.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::NonRetryable => "non_retryable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error a task handler returns: a kind that drives retries, and what to tell the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    /// What kind of failure this is; decides whether and when the task is retried.
    pub kind: ErrorKind,
    /// A human-readable explanation, stored in the attempt history.
    pub message: String,
    /// The HTTP status of the response that caused it, if any.
    pub http_status: Option<u16>,
    /// How long the remote API asked us to wait; overrides the backoff and pauses the limit key.
    pub retry_after: Option<Duration>,
}

impl TaskError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            message: message.into(),
            http_status: None,
            retry_after: None,
        }
    }

    /// A transient failure: the task is retried after a backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable, message)
    }

    /// A permanent failure: the task fails now, whatever attempts it has left.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NonRetryable, message)
    }

    /// The remote API rate-limited us, optionally saying how long to wait.
    pub fn rate_limited(retry_after: Option<Duration>) -> Self {
        TaskError {
            retry_after,
            ..Self::new(ErrorKind::RateLimited, "rate limited")
        }
    }

    /// The remote API is overloaded, optionally saying how long to wait.
    pub fn overloaded(retry_after: Option<Duration>) -> Self {
        TaskError {
            retry_after,
            ..Self::new(ErrorKind::Overloaded, "overloaded")
        }
    }

    /// The error an HTTP response stands for, or `None` when it is a success.
    pub fn from_response(
        status: StatusCode,
        headers: &HeaderMap,
        message: impl Into<String>,
    ) -> Option<Self> {
        let kind = match classify(status, headers) {
            Verdict::Success => return None,
            Verdict::Retryable => ErrorKind::Retryable,
            Verdict::NonRetryable => ErrorKind::NonRetryable,
            Verdict::RateLimited { .. } => ErrorKind::RateLimited,
            Verdict::Overloaded { .. } => ErrorKind::Overloaded,
        };
        Some(TaskError {
            kind,
            message: message.into(),
            http_status: Some(status.as_u16()),
            retry_after: retry_after(headers),
        })
    }

    /// Sets the HTTP status this error came from.
    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// Sets how long the remote API asked us to wait.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.http_status {
            Some(status) => write!(f, "{} (HTTP {status}): {}", self.kind, self.message),
            None => write!(f, "{}: {}", self.kind, self.message),
        }
    }
}

impl std::error::Error for TaskError {}

/// What an HTTP response means for the task that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 1xx, 2xx and 3xx.
    Success,
    /// 408, 5xx other than 502/503/504.
    Retryable,
    /// 4xx other than 408 and 429.
    NonRetryable,
    /// 429, with the wait the API asked for.
    RateLimited { retry_after: Option<Duration> },
    /// 502, 503 and 504, with the wait the API asked for.
    Overloaded { retry_after: Option<Duration> },
}

/// Maps an HTTP status and headers to a [`Verdict`].
pub fn classify(status: StatusCode, headers: &HeaderMap) -> Verdict {
    match status.as_u16() {
        429 => Verdict::RateLimited {
            retry_after: retry_after(headers),
        },
        502..=504 => Verdict::Overloaded {
            retry_after: retry_after(headers),
        },
        408 => Verdict::Retryable,
        400..=499 => Verdict::NonRetryable,
        500..=599 => Verdict::Retryable,
        _ => Verdict::Success,
    }
}

/// How long a response asks the client to wait: `Retry-After` (seconds or an HTTP date), else
/// `RateLimit-Reset` / `X-RateLimit-Reset` when the remaining quota is zero.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(value) = header_str(headers, "retry-after") {
        if let Ok(secs) = value.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default(),
            );
        }
    }
    let exhausted = ["ratelimit-remaining", "x-ratelimit-remaining"]
        .iter()
        .filter_map(|name| header_str(headers, name))
        .any(|v| v.parse::<f64>().is_ok_and(|n| n <= 0.0));
    if exhausted {
        for name in ["ratelimit-reset", "x-ratelimit-reset"] {
            if let Some(wait) = header_str(headers, name).and_then(reset_to_wait) {
                return Some(wait);
            }
        }
    }
    None
}

/// A reset header is either seconds to wait (small numbers) or an epoch time in seconds or ms.
fn reset_to_wait(value: &str) -> Option<Duration> {
    let n: f64 = value.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let secs = if n > 1e12 {
        n / 1000.0 - now
    } else if n > 1e9 {
        n - now
    } else {
        n
    };
    Some(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn statuses_map_to_verdicts() {
        let none = HeaderMap::new();
        let cases = [
            (200, Verdict::Success),
            (204, Verdict::Success),
            (400, Verdict::NonRetryable),
            (401, Verdict::NonRetryable),
            (404, Verdict::NonRetryable),
            (408, Verdict::Retryable),
            (429, Verdict::RateLimited { retry_after: None }),
            (500, Verdict::Retryable),
            (502, Verdict::Overloaded { retry_after: None }),
            (503, Verdict::Overloaded { retry_after: None }),
            (504, Verdict::Overloaded { retry_after: None }),
            (599, Verdict::Retryable),
        ];
        for (status, want) in cases {
            assert_eq!(
                classify(StatusCode::from_u16(status).unwrap(), &none),
                want,
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h),
            Verdict::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let h = headers(&[("retry-after", &httpdate::fmt_http_date(later))]);
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }

    #[test]
    fn reset_headers_count_only_when_quota_is_exhausted() {
        let h = headers(&[("x-ratelimit-remaining", "3"), ("x-ratelimit-reset", "5")]);
        assert_eq!(retry_after(&h), None);
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "5")]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        let h = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "2")]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn garbage_retry_after_is_ignored() {
        let h = headers(&[("retry-after", "soon")]);
        assert_eq!(retry_after(&h), None);
        let h = headers(&[("retry-after", "-3")]);
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_from_response_keeps_status_and_wait() {
        let h = headers(&[("retry-after", "2")]);
        let e = TaskError::from_response(StatusCode::SERVICE_UNAVAILABLE, &h, "busy").unwrap();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert_eq!(e.http_status, Some(503));
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        assert!(TaskError::from_response(StatusCode::OK, &h, "fine").is_none());
    }
}
