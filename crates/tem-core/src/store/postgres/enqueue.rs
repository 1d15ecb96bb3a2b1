//! Enqueue: many tasks in one transaction, each chunk one `INSERT … SELECT FROM unnest(…)` whose
//! arrays carry a column each (one statement and one round trip per chunk, whatever its size).

use sqlx::Row;

use super::PgStore;
use super::batches::{lock_status, progress_in_tx};
use crate::batch::{BatchId, BatchStatus};
use crate::error::{Error, Result};
use crate::store::BatchProgress;
use crate::store::steer::Steer;
use crate::task::{NewTask, TaskId};
use crate::time::now_ms;

/// Rows per INSERT statement.
const CHUNK: usize = 5_000;
/// An enqueue at least this large refreshes the planner's statistics of the task table.
const ANALYZE_AFTER: usize = 1_000;

impl PgStore {
    /// Inserts `tasks` into `batch` in one transaction; returns their ids in input order.
    pub async fn enqueue(
        &self,
        batch: BatchId,
        tasks: &[NewTask],
        default_max_attempts: u32,
        expect_total: Option<i64>,
    ) -> Result<(Vec<TaskId>, BatchProgress)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (code, status) = lock_status(&mut tx, batch).await?;
        if let Some(expected) = expect_total {
            let found: i64 = sqlx::query_scalar("SELECT total FROM batch WHERE id = $1")
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
            let mut kinds = Vec::with_capacity(chunk.len());
            let mut priorities = Vec::with_capacity(chunk.len());
            let mut run_afters = Vec::with_capacity(chunk.len());
            let mut max_attempts = Vec::with_capacity(chunk.len());
            let mut costs = Vec::with_capacity(chunk.len());
            let mut payloads = Vec::with_capacity(chunk.len());
            for task in chunk {
                kinds.push(task.kind.as_str());
                priorities.push(i64::from(task.priority));
                run_afters.push(task.run_after.unwrap_or(now));
                max_attempts.push(i64::from(task.max_attempts.unwrap_or(default_max_attempts)));
                costs.push(i64::try_from(task.cost).map_err(|_| Error::invalid("cost", "exceeds i64"))?);
                payloads.push(task.payload.as_str());
            }
            let rows = sqlx::query(
                "INSERT INTO task (batch_id, type, priority, run_after, max_attempts, cost, payload, created_at) \
                 SELECT $1, t.type, t.priority, t.run_after, t.max_attempts, t.cost, t.payload, $8 \
                 FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[]) \
                     WITH ORDINALITY AS t(type, priority, run_after, max_attempts, cost, payload, n) \
                 ORDER BY t.n RETURNING id",
            )
            .bind(batch.0)
            .bind(&kinds)
            .bind(&priorities)
            .bind(&run_afters)
            .bind(&max_attempts)
            .bind(&costs)
            .bind(&payloads)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                ids.push(TaskId(row.try_get(0)?));
            }
        }
        if status == BatchStatus::Completed && !tasks.is_empty() {
            // New work re-opens a finished batch.
            sqlx::query("UPDATE batch SET status = 'active', finished_at = NULL WHERE id = $1")
                .bind(batch.0)
                .execute(&mut *tx)
                .await?;
        }
        // The insert trigger counted the tasks.
        let progress = progress_in_tx(&mut tx, batch).await?;
        super::notify::work_available(&mut tx).await?;
        tx.commit().await?;
        if tasks.len() >= ANALYZE_AFTER {
            // A table that grew by thousands of rows since the planner last looked gets its
            // statistics now, so the claim keeps walking its index instead of scanning.
            // The tasks are committed: a failure here must not make the enqueue look failed.
            if let Err(error) = sqlx::query("ANALYZE task").execute(&self.pool).await {
                tracing::debug!(%error, "ANALYZE after a large enqueue failed");
            }
        }
        // Identities are handed out in insertion order, which is input order.
        ids.sort_unstable();
        Ok((ids, progress))
    }
}
