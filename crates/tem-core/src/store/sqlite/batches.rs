//! Batch rows: create, read, list, and the counter updates every transaction ends with.

use std::collections::BTreeSet;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use super::program::{Program, StatementResult};
use crate::batch::{Batch, BatchFilter, BatchId, BatchStats, BatchStatus, Interruption, NewBatch};
use crate::error::{Error, Result};
use crate::store::BatchProgress;
use crate::time::{Millis, now_ms};

pub(super) const BATCH_COLUMNS: &str = "id, code, type, status, metadata, interruption_criteria, \
    retry_policy, created_at, started_at, finished_at, first_finished_at, last_finished_at, \
    total, pending, running, completed, failed, cancelled, retried, rate_limited, overloaded, \
    timed_out, lost, consecutive_failures, retrying, run_started_at, interrupted_at, \
    interruption_reason, interruption_message";

const STATS_COLUMNS: &str = "status, total, pending, running, completed, failed, cancelled, \
    retried, rate_limited, overloaded, timed_out, lost, consecutive_failures, retrying";

impl SqliteStore {
    pub async fn create_batch(&self, new: &NewBatch) -> Result<Batch> {
        let metadata = json_text(&new.metadata, "batch metadata")?;
        // No criteria and empty criteria are the same thing; NULL lets the check skip the batch.
        let criteria = json_text(
            &new.criteria.as_ref().filter(|c| !c.is_empty()),
            "interruption criteria",
        )?;
        let retry = json_text(&new.retry, "retry policy")?;
        let inserted = sqlx::query(
            "INSERT INTO batch (code, type, metadata, interruption_criteria, retry_policy, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (code) DO NOTHING RETURNING id",
        )
        .bind(&new.code)
        .bind(&new.kind)
        .bind(metadata)
        .bind(criteria)
        .bind(retry)
        .bind(now_ms())
        .fetch_optional(&self.write)
        .await?;
        let Some(row) = inserted else {
            return Err(Error::DuplicateBatch(new.code.clone()));
        };
        let id = BatchId(row.try_get(0)?);
        self.batch(id)
            .await?
            .ok_or_else(|| Error::BatchNotFound(id.to_string()))
    }

    pub async fn batch(&self, id: BatchId) -> Result<Option<Batch>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batch WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(batch_from_row).transpose()
    }

    pub async fn batch_by_code(&self, code: &str) -> Result<Option<Batch>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batch WHERE code = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(batch_from_row).transpose()
    }

    pub async fn batches(&self, filter: &BatchFilter) -> Result<Vec<Batch>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batch \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR type = ?2) \
             ORDER BY id DESC LIMIT ?3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.kind.as_deref())
            .bind(i64::from(filter.limit.unwrap_or(1000)))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(batch_from_row).collect()
    }
}

/// Adds a read of the counters of the batches in `ids` (and of every active batch, or one that
/// finished in this cycle, when `everything_active`), for progress events.
pub(super) fn push_progress(
    program: &mut Program,
    ids: &BTreeSet<i64>,
    everything_active: bool,
    now: Millis,
) -> Result<usize> {
    let ids: Vec<i64> = ids.iter().copied().collect();
    let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
    program.push(
        &format!(
            "SELECT id, {STATS_COLUMNS} FROM batch \
             WHERE id IN (SELECT value FROM json_each(?)) \
                OR (? AND (status = 'active' OR finished_at >= ? OR interrupted_at >= ?))"
        ),
        &[ids.into(), everything_active.into(), now.into(), now.into()],
    )
}

/// The progress rows of a [`push_progress`] statement.
pub(super) fn progress(results: &[StatementResult], statement: usize) -> Result<Vec<BatchProgress>> {
    results[statement]
        .rows
        .iter()
        .map(|row| {
            Ok(BatchProgress {
                batch_id: BatchId(row.try_get(0)?),
                status: row.try_get::<&str, _>(1)?.parse()?,
                stats: stats_from_row(row, 2)?,
            })
        })
        .collect()
}

/// The batch's status and counters as the writer sees them (inside its transaction).
pub(super) async fn progress_in_tx(conn: &mut SqliteConnection, batch: BatchId) -> Result<BatchProgress> {
    let sql = format!("SELECT {STATS_COLUMNS} FROM batch WHERE id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(batch.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::BatchNotFound(batch.to_string()))?;
    Ok(BatchProgress {
        batch_id: batch,
        status: row.try_get::<&str, _>(0)?.parse()?,
        stats: stats_from_row(&row, 1)?,
    })
}

/// Reads a status inside a transaction (the writer's view, not a reader snapshot).
pub(super) async fn status_in_tx(
    conn: &mut SqliteConnection,
    batch: BatchId,
) -> Result<(String, BatchStatus)> {
    let row = sqlx::query("SELECT code, status FROM batch WHERE id = ?")
        .bind(batch.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::BatchNotFound(batch.to_string()))?;
    Ok((row.try_get(0)?, row.try_get::<&str, _>(1)?.parse()?))
}

pub(super) fn batch_from_row(row: &SqliteRow) -> Result<Batch> {
    let id = BatchId(row.try_get(0)?);
    let stats = stats_from_row(row, 12)?;
    let status: BatchStatus = row.try_get::<&str, _>(3)?.parse()?;
    let interrupted_at: Option<Millis> = row.try_get(26)?;
    let reason: Option<&str> = row.try_get(27)?;
    let interruption = match (status, interrupted_at, reason) {
        (BatchStatus::Interrupted, Some(at), Some(reason)) => Some(Interruption {
            batch_id: id,
            reason: reason.parse()?,
            message: row.try_get::<Option<String>, _>(28)?.unwrap_or_default(),
            stats,
            at,
        }),
        _ => None,
    };
    Ok(Batch {
        id,
        code: row.try_get(1)?,
        kind: row.try_get(2)?,
        status,
        metadata: parse_json(row.try_get(4)?, "batch metadata")?,
        criteria: parse_json(row.try_get(5)?, "interruption criteria")?,
        retry: parse_json(row.try_get(6)?, "retry policy")?,
        created_at: row.try_get(7)?,
        started_at: row.try_get(8)?,
        finished_at: row.try_get(9)?,
        first_finished_at: row.try_get(10)?,
        last_finished_at: row.try_get(11)?,
        run_started_at: row.try_get(25)?,
        interruption,
        stats,
    })
}

/// Reads the thirteen counters starting at column `at`.
pub(super) fn stats_from_row(row: &SqliteRow, at: usize) -> Result<BatchStats> {
    let n = |i: usize| -> Result<i64> { Ok(row.try_get::<i64, _>(at + i)?) };
    Ok(BatchStats {
        total: n(0)?,
        pending: n(1)?,
        running: n(2)?,
        completed: n(3)?,
        failed: n(4)?,
        cancelled: n(5)?,
        retried: n(6)?,
        rate_limited: n(7)?,
        overloaded: n(8)?,
        timed_out: n(9)?,
        lost: n(10)?,
        consecutive_failures: n(11)?,
        retrying: n(12)?,
    })
}

fn json_text<T: serde::Serialize>(value: &Option<T>, what: &'static str) -> Result<Option<String>> {
    value
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|source| Error::Json { what, source })
}

fn parse_json<T: serde::de::DeserializeOwned>(text: Option<&str>, what: &'static str) -> Result<Option<T>> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|source| Error::Json { what, source })
}
