//! Interruption: the criteria check (a section of every group commit that records outcomes, and
//! of a periodic check for the batch-runtime limit), the manual interrupt, and the log.
//!
//! The check is one `UPDATE … WHERE status = 'active'` inside the committing transaction: the
//! counters it reads were updated by the same transaction, and however many workers or processes
//! see the limit crossed, only the first transition happens; the `batch_interrupted` trigger
//! logs it, once.

use sqlx::Row;

use super::SqliteStore;
use super::batches::status_in_tx;
use super::program::Program;
use crate::batch::{BatchId, Interruption, InterruptionReason};
use crate::error::{Error, Result};
use crate::store::BatchProgress;
use crate::time::Millis;

/// Criteria, in the order they are judged; the first one crossed names the interruption.
/// Counters are taken since the last resume; `0` means zero tolerance, absent means no limit.
const CHECK: &str = "\
    WITH p(now, everything, ids, defaults) AS (SELECT ?, ?, ?, ?), \
    c AS ( \
        SELECT b.id, b.consecutive_failures AS consecutive, (SELECT now FROM p) - b.run_started_at AS runtime, \
            b.failed - b.base_failed AS failed, \
            (b.completed - b.base_completed) + (b.failed - b.base_failed) AS finished, \
            b.rate_limited - b.base_rate_limited AS rate_limited, \
            b.overloaded - b.base_overloaded AS overloaded, \
            coalesce(b.interruption_criteria ->> 'max_failed_tasks', p.defaults ->> 'max_failed_tasks') AS max_failed, \
            coalesce(b.interruption_criteria ->> 'max_consecutive_failures', \
                     p.defaults ->> 'max_consecutive_failures') AS max_consecutive, \
            coalesce(b.interruption_criteria ->> 'max_error_rate', p.defaults ->> 'max_error_rate') AS max_rate, \
            coalesce(b.interruption_criteria ->> 'min_sample', p.defaults ->> 'min_sample', 20) AS min_sample, \
            coalesce(b.interruption_criteria ->> 'max_rate_limited', p.defaults ->> 'max_rate_limited') AS max_429, \
            coalesce(b.interruption_criteria ->> 'max_overloaded', p.defaults ->> 'max_overloaded') AS max_5xx, \
            coalesce(b.interruption_criteria ->> 'max_batch_runtime_ms', \
                     p.defaults ->> 'max_batch_runtime_ms') AS max_runtime \
        FROM batch AS b CROSS JOIN p \
        WHERE b.status = 'active' AND (p.everything OR b.id IN (SELECT value FROM json_each(p.ids))) \
          AND (p.defaults IS NOT NULL OR b.interruption_criteria IS NOT NULL)), \
    v AS ( \
        SELECT id, CASE \
            WHEN failed > max_failed THEN 'failed_tasks_exceeded' \
            WHEN consecutive > max_consecutive THEN 'consecutive_failures_exceeded' \
            WHEN finished >= max(min_sample, 1) AND failed > max_rate * finished THEN 'error_rate_exceeded' \
            WHEN rate_limited > max_429 THEN 'rate_limited_exceeded' \
            WHEN overloaded > max_5xx THEN 'overloaded_exceeded' \
            WHEN runtime > max_runtime THEN 'batch_runtime_exceeded' END AS reason, \
          CASE \
            WHEN failed > max_failed THEN printf('%d tasks failed; max_failed_tasks is %d', failed, max_failed) \
            WHEN consecutive > max_consecutive \
                THEN printf('%d tasks in a row failed; max_consecutive_failures is %d', consecutive, max_consecutive) \
            WHEN finished >= max(min_sample, 1) AND failed > max_rate * finished \
                THEN printf('%d of %d finished tasks failed (%.1f%%); max_error_rate is %.1f%%', \
                            failed, finished, 100.0 * failed / finished, 100.0 * max_rate) \
            WHEN rate_limited > max_429 \
                THEN printf('%d attempts were rate-limited (429); max_rate_limited is %d', rate_limited, max_429) \
            WHEN overloaded > max_5xx \
                THEN printf('%d attempts hit an overloaded API (502/503/504); max_overloaded is %d', overloaded, max_5xx) \
            WHEN runtime > max_runtime \
                THEN printf('the batch has run for %d ms; max_batch_runtime_ms is %d', runtime, max_runtime) END AS message \
        FROM c) \
    UPDATE batch SET status = 'interrupted', interrupted_at = (SELECT now FROM p), \
        interruption_reason = v.reason, interruption_message = v.message \
    FROM v WHERE batch.id = v.id AND v.reason IS NOT NULL AND batch.status = 'active' \
    RETURNING batch.id";

