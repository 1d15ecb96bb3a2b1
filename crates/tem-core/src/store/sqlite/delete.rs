//! Deleting a batch on SQLite: one `BEGIN IMMEDIATE` transaction, so no claim of this process or
//! another can take a lease between the check and the delete.

use super::SqliteStore;
use super::batches::status_in_tx;
use crate::batch::BatchId;
use crate::error::Result;
use crate::store::delete::{self, Deleted};
use crate::time::now_ms;

impl SqliteStore {
    pub async fn delete_batch(&self, batch: BatchId) -> Result<Deleted> {
        let now = now_ms();
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let (code, _) = status_in_tx(&mut tx, batch).await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM task WHERE batch_id = ? AND status = 'running' AND lease_expires_at >= ?",
        )
        .bind(batch.0)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        delete::check(&code, live.max(0) as u64)?;
        let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempt WHERE batch_id = ?")
            .bind(batch.0)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM limit_rate WHERE key LIKE ?")
            .bind(delete::rate_rows(batch))
            .execute(&mut *tx)
            .await?;
        // Explicit rather than by cascade: the cascade needs `foreign_keys` on the connection,
        // and a batch deleted without its rows would leave orphans nobody can reach.
        sqlx::query("DELETE FROM task_attempt WHERE batch_id = ?")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?;
        let tasks = sqlx::query("DELETE FROM task WHERE batch_id = ?")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM batch_interruption WHERE batch_id = ?")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM batch WHERE id = ?")
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
