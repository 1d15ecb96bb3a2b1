//! Leases, as sections of a group commit: renewal of a worker's in-flight tasks, and the rescue
//! of tasks whose lease expired because their worker died.

use sqlx::PgConnection;

use crate::error::Result;
use crate::store::{RenewRequest, Renewed};
use crate::task::TaskId;
use crate::time::Millis;

/// How many expired leases one cycle rescues; the rest wait for the next cycle.
const RESCUE_LIMIT: i64 = 1000;

/// Extends the leases the worker still holds, and finds which of them belong to a batch that
/// was interrupted or cancelled meanwhile.
pub(super) async fn renew(conn: &mut PgConnection, request: &RenewRequest) -> Result<Renewed> {
    let ids: Vec<i64> = request.ids.iter().map(|id| id.0).collect();
    let held: Vec<i64> = sqlx::query_scalar(
        "UPDATE task SET lease_expires_at = $1 \
         WHERE id = ANY($2) AND lease_owner = $3 AND status = 'running' RETURNING id",
    )
    .bind(request.expires_at)
    .bind(&ids)
    .bind(request.owner.as_ref())
    .fetch_all(&mut *conn)
    .await?;
    let stopped: Vec<i64> = sqlx::query_scalar(
        "SELECT t.id FROM task AS t JOIN batch AS b ON b.id = t.batch_id \
         WHERE t.id = ANY($1) AND t.lease_owner = $2 AND t.status = 'running' \
           AND b.status IN ('interrupted', 'cancelled')",
    )
    .bind(&ids)
    .bind(request.owner.as_ref())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Renewed {
        held: held.into_iter().map(TaskId).collect(),
        stopped: stopped.into_iter().map(TaskId).collect(),
    })
}

/// Tasks whose lease expired go back to `pending` (or `failed` when that was their last
/// attempt, or `cancelled` when their batch was cancelled meanwhile), with the lost attempt
/// recorded, in one statement. The attempt is charged: a task
/// that crashes its worker every time must not loop forever. Rows another transaction holds
/// are skipped (their holder is alive and writing them). Returns how many were rescued.
pub(super) async fn rescue(conn: &mut PgConnection, now: Millis) -> Result<u64> {
    let rescued = sqlx::query(
        "WITH expired AS ( \
             SELECT t.id, t.batch_id, t.attempt, t.max_attempts, t.lease_owner, t.claimed_at, \
                 b.status = 'cancelled' AS cancelled \
             FROM task AS t JOIN batch AS b ON b.id = t.batch_id \
             WHERE t.status = 'running' AND t.lease_expires_at < $1 \
             ORDER BY t.lease_expires_at LIMIT $2 FOR UPDATE OF t SKIP LOCKED), \
         moved AS ( \
             UPDATE task SET status = CASE WHEN e.cancelled THEN 'cancelled' \
                     WHEN e.attempt >= e.max_attempts THEN 'failed' ELSE 'pending' END, \
                 last_error = 'lease expired: worker ' || coalesce(e.lease_owner, 'unknown') \
                     || ' stopped renewing it (crashed, killed or stalled)', \
                 finished_at = CASE WHEN e.cancelled OR e.attempt >= e.max_attempts THEN $1 END, \
                 run_after = $1, \
                 lease_owner = NULL, lease_expires_at = NULL \
             FROM expired AS e WHERE task.id = e.id \
             RETURNING task.id) \
         INSERT INTO task_attempt (task_id, batch_id, attempt, worker, started_at, finished_at, outcome, \
             message, retry_at) \
         SELECT e.id, e.batch_id, e.attempt, e.lease_owner, coalesce(e.claimed_at, $1), $1, 'lease_expired', \
             'lease expired: worker ' || coalesce(e.lease_owner, 'unknown') \
                 || ' stopped renewing it (crashed, killed or stalled)', \
             CASE WHEN e.cancelled OR e.attempt >= e.max_attempts THEN NULL ELSE $1 END \
         FROM expired AS e JOIN moved AS m ON m.id = e.id ORDER BY e.id",
    )
    .bind(now)
    .bind(RESCUE_LIMIT)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(rescued)
}
