//! The original's token bucket: capacity `limit`, starts full, refills `limit` per window
//! continuously. It lets a full bucket go at once, then the refill rate.

use std::time::Duration;

use tokio::time::Instant;

use super::{Decision, Limiter};

#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(limit: u64, window: Duration, now: Instant) -> Self {
        TokenBucket {
            capacity: limit as f64,
            per_second: limit as f64 / window.as_secs_f64(),
            tokens: limit as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = self.last.max(now);
    }

    fn time_for(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64((tokens / self.per_second).max(0.0))
    }
}

impl Limiter for TokenBucket {
    fn try_acquire(&mut self, now: Instant, cost: u64) -> Decision {
        self.refill(now);
        let cost = cost as f64;
        let allowed = self.tokens >= cost;
        if allowed {
            self.tokens -= cost;
        }
        Decision {
            allowed,
            remaining: self.tokens.floor() as u64,
            reset: self.time_for(self.capacity - self.tokens),
            retry_after: if allowed {
                Duration::ZERO
            } else {
                self.time_for(cost - self.tokens)
            },
        }
    }

    fn refund(&mut self, cost: u64) {
        self.tokens = (self.tokens + cost as f64).min(self.capacity);
    }
}
