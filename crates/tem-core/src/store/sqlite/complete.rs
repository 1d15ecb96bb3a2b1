//! Finished attempts, as one section of a group commit: every outcome of the cycle travels as one
//! JSON parameter, applied to the task rows (and, unless it succeeded, recorded in the history)
//! by set-based statements. Both are fenced by the lease token: an outcome from a worker whose lease was taken
//! over changes nothing.

use std::collections::HashSet;

use serde::Serialize;

use super::program::{Program, StatementResult, Value};
use crate::error::{Error, Result};
use crate::store::{Next, OutcomeRow};
use crate::time::Millis;

/// Where the section's results are, once the program ran.
pub(super) struct OutcomeSection {
    /// The statements whose returned ids are the outcomes applied.
    applied: Vec<usize>,
}

#[derive(Serialize)]
struct Row<'a> {
    id: i64,
    token: i64,
    status: &'a str,
    error: Option<&'a str>,
    run_after: Option<Millis>,
    task_finished_at: Option<Millis>,
    refund: i64,
    attempt: u32,
    worker: &'a str,
    started_at: Millis,
    finished_at: Millis,
    outcome: &'a str,
    http_status: Option<u16>,
    message: Option<&'a str>,
    retry_at: Option<Millis>,
    pause_key: Option<&'a str>,
    pause_until: Option<Millis>,
    pause_reason: Option<&'a str>,
    history: bool,
}

/// Adds the statements applying `outcomes` to `program`.
pub(super) fn push(program: &mut Program, outcomes: &[OutcomeRow], now: Millis) -> Result<OutcomeSection> {
    let rows: Vec<Row<'_>> = outcomes.iter().map(|o| row(o, now)).collect();
    let json = serde_json::to_string(&rows).map_err(|source| Error::Json {
        what: "outcomes",
        source,
    })?;
    let json = Value::Text(json.into());
    // History first: once the task row is updated, the fence below no longer matches. A success
    // is not copied there: the task row itself keeps its last attempt.
    if outcomes.iter().any(|o| o.history) {
        program.push(
            "INSERT INTO task_attempt (task_id, batch_id, attempt, worker, started_at, finished_at, \
                 outcome, http_status, message, retry_at) \
             SELECT t.id, t.batch_id, j.value->>'attempt', j.value->>'worker', j.value->>'started_at', \
                 j.value->>'finished_at', j.value->>'outcome', j.value->>'http_status', \
                 j.value->>'message', j.value->>'retry_at' \
             FROM json_each(?) AS j CROSS JOIN task AS t \
             WHERE t.id = j.value->>'id' AND t.lease_token = j.value->>'token' AND t.status = 'running' \
               AND j.value->>'history'",
            std::slice::from_ref(&json),
        )?;
    }
    // Successes, the common case, travel as compact rows of the four fields they need.
    let successes: Vec<(i64, i64, Millis, Option<&str>)> = outcomes
        .iter()
        .filter_map(|o| match &o.next {
            Next::Complete { result } => Some((o.task_id.0, o.lease_token, o.finished_at, result.as_deref())),
            _ => None,
        })
        .collect();
    let mut applied = Vec::new();
    if !successes.is_empty() {
        let compact = serde_json::to_string(&successes).map_err(|source| Error::Json {
            what: "outcomes",
            source,
        })?;
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
    if successes.len() < outcomes.len() {
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
            std::slice::from_ref(&json),
        )?);
    }
    if outcomes.iter().any(|o| o.pause.is_some()) {
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

fn row(o: &OutcomeRow, now: Millis) -> Row<'_> {
    let (status, run_after, task_finished_at, refund) = match &o.next {
        Next::Complete { .. } => ("completed", None, Some(o.finished_at), 0),
        Next::Retry { run_after } => ("pending", Some(*run_after), None, 0),
        Next::Fail => ("failed", None, Some(o.finished_at), 0),
        Next::Release => ("pending", Some(now), None, 1),
    };
    let error = match &o.next {
        Next::Complete { .. } | Next::Release => None,
        Next::Retry { .. } | Next::Fail => o.message.as_deref(),
    };
    let retry_at = match &o.next {
        Next::Retry { run_after } => Some(*run_after),
        _ => None,
    };
    Row {
        id: o.task_id.0,
        token: o.lease_token,
        status,
        error,
        run_after,
        task_finished_at,
        refund,
        attempt: o.attempt,
        worker: &o.worker,
        started_at: o.started_at,
        finished_at: o.finished_at,
        outcome: o.outcome.as_str(),
        http_status: o.http_status,
        message: o.message.as_deref(),
        retry_at,
        pause_key: o.pause.as_ref().map(|p| p.key.as_ref()),
        pause_until: o.pause.as_ref().map(|p| p.until),
        pause_reason: o.pause.as_ref().map(|p| p.reason.as_str()),
        history: o.history,
    }
}
