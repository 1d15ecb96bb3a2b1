//! Finished attempts, as one section of a group commit: every outcome of the cycle travels as one
//! JSON parameter, applied to the task rows (and, unless it succeeded, recorded in the history)
//! by set-based statements. Both are fenced by the lease token: an outcome from a worker whose lease was taken
//! over changes nothing.

use std::collections::HashSet;

use super::program::{Program, StatementResult, Value};
use crate::error::Result;
use crate::store::{Next, OutcomeRow, outcome_json};
use crate::time::Millis;

/// Where the section's results are, once the program ran.
pub(super) struct OutcomeSection {
    /// The statements whose returned ids are the outcomes applied.
    applied: Vec<usize>,
}

/// Adds the statements applying `outcomes` to `program`.
pub(super) fn push(program: &mut Program, outcomes: &[OutcomeRow], now: Millis) -> Result<OutcomeSection> {
    let others = outcome_json::others(outcomes, now)?.map(|json| Value::Text(json.into()));
    // History first: once the task row is updated, the fence below no longer matches. A success
    // is not copied there: the task row itself keeps its last attempt.
    if let Some(json) = &others
        && outcomes.iter().any(|o| o.history)
    {
        program.push(
            "INSERT INTO task_attempt (task_id, batch_id, attempt, worker, started_at, finished_at, \
                 outcome, http_status, message, retry_at) \
             SELECT t.id, t.batch_id, j.value->>'attempt', j.value->>'worker', j.value->>'started_at', \
                 j.value->>'finished_at', j.value->>'outcome', j.value->>'http_status', \
                 j.value->>'message', j.value->>'retry_at' \
             FROM json_each(?) AS j CROSS JOIN task AS t \
             WHERE t.id = j.value->>'id' AND t.lease_token = j.value->>'token' AND t.status = 'running' \
               AND j.value->>'history'",
            std::slice::from_ref(json),
        )?;
    }
    let mut applied = Vec::new();
    if let Some(compact) = outcome_json::successes(outcomes)? {
        applied.push(program.push(
            "UPDATE task SET status = 'completed', result = v.result, last_error = NULL, \
                 finished_at = v.finished_at, lease_expires_at = NULL \
             FROM (SELECT value->>0 AS id, value->>1 AS token, value->>2 AS finished_at, value->>3 AS result \
                   FROM json_each(?)) AS v \
             WHERE task.id = v.id AND task.lease_token = v.token AND task.status = 'running' \
             RETURNING task.id",
            &[compact.into()],
        )?);
    }
    if let Some(json) = &others
        && outcomes.iter().any(|o| !matches!(o.next, Next::Complete { .. }))
    {
        applied.push(program.push(
            "UPDATE task SET status = v.status, result = NULL, last_error = v.error, \
                 run_after = coalesce(v.run_after, task.run_after), finished_at = v.task_finished_at, \
                 attempt = task.attempt - v.refund, lease_expires_at = NULL, lease_owner = NULL \
             FROM (SELECT value->>'id' AS id, value->>'token' AS token, value->>'status' AS status, \
                          value->>'error' AS error, value->>'run_after' AS run_after, \
                          value->>'task_finished_at' AS task_finished_at, value->>'refund' AS refund \
                   FROM json_each(?) WHERE value->>'status' <> 'completed') AS v \
             WHERE task.id = v.id AND task.lease_token = v.token AND task.status = 'running' \
             RETURNING task.id",
            std::slice::from_ref(json),
        )?);
    }
    if let Some(json) = others
        && outcomes.iter().any(|o| o.pause.is_some())
    {
        program.push(
            "INSERT INTO limit_pause (key, until, reason) \
             SELECT value->>'pause_key', value->>'pause_until', value->>'pause_reason' FROM json_each(?) \
             WHERE value->>'pause_key' IS NOT NULL \
             ON CONFLICT (key) DO UPDATE SET until = max(until, excluded.until), reason = excluded.reason",
            &[json],
        )?;
    }
    if outcomes
        .iter()
        .any(|o| matches!(o.next, Next::Retry { .. } | Next::Release))
    {
        // A task back to pending after its batch was cancelled is cancelled too, never stranded.
        program.push(
            "UPDATE task SET status = 'cancelled', finished_at = ? \
             WHERE status = 'pending' \
               AND batch_id IN (SELECT id FROM batch WHERE status = 'cancelled' AND pending > 0)",
            &[now.into()],
        )?;
    }
    Ok(OutcomeSection { applied })
}

impl OutcomeSection {
    /// Per outcome, whether its lease still held and it was applied.
    pub fn accepted(&self, results: &[StatementResult], outcomes: &[OutcomeRow]) -> Result<Vec<bool>> {
        let applied: HashSet<i64> = self
            .applied
            .iter()
            .flat_map(|&statement| results[statement].rows.iter())
            .map(|row| sqlx::Row::try_get::<i64, _>(row, 0))
            .collect::<Result<_, _>>()?;
        Ok(outcomes.iter().map(|o| applied.contains(&o.task_id.0)).collect())
    }
}
