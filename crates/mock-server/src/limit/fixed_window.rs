//! At most `limit` per window, windows aligned on multiples of the window length since the
//! service started. Simple and common, with its known weakness: two full windows back to back
//! let `2 × limit` through around the boundary.

use std::time::Duration;

use tokio::time::Instant;

use super::{Decision, Limiter};

#[derive(Debug)]
pub(crate) struct FixedWindow {
    limit: u64,
    window: Duration,
    origin: Instant,
    current: u64,
    used: u64,
}

impl FixedWindow {
    pub fn new(limit: u64, window: Duration, now: Instant) -> Self {
        FixedWindow {
            limit,
            window,
            origin: now,
            current: 0,
            used: 0,
        }
    }
}

impl Limiter for FixedWindow {
    fn try_acquire(&mut self, now: Instant, cost: u64) -> Decision {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        let index = u64::try_from(elapsed / self.window.as_nanos().max(1)).unwrap_or(u64::MAX);
        if index != self.current {
            self.current = index;
            self.used = 0;
        }
        let window_end = self.origin + self.window * u32::try_from(index + 1).unwrap_or(u32::MAX);
        let reset = window_end.saturating_duration_since(now);
        let allowed = self.used + cost <= self.limit;
        if allowed {
            self.used += cost;
        }
        Decision {
            allowed,
            remaining: self.limit.saturating_sub(self.used),
            reset,
            // A request costlier than the whole limit never fits; say "next window" anyway.
            retry_after: if allowed { Duration::ZERO } else { reset },
        }
    }

    fn refund(&mut self, cost: u64) {
        self.used = self.used.saturating_sub(cost);
    }
}
