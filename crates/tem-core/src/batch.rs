//! Batches: a named group of tasks with one status, one retry policy and shared counters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::interrupt::InterruptionCriteria;
use crate::retry::RetryPolicy;
use crate::time::Millis;

/// A batch's database id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(pub i64);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a batch is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Its tasks may be claimed.
    Active,
    /// Stopped by an interruption criterion or by hand; `resume` re-activates it.
    Interrupted,
    /// Every task reached a terminal status.
    Completed,
    /// Cancelled by hand; its pending tasks became `cancelled`.
    Cancelled,
}

impl BatchStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Active => "active",
            BatchStatus::Interrupted => "interrupted",
            BatchStatus::Completed => "completed",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// True once nothing more will run unless someone resumes or retries it.
    pub fn is_finished(self) -> bool {
        !matches!(self, BatchStatus::Active)
    }

    /// True when its tasks must not start any more (interrupted or cancelled).
    pub fn stops_work(self) -> bool {
        matches!(self, BatchStatus::Interrupted | BatchStatus::Cancelled)
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BatchStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => BatchStatus::Active,
            "interrupted" => BatchStatus::Interrupted,
            "completed" => BatchStatus::Completed,
            "cancelled" => BatchStatus::Cancelled,
            other => return Err(Error::Corrupt(format!("unknown batch status `{other}`"))),
        })
    }
}

/// What to create: a batch's code, type and options.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewBatch {
    /// Unique, caller-chosen name (e.g. `import-2026-11-22`).
    pub code: String,
    /// Free-form kind of the batch, for filtering.
    #[serde(rename = "type")]
    pub kind: String,
    /// Caller data kept with the batch.
    pub metadata: Option<serde_json::Value>,
    /// Retry policy for its tasks; the engine's default when absent.
    pub retry: Option<RetryPolicy>,
    /// When to interrupt the batch; merged over the engine's defaults key by key.
    pub criteria: Option<InterruptionCriteria>,
}

impl NewBatch {
    /// A batch named `code` of type `kind`.
    pub fn new(code: impl Into<String>, kind: impl Into<String>) -> Self {
        NewBatch {
            code: code.into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    /// Attaches caller metadata.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the retry policy of the batch's tasks.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets interruption criteria.
    pub fn criteria(mut self, criteria: InterruptionCriteria) -> Self {
        self.criteria = Some(criteria);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.code.trim().is_empty() {
            return Err(Error::invalid("code", "a batch code must not be empty"));
        }
        if self.code.len() > 200 {
            return Err(Error::invalid("code", "a batch code must be at most 200 bytes"));
        }
        if self.kind.trim().is_empty() {
            return Err(Error::invalid("type", "a batch type must not be empty"));
        }
        if let Some(retry) = &self.retry {
            retry.validate()?;
        }
        if let Some(criteria) = &self.criteria {
            criteria.validate()?;
        }
        Ok(())
    }
}

/// Task counts and outcome counters of a batch, kept current in every commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStats {
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Attempts that failed and were scheduled again.
    pub retried: i64,
    /// Attempts answered with 429.
    pub rate_limited: i64,
    /// Attempts answered with 502/503/504.
    pub overloaded: i64,
    /// Attempts cancelled by their timeout.
    pub timed_out: i64,
    /// Attempts whose worker vanished (lease expired).
    pub lost: i64,
    /// Terminal task failures since the last task success.
    pub consecutive_failures: i64,
    /// Tasks waiting for another attempt after a failed one.
    #[serde(default)]
    pub retrying: i64,
}

impl BatchStats {
    /// Tasks that reached a terminal status.
    pub fn finished(&self) -> i64 {
        self.completed + self.failed + self.cancelled
    }

    /// True when no task is pending or running.
    pub fn is_drained(&self) -> bool {
        self.pending == 0 && self.running == 0
    }
}

/// Which batches to list.
#[derive(Clone, Debug, Default)]
pub struct BatchFilter {
    pub status: Option<BatchStatus>,
    pub kind: Option<String>,
    pub limit: Option<u32>,
}

/// What `resume` did. Resuming re-activates an interrupted batch and restarts what the
/// interruption criteria judge: failed, finished, rate-limited and overloaded counts are taken
/// from the resume on, the consecutive-failure run restarts at zero, and the batch-runtime clock
/// restarts at the next claim. The totals in [`BatchStats`] are never reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// Tasks that were stranded in `running` (lease expired) and are pending again.
    pub requeued: u64,
    /// Whether the batch went from `interrupted` back to `active`.
    pub reactivated: bool,
}

/// Why a batch was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptionReason {
    FailedTasksExceeded,
    ConsecutiveFailuresExceeded,
    ErrorRateExceeded,
    RateLimitedExceeded,
    OverloadedExceeded,
    BatchRuntimeExceeded,
    /// Interrupted by hand (`Engine::interrupt`, `tem batch interrupt`).
    Manual,
}

impl InterruptionReason {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            InterruptionReason::FailedTasksExceeded => "failed_tasks_exceeded",
            InterruptionReason::ConsecutiveFailuresExceeded => "consecutive_failures_exceeded",
            InterruptionReason::ErrorRateExceeded => "error_rate_exceeded",
            InterruptionReason::RateLimitedExceeded => "rate_limited_exceeded",
            InterruptionReason::OverloadedExceeded => "overloaded_exceeded",
            InterruptionReason::BatchRuntimeExceeded => "batch_runtime_exceeded",
            InterruptionReason::Manual => "manual",
        }
    }
}

impl fmt::Display for InterruptionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InterruptionReason {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "failed_tasks_exceeded" => InterruptionReason::FailedTasksExceeded,
            "consecutive_failures_exceeded" => InterruptionReason::ConsecutiveFailuresExceeded,
            "error_rate_exceeded" => InterruptionReason::ErrorRateExceeded,
            "rate_limited_exceeded" => InterruptionReason::RateLimitedExceeded,
            "overloaded_exceeded" => InterruptionReason::OverloadedExceeded,
            "batch_runtime_exceeded" => InterruptionReason::BatchRuntimeExceeded,
            "manual" => InterruptionReason::Manual,
            other => return Err(Error::Corrupt(format!("unknown interruption reason `{other}`"))),
        })
    }
}

/// One interruption of a batch, from its log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    pub batch_id: BatchId,
    pub reason: InterruptionReason,
    /// What was crossed, in words (e.g. "11 tasks failed; max_failed_tasks is 10").
    pub message: String,
    /// The batch's counters at that moment.
    pub stats: BatchStats,
    pub at: Millis,
}

/// A batch as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Batch {
    pub id: BatchId,
    pub code: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: BatchStatus,
    pub metadata: Option<serde_json::Value>,
    /// The batch's own retry policy, if it has one.
    pub retry: Option<RetryPolicy>,
    /// The batch's own interruption criteria, if it has any.
    pub criteria: Option<InterruptionCriteria>,
    pub created_at: Millis,
    /// When its first task was first claimed.
    pub started_at: Option<Millis>,
    /// When it completed or was cancelled.
    pub finished_at: Option<Millis>,
    /// When its first task reached a terminal status.
    pub first_finished_at: Option<Millis>,
    /// When its latest task reached a terminal status.
    pub last_finished_at: Option<Millis>,
    /// Start of the current run: the first claim after creation or after the last resume.
    pub run_started_at: Option<Millis>,
    /// Why it is interrupted, while it is.
    pub interruption: Option<Interruption>,
    pub stats: BatchStats,
}
