//! Batch rows: create, read, list, and the counter reads every transaction ends with.

use sqlx::PgConnection;
use sqlx::Row;

use super::PgStore;
use crate::batch::{Batch, BatchFilter, BatchId, BatchStatus, NewBatch};
use crate::error::{Error, Result};
use crate::store::BatchProgress;
use crate::store::rows::{self, BATCH_COLUMNS, STATS_COLUMNS};
use crate::time::{Millis, now_ms};

impl PgStore {
    pub async fn create_batch(&self, new: &NewBatch) -> Result<Batch> {
        let metadata = rows::json_text(&new.metadata, "batch metadata")?;
        // No criteria and empty criteria are the same thing; NULL lets the check skip the batch.
        let criteria = rows::json_text(
            &new.criteria.as_ref().filter(|c| !c.is_empty()),
            "interruption criteria",
        )?;
        let retry = rows::json_text(&new.retry, "retry policy")?;
        let sql = format!(
            "INSERT INTO batch (code, type, metadata, interruption_criteria, retry_policy, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code) DO NOTHING RETURNING {BATCH_COLUMNS}"
        );
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&new.code)
            .bind(&new.kind)
            .bind(metadata)
            .bind(criteria)
            .bind(retry)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        match inserted {
            Some(row) => rows::batch(&row),
            None => Err(Error::DuplicateBatch(new.code.clone())),
        }
    }

    pub async fn batch(&self, id: BatchId) -> Result<Option<Batch>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batch WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::batch).transpose()
    }

    pub async fn batch_by_code(&self, code: &str) -> Result<Option<Batch>> {
        let sql = format!("SELECT {BATCH_COLUMNS} FROM batch WHERE code = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::batch).transpose()
    }

    pub async fn batches(&self, filter: &BatchFilter) -> Result<Vec<Batch>> {
        let sql = format!(
            "SELECT {BATCH_COLUMNS} FROM batch \
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.kind.as_deref())
            .bind(i64::from(filter.limit.unwrap_or(1000)))
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::batch).collect()
    }
}

/// The counters of the batches in `ids` (and of every active batch, or one that finished or was
/// interrupted in this cycle, when `everything_active`), for progress events.
pub(super) async fn progress_of(
    conn: &mut PgConnection,
    ids: &[i64],
    everything_active: bool,
    now: Millis,
) -> Result<Vec<BatchProgress>> {
    let sql = format!(
        "SELECT id, {STATS_COLUMNS} FROM batch \
         WHERE id = ANY($1) OR ($2 AND (status = 'active' OR finished_at >= $3 OR interrupted_at >= $3))"
    );
    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .bind(everything_active)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    found.iter().map(rows::progress).collect()
}

/// One batch's status and counters, as this transaction sees them.
pub(super) async fn progress_in_tx(conn: &mut PgConnection, batch: BatchId) -> Result<BatchProgress> {
    progress_of(conn, &[batch.0], false, 0)
        .await?
        .pop()
        .ok_or_else(|| Error::BatchNotFound(batch.to_string()))
}

/// Locks the batch row for this transaction and reads its code and status.
pub(super) async fn lock_status(conn: &mut PgConnection, batch: BatchId) -> Result<(String, BatchStatus)> {
    let row = sqlx::query("SELECT code, status FROM batch WHERE id = $1 FOR UPDATE")
        .bind(batch.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::BatchNotFound(batch.to_string()))?;
    Ok((row.try_get(0)?, row.try_get::<&str, _>(1)?.parse()?))
}
