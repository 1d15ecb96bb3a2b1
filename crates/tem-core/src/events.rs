//! Progress events: what a UI subscribes to instead of polling the database.
//!
//! Events are published after the commit that caused them, so a subscriber never sees a task
//! counted as completed that a crash could still lose. A slow subscriber may miss events
//! (`RecvError::Lagged`); every event carries full counters, so the next one catches it up.

use crate::batch::{BatchId, BatchStats, BatchStatus};
use crate::time::Millis;

/// A batch's status and counters right after a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchProgress {
    pub batch_id: BatchId,
    pub status: BatchStatus,
    pub stats: BatchStats,
}

/// Something that happened in the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A batch's counters changed (tasks enqueued, claimed, finished, retried…).
    Progress(BatchProgress),
    /// The database stopped answering (a restart, a dropped connection, a lock held elsewhere):
    /// database work waits and retries until `gives_up_at_ms`; calls in flight go on.
    DatabaseUnavailable {
        /// The first error of the outage.
        error: String,
        since_ms: Millis,
        gives_up_at_ms: Millis,
    },
    /// The database answers again after an outage that lasted `after`.
    DatabaseRecovered { after: std::time::Duration },
}
