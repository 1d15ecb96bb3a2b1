//! Detecting a remote API's concurrency and rate limits, cheaply and honestly.
//!
//! 1. **Ask.** A first request; if the API states its rate limit (`RateLimit-Policy`,
//!    `X-RateLimit-Limit` with a window), that is the answer. A 4xx other than 429 or a refused
//!    connection stops everything with an error: limits cannot be learned from failures.
//! 2. **Concurrency** ([`concurrency`]): bursts of simultaneous requests, doubling until one
//!    overflows (502/503/504); the overflow's count names the cap, one burst of that size checks
//!    it. 429s belong to the rate limit and end this search.
//! 3. **Rate** ([`rate`]), unless stated: pacing at doubling rates until 429s start, then
//!    counting what gets through above the limit, timed from response arrivals.
//!
//! Every request counts against a hard budget (`max_requests`) and the whole run against a time
//! budget; what could not be measured within them is reported as a lower bound, never guessed.

mod concurrency;
mod probe;
mod rate;
mod stated;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use serde::Serialize;

pub use concurrency::ConcurrencyFinding;
pub use rate::RateFinding;
pub use stated::{StatedRate, stated_quota, stated_rate};

/// What to probe, and how much it may cost.
#[derive(Clone, Debug)]
pub struct DetectOptions {
    pub url: String,
    pub method: Method,
    pub headers: HeaderMap,
    /// JSON body sent with every request.
    pub body: Option<Vec<u8>>,
    /// Hard cap on requests sent.
    pub max_requests: u32,
    /// Hard cap on the run's duration.
    pub max_duration: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// The largest burst tried.
    pub max_concurrency: u32,
    /// Fraction of a detected limit recommended for use (e.g. 0.9).
    pub safety: f64,
}

impl DetectOptions {
    /// Defaults: GET, 300 requests, 60 s, 30 s per request, bursts up to 128, 90 % margin.
    pub fn new(url: impl Into<String>) -> Self {
        DetectOptions {
            url: url.into(),
            method: Method::GET,
            headers: HeaderMap::new(),
            body: None,
            max_requests: 300,
            max_duration: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_concurrency: 128,
            safety: 0.9,
        }
    }

    /// The most requests a run can cost, and what it typically costs, for the prompt shown
    /// before starting.
    pub fn cost_estimate(&self) -> String {
        format!(
            "at most {} requests and {} s (usually far fewer when the API states its limits)",
            self.max_requests,
            self.max_duration.as_secs()
        )
    }
}

/// How a limit is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Stated by the API's headers.
    Stated,
    /// Observed from both sides (passes at the value, fails just above).
    Exact,
    /// Between two observed values.
    Bracketed,
    /// Never reached: only a lower bound is known.
    AtLeast,
}

/// How far to trust a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Finding {
    fn confidence(self) -> Confidence {
        match self {
            Finding::Stated | Finding::Exact => Confidence::High,
            Finding::Bracketed => Confidence::Medium,
            Finding::AtLeast => Confidence::Low,
        }
    }
}

/// A detected concurrency limit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConcurrencyLimit {
    /// The most requests at once the API was seen to serve.
    pub detected: u32,
    /// What to use: `detected` × the safety margin (at least 1).
    pub safe: u32,
    pub finding: Finding,
}

/// A detected rate limit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RateLimit {
    /// Requests per `window_ms` the API allows — or, when `finding` is `at_least`, that it was
    /// seen to let through within `window_ms` without refusing any (a lower bound for that span,
    /// not a sustained rate).
    pub requests: u64,
    pub window_ms: u64,
    /// What to use per `window_ms`: `requests` × the safety margin (at least 1).
    pub safe_requests: u64,
    pub finding: Finding,
}

/// What detection found, and why it believes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectedLimits {
    pub concurrency: Option<ConcurrencyLimit>,
    pub rate_limit: Option<RateLimit>,
    /// High only when every limit was stated or observed from both sides.
    pub confidence: Confidence,
    pub requests_used: u32,
    pub elapsed_ms: u64,
    /// The safety margin applied to the `safe` values.
    pub safety: f64,
    /// What was observed, in order.
    pub evidence: Vec<String>,
}

