//! A weighted budget, e.g. tokens per minute: each task spends its cost.
//!
//! The cost of a task is known only roughly before the call (an estimate stored with the task)
//! and exactly after it (what the provider reports). So the budget is a debt: a claim waits until
//! the budget is not overdrawn, spends the estimate, and the handler's reported cost corrects it
//! afterwards. The budget can be exceeded by at most one task's estimate.

use std::sync::Mutex;

use tokio::time::Instant;

use super::rate::{Gcra, Quota};

/// A weighted budget of `quota.count` units per `quota.period`.
#[derive(Debug)]
pub struct Budget {
    gcra: Mutex<Gcra>,
}

impl Budget {
    /// A budget of `quota` (its `burst` is ignored: a budget is paced by cost).
    pub fn new(quota: Quota) -> Self {
        Budget {
            gcra: Mutex::new(Gcra::new(Quota { burst: 1, ..quota })),
        }
    }

    /// The budget's quota.
    pub fn quota(&self) -> Quota {
        self.with(|g| g.quota())
    }

    /// When the budget stops being overdrawn, judged at `now` (`now` itself if it is not).
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.with(|g| g.ready_at(now))
    }

    /// Spends `cost` units now.
    pub fn spend(&self, cost: u64) {
        self.with(|g| g.charge(Instant::now(), cost));
    }

    /// Corrects an earlier `spend(estimated)` to what the call really cost.
    pub fn correct(&self, estimated: u64, actual: u64) {
        let now = Instant::now();
        self.with(|g| {
            if actual > estimated {
                g.charge(now, actual - estimated);
            } else {
                g.credit(now, estimated - actual);
            }
        });
    }

    /// No spending before `until`.
    pub fn pause_until(&self, until: Instant) {
        self.with(|g| g.pause_until(until));
    }

    fn with<T>(&self, f: impl FnOnce(&mut Gcra) -> T) -> T {
        let mut guard = self.gcra.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn overdrawn_budget_waits_and_corrections_apply() {
        let budget = Budget::new(Quota::new(600, Duration::from_secs(60)).unwrap());
        let t0 = Instant::now();
        assert_eq!(budget.ready_at(t0), t0);
        budget.spend(100); // 100 of 600/min = 10 s of budget
        assert_eq!(budget.ready_at(t0) - t0, Duration::from_secs(10));
        budget.correct(100, 40); // really cost 40
        assert_eq!(budget.ready_at(t0) - t0, Duration::from_secs(4));
        budget.correct(40, 70);
        assert_eq!(budget.ready_at(t0) - t0, Duration::from_secs(7));
    }
}
