//! Storage: the operations the engine needs from a database, one module per backend.
//!
//! Each backend writes its own SQL (no lowest-common-denominator layer): the hot path is a
//! handful of set-based statements per group commit, and those are where backends differ.
//! The types here are what crosses the boundary; the committer and the engine never see SQL.

use std::sync::Arc;
use std::time::Duration;

use crate::batch::BatchId;
pub(crate) use crate::events::BatchProgress;
use crate::task::{AttemptOutcome, TaskId};
use crate::time::Millis;

pub(crate) mod delete;
mod dispatch;
pub(crate) mod outcome_json;
pub(crate) mod postgres;
pub(crate) mod rows;
pub(crate) mod sqlite;
mod steer;

pub use delete::Deleted;
pub(crate) use dispatch::Store;
pub use postgres::redact as redact_url;

/// The engine's default interruption criteria as JSON, for the check in every commit (`None`
/// when it has none, so batches without criteria of their own cost nothing).
pub(crate) fn criteria_json(
    criteria: &crate::interrupt::InterruptionCriteria,
) -> crate::error::Result<Option<Arc<str>>> {
    if criteria.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_string(criteria).map_err(|source| crate::error::Error::Json {
        what: "interruption criteria",
        source,
    })?;
    Ok(Some(json.into()))
}

/// The `limit_rate` row of a limit (`rate` or `budget`) of a key: per batch when the worker
/// serves one (a batch's limits are its own), else per limit key. Both backends key it so.
pub(crate) fn limit_row(batch: Option<BatchId>, limit: &str, key: &str) -> String {
    match batch {
        Some(batch) => format!("batch {} {limit}: {key}", batch.0),
        None => format!("{limit}: {key}"),
    }
}

/// How far a process's rate limit may have been spent (a GCRA timestamp on the wall clock),
/// made durable in the claim that spends it, before any of the claim's calls can start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpentRate {
    /// The row ([`limit_row`]).
    pub row: String,
    /// Microseconds since the Unix epoch; a row only ever moves forward.
    pub tat_us: i64,
}

/// A worker asking for up to `max` runnable tasks of some types.
#[derive(Clone, Debug)]
pub(crate) struct ClaimRequest {
    /// The lease owner written on claimed rows (unique per worker instance).
    pub owner: Arc<str>,
    /// JSON array of the task types the worker can run (never claim what it cannot run).
    pub types_json: Arc<str>,
    /// Only this batch, or every active batch (oldest first).
    pub batch: Option<BatchId>,
    pub max: u32,
    pub lease: Duration,
    /// A limit key whose durable pause must be respected.
    pub pause_key: Option<Arc<str>>,
    /// Limits that hold for every process on the database together (backends that serve many
    /// processes; SQLite serves one machine and keeps limits in each process).
    pub shared: SharedLimits,
    /// The key's rate state to make durable with this claim, on a backend whose limits live in
    /// each process (SQLite): what a killed run's successor resumes from.
    pub spent_rate: Option<SpentRate>,
}

/// Limits one claim must respect together with every other process's claims.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedLimits {
    /// At most this many of the batch's tasks running at once, across processes.
    pub concurrency: Option<u32>,
    /// The key's rate: each claimed task gets a start slot from one shared schedule.
    pub rate: Option<crate::limit::Quota>,
    /// The key's weighted budget: a claim waits until it is not overdrawn, then spends the
    /// task's estimated cost.
    pub budget: Option<crate::limit::Quota>,
}

/// A task's real cost differed from its estimate: the shared budget is corrected by the
/// difference in the commit that records the outcome.
#[derive(Clone, Debug)]
pub(crate) struct BudgetCorrection {
    /// The batch the claim named (`None`: a worker of every batch), which picks the row.
    pub scope: Option<BatchId>,
    pub key: Arc<str>,
    pub quota: crate::limit::Quota,
    pub estimated: u64,
    pub actual: u64,
}