/// Why detection stopped without a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// The endpoint refused the requests themselves (auth, not found, bad request).
    #[error(
        "the endpoint answered {status}: fix the request (URL, method, headers, body) before detecting limits; body: {body}"
    )]
    Refused { status: u16, body: String },
    /// Nothing answered, or a request timed out.
    #[error("the endpoint could not be reached: {0}")]
    Unreachable(String),
    /// Only errors came back (5xx), so nothing can be said about limits.
    #[error("the endpoint answered only errors ({0}); it is failing, not limiting")]
    Failing(String),
    /// The request budget is spent (internal: searches turn this into a partial result).
    #[error("the request budget is spent")]
    BudgetSpent,
    /// The HTTP client could not be built or a probe task failed.
    #[error("HTTP client error: {0}")]
    Client(String),
}

/// A callback that hears each piece of evidence as it is found (for a progress line).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// The evidence gathered so far, passed on to a progress callback as it grows.
pub struct Log {
    lines: Vec<String>,
    progress: Option<Progress>,
}

impl Log {
    fn push(&mut self, line: String) {
        if let Some(progress) = &self.progress {
            progress(&line);
        }
        self.lines.push(line);
    }
}

/// Probes `options.url` and reports its limits.
pub async fn detect(options: &DetectOptions) -> Result<DetectedLimits, DetectError> {
    detect_with_progress(options, None).await
}

/// [`detect`], telling `progress` each finding as it is made.
pub async fn detect_with_progress(
    options: &DetectOptions,
    progress: Option<Progress>,
) -> Result<DetectedLimits, DetectError> {
    let started = Instant::now();
    let mut prober = probe::Prober::new(options)?;
    let mut evidence = Log {
        lines: Vec::new(),
        progress,
    };

    // 1. Ask: a few single requests, enough to get past the API's own random errors.
    let mut first = None;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let probe = prober.one().await?;
        statuses.push(probe.status);
        if probe.answer == probe::Answer::Accepted || probe.answer == probe::Answer::RateLimited {
            first = Some(probe);
            break;
        }
    }
    let first = first.ok_or_else(|| DetectError::Failing(format!("statuses {statuses:?}")))?;
    let stated = stated_rate(&first.headers);
    if let Some(stated) = &stated {
        evidence.push(format!(
            "the API states its rate limit: {} requests per {} s ({})",
            stated.requests,
            stated.window_ms / 1000,
            stated.source
        ));
    } else if let Some(quota) = stated_quota(&first.headers) {
        evidence.push(format!(
            "the API states a quota of {quota} but not its window; measuring the rate instead"
        ));
    }

    // 2. Concurrency.
    let found = concurrency::search(&mut prober, options.max_concurrency.max(1), &mut evidence).await?;
    let concurrency = ConcurrencyLimit {
        detected: found.passed,
        safe: margin(u64::from(found.passed), options.safety) as u32,
        finding: found.finding,
    };

    // 3. Rate.
    let rate_limit = match stated {
        Some(stated) => Some(RateLimit {
            safe_requests: margin(stated.requests, options.safety),
            requests: stated.requests,
            window_ms: stated.window_ms,
            finding: Finding::Stated,
        }),
        None => rate::search(&mut prober, found.passed, &mut evidence)
            .await?
            .map(|rate| RateLimit {
                requests: rate.requests,
                window_ms: rate.window_ms,
                safe_requests: margin(rate.requests, options.safety),
                finding: rate.finding,
            }),
    };

    let confidence = [Some(concurrency.finding), rate_limit.as_ref().map(|r| r.finding)]
        .into_iter()
        .map(|finding| finding.map_or(Confidence::Low, Finding::confidence))
        .min()
        .unwrap_or(Confidence::Low);
    Ok(DetectedLimits {
        concurrency: Some(concurrency),
        rate_limit,
        confidence,
        requests_used: prober.used(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        safety: options.safety,
        evidence: evidence.lines,
    })
}

fn margin(value: u64, safety: f64) -> u64 {
    ((value as f64 * safety).floor() as u64).max(1)
}
