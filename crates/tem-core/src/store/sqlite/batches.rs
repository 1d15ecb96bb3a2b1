//! Batch rows: create, read, list, and the counter updates every transaction ends with.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use crate::batch::{Batch, BatchFilter, BatchId, BatchStats, BatchStatus, NewBatch};
use crate::error::{Error, Result};
use crate::store::{BatchDelta, BatchProgress};
use crate::time::{Millis, now_ms};

pub(super) const BATCH_COLUMNS: &str = "id, code, type, status, metadata, interruption_criteria, \
    retry_policy, created_at, started_at, finished_at, first_finished_at, last_finished_at, \
    total, pending, running, completed, failed, cancelled, retried, rate_limited, overloaded, \
    timed_out, lost, consecutive_failures";

const STATS_COLUMNS: &str = "status, total, pending, running, completed, failed, cancelled, \
    retried, rate_limited, overloaded, timed_out, lost, consecutive_failures";

impl SqliteStore {
    pub async fn create_batch(&self, new: &NewBatch) -> Result<Batch> {
        let metadata = json_text(&new.metadata, "batch metadata")?;
        let criteria = json_text(&new.criteria, "interruption criteria")?;
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
        self.batch(id).await?.ok_or_else(|| Error::BatchNotFound(id.to_string()))
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

/// Applies `delta` to a batch inside the caller's transaction and completes the batch when its
/// last task finished. Returns the batch as committed.
pub(super) async fn apply_delta(
    conn: &mut SqliteConnection,
    batch: BatchId,
    delta: &BatchDelta,
    now: Millis,
) -> Result<BatchProgress> {
    let sql = format!(
        "UPDATE batch SET \
           total = total + ?1, pending = pending + ?2, running = running + ?3, \
           completed = completed + ?4, failed = failed + ?5, cancelled = cancelled + ?6, \
           retried = retried + ?7, rate_limited = rate_limited + ?8, overloaded = overloaded + ?9, \
           timed_out = timed_out + ?10, lost = lost + ?11, \
           consecutive_failures = CASE WHEN ?12 THEN ?13 ELSE consecutive_failures + ?13 END, \
           started_at = COALESCE(started_at, ?14), \
           first_finished_at = COALESCE(first_finished_at, ?15), \
           last_finished_at = CASE WHEN ?15 IS NULL THEN last_finished_at \
                                   WHEN last_finished_at IS NULL OR last_finished_at < ?15 THEN ?15 \
                                   ELSE last_finished_at END \
         WHERE id = ?16 RETURNING {STATS_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(delta.total)
        .bind(delta.pending)
        .bind(delta.running)
        .bind(delta.completed)
        .bind(delta.failed)
        .bind(delta.cancelled)
        .bind(delta.retried)
        .bind(delta.rate_limited)
        .bind(delta.overloaded)
        .bind(delta.timed_out)
        .bind(delta.lost)
        .bind(delta.consecutive_reset)
        .bind(delta.consecutive_added)
        .bind(delta.started_at)
        .bind(delta.finished_at)
        .bind(batch.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::BatchNotFound(batch.to_string()))?;
    let mut status: BatchStatus = row.try_get::<&str, _>(0)?.parse()?;
    let mut stats = stats_from_row(&row, 1)?;
    if status == BatchStatus::Cancelled && stats.pending > 0 {
        // A task that came back to pending after its batch was cancelled (a retry of an
        // attempt that was running at the time) is cancelled too, never stranded.
        let n = sqlx::query(
            "UPDATE task SET status = 'cancelled', finished_at = ? WHERE batch_id = ? AND status = 'pending'",
        )
        .bind(now)
        .bind(batch.0)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        sqlx::query("UPDATE batch SET pending = pending - ?1, cancelled = cancelled + ?1 WHERE id = ?2")
            .bind(n)
            .bind(batch.0)
            .execute(&mut *conn)
            .await?;
        stats.pending -= n;
        stats.cancelled += n;
    }
    if status == BatchStatus::Active && stats.total > 0 && stats.is_drained() {
        let done = sqlx::query(
            "UPDATE batch SET status = 'completed', finished_at = ? WHERE id = ? AND status = 'active'",
        )
        .bind(now)
        .bind(batch.0)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            status = BatchStatus::Completed;
            tracing::info!(batch = batch.0, completed = stats.completed, failed = stats.failed, "batch completed");
        }
    }
    Ok(BatchProgress {
        batch_id: batch,
        status,
        stats,
    })
}

/// Reads a status inside a transaction (the writer's view, not a reader snapshot).
pub(super) async fn status_in_tx(conn: &mut SqliteConnection, batch: BatchId) -> Result<(String, BatchStatus)> {
    let row = sqlx::query("SELECT code, status FROM batch WHERE id = ?")
        .bind(batch.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::BatchNotFound(batch.to_string()))?;
    Ok((row.try_get(0)?, row.try_get::<&str, _>(1)?.parse()?))
}

pub(super) fn batch_from_row(row: &SqliteRow) -> Result<Batch> {
    Ok(Batch {
        id: BatchId(row.try_get(0)?),
        code: row.try_get(1)?,
        kind: row.try_get(2)?,
        status: row.try_get::<&str, _>(3)?.parse()?,
        metadata: parse_json(row.try_get(4)?, "batch metadata")?,
        criteria: parse_json(row.try_get(5)?, "interruption criteria")?,
        retry: parse_json(row.try_get(6)?, "retry policy")?,
        created_at: row.try_get(7)?,
        started_at: row.try_get(8)?,
        finished_at: row.try_get(9)?,
        first_finished_at: row.try_get(10)?,
        last_finished_at: row.try_get(11)?,
        stats: stats_from_row(row, 12)?,
    })
}

/// Reads the twelve counters starting at column `at`.
fn stats_from_row(row: &SqliteRow, at: usize) -> Result<BatchStats> {
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
