//! The aggregate reads behind a batch report, each one pass over the batch's rows.

use sqlx::Row;

use super::PgStore;
use crate::batch::BatchId;
use crate::error::Result;
use crate::report::{ErrorGroup, RetryAnalysis, Spread, StuckTask, Timing};
use crate::store::rows::Columns;
use crate::task::TaskId;
use crate::time::Millis;

impl PgStore {
    /// First start, last finish and the spreads of execution and lifetime of finished tasks.
    pub async fn timing(&self, batch: BatchId) -> Result<Timing> {
        let row = sqlx::query(
            "SELECT min(t.first_started_at), max(t.finished_at), count(*), \
                    avg(t.finished_at - t.claimed_at)::float8, min(t.finished_at - t.claimed_at), \
                    max(t.finished_at - t.claimed_at), \
                    avg(t.finished_at - t.created_at)::float8, min(t.finished_at - t.created_at), \
                    max(t.finished_at - t.created_at), \
                    (SELECT started_at FROM batch WHERE id = $1) \
             FROM task AS t WHERE t.batch_id = $1 AND t.status IN ('completed', 'failed')",
        )
        .bind(batch.0)
        .fetch_one(&self.pool)
        .await?;
        let finished = row.int(2)?;
        let spread = |at: usize| -> Result<Option<Spread>> {
            Ok(
                match (row.opt_float(at)?, row.opt_int(at + 1)?, row.opt_int(at + 2)?) {
                    (Some(avg_ms), Some(min_ms), Some(max_ms)) if finished > 0 => Some(Spread {
                        avg_ms,
                        min_ms,
                        max_ms,
                    }),
                    _ => None,
                },
            )
        };
        Ok(Timing {
            // The batch's first claim, even when that task is still running or was requeued.
            first_start: row.opt_int(9)?.or(row.opt_int(0)?),
            last_finish: row.opt_int(1)?,
            elapsed_ms: None,
            throughput_per_sec: None,
            execution: spread(3)?,
            lifetime: spread(6)?,
        })
    }

    /// How many finished tasks needed one attempt, more, or failed; the most attempts used,
    /// counted from the history plus the success.
    pub async fn retry_analysis(&self, batch: BatchId) -> Result<RetryAnalysis> {
        let row = sqlx::query(
            // Per task, an index probe of its history: a plan that stays linear in the batch
            // whatever the planner believes about freshly filled tables.
            "SELECT count(*) FILTER (WHERE t.status = 'completed' AND h.n = 0), \
                    count(*) FILTER (WHERE t.status = 'completed' AND h.n > 0), \
                    count(*) FILTER (WHERE t.status = 'failed'), \
                    coalesce(max(h.n + CASE WHEN t.status = 'completed' THEN 1 ELSE 0 END), 0) \
             FROM task t CROSS JOIN LATERAL ( \
                 SELECT count(*) AS n FROM task_attempt a WHERE a.task_id = t.id AND a.outcome <> 'aborted') h \
             WHERE t.batch_id = $1 AND t.status IN ('completed', 'failed')",
        )
        .bind(batch.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(RetryAnalysis {
            completed_first_attempt: row.int(0)?,
            completed_after_retries: row.int(1)?,
            failed: row.int(2)?,
            retries: 0,
            max_attempts_used: u32::try_from(row.int(3)?).unwrap_or(u32::MAX),
            lost_to_crashes: 0,
        })
    }

    /// Failed tasks grouped by their last error.
    pub async fn failure_groups(&self, batch: BatchId, limit: u32) -> Result<Vec<ErrorGroup>> {
        let found = sqlx::query(
            "SELECT coalesce(last_error, '(no error recorded)'), count(*) FROM task \
             WHERE batch_id = $1 AND status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2",
        )
        .bind(batch.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
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
        let found = sqlx::query(
            "SELECT outcome, http_status, coalesce(message, ''), count(*) FROM task_attempt \
             WHERE batch_id = $1 AND outcome NOT IN ('succeeded', 'aborted') \
             GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1 LIMIT $2",
        )
        .bind(batch.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|row| {
                Ok(ErrorGroup {
                    outcome: Some(row.try_get::<&str, _>(0)?.parse()?),
                    http_status: row.opt_int(1)?.map(|s| u16::try_from(s).unwrap_or(0)),
                    message: row.try_get(2)?,
                    count: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Running tasks whose lease expired before `now`.
    pub async fn stuck(&self, batch: BatchId, now: Millis) -> Result<Vec<StuckTask>> {
        let found = sqlx::query(
            "SELECT id, lease_owner, claimed_at, lease_expires_at FROM task \
             WHERE status = 'running' AND lease_expires_at < $1 AND batch_id = $2 \
             ORDER BY lease_expires_at LIMIT 100",
        )
        .bind(now)
        .bind(batch.0)
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
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
