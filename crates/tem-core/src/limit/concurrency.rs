//! Concurrency with AIMD: a semaphore whose size backs off multiplicatively when the remote API
//! says it is rate-limited or overloaded, and grows back additively while calls succeed.
//!
//! Shrinking a tokio semaphore cannot take back permits that are in use, so the shrink is
//! recorded as a debt and each returning permit pays one unit of it instead of being released.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How a limit adapts to congestion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aimd {
    /// Never go below this.
    pub min: usize,
    /// Multiply the limit by this on congestion (0 < factor < 1).
    pub decrease_factor: f64,
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            min: 1,
            decrease_factor: 0.5,
        }
    }
}

#[derive(Debug)]
struct State {
    limit: usize,
    max: usize,
    debt: usize,
    successes: usize,
    last_decrease: Option<Instant>,
    aimd: Option<Aimd>,
}

/// A concurrency limit, fixed or adaptive (AIMD).
#[derive(Debug)]
pub struct AdaptiveConcurrency {
    semaphore: Arc<Semaphore>,
    state: Mutex<State>,
}

/// One unit of concurrency; returned (or used to pay a shrink) on drop.
#[derive(Debug)]
pub struct ConcurrencyPermit {
    permit: Option<OwnedSemaphorePermit>,
    owner: Arc<AdaptiveConcurrency>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let mut state = self.owner.lock();
            if state.debt > 0 {
                state.debt -= 1;
                permit.forget();
            }
        }
    }
}

impl AdaptiveConcurrency {
    /// A limit of `max`, adapting with `aimd` when given, fixed otherwise.
    pub fn new(max: usize, aimd: Option<Aimd>) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(AdaptiveConcurrency {
            semaphore: Arc::new(Semaphore::new(max)),
            state: Mutex::new(State {
                limit: max,
                max,
                debt: 0,
                successes: 0,
                last_decrease: None,
                aimd,
            }),
        })
    }

    /// Waits for a unit of concurrency.
    pub async fn acquire(self: &Arc<Self>) -> ConcurrencyPermit {
        let permit = self.semaphore.clone().acquire_owned().await.ok();
        ConcurrencyPermit {
            permit,
            owner: self.clone(),
        }
    }

    /// A unit of concurrency if one is free now.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConcurrencyPermit> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        Some(ConcurrencyPermit {
            permit: Some(permit),
            owner: self.clone(),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Units in use right now (exact, whatever the waiters).
    pub fn in_use(&self) -> usize {
        let state = self.lock();
        (state.limit + state.debt).saturating_sub(self.semaphore.available_permits())
    }

    /// True while a shrink is still waiting for permits in use to come back; a permit holder
    /// should then return its permit rather than pass it on.
    pub fn is_shrinking(&self) -> bool {
        self.lock().debt > 0
    }

    /// A call succeeded: after a full limit's worth of successes, allow one more.
    pub fn on_success(&self) {
        let mut state = self.lock();
        if state.aimd.is_none() || state.limit >= state.max {
            return;
        }
        state.successes += 1;
        if state.successes >= state.limit {
            state.successes = 0;
            state.limit += 1;
            if state.debt > 0 {
                state.debt -= 1;
            } else {
                self.semaphore.add_permits(1);
            }
        }
    }

    /// The API pushed back on a call that started at `started`: shrink, at most once per wave
    /// (calls started before the last shrink were sent under the old limit and say nothing new).
    pub fn on_congestion(&self, started: Instant) {
        let mut state = self.lock();
        let Some(aimd) = state.aimd else { return };
        if state.last_decrease.is_some_and(|last| started < last) {
            return;
        }
        let target = ((state.limit as f64 * aimd.decrease_factor).floor() as usize)
            .max(aimd.min.max(1))
            .min(state.limit);
        let shrink = state.limit - target;
        if shrink == 0 {
            return;
        }
        state.limit = target;
        state.successes = 0;
        state.last_decrease = Some(Instant::now());
        let forgotten = self.semaphore.forget_permits(shrink);
        state.debt += shrink - forgotten;
        tracing::info!(
            limit = target,
            "concurrency reduced after rate-limit/overload response"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_limit_never_adapts() {
        let c = AdaptiveConcurrency::new(4, None);
        c.on_congestion(Instant::now());
        assert_eq!(c.limit(), 4);
        let permits: Vec<_> = (0..4).map(|_| c.try_acquire().unwrap()).collect();
        assert!(c.try_acquire().is_none());
        assert_eq!(c.in_use(), 4);
        drop(permits);
        assert_eq!(c.in_use(), 0);
    }

    #[tokio::test]
    async fn congestion_halves_even_while_permits_are_out_and_recovers_additively() {
        let c = AdaptiveConcurrency::new(8, Some(Aimd::default()));
        let held: Vec<_> = (0..8).map(|_| c.try_acquire().unwrap()).collect();
        c.on_congestion(Instant::now());
        assert_eq!(c.limit(), 4);
        drop(held);
        // Four returning permits paid the debt; only four are usable.
        let now: Vec<_> = std::iter::from_fn(|| c.try_acquire()).collect();
        assert_eq!(now.len(), 4);
        drop(now);
        for _ in 0..4 {
            c.on_success();
        }
        assert_eq!(c.limit(), 5);
        let now: Vec<_> = std::iter::from_fn(|| c.try_acquire()).collect();
        assert_eq!(now.len(), 5);
    }

    #[tokio::test]
    async fn one_wave_of_429s_shrinks_once() {
        let c = AdaptiveConcurrency::new(16, Some(Aimd::default()));
        let started = Instant::now();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        c.on_congestion(started);
        c.on_congestion(started);
        c.on_congestion(started);
        assert_eq!(c.limit(), 8);
        c.on_congestion(Instant::now());
        assert_eq!(c.limit(), 4);
    }

    #[tokio::test]
    async fn never_below_min() {
        let c = AdaptiveConcurrency::new(
            3,
            Some(Aimd {
                min: 2,
                decrease_factor: 0.1,
            }),
        );
        c.on_congestion(Instant::now());
        assert_eq!(c.limit(), 2);
    }
}
