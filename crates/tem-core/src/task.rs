//! Tasks: one unit of work (usually one remote call) with its payload, status and attempts.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::batch::BatchId;
use crate::error::{Error, Result};
use crate::time::Millis;

/// A task's database id; ids grow in enqueue order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub i64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be claimed (possibly not before its `run_after`).
    Pending,
    /// Claimed by a worker holding a lease.
    Running,
    /// Succeeded; `result` holds what the handler returned.
    Completed,
    /// Failed for good; `last_error` says why, the attempt history says why each attempt failed.
    Failed,
    /// Its batch was cancelled before it ran.
    Cancelled,
}

impl TaskStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "task status",
                    format!("`{s}` is not one of pending, running, completed, failed, cancelled"),
                )
            })
    }
}

/// A task to enqueue.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub(crate) kind: String,
    pub(crate) payload: String,
    pub(crate) priority: i32,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) run_after: Option<Millis>,
    pub(crate) cost: u64,
}

impl NewTask {
    /// A task of type `kind` whose payload is `payload` serialised as JSON.
    pub fn new(kind: impl Into<String>, payload: &impl Serialize) -> Result<Self> {
        let payload = serde_json::to_string(payload).map_err(|source| Error::Json {
            what: "task payload",
            source,
        })?;
        Ok(Self::from_json(kind, payload))
    }

    /// A task whose payload is already JSON text (not re-validated here; a payload its handler
    /// cannot parse fails that task with a clear error, never the batch).
    pub fn from_json(kind: impl Into<String>, payload: String) -> Self {
        NewTask {
            kind: kind.into(),
            payload,
            priority: 0,
            max_attempts: None,
            run_after: None,
            cost: 1,
        }
    }

    /// Higher runs first; equal priorities run in enqueue order.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Overrides the batch's `max_attempts` for this task.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Not before this time.
    pub fn run_after(mut self, at: Millis) -> Self {
        self.run_after = Some(at);
        self
    }

    /// Estimated cost against a weighted budget (e.g. tokens); 1 by default.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// The task type.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// A task as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub batch_id: BatchId,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: TaskStatus,
    pub priority: i32,
    /// Attempts started so far (1-based once claimed).
    pub attempt: u32,
    pub max_attempts: u32,
    pub cost: u64,
    /// JSON text.
    pub payload: String,
    /// JSON text returned by the handler, once completed.
    pub result: Option<String>,
    pub last_error: Option<String>,
    pub run_after: Millis,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    pub created_at: Millis,
    /// Start of the current or last attempt.
    pub claimed_at: Option<Millis>,
    pub first_started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

impl Task {
    /// The payload parsed as `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.payload).map_err(|source| Error::Json {
            what: "task payload",
            source,
        })
    }

    /// The result parsed as `T`, if the task has one.
    pub fn result_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.result
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|source| Error::Json {
                what: "task result",
                source,
            })
    }
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Retryable,
    NonRetryable,
    RateLimited,
    Overloaded,
    Timeout,
    /// The worker stopped renewing its lease (crashed, killed, partitioned).
    LeaseExpired,
    /// The worker was aborted; the attempt was not charged.
    Aborted,
}

impl AttemptOutcome {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retryable => "retryable",
            AttemptOutcome::NonRetryable => "non_retryable",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::Overloaded => "overloaded",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::Aborted => "aborted",
        }
    }
}

impl From<crate::outcome::ErrorKind> for AttemptOutcome {
    fn from(kind: crate::outcome::ErrorKind) -> Self {
        use crate::outcome::ErrorKind;
        match kind {
            ErrorKind::Retryable => AttemptOutcome::Retryable,
            ErrorKind::NonRetryable => AttemptOutcome::NonRetryable,
            ErrorKind::RateLimited => AttemptOutcome::RateLimited,
            ErrorKind::Overloaded => AttemptOutcome::Overloaded,
            ErrorKind::Timeout => AttemptOutcome::Timeout,
        }
    }
}

impl FromStr for AttemptOutcome {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "succeeded" => AttemptOutcome::Succeeded,
            "retryable" => AttemptOutcome::Retryable,
            "non_retryable" => AttemptOutcome::NonRetryable,
            "rate_limited" => AttemptOutcome::RateLimited,
            "overloaded" => AttemptOutcome::Overloaded,
            "timeout" => AttemptOutcome::Timeout,
            "lease_expired" => AttemptOutcome::LeaseExpired,
            "aborted" => AttemptOutcome::Aborted,
            other => return Err(Error::Corrupt(format!("unknown attempt outcome `{other}`"))),
        })
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of a task, from the history table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub task_id: TaskId,
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub outcome: AttemptOutcome,
    pub http_status: Option<u16>,
    pub message: Option<String>,
    /// When the next attempt was allowed to start; `None` when this was the last one.
    pub retry_at: Option<Millis>,
}

/// Which tasks to list.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub batch: Option<BatchId>,
    pub status: Option<TaskStatus>,
    pub kind: Option<String>,
    /// Only tasks with a larger id (for paging in id order).
    pub after: Option<TaskId>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
}
