//! A circuit breaker: after enough failures, stop calling a target for a cool-down, then let a
//! few probe calls through, and close again when they succeed.
//!
//! Closed → Open after `consecutive_failures` failures in a row, or when more than
//! `failure_rate` of the last `window` calls failed. Open for `cool_down`, or for the longest
//! Retry-After the target asked for, whichever is longer. Then half-open: `half_open_probes`
//! calls go through; all must succeed to close, and one failure opens it again.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// When a breaker opens, and for how long.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Open when more than this fraction of the last `window` calls failed (`None`: off).
    pub failure_rate: Option<f64>,
    /// How many recent calls the failure rate looks at (and needs before it counts).
    pub window: u32,
    /// How long to stay open.
    pub cool_down: Duration,
    /// Calls let through while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: Some(0.5),
            window: 20,
            cool_down: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    /// Checks the fields, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.consecutive_failures == 0 {
            return Err(Error::invalid(
                "breaker consecutive_failures",
                "must be at least 1",
            ));
        }
        if let Some(rate) = self.failure_rate
            && !(rate > 0.0 && rate < 1.0)
        {
            return Err(Error::invalid(
                "breaker failure_rate",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if self.window == 0 || self.half_open_probes == 0 {
            return Err(Error::invalid(
                "breaker window",
                "window and half_open_probes must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// No calls until then.
    Open {
        until: Instant,
    },
    /// Probing: a few calls go through.
    HalfOpen,
}

/// Permission for one call; hand it back with the call's result.
#[derive(Debug)]
#[must_use = "report the call's result with on_success or on_failure"]
pub struct Admission {
    probe: bool,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    recent: VecDeque<bool>,
    probes_started: u32,
    probes_succeeded: u32,
    longest_retry_after: Duration,
}

/// A circuit breaker for one target.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Why [`CircuitBreaker::call`] produced no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker is open; the call was not made.
    #[error("circuit open; retry in {retry_in:?}")]
    Open { retry_in: Duration },
    /// The call was made and failed.
    #[error("{0}")]
    Failed(E),
}

impl CircuitBreaker {
    /// A closed breaker named `name` (used in logs).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        CircuitBreaker {
            name: name.into(),
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive: 0,
                recent: VecDeque::new(),
                probes_started: 0,
                probes_succeeded: 0,
                longest_retry_after: Duration::ZERO,
            }),
        }
    }

    /// The state now (an open breaker whose cool-down passed reads as half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        Self::expire(&mut inner, Instant::now());
        inner.state
    }

    /// Permission for a call now, or the instant to ask again.
    pub fn admit(&self) -> std::result::Result<Admission, Instant> {
        let now = Instant::now();
        let mut inner = self.lock();
        if Self::expire(&mut inner, now) {
            tracing::info!(target_key = %self.name, "circuit half-open: probing");
        }
        match inner.state {
            BreakerState::Closed => Ok(Admission { probe: false }),
            BreakerState::Open { until } => Err(until),
            BreakerState::HalfOpen if inner.probes_started < self.config.half_open_probes => {
                inner.probes_started += 1;
                Ok(Admission { probe: true })
            }
            // All probes are out: their results decide.
            BreakerState::HalfOpen => Err(now + PROBE_RECHECK),
        }
    }

    /// The call succeeded.
    pub fn on_success(&self, admission: Admission) {
        let mut inner = self.lock();
        if admission.probe {
            if inner.state != BreakerState::HalfOpen {
                return;
            }
            inner.probes_succeeded += 1;
            if inner.probes_succeeded >= self.config.half_open_probes {
                inner.state = BreakerState::Closed;
                inner.consecutive = 0;
                inner.recent.clear();
                inner.longest_retry_after = Duration::ZERO;
                tracing::info!(target_key = %self.name, "circuit closed: probes succeeded");
            }
            return;
        }
        inner.consecutive = 0;
        self.remember(&mut inner, true);
    }

    /// The call failed in a way that says something about the target (not a 4xx of ours).
    /// Returns the instant the breaker stays open until, if this failure opened it.
    pub fn on_failure(&self, admission: Admission, retry_after: Option<Duration>) -> Option<Instant> {
        let mut inner = self.lock();
        inner.longest_retry_after = inner.longest_retry_after.max(retry_after.unwrap_or_default());
        if admission.probe {
            if inner.state != BreakerState::HalfOpen {
                return None;
            }
            return Some(self.open(&mut inner, "a probe failed"));
        }
        if !matches!(inner.state, BreakerState::Closed) {
            return None;
        }
        inner.consecutive += 1;
        self.remember(&mut inner, false);
        if inner.consecutive >= self.config.consecutive_failures {
            return Some(self.open(&mut inner, "too many failures in a row"));
        }
        if let Some(rate) = self.config.failure_rate {
            let window = self.config.window as usize;
            let failures = inner.recent.iter().filter(|ok| !**ok).count();
            if inner.recent.len() >= window && failures as f64 > rate * window as f64 {
                return Some(self.open(&mut inner, "failure rate over the window"));
            }
        }
        None
    }

    /// The call was not made after all (cancelled before it started): give the admission back.
    pub fn cancel(&self, admission: Admission) {
        if admission.probe {
            let mut inner = self.lock();
            inner.probes_started = inner.probes_started.saturating_sub(1);
        }
    }

    /// Runs `op` if the breaker allows; any `Err` counts as a failure of the target.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> std::result::Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let admission = self.admit().map_err(|until| BreakerError::Open {
            retry_in: until.saturating_duration_since(Instant::now()),
        })?;
        match op().await {
            Ok(value) => {
                self.on_success(admission);
                Ok(value)
            }
            Err(error) => {
                self.on_failure(admission, None);
                Err(BreakerError::Failed(error))
            }
        }
    }

    fn open(&self, inner: &mut Inner, why: &str) -> Instant {
        let until = Instant::now() + self.config.cool_down.max(inner.longest_retry_after);
        inner.state = BreakerState::Open { until };
        inner.probes_started = 0;
        inner.probes_succeeded = 0;
        tracing::warn!(
            target_key = %self.name,
            why,
            cool_down = ?until.saturating_duration_since(Instant::now()),
            "circuit opened: calls to this target stop until the cool-down ends"
        );
        until
    }

    fn remember(&self, inner: &mut Inner, ok: bool) {
        inner.recent.push_back(ok);
        while inner.recent.len() > self.config.window as usize {
            inner.recent.pop_front();
        }
    }

    /// Open → half-open once the cool-down passed; true if that happened now.
    fn expire(inner: &mut Inner, now: Instant) -> bool {
        if let BreakerState::Open { until } = inner.state
            && now >= until
        {
            inner.state = BreakerState::HalfOpen;
            inner.probes_started = 0;
            inner.probes_succeeded = 0;
            return true;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How soon to look again when every half-open probe is out.
const PROBE_RECHECK: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::new("api", config)
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: None,
            window: 10,
            cool_down: Duration::from_secs(10),
            half_open_probes: 2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_and_closes() {
        let b = breaker(config());
        for _ in 0..2 {
            assert!(b.on_failure(b.admit().unwrap(), None).is_none());
        }
        let until = b
            .on_failure(b.admit().unwrap(), None)
            .expect("third failure opens");
        assert_eq!(b.admit().unwrap_err(), until);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let (p1, p2) = (b.admit().unwrap(), b.admit().unwrap());
        assert!(b.admit().is_err(), "only two probes while half-open");
        b.on_success(p1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_success(p2);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_the_longest_retry_after_wins() {
        let b = breaker(config());
        b.on_failure(b.admit().unwrap(), Some(Duration::from_secs(60)));
        b.on_failure(b.admit().unwrap(), None);
        let until = b.on_failure(b.admit().unwrap(), None).unwrap();
        assert_eq!(
            until - Instant::now(),
            Duration::from_secs(60),
            "Retry-After beats the cool-down"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        let probe = b.admit().unwrap();
        assert!(b.on_failure(probe, None).is_some());
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_run_and_the_rate_can_open_it() {
        let b = breaker(config());
        for _ in 0..10 {
            b.on_failure(b.admit().unwrap(), None);
            b.on_failure(b.admit().unwrap(), None);
            b.on_success(b.admit().unwrap());
            if matches!(b.state(), BreakerState::Open { .. }) {
                panic!("two failures in a row never reach three");
            }
        }
        let b = breaker(BreakerConfig {
            failure_rate: Some(0.5),
            ..config()
        });
        let mut opened = false;
        for _ in 0..10 {
            opened |= b.on_failure(b.admit().unwrap(), None).is_some();
            if !opened {
                b.on_success(b.admit().unwrap());
            }
            opened |= matches!(b.state(), BreakerState::Open { .. });
        }
        assert!(!opened, "exactly half failing is not over the rate");
        let b = breaker(BreakerConfig {
            failure_rate: Some(0.3),
            ..config()
        });
        let mut opened = false;
        for _ in 0..10 {
            opened |= b.on_failure(b.admit().unwrap(), None).is_some();
            if opened {
                break;
            }
            b.on_success(b.admit().unwrap());
        }
        assert!(opened, "half failing is over a 30% rate once the window is full");
    }

    #[tokio::test(start_paused = true)]
    async fn call_skips_the_operation_while_open() {
        let b = breaker(BreakerConfig {
            consecutive_failures: 1,
            ..config()
        });
        let r: std::result::Result<(), _> = b.call(|| async { Err::<(), _>("down") }).await;
        assert_eq!(r, Err(BreakerError::Failed("down")));
        let mut called = false;
        let r = b
            .call(|| {
                called = true;
                async { Ok::<_, &str>(()) }
            })
            .await;
        assert!(matches!(r, Err(BreakerError::Open { .. })));
        assert!(!called);
    }
}
