//! When a failed attempt is tried again: exponential backoff with jitter, or the remote API's
//! Retry-After when it gave one. The delay is written as the task's `run_after`, so a waiting task
//! holds no worker slot and survives a restart.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How much randomness spreads out retries of tasks that failed together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Uniform in `[0, backoff]` ("full jitter"): the best spread, the default.
    #[default]
    Full,
    /// Uniform in `[backoff/2, backoff]`: never much shorter than the nominal delay.
    Equal,
    /// Exactly the nominal delay.
    None,
}

/// Attempts and backoff for a task, a batch or a standalone [`crate::resilience::retry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Total executions allowed, the first included (`1` means never retry).
    pub max_attempts: u32,
    /// The nominal delay after the first failure; it doubles after each further failure.
    #[serde(rename = "base_ms", with = "crate::time::serde_ms")]
    pub base: Duration,
    /// The nominal delay never exceeds this.
    #[serde(rename = "cap_ms", with = "crate::time::serde_ms")]
    pub cap: Duration,
    /// How the actual delay is drawn from the nominal one.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// Checks the policy's fields, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid(
                "max_attempts",
                "must be at least 1 (1 means no retries)",
            ));
        }
        if self.cap < self.base {
            return Err(Error::invalid(
                "backoff cap",
                format!("{:?} is shorter than the base delay {:?}", self.cap, self.base),
            ));
        }
        Ok(())
    }

    /// The nominal (pre-jitter) delay after attempt number `attempt` (1-based) failed.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(62);
        let factor = 1u64 << doublings;
        let nanos = (self.base.as_nanos()).saturating_mul(u128::from(factor));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.cap)
    }

    /// The delay to wait after attempt `attempt` failed, jitter applied.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let nominal = self.nominal_delay(attempt);
        let mut rng = rand::rng();
        match self.jitter {
            Jitter::None => nominal,
            Jitter::Full => nominal.mul_f64(rng.random::<f64>()),
            Jitter::Equal => nominal / 2 + (nominal / 2).mul_f64(rng.random::<f64>()),
        }
    }

    /// The delay before the next attempt: the API's Retry-After when given, else the backoff.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| self.backoff(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter,
        }
    }

    #[test]
    fn nominal_delay_doubles_up_to_the_cap() {
        let p = policy(Jitter::None);
        let ms: Vec<u128> = (1..=6).map(|a| p.nominal_delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.nominal_delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_inside_its_range() {
        for attempt in 1..=5 {
            let nominal = policy(Jitter::None).nominal_delay(attempt);
            for _ in 0..200 {
                let full = policy(Jitter::Full).backoff(attempt);
                assert!(full <= nominal);
                let equal = policy(Jitter::Equal).backoff(attempt);
                assert!(equal >= nominal / 2 && equal <= nominal);
            }
        }
    }

    #[test]
    fn full_jitter_spreads_delays() {
        let p = policy(Jitter::Full);
        let draws: std::collections::HashSet<u128> = (0..50).map(|_| p.backoff(4).as_micros()).collect();
        assert!(
            draws.len() > 40,
            "full jitter should rarely repeat a delay: {}",
            draws.len()
        );
    }

    #[test]
    fn retry_after_overrides_backoff() {
        let p = policy(Jitter::Full);
        assert_eq!(p.delay(3, Some(Duration::from_secs(9))), Duration::from_secs(9));
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = policy(Jitter::None);
        p.max_attempts = 0;
        assert!(p.validate().unwrap_err().to_string().contains("max_attempts"));
        let mut p = policy(Jitter::None);
        p.cap = Duration::from_millis(1);
        assert!(p.validate().unwrap_err().to_string().contains("cap"));
    }

    #[test]
    fn policy_round_trips_as_milliseconds() {
        let p = policy(Jitter::Equal);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["base_ms"], 100);
        assert_eq!(json["cap_ms"], 1000);
        assert_eq!(serde_json::from_value::<RetryPolicy>(json).unwrap(), p);
    }
}
