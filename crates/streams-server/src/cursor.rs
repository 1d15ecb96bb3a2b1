//! Long-poll cursors: a coarse clock that lets CDNs collapse identical live requests without
//! ever serving a client the response it already has.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

/// 2024-10-09T00:00:00Z, the protocol's cursor epoch.
pub const DEFAULT_EPOCH_SECS: u64 = 1_728_432_000;
/// Width of one cursor interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);

/// How cursors are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorOptions {
    /// Seconds since the Unix epoch at which interval 0 starts.
    pub epoch_secs: u64,
    /// Width of one interval.
    pub interval: Duration,
}

impl Default for CursorOptions {
    fn default() -> Self {
        CursorOptions {
            epoch_secs: DEFAULT_EPOCH_SECS,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl CursorOptions {
    /// The interval `now` falls in.
    pub fn current(&self, now: SystemTime) -> u64 {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        secs.saturating_sub(self.epoch_secs) / self.interval.as_secs().max(1)
    }

    /// The cursor for a live response to a client that sent `client` (if any): the current
    /// interval, or — when the client is already at or past it — a strictly larger one,
    /// jittered 1 s to 1 h ahead so that colliding clients spread out.
    pub fn respond(&self, client: Option<&str>, now: SystemTime) -> u64 {
        let current = self.current(now);
        match client.and_then(|text| text.trim().parse::<u64>().ok()) {
            Some(sent) if sent >= current => {
                let width = self.interval.as_secs().max(1);
                let jitter_secs = rand::rng().random_range(1..=3600u64);
                sent + jitter_secs.div_ceil(width).max(1)
            }
            _ => current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_counts_intervals_since_the_epoch() {
        let options = CursorOptions::default();
        let at = UNIX_EPOCH + Duration::from_secs(DEFAULT_EPOCH_SECS + 45);
        assert_eq!(options.current(at), 2);
        assert_eq!(options.respond(None, at), 2);
        assert_eq!(options.respond(Some("1"), at), 2);
    }

    #[test]
    fn a_colliding_cursor_gets_a_strictly_larger_one() {
        let options = CursorOptions::default();
        let at = UNIX_EPOCH + Duration::from_secs(DEFAULT_EPOCH_SECS + 45);
        for _ in 0..100 {
            let next = options.respond(Some("2"), at);
            assert!((3..=2 + 180).contains(&next), "{next}");
            assert!(options.respond(Some("9"), at) > 9);
        }
    }
}
