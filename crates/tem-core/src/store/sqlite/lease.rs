//! Leases, as sections of a group commit: renewal of a worker's in-flight tasks, and the rescue
//! of tasks whose lease expired because their worker died.

use super::program::{Program, StatementResult, Value};
use crate::error::Result;
use crate::store::{RenewRequest, Renewed};
use crate::task::TaskId;
use crate::time::Millis;

/// How many expired leases one cycle rescues; the rest wait for the next cycle.
const RESCUE_LIMIT: i64 = 1000;

/// Adds a renewal: one statement extends the leases the worker still holds, one finds which of
/// them belong to a batch that was interrupted or cancelled meanwhile.
pub(super) fn push_renew(program: &mut Program, request: &RenewRequest) -> Result<(usize, usize)> {
    let ids: Vec<i64> = request.ids.iter().map(|id| id.0).collect();
    let ids: Value = serde_json::to_string(&ids)
        .unwrap_or_else(|_| "[]".to_owned())
        .into();
    let owner = Value::Text(request.owner.clone());
    let held = program.push(
        "UPDATE task SET lease_expires_at = ? \
         WHERE id IN (SELECT value FROM json_each(?)) AND lease_owner = ? AND status = 'running' \
         RETURNING id",
        &[request.expires_at.into(), ids.clone(), owner.clone()],
    )?;
    let stopped = program.push(
        "SELECT t.id FROM task AS t JOIN batch AS b ON b.id = t.batch_id \
         WHERE t.id IN (SELECT value FROM json_each(?)) AND t.lease_owner = ? AND t.status = 'running' \
           AND b.status IN ('interrupted', 'cancelled')",
        &[ids, owner],
    )?;
    Ok((held, stopped))
}

/// What a renewal's statements found.
pub(super) fn renewed(results: &[StatementResult], (held, stopped): (usize, usize)) -> Result<Renewed> {
    let ids = |statement: usize| -> Result<Vec<TaskId>> {
        results[statement]
            .rows
            .iter()
            .map(|row| Ok(TaskId(sqlx::Row::try_get(row, 0)?)))
            .collect()
    };
    Ok(Renewed {
        held: ids(held)?,
        stopped: ids(stopped)?,
    })
}

/// Adds the rescue: tasks whose lease expired go back to `pending` (or `failed` when that was
/// their last attempt, `cancelled` when their batch was cancelled), with the lost attempt
/// recorded. The attempt is charged: a task that crashes its worker every time must not loop
/// forever. Returns the statement whose change
/// count is the number rescued.
pub(super) fn push_rescue(program: &mut Program, now: Millis) -> Result<usize> {
    // Placeholder: now.
    let expired = format!(
        "SELECT id FROM task WHERE status = 'running' AND lease_expires_at < ? \
         ORDER BY lease_expires_at LIMIT {RESCUE_LIMIT}"
    );
    let message = "'lease expired: worker ' || coalesce(lease_owner, 'unknown') || \
                   ' stopped renewing it (crashed, killed or stalled)'";
    // A task whose batch was cancelled while it ran is cancelled, not queued again.
    let cancelled = "(SELECT status = 'cancelled' FROM batch WHERE batch.id = task.batch_id)";
    let now = Value::Int(now);
    program.push(
        &format!(
            "INSERT INTO task_attempt (task_id, batch_id, attempt, worker, started_at, finished_at, outcome, \
                 message, retry_at) \
             SELECT id, batch_id, attempt, lease_owner, coalesce(claimed_at, ?), ?, 'lease_expired', \
                 {message}, CASE WHEN {cancelled} OR attempt >= max_attempts THEN NULL ELSE ? END \
             FROM task WHERE id IN ({expired})"
        ),
        &[now.clone(), now.clone(), now.clone(), now.clone()],
    )?;
    program.push(
        &format!(
            "UPDATE task SET status = CASE WHEN {cancelled} THEN 'cancelled' \
                     WHEN attempt >= max_attempts THEN 'failed' ELSE 'pending' END, \
                 last_error = {message}, \
                 finished_at = CASE WHEN {cancelled} OR attempt >= max_attempts THEN ? END, run_after = ?, \
                 lease_owner = NULL, lease_expires_at = NULL \
             WHERE id IN ({expired})"
        ),
        &[now.clone(), now.clone(), now],
    )
}
