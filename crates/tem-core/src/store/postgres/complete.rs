//! Finished attempts, as one section of a group commit: the outcomes travel as one JSON
//! parameter and are applied by set-based statements, every one fenced by the lease token (an
//! outcome from a worker whose lease was taken over changes nothing).

use std::collections::HashSet;

use sqlx::PgConnection;

use super::shared_rate;
use crate::error::Result;
use crate::store::{Next, OutcomeRow, outcome_json};
use crate::time::Millis;

/// The columns of an outcome row that SQL reads, typed for `jsonb_to_recordset`.
const FIELDS: &str = "id bigint, token bigint, status text, error text, run_after bigint, \
    task_finished_at bigint, refund bigint, attempt bigint, worker text, started_at bigint, \
    finished_at bigint, outcome text, http_status bigint, message text, retry_at bigint, \
    pause_key text, pause_until bigint, pause_reason text, history boolean";

/// Applies `outcomes`; per outcome, whether its lease still held and it was applied.
pub(super) async fn apply(
    conn: &mut PgConnection,
    outcomes: &[OutcomeRow],
    now: Millis,
) -> Result<Vec<bool>> {
    let others = outcome_json::others(outcomes, now)?;
    // History first: once the task row is updated, the fence below no longer matches.
    if let Some(json) = &others
        && outcomes.iter().any(|o| o.history)
    {
        let sql = format!(
            "INSERT INTO task_attempt (task_id, batch_id, attempt, worker, started_at, finished_at, \
                 outcome, http_status, message, retry_at) \
             SELECT t.id, t.batch_id, v.attempt, v.worker, v.started_at, v.finished_at, v.outcome, \
                 v.http_status, v.message, v.retry_at \
             FROM jsonb_to_recordset($1::jsonb) AS v({FIELDS}) \
             JOIN task AS t ON t.id = v.id AND t.lease_token = v.token AND t.status = 'running' \
             WHERE v.history ORDER BY v.id"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(json)
            .execute(&mut *conn)
            .await?;
    }
    let mut applied: HashSet<i64> = HashSet::new();
    if let Some(compact) = outcome_json::successes(outcomes)? {
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE task SET status = 'completed', result = v.e->>3, last_error = NULL, \
                 finished_at = (v.e->>2)::bigint, lease_expires_at = NULL \
             FROM jsonb_array_elements($1::jsonb) AS v(e) \
             WHERE task.id = (v.e->>0)::bigint AND task.lease_token = (v.e->>1)::bigint \
               AND task.status = 'running' \
             RETURNING task.id",
        )
        .bind(&compact)
        .fetch_all(&mut *conn)
        .await?;
        applied.extend(ids);
    }
    if let Some(json) = &others
        && outcomes.iter().any(|o| !matches!(o.next, Next::Complete { .. }))
    {
        let sql = format!(
            "UPDATE task SET status = v.status, result = NULL, last_error = v.error, \
                 run_after = coalesce(v.run_after, task.run_after), finished_at = v.task_finished_at, \
                 attempt = task.attempt - v.refund, lease_expires_at = NULL, lease_owner = NULL \
             FROM jsonb_to_recordset($1::jsonb) AS v({FIELDS}) \
             WHERE v.status <> 'completed' AND task.id = v.id AND task.lease_token = v.token \
               AND task.status = 'running' \
             RETURNING task.id"
        );
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(json)
            .fetch_all(&mut *conn)
            .await?;
        applied.extend(ids);
    }
    if let Some(json) = &others
        && outcomes.iter().any(|o| o.pause.is_some())
    {
        let sql = format!(
            "INSERT INTO limit_pause (key, until, reason) \
             SELECT DISTINCT ON (v.pause_key) v.pause_key, v.pause_until, v.pause_reason \
             FROM jsonb_to_recordset($1::jsonb) AS v({FIELDS}) WHERE v.pause_key IS NOT NULL \
             ORDER BY v.pause_key, v.pause_until DESC \
             ON CONFLICT (key) DO UPDATE SET until = greatest(limit_pause.until, excluded.until), \
                 reason = excluded.reason"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(json)
            .execute(&mut *conn)
            .await?;
    }
    if outcomes
        .iter()
        .any(|o| matches!(o.next, Next::Retry { .. } | Next::Release))
    {
        // A task back to pending after its batch was cancelled is cancelled too, never stranded.
        // Only the outcomes' batches: those are the rows this transaction locked.
        let batches: Vec<i64> = outcomes.iter().map(|o| o.batch_id.0).collect();
        sqlx::query(
            "UPDATE task SET status = 'cancelled', finished_at = $1 \
             WHERE status = 'pending' AND batch_id IN ( \
                 SELECT id FROM batch WHERE id = ANY($2) AND status = 'cancelled' AND pending > 0)",
        )
        .bind(now)
        .bind(&batches)
        .execute(&mut *conn)
        .await?;
    }
    for outcome in outcomes {
        let Some(correction) = &outcome.budget_correction else {
            continue;
        };
        if !applied.contains(&outcome.task_id.0) {
            continue;
        }
        let units = i128::from(correction.actual) - i128::from(correction.estimated);
        let delta = units.saturating_mul(i128::from(shared_rate::interval_us(correction.quota)));
        let delta = i64::try_from(delta).unwrap_or(if units > 0 { i64::MAX } else { i64::MIN });
        let key = shared_rate::row_key(correction.scope, "budget", &correction.key);
        shared_rate::correct(conn, &key, delta).await?;
    }
    Ok(outcomes.iter().map(|o| applied.contains(&o.task_id.0)).collect())
}
