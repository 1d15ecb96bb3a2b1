//! Enqueue: many tasks in one transaction, as multi-row INSERTs.

use sqlx::Row;

use super::batches::{progress_in_tx, status_in_tx};
use super::{SqliteStore, tuples};
use crate::batch::{BatchId, BatchStatus};
use crate::error::{Error, Result};
use crate::store::BatchProgress;
use crate::store::steer::Steer;
use crate::task::{NewTask, TaskId};
use crate::time::now_ms;

/// Rows per INSERT statement: large enough to amortise the statement, small enough that a full
/// chunk's SQL text stays cached and within SQLite's variable limit.
const CHUNK: usize = 256;
const COLUMNS: usize = 8;

impl SqliteStore {
    /// Inserts `tasks` into `batch` in one transaction; returns their ids in input order.
    pub async fn enqueue(
        &self,
        batch: BatchId,
        tasks: &[NewTask],
        default_max_attempts: u32,
        expect_total: Option<i64>,
    ) -> Result<(Vec<TaskId>, BatchProgress)> {
        let now = now_ms();
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let (code, status) = status_in_tx(&mut tx, batch).await?;
        if let Some(expected) = expect_total {
            let found: i64 = sqlx::query_scalar("SELECT total FROM batch WHERE id = ?")
                .bind(batch.0)
                .fetch_one(&mut *tx)
                .await?;
            if found != expected {
                return Err(Error::TotalChanged {
                    code,
                    expected,
                    found,
                });
            }
        }
        Steer::Enqueue.check(&code, status)?;
        let mut ids = Vec::with_capacity(tasks.len());
        for chunk in tasks.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO task (batch_id, type, priority, run_after, max_attempts, cost, payload, created_at) \
                 VALUES {} RETURNING id",
                tuples(chunk.len(), COLUMNS)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for task in chunk {
                let cost = i64::try_from(task.cost).map_err(|_| Error::invalid("cost", "exceeds i64"))?;
                query = query
                    .bind(batch.0)
                    .bind(task.kind.clone())
                    .bind(task.priority)
                    .bind(task.run_after.unwrap_or(now))
                    .bind(task.max_attempts.unwrap_or(default_max_attempts))
                    .bind(cost)
                    .bind(task.payload.clone())
                    .bind(now);
            }
            let rows = query.fetch_all(&mut *tx).await?;
            // RETURNING yields rows in insertion order for a plain multi-row INSERT.
            for row in rows {
                ids.push(TaskId(row.try_get(0)?));
            }
        }
        if status == BatchStatus::Completed && !tasks.is_empty() {
            // New work re-opens a finished batch.
            sqlx::query("UPDATE batch SET status = 'active', finished_at = NULL WHERE id = ?")
                .bind(batch.0)
                .execute(&mut *tx)
                .await?;
        }
        // The insert trigger counted the tasks.
        let progress = progress_in_tx(&mut tx, batch).await?;
        tx.commit().await?;
        ids.sort_unstable();
        Ok((ids, progress))
    }
}
