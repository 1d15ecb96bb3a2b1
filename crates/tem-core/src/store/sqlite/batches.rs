//! Batch rows: create, read, list, and the counter updates every transaction ends with.

use std::collections::BTreeSet;

use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use super::program::{Program, StatementResult};
use crate::batch::{Batch, BatchFilter, BatchId, BatchStatus, NewBatch};
use crate::error::{Error, Result};
use crate::store::BatchProgress;
use crate::store::rows::{self, BATCH_COLUMNS, STATS_COLUMNS};
use crate::time::{Millis, now_ms};

impl SqliteStore {
    pub async fn create_batch(&self, new: &NewBatch) -> Result<Batch> {
        let metadata = rows::json_text(&new.metadata, "batch metadata")?;
        // No criteria and empty criteria are the same thing; NULL lets the check skip the batch.
        let criteria = rows::json_text(
            &new.criteria.as_ref().filter(|c| !c.is_empty()),
            "interruption criteria",
        )?;
        let retry = rows::json_text(&new.retry, "retry policy")?;
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
        row.as_ref().map(rows::batch).transpose()
    }

    pub async fn batch_by_code(&self, code: &str) -> Result<Option<Batch>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batch WHERE code = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::batch).transpose()
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
        rows.iter().map(rows::batch).collect()
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
    results[statement].rows.iter().map(rows::progress).collect()
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
        stats: rows::stats(&row, 1)?,
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
