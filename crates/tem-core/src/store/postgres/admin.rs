//! Steering a batch by hand: resume, retry-failed, cancel. Each is one transaction that locks
//! the batch row first, then moves tasks and counters together.

use sqlx::PgConnection;

use super::PgStore;
use super::batches::{lock_status, progress_in_tx};
use super::notify::work_available;
use crate::batch::{BatchId, BatchStatus, Resumed};
use crate::error::Result;
use crate::store::BatchProgress;
use crate::store::steer::Steer;
use crate::time::{Millis, now_ms};

impl PgStore {
    pub async fn resume(&self, batch: BatchId) -> Result<(Resumed, BatchProgress)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (code, status) = lock_status(&mut tx, batch).await?;
        Steer::Resume.check(&code, status)?;
        let requeued = requeue_stranded(&mut tx, batch, now).await?;
        let reactivated = status == BatchStatus::Interrupted;
        if reactivated {
            reactivate(&mut tx, batch).await?;
        }
        let progress = progress_in_tx(&mut tx, batch).await?;
        work_available(&mut tx).await?;
        tx.commit().await?;
        Ok((
            Resumed {
                requeued,
                reactivated,
            },
            progress,
        ))
    }

    /// Failed tasks back to pending with a fresh attempt budget and no stale error or result.
    pub async fn retry_failed(&self, batch: BatchId) -> Result<(u64, BatchProgress)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (code, status) = lock_status(&mut tx, batch).await?;
        Steer::RetryFailed.check(&code, status)?;
        let reset = sqlx::query(
            "UPDATE task SET status = 'pending', attempt = 0, last_error = NULL, result = NULL, \
                 finished_at = NULL, run_after = $1 \
             WHERE batch_id = $2 AND status = 'failed'",
        )
        .bind(now)
        .bind(batch.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if reset > 0 && status == BatchStatus::Completed {
            reactivate(&mut tx, batch).await?;
        }
        sqlx::query("UPDATE batch SET consecutive_failures = 0 WHERE id = $1")
            .bind(batch.0)
            .execute(&mut *tx)
            .await?;
        let progress = progress_in_tx(&mut tx, batch).await?;
        work_available(&mut tx).await?;
        tx.commit().await?;
        Ok((reset, progress))
    }

    /// Pending tasks become `cancelled` and the batch stops; running tasks finish (their
    /// outcomes are still recorded), nothing is deleted.
    pub async fn cancel(&self, batch: BatchId) -> Result<(u64, BatchProgress)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (code, status) = lock_status(&mut tx, batch).await?;
        Steer::Cancel.check(&code, status)?;
        sqlx::query("UPDATE batch SET status = 'cancelled', finished_at = $1 WHERE id = $2")
            .bind(now)
            .bind(batch.0)
            .execute(&mut *tx)
            .await?;
        let cancelled = sqlx::query(
            "UPDATE task SET status = 'cancelled', finished_at = $1 WHERE batch_id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(batch.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let progress = progress_in_tx(&mut tx, batch).await?;
        tx.commit().await?;
        Ok((cancelled, progress))
    }
}

/// Stranded = `running` with no live lease: its worker is gone. Tasks with a live lease are left
/// alone: their worker is alive and will report, and requeueing them would run them twice.
async fn requeue_stranded(conn: &mut PgConnection, batch: BatchId, now: Millis) -> Result<u64> {
    let requeued = sqlx::query(
        "WITH stranded AS ( \
             SELECT id, batch_id, attempt, lease_owner, claimed_at FROM task \
             WHERE batch_id = $2 AND status = 'running' \
               AND (lease_expires_at IS NULL OR lease_expires_at < $1) FOR UPDATE), \
         moved AS ( \
             UPDATE task SET status = 'pending', attempt = greatest(task.attempt - 1, 0), run_after = $1, \
                 lease_owner = NULL, lease_expires_at = NULL \
             FROM stranded AS s WHERE task.id = s.id RETURNING task.id) \
         INSERT INTO task_attempt (task_id, batch_id, attempt, worker, started_at, finished_at, outcome, \
             message, retry_at) \
         SELECT s.id, s.batch_id, s.attempt, s.lease_owner, coalesce(s.claimed_at, $1), $1, 'lease_expired', \
             'requeued by resume; the attempt was not charged', $1 \
         FROM stranded AS s JOIN moved AS m ON m.id = s.id ORDER BY s.id",
    )
    .bind(now)
    .bind(batch.0)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(requeued)
}

/// Active again, with the criteria judging only what happens from now on (see [`Resumed`]).
async fn reactivate(conn: &mut PgConnection, batch: BatchId) -> Result<()> {
    sqlx::query(
        "UPDATE batch SET status = 'active', finished_at = NULL, consecutive_failures = 0, \
             run_started_at = NULL, interrupted_at = NULL, interruption_reason = NULL, \
             interruption_message = NULL, base_completed = completed, base_failed = failed, \
             base_rate_limited = rate_limited, base_overloaded = overloaded \
         WHERE id = $1",
    )
    .bind(batch.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
