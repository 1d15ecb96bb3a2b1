//! The aggregate reads behind a batch report. Each is one pass over the batch's rows through
//! `task_by_batch` (or the attempt table's batch column), run on a reader connection.

use sqlx::Row;

use super::SqliteStore;
use crate::batch::BatchId;
use crate::error::Result;
use crate::report::{ErrorGroup, RetryAnalysis, Spread, StuckTask, Timing};
use crate::task::TaskId;
use crate::time::Millis;

impl SqliteStore {
    /// First start, last finish and the spreads of execution and lifetime of finished tasks.
    pub async fn timing(&self, batch: BatchId) -> Result<Timing> {
        let row = sqlx::query(
            "SELECT min(first_started_at), max(finished_at), count(*), \
                    avg(finished_at - claimed_at), min(finished_at - claimed_at), max(finished_at - claimed_at), \
                    avg(finished_at - created_at), min(finished_at - created_at), max(finished_at - created_at) \
             FROM task WHERE batch_id = ? AND status IN ('completed', 'failed')",
        )
        .bind(batch.0)
        .fetch_one(&self.read)
        .await?;
        let started: Option<Millis> = sqlx::query_scalar("SELECT started_at FROM batch WHERE id = ?")
            .bind(batch.0)
            .fetch_one(&self.read)
            .await?;
        let finished: i64 = row.try_get(2)?;
        let spread = |at: usize| -> Result<Option<Spread>> {
            Ok(
                match (
                    row.try_get::<Option<f64>, _>(at)?,
                    row.try_get(at + 1)?,
                    row.try_get(at + 2)?,
                ) {
                    (Some(avg_ms), Some(min_ms), Some(max_ms)) if finished > 0 => Some(Spread {
                        avg_ms,
                        min_ms,
                        max_ms,
                    }),
                    _ => None,
                },
            )
        };
        let first_finished_start: Option<Millis> = row.try_get(0)?;
        Ok(Timing {
            // The batch's first claim, even when that task is still running or was requeued.
            first_start: started.or(first_finished_start),
            last_finish: row.try_get(1)?,
            elapsed_ms: None,
            throughput_per_sec: None,
            execution: spread(3)?,
            lifetime: spread(6)?,
        })
    }

    /// How many finished tasks needed one attempt, more, or failed; the most attempts used.
    /// Attempts are counted from the history (every one that did not succeed, aborted ones
    /// aside) plus the success, so counters reset by retry-failed or resume cannot hide any.
    pub async fn retry_analysis(&self, batch: BatchId) -> Result<RetryAnalysis> {
        let row = sqlx::query(
            "SELECT coalesce(sum(t.status = 'completed' AND h.n IS NULL), 0), \
                    coalesce(sum(t.status = 'completed' AND h.n IS NOT NULL), 0), \
                    coalesce(sum(t.status = 'failed'), 0), \
                    coalesce(max(coalesce(h.n, 0) + (t.status = 'completed')), 0) \
             FROM task t LEFT JOIN ( \
                 SELECT task_id, count(*) AS n FROM task_attempt \
                 WHERE batch_id = ?1 AND outcome <> 'aborted' GROUP BY task_id) h ON h.task_id = t.id \
             WHERE t.batch_id = ?1 AND t.status IN ('completed', 'failed')",
        )
        .bind(batch.0)
        .fetch_one(&self.read)
        .await?;
        Ok(RetryAnalysis {
            completed_first_attempt: row.try_get(0)?,
            completed_after_retries: row.try_get(1)?,
            failed: row.try_get(2)?,
            retries: 0,
            max_attempts_used: u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(u32::MAX),
            lost_to_crashes: 0,
        })
    }

    /// Failed tasks grouped by their last error.
    pub async fn failure_groups(&self, batch: BatchId, limit: u32) -> Result<Vec<ErrorGroup>> {
        let rows = sqlx::query(
            "SELECT coalesce(last_error, '(no error recorded)'), count(*) FROM task \
             WHERE batch_id = ? AND status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
        )
        .bind(batch.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ErrorGroup {
                    outcome: None,
                    http_status: None,
                    message: row.try_get(0)?,
                    count: row.try_get(1)?,
                })
            })
            .collect()
    }

    /// Failed attempts (retried or final) grouped by outcome, status and message.
    pub async fn attempt_error_groups(&self, batch: BatchId, limit: u32) -> Result<Vec<ErrorGroup>> {
        let rows = sqlx::query(
            "SELECT outcome, http_status, coalesce(message, ''), count(*) FROM task_attempt \
             WHERE batch_id = ? AND outcome NOT IN ('succeeded', 'aborted') \
             GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1 LIMIT ?",
        )
        .bind(batch.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ErrorGroup {
                    outcome: Some(row.try_get::<&str, _>(0)?.parse()?),
                    http_status: row.try_get(1)?,
                    message: row.try_get(2)?,
                    count: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Running tasks whose lease expired before `now`.
    pub async fn stuck(&self, batch: BatchId, now: Millis) -> Result<Vec<StuckTask>> {
        let rows = sqlx::query(
            "SELECT id, lease_owner, claimed_at, lease_expires_at FROM task \
             WHERE status = 'running' AND lease_expires_at < ? AND batch_id = ? \
             ORDER BY lease_expires_at LIMIT 100",
        )
        .bind(now)
        .bind(batch.0)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StuckTask {
                    task: TaskId(row.try_get(0)?),
                    worker: row.try_get(1)?,
                    claimed_at: row.try_get(2)?,
                    lease_expired_at: row.try_get(3)?,
                })
            })
            .collect()
    }
}