/// What a claim produced.
#[derive(Debug)]
pub(crate) enum ClaimResult {
    Claimed(Vec<ClaimedTask>),
    /// The limit key is paused (e.g. by a 429 with Retry-After seen by another process).
    Paused {
        until: Millis,
    },
    /// A shared limit has no room now; it may have at `until`.
    Throttled {
        until: Millis,
    },
}

/// A task now leased to the claiming worker.
#[derive(Clone, Debug)]
pub(crate) struct ClaimedTask {
    pub id: TaskId,
    pub batch_id: BatchId,
    pub kind: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub cost: u64,
    pub payload: String,
    pub lease_token: i64,
    /// Its start slot in a shared rate schedule: the call must not start before.
    pub not_before: Option<tokio::time::Instant>,
    /// The durable rate state covers starts only until then: later, the task is given back
    /// unstarted.
    pub start_by: Option<tokio::time::Instant>,
}

/// Where a task goes after an attempt.
#[derive(Clone, Debug)]
pub(crate) enum Next {
    Complete {
        result: Option<String>,
    },
    Retry {
        run_after: Millis,
    },
    Fail,
    /// Back to pending without charging the attempt (the worker was aborted).
    Release,
}

/// One finished attempt, fenced by the lease it ran under.
#[derive(Clone, Debug)]
pub(crate) struct OutcomeRow {
    pub task_id: TaskId,
    pub lease_token: i64,
    pub batch_id: BatchId,
    pub attempt: u32,
    pub worker: Arc<str>,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub next: Next,
    pub outcome: AttemptOutcome,
    pub http_status: Option<u16>,
    pub message: Option<String>,
    /// Pause this limit key (a 429 with Retry-After, an opened circuit), in the same commit.
    pub pause: Option<KeyPause>,
    /// Record the attempt in the history table: every attempt that did not succeed and was
    /// really started (a success lives on in the task row itself).
    pub history: bool,
    /// Correct a shared budget by what the call really cost.
    pub budget_correction: Option<BudgetCorrection>,
}

/// What a renewal found.
#[derive(Clone, Debug, Default)]
pub(crate) struct Renewed {
    /// Tasks whose lease the worker still holds (now extended).
    pub held: Vec<TaskId>,
    /// Of those, the ones whose batch was interrupted or cancelled meanwhile.
    pub stopped: Vec<TaskId>,
}

/// A limit key paused until a time: no claims for its task types meanwhile, in any process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyPause {
    pub key: Arc<str>,
    pub until: Millis,
    /// Why, in words (the Retry-After's response, or "circuit open: …").
    pub reason: String,
}

/// Extend the leases of a worker's in-flight tasks.
#[derive(Clone, Debug)]
pub(crate) struct RenewRequest {
    pub owner: Arc<str>,
    pub ids: Vec<TaskId>,
    pub expires_at: Millis,
}

/// Everything one group commit does, in one transaction.
#[derive(Debug, Default)]
pub(crate) struct CycleInput {
    pub outcomes: Vec<OutcomeRow>,
    pub rescue: bool,
    /// Judge the interruption criteria of every active batch (the outcomes' batches are
    /// always judged), for limits that can be crossed with no outcome, like the batch runtime.
    pub check_all: bool,
    pub renewals: Vec<RenewRequest>,
    pub claims: Vec<ClaimRequest>,
}

/// What one group commit did, index-aligned with its input.
#[derive(Debug, Default)]
pub(crate) struct CycleOutput {
    /// Per outcome: whether the lease still held (false: someone else owns the task now).
    pub accepted: Vec<bool>,
    /// Per renewal: what it found.
    pub renewed: Vec<Renewed>,
    /// Per claim.
    pub claims: Vec<ClaimResult>,
    /// Attempts returned to the queue (or failed) because their lease expired.
    pub rescued: u64,
    /// Batches this commit interrupted (a criterion was crossed).
    pub interrupted: Vec<BatchId>,
    /// Batches whose counters changed, as committed.
    pub progress: Vec<BatchProgress>,
}
