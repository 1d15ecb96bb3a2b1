//! How a simulated service counts requests: token bucket (the original's), fixed window, or
//! sliding window. All three answer the same question with the same facts, so the service can
//! send `Retry-After` and `X-RateLimit-*` whatever the algorithm.

mod fixed_window;
mod sliding_window;
mod token_bucket;

use std::time::Duration;

use tokio::time::Instant;

pub(crate) use fixed_window::FixedWindow;
pub(crate) use sliding_window::SlidingWindow;
pub(crate) use token_bucket::TokenBucket;

use crate::config::{Algorithm, RateLimit};

/// The answer to "may this request in?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub allowed: bool,
    /// What is left after this request (`X-RateLimit-Remaining`).
    pub remaining: u64,
    /// Until the quota is whole again (`X-RateLimit-Reset`).
    pub reset: Duration,
    /// For a refused request: until it would be accepted (`Retry-After`).
    pub retry_after: Duration,
}

/// A rate-limit algorithm.
pub(crate) trait Limiter: Send + Sync + std::fmt::Debug {
    /// Takes `cost` from the quota at `now` if it fits; nothing is taken when refused.
    fn try_acquire(&mut self, now: Instant, cost: u64) -> Decision;

    /// Gives back the `cost` taken by the latest accepted request (refused by a later check).
    fn refund(&mut self, cost: u64);
}

/// The limiter for `config`, starting at `now`.
pub(crate) fn limiter(config: &RateLimit, now: Instant) -> Box<dyn Limiter> {
    let window = Duration::from_millis(config.window_ms);
    match config.algorithm {
        Algorithm::TokenBucket => Box::new(TokenBucket::new(config.limit, window, now)),
        Algorithm::FixedWindow => Box::new(FixedWindow::new(config.limit, window, now)),
        Algorithm::SlidingWindow => Box::new(SlidingWindow::new(config.limit, window)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Greedy clients never get more than `limit` accepted in any window — except the token
    /// bucket, which (as the original) starts full and refills continuously.
    fn accepted(config: RateLimit, step: Duration, total: Duration) -> Vec<Instant> {
        let t0 = Instant::now();
        let mut limiter = limiter(&config, t0);
        let mut now = t0;
        let mut accepted = Vec::new();
        while now < t0 + total {
            while limiter.try_acquire(now, 1).allowed {
                accepted.push(now);
            }
            now += step;
        }
        accepted
    }

    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        times
            .iter()
            .map(|&s| times.iter().filter(|&&t| t >= s && t < s + window).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_sliding_window_never_accepts_more_than_the_limit_in_any_window() {
        let config = RateLimit {
            limit: 10,
            window_ms: 1000,
            algorithm: Algorithm::SlidingWindow,
        };
        let got = accepted(config, Duration::from_millis(7), Duration::from_secs(5));
        assert!(max_in_window(&got, Duration::from_secs(1)) <= 10);
        assert!(got.len() >= 50, "{}", got.len());
    }

    #[test]
    fn a_fixed_window_allows_a_double_burst_at_its_edge_and_no_more_per_window() {
        let config = RateLimit {
            limit: 10,
            window_ms: 1000,
            algorithm: Algorithm::FixedWindow,
        };
        let t0 = Instant::now();
        let mut fixed = limiter(&config, t0);
        let mut take = |at: Instant| (0..20).filter(|_| fixed.try_acquire(at, 1).allowed).count();
        // Quiet until the end of the first window, then greedy across the boundary.
        assert_eq!(take(t0 + Duration::from_millis(990)), 10);
        assert_eq!(
            take(t0 + Duration::from_millis(1005)),
            10,
            "the known edge effect: 20 in 15 ms"
        );
        assert_eq!(
            take(t0 + Duration::from_millis(1999)),
            0,
            "but never more than 10 per window"
        );
    }

    #[test]
    fn the_token_bucket_starts_full_then_refills() {
        let config = RateLimit {
            limit: 10,
            window_ms: 1000,
            algorithm: Algorithm::TokenBucket,
        };
        let got = accepted(config, Duration::from_millis(1), Duration::from_secs(3));
        let t0 = got[0];
        assert_eq!(
            got.iter().filter(|&&t| t == t0).count(),
            10,
            "a full bucket at the start"
        );
        assert!((38..=41).contains(&got.len()), "10 + 10/s for 3 s: {}", got.len());
    }
}
