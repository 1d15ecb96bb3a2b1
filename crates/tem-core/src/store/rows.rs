//! Rows into records, for every backend: both schemas return the same columns in the same
//! order, so one decoder per record reads either, through [`Columns`].

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::batch::{Batch, BatchId, BatchStats, BatchStatus, Interruption};
use crate::error::{Error, Result};
use crate::store::{BatchProgress, ClaimedTask};
use crate::task::{Attempt, Task, TaskId};
use crate::time::Millis;

/// The column types the engine stores: integers, text and (for aggregates) floats.
pub(crate) trait Columns {
    fn int(&self, at: usize) -> Result<i64>;
    fn opt_int(&self, at: usize) -> Result<Option<i64>>;
    fn text(&self, at: usize) -> Result<String>;
    fn opt_text(&self, at: usize) -> Result<Option<String>>;
    fn opt_float(&self, at: usize) -> Result<Option<f64>>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn int(&self, at: usize) -> Result<i64> {
                Ok(self.try_get(at)?)
            }
            fn opt_int(&self, at: usize) -> Result<Option<i64>> {
                Ok(self.try_get(at)?)
            }
            fn text(&self, at: usize) -> Result<String> {
                Ok(self.try_get(at)?)
            }
            fn opt_text(&self, at: usize) -> Result<Option<String>> {
                Ok(self.try_get(at)?)
            }
            fn opt_float(&self, at: usize) -> Result<Option<f64>> {
                Ok(self.try_get(at)?)
            }
        }
    };
}

columns_for!(SqliteRow);
columns_for!(PgRow);

/// An integer column that must fit a narrower type (a corrupt row says which column).
fn narrow<T: TryFrom<i64>>(value: i64, column: &str) -> Result<T> {
    T::try_from(value).map_err(|_| Error::Corrupt(format!("{column} {value} is out of range")))
}

pub(crate) const BATCH_COLUMNS: &str = "id, code, type, status, metadata, interruption_criteria, \
    retry_policy, created_at, started_at, finished_at, first_finished_at, last_finished_at, \
    total, pending, running, completed, failed, cancelled, retried, rate_limited, overloaded, \
    timed_out, lost, consecutive_failures, retrying, run_started_at, interrupted_at, \
    interruption_reason, interruption_message";

pub(crate) const STATS_COLUMNS: &str = "status, total, pending, running, completed, failed, cancelled, \
    retried, rate_limited, overloaded, timed_out, lost, consecutive_failures, retrying";

pub(crate) const TASK_COLUMNS: &str = "id, batch_id, type, status, priority, attempt, max_attempts, cost, \
    payload, result, last_error, run_after, lease_owner, lease_expires_at, created_at, claimed_at, \
    first_started_at, finished_at";

/// What a claim returns, in [`claimed_task`]'s order.
pub(crate) const CLAIMED_COLUMNS: &str =
    "id, batch_id, type, attempt, max_attempts, cost, payload, lease_token, priority";

/// The columns of the attempts query.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "task_id, attempt, worker, started_at, finished_at, outcome, http_status, message, retry_at";

pub(crate) fn batch(row: &impl Columns) -> Result<Batch> {
    let id = BatchId(row.int(0)?);
    let stats = stats(row, 12)?;
    let status: BatchStatus = row.text(3)?.parse()?;
    let interrupted_at: Option<Millis> = row.opt_int(26)?;
    let reason = row.opt_text(27)?;
    let interruption = match (status, interrupted_at, reason) {
        (BatchStatus::Interrupted, Some(at), Some(reason)) => Some(Interruption {
            batch_id: id,
            reason: reason.parse()?,
            message: row.opt_text(28)?.unwrap_or_default(),
            stats,
            at,
        }),
        _ => None,
    };
    Ok(Batch {
        id,
        code: row.text(1)?,
        kind: row.text(2)?,
        status,
        metadata: parse_json(row.opt_text(4)?, "batch metadata")?,
        criteria: parse_json(row.opt_text(5)?, "interruption criteria")?,
        retry: parse_json(row.opt_text(6)?, "retry policy")?,
        created_at: row.int(7)?,
        started_at: row.opt_int(8)?,
        finished_at: row.opt_int(9)?,
        first_finished_at: row.opt_int(10)?,
        last_finished_at: row.opt_int(11)?,
        run_started_at: row.opt_int(25)?,
        interruption,
        stats,
    })
}

