//! The engine's one timestamp format: integer milliseconds since the Unix epoch (UTC).
//!
//! Stored timestamps use wall-clock time because they must mean the same thing to every process
//! sharing a database; in-process waits use [`tokio::time::Instant`], which cannot jump.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The current wall-clock time in [`Millis`].
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current wall-clock time in microseconds since the Unix epoch (rate schedules).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration as whole milliseconds, saturating instead of overflowing.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The wall-clock time `d` from now, in [`Millis`].
pub fn ms_after(d: Duration) -> Millis {
    now_ms().saturating_add(duration_ms(d))
}

/// How long from now until `at` (zero when `at` has passed).
pub fn until(at: Millis) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0))
}

/// Serde for a [`Duration`] as whole milliseconds, the unit used in stored JSON.
pub(crate) mod serde_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
