//! A lane: the task types that share one limit key (by default, one type), with that key's rate
//! limit, budget, pause and idle state. The worker claims lane by lane so that a throttled or
//! paused key never holds up the others, and so that throttled tasks stay `pending`.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::limit::{BreakerConfig, BreakerState, Budget, CircuitBreaker, Quota, RateLimiter};

/// The resolution of tokio's timer.
const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// Limits of one key: requests per period, an optional weighted budget, an optional breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Calls per period (GCRA; never more than `count` in any window of `period`).
    pub rate: Option<Quota>,
    /// Cost units (e.g. tokens) per period; each task spends its cost.
    pub budget: Option<Quota>,
    /// Stop calling the key's target for a while after it keeps failing.
    pub breaker: Option<BreakerConfig>,
}

impl Limits {
    /// Only a rate limit.
    pub fn rate(quota: Quota) -> Self {
        Limits {
            rate: Some(quota),
            ..Limits::default()
        }
    }

    /// Only a circuit breaker.
    pub fn breaker(config: BreakerConfig) -> Self {
        Limits {
            breaker: Some(config),
            ..Limits::default()
        }
    }

    /// Adds a circuit breaker.
    pub fn with_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Adds a weighted budget.
    pub fn with_budget(mut self, quota: Quota) -> Self {
        self.budget = Some(quota);
        self
    }
}

/// Whether a lane can claim now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    /// Not before `until`.
    Wait {
        until: Instant,
    },
}

#[derive(Debug, Default)]
struct State {
    paused_until: Option<Instant>,
    idle_until: Option<Instant>,
    /// A limit shared with other processes has no room before this.
    throttled_until: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Lane {
    pub key: Arc<str>,
    /// JSON array of the lane's task types, as the claim statement takes them.
    pub types_json: Arc<str>,
    /// Admission: the loop takes a grant before claiming, so throttled tasks stay `pending`.
    pub rate: Option<RateLimiter>,
    /// The same quota, passed by the executor right before the handler starts. Admission alone
    /// cannot promise the quota at the moment calls start: claim latency varies, and a late
    /// start followed by a prompt one would be closer than the quota allows. This gate measures
    /// actual starts; it normally opens at once because admission already paced them.
    pub start_gate: Option<RateLimiter>,
    pub budget: Option<Budget>,
    pub breaker: Option<CircuitBreaker>,
    state: Mutex<State>,
}

impl Lane {
    pub fn new(key: Arc<str>, types: &[String], limits: Limits) -> Self {
        let breaker = limits
            .breaker
            .map(|config| CircuitBreaker::new(key.to_string(), config));
        Lane {
            key,
            types_json: serde_json::to_string(types)
                .unwrap_or_else(|_| "[]".into())
                .into(),
            rate: limits.rate.map(RateLimiter::new),
            start_gate: limits
                .rate
                .map(|quota| RateLimiter::new(quota.for_timer(TIMER_TICK))),
            budget: limits.budget.map(Budget::new),
            breaker,
            state: Mutex::new(State::default()),
        }
    }

    pub fn readiness(&self, now: Instant) -> Readiness {
        let state = self.lock();
        if let Some(until) = state.paused_until.filter(|&t| t > now) {
            return Readiness::Wait { until };
        }
        if let Some(until) = state.idle_until.filter(|&t| t > now) {
            return Readiness::Wait { until };
        }
        if let Some(until) = state.throttled_until.filter(|&t| t > now) {
            return Readiness::Wait { until };
        }
        drop(state);
        if let Some(BreakerState::Open { until }) = self.breaker.as_ref().map(CircuitBreaker::state) {
            return Readiness::Wait { until };
        }
        let limited = [
            self.rate.as_ref().map(|rate| rate.ready_at(now)),
            self.budget.as_ref().map(|budget| budget.ready_at(now)),
        ];
        match limited.into_iter().flatten().max() {
            Some(until) if until > now => Readiness::Wait { until },
            _ => Readiness::Ready,
        }
    }

    /// The most spent this key's rate (admission and start gate) can be once every grant taken
    /// by `by` is used; `None` without a rate.
    pub fn rate_spent_by(&self, by: Instant) -> Option<Instant> {
        let rate = self.rate.as_ref()?;
        let gate = self.start_gate.as_ref().map(|gate| gate.spent_by(by));
        Some(rate.spent_by(by).max(gate.unwrap_or(by)))
    }

    /// Continues the key's rate from a schedule an earlier run spent up to `tat`.
    pub fn restore_rate(&self, tat: Instant) {
        for rate in self.rate.iter().chain(self.start_gate.iter()) {
            rate.restore(tat);
        }
    }

    /// When the key's pause ends, if it is paused at `now`.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.lock().paused_until.filter(|&t| t > now)
    }

    /// No claims before `until` (a Retry-After); never shortens a pause.
    pub fn pause_until(&self, until: Instant) {
        let mut state = self.lock();
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
        drop(state);
        for rate in self.rate.iter().chain(self.start_gate.iter()) {
            rate.pause_until(until);
        }
        if let Some(budget) = &self.budget {
            budget.pause_until(until);
        }
        tracing::info!(key = %self.key, "limit key paused after a Retry-After");
    }

    /// A shared limit (another process's share of the rate or of the batch's concurrency)
    /// leaves no room before `until`; unlike an idle mark, new work does not end it.
    pub fn throttle_until(&self, until: Instant) {
        self.lock().throttled_until = Some(until);
    }

    /// The last claim found nothing: do not ask again before `until` unless woken.
    pub fn mark_idle(&self, until: Instant) {
        self.lock().idle_until = Some(until);
    }

    /// New work may exist (enqueue, retry due, rescue): forget the idle mark.
    pub fn wake(&self) {
        self.lock().idle_until = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
