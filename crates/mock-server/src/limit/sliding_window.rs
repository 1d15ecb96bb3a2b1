//! An exact sliding window: at most `limit` (by cost) accepted in any window of the given
//! length ending now. Keeps a log of what was accepted within the last window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::{Decision, Limiter};

#[derive(Debug)]
pub(crate) struct SlidingWindow {
    limit: u64,
    window: Duration,
    log: VecDeque<(Instant, u64)>,
    sum: u64,
}

impl SlidingWindow {
    pub fn new(limit: u64, window: Duration) -> Self {
        SlidingWindow {
            limit,
            window,
            log: VecDeque::new(),
            sum: 0,
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some(&(at, cost)) = self.log.front() {
            if at + self.window > now {
                break;
            }
            self.log.pop_front();
            self.sum -= cost;
        }
    }

    /// How long until `cost` more would fit (call after [`SlidingWindow::peek`] at `now`).
    pub fn wait_for(&self, now: Instant, cost: u64) -> Duration {
        let mut sum = self.sum;
        for &(at, spent) in &self.log {
            if sum + cost <= self.limit {
                break;
            }
            sum -= spent;
            if sum + cost <= self.limit {
                return (at + self.window).saturating_duration_since(now);
            }
        }
        Duration::ZERO
    }
}

impl SlidingWindow {
    /// What is left at `now` and until the window is whole again, taking nothing.
    pub fn peek(&mut self, now: Instant) -> Decision {
        self.evict(now);
        Decision {
            allowed: true,
            remaining: self.limit.saturating_sub(self.sum),
            reset: self.until_whole(now),
            retry_after: Duration::ZERO,
        }
    }

    /// The configured limit per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// What was taken in the window ending at the latest [`SlidingWindow::peek`].
    pub fn used(&self) -> u64 {
        self.sum
    }

    /// Until the newest entry leaves the window, when the whole limit is free again.
    fn until_whole(&self, now: Instant) -> Duration {
        self.log.back().map_or(Duration::ZERO, |&(at, _)| {
            (at + self.window).saturating_duration_since(now)
        })
    }
}

impl Limiter for SlidingWindow {
    fn try_acquire(&mut self, now: Instant, cost: u64) -> Decision {
        self.evict(now);
        let allowed = self.sum + cost <= self.limit;
        if allowed {
            self.log.push_back((now, cost));
            self.sum += cost;
        }
        let reset = self.until_whole(now);
        Decision {
            allowed,
            remaining: self.limit.saturating_sub(self.sum),
            reset,
            retry_after: if allowed {
                Duration::ZERO
            } else {
                self.wait_for(now, cost)
            },
        }
    }

    fn refund(&mut self, cost: u64) {
        if self.log.back().is_some_and(|&(_, spent)| spent == cost) {
            self.log.pop_back();
            self.sum -= cost;
        }
    }
}