/// The thirteen counters of [`STATS_COLUMNS`] after its status, starting at column `at`.
pub(crate) fn stats(row: &impl Columns, at: usize) -> Result<BatchStats> {
    Ok(BatchStats {
        total: row.int(at)?,
        pending: row.int(at + 1)?,
        running: row.int(at + 2)?,
        completed: row.int(at + 3)?,
        failed: row.int(at + 4)?,
        cancelled: row.int(at + 5)?,
        retried: row.int(at + 6)?,
        rate_limited: row.int(at + 7)?,
        overloaded: row.int(at + 8)?,
        timed_out: row.int(at + 9)?,
        lost: row.int(at + 10)?,
        consecutive_failures: row.int(at + 11)?,
        retrying: row.int(at + 12)?,
    })
}

/// A row of `id, STATS_COLUMNS`.
pub(crate) fn progress(row: &impl Columns) -> Result<BatchProgress> {
    Ok(BatchProgress {
        batch_id: BatchId(row.int(0)?),
        status: row.text(1)?.parse()?,
        stats: stats(row, 2)?,
    })
}

pub(crate) fn task(row: &impl Columns) -> Result<Task> {
    Ok(Task {
        id: TaskId(row.int(0)?),
        batch_id: BatchId(row.int(1)?),
        kind: row.text(2)?,
        status: row.text(3)?.parse()?,
        priority: narrow(row.int(4)?, "priority")?,
        attempt: narrow(row.int(5)?, "attempt")?,
        max_attempts: narrow(row.int(6)?, "max_attempts")?,
        cost: u64::try_from(row.int(7)?).unwrap_or(0),
        payload: row.text(8)?,
        result: row.opt_text(9)?,
        last_error: row.opt_text(10)?,
        run_after: row.int(11)?,
        lease_owner: row.opt_text(12)?,
        lease_expires_at: row.opt_int(13)?,
        created_at: row.int(14)?,
        claimed_at: row.opt_int(15)?,
        first_started_at: row.opt_int(16)?,
        finished_at: row.opt_int(17)?,
    })
}

/// A claimed task and its priority (for handing tasks out in claim order).
pub(crate) fn claimed_task(row: &impl Columns) -> Result<(ClaimedTask, i64)> {
    Ok((
        ClaimedTask {
            id: TaskId(row.int(0)?),
            batch_id: BatchId(row.int(1)?),
            kind: row.text(2)?,
            attempt: narrow(row.int(3)?, "attempt")?,
            max_attempts: narrow(row.int(4)?, "max_attempts")?,
            cost: u64::try_from(row.int(5)?).unwrap_or(0),
            payload: row.text(6)?,
            lease_token: row.int(7)?,
            not_before: None,
            start_by: None,
        },
        row.int(8)?,
    ))
}

/// Claimed tasks in claim order: batch, then priority (highest first), then id.
pub(crate) fn in_claim_order(mut tasks: Vec<(ClaimedTask, i64)>) -> Vec<ClaimedTask> {
    tasks.sort_by_key(|(task, priority)| (task.batch_id, -priority, task.id));
    tasks.into_iter().map(|(task, _)| task).collect()
}

pub(crate) fn attempt(row: &impl Columns) -> Result<Attempt> {
    Ok(Attempt {
        task_id: TaskId(row.int(0)?),
        attempt: narrow(row.int(1)?, "attempt")?,
        worker: row.opt_text(2)?,
        started_at: row.int(3)?,
        finished_at: row.int(4)?,
        outcome: row.text(5)?.parse()?,
        http_status: row.opt_int(6)?.map(|s| narrow(s, "http_status")).transpose()?,
        message: row.opt_text(7)?,
        retry_at: row.opt_int(8)?,
    })
}

pub(crate) fn json_text<T: serde::Serialize>(
    value: &Option<T>,
    what: &'static str,
) -> Result<Option<String>> {
    value
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|source| Error::Json { what, source })
}

fn parse_json<T: serde::de::DeserializeOwned>(text: Option<String>, what: &'static str) -> Result<Option<T>> {
    text.as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|source| Error::Json { what, source })
}
