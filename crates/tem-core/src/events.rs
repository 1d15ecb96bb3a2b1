//! Progress events: what a UI subscribes to instead of polling the database.
//!
//! Events are published after the commit that caused them, so a subscriber never sees a task
//! counted as completed that a crash could still lose. A slow subscriber may miss events
//! (`RecvError::Lagged`); every event carries full counters, so the next one catches it up.

use crate::batch::{BatchId, BatchStats, BatchStatus};

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
}
