//! Interruption: the criteria check (a section of every group commit that records outcomes, and
//! of a periodic check for the batch-runtime limit), the manual interrupt, and the log.
//!
//! The check is one `UPDATE … WHERE status = 'active'` inside the committing transaction, on
//! batch rows that transaction holds locked: the counters it reads are every process's, as
//! committed, and only the first process to see a limit crossed makes the transition; the
//! `batch_interrupted` trigger logs it, once.

use sqlx::{PgConnection, Row};

use super::PgStore;
use super::batches::{lock_status, progress_in_tx};
use crate::batch::{BatchId, Interruption, InterruptionReason};
use crate::error::{Error, Result};
use crate::store::BatchProgress;
use crate::time::Millis;

/// Criteria, in the order they are judged (the same rules and messages as on SQLite).
const CHECK: &str = "\
    WITH p AS (SELECT $1::bigint AS now, $2::boolean AS everything, $3::bigint[] AS ids, $4::jsonb AS defaults), \
    c AS ( \
        SELECT b.id, b.consecutive_failures AS consecutive, p.now - b.run_started_at AS runtime, \
            b.failed - b.base_failed AS failed, \
            (b.completed - b.base_completed) + (b.failed - b.base_failed) AS finished, \
            b.rate_limited - b.base_rate_limited AS rate_limited, \
            b.overloaded - b.base_overloaded AS overloaded, \
            coalesce(b.interruption_criteria::jsonb ->> 'max_failed_tasks', p.defaults ->> 'max_failed_tasks')::numeric \
                AS max_failed, \
            coalesce(b.interruption_criteria::jsonb ->> 'max_consecutive_failures', \
                     p.defaults ->> 'max_consecutive_failures')::numeric AS max_consecutive, \
            coalesce(b.interruption_criteria::jsonb ->> 'max_error_rate', p.defaults ->> 'max_error_rate')::float8 \
                AS max_rate, \
            coalesce(b.interruption_criteria::jsonb ->> 'min_sample', p.defaults ->> 'min_sample', '20')::numeric \
                AS min_sample, \
            coalesce(b.interruption_criteria::jsonb ->> 'max_rate_limited', p.defaults ->> 'max_rate_limited')::numeric \
                AS max_429, \
            coalesce(b.interruption_criteria::jsonb ->> 'max_overloaded', p.defaults ->> 'max_overloaded')::numeric \
                AS max_5xx, \
            coalesce(b.interruption_criteria::jsonb ->> 'max_batch_runtime_ms', \
                     p.defaults ->> 'max_batch_runtime_ms')::numeric AS max_runtime \
        FROM batch AS b CROSS JOIN p \
        WHERE b.status = 'active' AND (p.everything OR b.id = ANY(p.ids)) \
          AND (p.defaults IS NOT NULL OR b.interruption_criteria IS NOT NULL)), \
    v AS ( \
        SELECT id, CASE \
            WHEN failed > max_failed THEN 'failed_tasks_exceeded' \
            WHEN consecutive > max_consecutive THEN 'consecutive_failures_exceeded' \
            WHEN finished >= greatest(min_sample, 1) AND failed > max_rate * finished THEN 'error_rate_exceeded' \
            WHEN rate_limited > max_429 THEN 'rate_limited_exceeded' \
            WHEN overloaded > max_5xx THEN 'overloaded_exceeded' \
            WHEN runtime > max_runtime THEN 'batch_runtime_exceeded' END AS reason, \
          CASE \
            WHEN failed > max_failed THEN format('%s tasks failed; max_failed_tasks is %s', failed, max_failed) \
            WHEN consecutive > max_consecutive \
                THEN format('%s tasks in a row failed; max_consecutive_failures is %s', consecutive, max_consecutive) \
            WHEN finished >= greatest(min_sample, 1) AND failed > max_rate * finished \
                THEN format('%s of %s finished tasks failed (%s%%); max_error_rate is %s%%', \
                            failed, finished, round(100.0 * failed / finished, 1), \
                            round((100.0 * max_rate)::numeric, 1)) \
            WHEN rate_limited > max_429 \
                THEN format('%s attempts were rate-limited (429); max_rate_limited is %s', rate_limited, max_429) \
            WHEN overloaded > max_5xx \
                THEN format('%s attempts hit an overloaded API (502/503/504); max_overloaded is %s', \
                            overloaded, max_5xx) \
            WHEN runtime > max_runtime \
                THEN format('the batch has run for %s ms; max_batch_runtime_ms is %s', runtime, max_runtime) \
            END AS message \
        FROM c) \
    UPDATE batch SET status = 'interrupted', interrupted_at = (SELECT now FROM p), \
        interruption_reason = v.reason, interruption_message = v.message \
    FROM v WHERE batch.id = v.id AND v.reason IS NOT NULL AND batch.status = 'active' \
    RETURNING batch.id";

/// Judges the criteria of the batches in `ids` (every active batch when `everything`); returns
/// the batches it interrupted. `defaults` is the engine's criteria as JSON.
pub(super) async fn check(
    conn: &mut PgConnection,
    ids: &[i64],
    everything: bool,
    defaults: Option<&str>,
    now: Millis,
) -> Result<Vec<BatchId>> {
    let interrupted: Vec<i64> = sqlx::query_scalar(CHECK)
        .bind(now)
        .bind(everything)
        .bind(ids)
        .bind(defaults)
        .fetch_all(&mut *conn)
        .await?;
    Ok(interrupted.into_iter().map(BatchId).collect())
}

impl PgStore {
    /// Interrupts an active batch by hand; the same transition (and log row) as a criterion.
    pub async fn interrupt(&self, batch: BatchId, message: &str, now: Millis) -> Result<BatchProgress> {
        let mut tx = self.pool.begin().await?;
        let (code, status) = lock_status(&mut tx, batch).await?;
        let changed = sqlx::query(
            "UPDATE batch SET status = 'interrupted', interrupted_at = $1, interruption_reason = 'manual', \
                 interruption_message = $2 \
             WHERE id = $3 AND status = 'active'",
        )
        .bind(now)
        .bind(message)
        .bind(batch.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(Error::BatchState {
                code,
                status,
                operation: "interrupt it (only an active batch can be interrupted)",
            });
        }
        let progress = progress_in_tx(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(progress)
    }

    /// A batch's interruptions, oldest first.
    pub async fn interruptions(&self, batch: BatchId) -> Result<Vec<Interruption>> {
        let found = sqlx::query(
            "SELECT reason, message, stats, created_at FROM batch_interruption WHERE batch_id = $1 ORDER BY id",
        )
        .bind(batch.0)
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|row| {
                let reason: InterruptionReason = row.try_get::<&str, _>(0)?.parse()?;
                let stats: &str = row.try_get(2)?;
                Ok(Interruption {
                    batch_id: batch,
                    reason,
                    message: row.try_get(1)?,
                    stats: serde_json::from_str(stats).map_err(|source| Error::Json {
                        what: "interruption stats",
                        source,
                    })?,
                    at: row.try_get(3)?,
                })
            })
            .collect()
    }
}
