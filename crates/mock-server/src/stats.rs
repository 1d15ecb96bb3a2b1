//! What a service saw, exactly: requests by status, peak concurrency, and the most requests
//! (and budget) it accepted in any window of its rate-limit length — so a test can prove a
//! client never went over the limit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A service's statistics, as `GET /service/{name}/stats` returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub service: String,
    /// Every request the service answered.
    pub requests: u64,
    /// Answers by HTTP status (`"200"`, `"429"`, `"503"`…).
    pub by_status: BTreeMap<String, u64>,
    /// Most requests in flight at once.
    pub peak_concurrency: u64,
    /// Most requests accepted (past the concurrency and rate checks) in any window of
    /// `windowMs`.
    pub max_accepted_in_window: u64,
    /// The rate-limit window that figure is measured over.
    pub window_ms: u64,
    /// The configured limit per window, for comparison.
    pub limit: u64,
    /// Most budget spent in any budget window, when the service has a budget.
    pub max_spent_in_budget_window: Option<u64>,
    /// Tokens and per-limit peaks, for an `openai` or `anthropic` service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenStats>,
}

/// What an LLM-shaped service accepted, in tokens, and the peak of each of its limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenStats {
    /// Prompt (input) tokens of the requests answered 200.
    pub input: u64,
    /// Completion (output) tokens of those answers.
    pub output: u64,
    /// One entry per configured limit, service-wide and per model.
    pub limits: Vec<LimitPeak>,
}

/// The most a limit ever counted in one of its windows, beside the limit itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitPeak {
    /// `service`, or the model's name for a per-model limit.
    pub scope: String,
    /// `requests`, `tokens`, `inputTokens` or `outputTokens`.
    pub counts: String,
    pub limit: u64,
    pub window_ms: u64,
    /// Most counted (requests, or tokens as that limit counts them) in any window.
    pub max_in_window: u64,
}

/// A sliding log that remembers the largest sum it ever held within one window.
#[derive(Debug)]
pub(crate) struct PeakWindow {
    window: Duration,
    log: VecDeque<(Instant, u64)>,
    sum: u64,
    peak: u64,
}

impl PeakWindow {
    pub fn new(window: Duration) -> Self {
        PeakWindow {
            window,
            log: VecDeque::new(),
            sum: 0,
            peak: 0,
        }
    }

    /// Adds `amount` at `now`. The peak over all windows is reached by a window ending at some
    /// event, so checking at every event is exact.
    pub fn add(&mut self, now: Instant, amount: u64) {
        while let Some(&(at, n)) = self.log.front() {
            if at + self.window > now {
                break;
            }
            self.log.pop_front();
            self.sum -= n;
        }
        self.log.push_back((now, amount));
        self.sum += amount;
        self.peak = self.peak.max(self.sum);
    }

    /// The largest sum any window held.
    pub fn peak(&self) -> u64 {
        self.peak
    }

    /// The window's length in milliseconds.
    pub fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Most arrivals a service remembers (8 bytes each); later ones are counted but not logged.
const MAX_ARRIVALS: usize = 1_000_000;

/// When each request reached the service, before any check refused it: evidence of a client's
/// pacing that the service's own limiter cannot shape.
#[derive(Debug)]
pub(crate) struct ArrivalLog {
    since: Instant,
    log: Mutex<Vec<Duration>>,
}

impl ArrivalLog {
    pub fn new(since: Instant) -> Self {
        ArrivalLog {
            since,
            log: Mutex::new(Vec::new()),
        }
    }

    pub fn arrived(&self, now: Instant) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() < MAX_ARRIVALS {
            log.push(now.saturating_duration_since(self.since));
        }
    }

    /// The arrival times so far, as offsets from the service's creation, in arrival order.
    pub fn snapshot(&self) -> Vec<Duration> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Answers by status, counted without a lock (every request updates them).
#[derive(Debug)]
pub(crate) struct StatusCounts([AtomicU64; 600]);

impl StatusCounts {
    pub fn new() -> Self {
        StatusCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    pub fn count(&self, status: u16) {
        if let Some(counter) = self.0.get(usize::from(status)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> (u64, BTreeMap<String, u64>) {
        let mut total = 0;
        let mut by_status = BTreeMap::new();
        for (status, counter) in self.0.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                total += n;
                by_status.insert(status.to_string(), n);
            }
        }
        (total, by_status)
    }
}

/// The windowed counters behind [`Stats`] (updated under the service's quota lock).
#[derive(Debug)]
pub(crate) struct Recorder {
    service: String,
    limit: u64,
    peak_concurrency: u64,
    accepted: PeakWindow,
    spent: Option<PeakWindow>,
}

impl Recorder {
    pub fn new(service: &str, limit: u64, window: Duration, budget_window: Option<Duration>) -> Self {
        Recorder {
            service: service.to_owned(),
            limit,
            peak_concurrency: 0,
            accepted: PeakWindow::new(window),
            spent: budget_window.map(PeakWindow::new),
        }
    }

    pub fn accepted(&mut self, now: Instant, in_flight: u64, cost: u64) {
        self.peak_concurrency = self.peak_concurrency.max(in_flight);
        self.accepted.add(now, 1);
        if let Some(spent) = &mut self.spent {
            spent.add(now, cost);
        }
    }

    pub fn snapshot(&self, statuses: &StatusCounts) -> Stats {
        let (requests, by_status) = statuses.snapshot();
        Stats {
            service: self.service.clone(),
            requests,
            by_status,
            peak_concurrency: self.peak_concurrency,
            max_accepted_in_window: self.accepted.peak,
            window_ms: u64::try_from(self.accepted.window.as_millis()).unwrap_or(u64::MAX),
            limit: self.limit,
            max_spent_in_budget_window: self.spent.as_ref().map(|s| s.peak),
            tokens: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_busiest_window() {
        let t0 = Instant::now();
        let mut w = PeakWindow::new(Duration::from_millis(100));
        for ms in [0, 10, 20, 150, 160, 170, 180, 199, 260] {
            w.add(t0 + Duration::from_millis(ms), 1);
        }
        // 150..249 holds five.
        assert_eq!(w.peak, 5);
    }
}