/// Adds the criteria check for the batches in `ids` (every active batch when `everything`) to a
/// program. `defaults` is the engine's criteria as JSON (`None` when it has none, so batches
/// without criteria of their own cost nothing); a batch's own keys win.
pub(super) fn push_check(
    program: &mut Program,
    ids: &[i64],
    everything: bool,
    defaults: Option<&str>,
    now: Millis,
) -> Result<usize> {
    let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
    program.push(
        CHECK,
        &[
            now.into(),
            everything.into(),
            ids.into(),
            defaults.map(str::to_owned).into(),
        ],
    )
}

impl SqliteStore {
    /// Interrupts an active batch by hand; the same transition (and log row) as a criterion.
    pub async fn interrupt(&self, batch: BatchId, message: &str, now: Millis) -> Result<BatchProgress> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let changed = sqlx::query(
            "UPDATE batch SET status = 'interrupted', interrupted_at = ?, interruption_reason = 'manual', \
                 interruption_message = ? \
             WHERE id = ? AND status = 'active'",
        )
        .bind(now)
        .bind(message)
        .bind(batch.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            let (code, status) = status_in_tx(&mut tx, batch).await?;
            return Err(Error::BatchState {
                code,
                status,
                operation: "interrupt it (only an active batch can be interrupted)",
            });
        }
        let progress = super::batches::progress_in_tx(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(progress)
    }

    /// A batch's interruptions, oldest first.
    pub async fn interruptions(&self, batch: BatchId) -> Result<Vec<Interruption>> {
        let rows = sqlx::query(
            "SELECT reason, message, stats, created_at FROM batch_interruption WHERE batch_id = ? ORDER BY id",
        )
        .bind(batch.0)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::batch::{BatchStatus, NewBatch};
    use crate::engine::EngineOptions;

    /// Runs the check alone in a transaction; returns the batches it interrupted.
    async fn check(
        store: &SqliteStore,
        ids: &[i64],
        everything: bool,
        defaults: Option<&str>,
        now: Millis,
    ) -> Vec<i64> {
        let mut program = Program::transaction();
        let at = push_check(&mut program, ids, everything, defaults, now).unwrap();
        let mut conn = store.write.acquire().await.unwrap();
        let results = program.run(&mut conn).await.unwrap();
        results[at].rows.iter().map(|row| row.get::<i64, _>(0)).collect()
    }

    #[tokio::test]
    async fn each_parameter_reaches_its_place_in_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, &EngineOptions::default()).await.unwrap();
        let a = store.create_batch(&NewBatch::new("a", "t")).await.unwrap().id;
        let b = store.create_batch(&NewBatch::new("b", "t")).await.unwrap().id;
        // Three failures on each batch, as the counters would hold them.
        sqlx::query("UPDATE batch SET failed = 3")
            .execute(&store.write)
            .await
            .unwrap();
        let defaults = Some(r#"{"max_failed_tasks": 2}"#);

        // Neither batch has criteria of its own: without defaults nothing is judged.
        assert_eq!(
            check(&store, &[a.0, b.0], false, None, 7).await,
            Vec::<i64>::new()
        );
        // The ids bind where the ids go: only `b` is judged, and crossed its limit.
        assert_eq!(check(&store, &[b.0], false, defaults, 7).await, [b.0]);
        // `everything` judges the rest; `now` is the moment written.
        assert_eq!(check(&store, &[], true, defaults, 9).await, [a.0]);
        for (id, at) in [(a, 9), (b, 7)] {
            let batch = store.batch(id).await.unwrap().unwrap();
            assert_eq!(batch.status, BatchStatus::Interrupted);
            let logged = store.interruptions(id).await.unwrap();
            assert_eq!(logged.len(), 1, "one log row per transition");
            assert_eq!(logged[0].reason, InterruptionReason::FailedTasksExceeded);
            assert_eq!(logged[0].message, "3 tasks failed; max_failed_tasks is 2");
            let interruption = batch.interruption.expect("the interruption on the row");
            assert_eq!(interruption.at, at, "the bound `now`");
        }
    }
}
