//! The time stream lifetimes are judged by: the system clock, or one a test moves by hand.
//!
//! Expiry compares wall-clock milliseconds (a `Stream-Expires-At` instant is a wall-clock time,
//! and access times survive restarts in the metadata database), so tokio's paused clock cannot
//! stand in for it; a manual clock, shared by a test's successive servers, can.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of Unix milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `start_ms` until [`Clock::advance`] moves it; clones share it.
    pub fn manual(start_ms: u64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(start_ms))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(at) => at.load(Ordering::Acquire),
            None => crate::ttl::now_ms(),
        }
    }

    /// Moves a manual clock forward by `ms` (the system clock moves by itself).
    pub fn advance(&self, ms: u64) {
        if let Some(at) = &self.manual {
            at.fetch_add(ms, Ordering::AcqRel);
        }
    }
}
