//! The latency model: a time to first token, then a time per further output token, each drawn
//! uniformly from its configured range for every request.

use std::time::Duration;

use rand::Rng;

use super::config::Latency;

/// One request's pace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pace {
    pub first_token: Duration,
    pub per_token: Duration,
}

impl Pace {
    /// Draws a pace from `latency`.
    pub fn draw(latency: &Latency) -> Self {
        let draw = |[min, max]: [u64; 2]| {
            let ms = if max > min {
                rand::rng().random_range(min..=max)
            } else {
                min
            };
            Duration::from_millis(ms)
        };
        Pace {
            first_token: draw(latency.first_token_ms),
            per_token: draw(latency.per_token_ms),
        }
    }

    /// No wait at all.
    pub fn is_zero(&self) -> bool {
        self.first_token.is_zero() && self.per_token.is_zero()
    }

    /// The whole answer of `tokens` tokens, for a caller that does not stream.
    pub fn total(&self, tokens: u64) -> Duration {
        self.first_token + self.per_token * u32::try_from(tokens.saturating_sub(1)).unwrap_or(u32::MAX)
    }
}
