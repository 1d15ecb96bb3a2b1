//! Deleting a batch on Postgres: one transaction that locks the batch row first. A claim's
//! counter update needs that row too, so no claim can take a lease between the check and the
//! delete.

use super::PgStore;
use super::batches::lock_status;
use crate::batch::BatchId;
use crate::error::Result;
use crate::store::delete::{self, Deleted};
use crate::time::now_ms;

impl PgStore {
    pub async fn delete_batch(&self, batch: BatchId) -> Result<Deleted> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (code, _) = lock_status(&mut tx, batch).await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM task WHERE batch_id = $1 AND status = 'running' AND lease_expires_at >= $2",
        )
        .bind(batch.0)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        delete::check(&code, live.max(0) as u64)?;
        let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempt WHERE batch_id = $1")
            .bind(batch.0)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM limit_rate WHERE key LIKE $1")
            .bind(delete::rate_rows(batch))
            .execute(&mut *tx)
            .await?;
        // Explicit rather than by cascade, the same statements as on SQLite.
        sqlx::query("DELETE FROM task_attempt WHERE batch_id = $1")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?;
        let tasks = sqlx::query("DELETE FROM task WHERE batch_id = $1")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM batch_interruption WHERE batch_id = $1")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM batch WHERE id = $1")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Deleted {
            tasks,
            attempts: attempts.max(0) as u64,
        })
    }
}
