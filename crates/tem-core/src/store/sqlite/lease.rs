//! Leases: renewal of a worker's in-flight tasks, and the rescue of tasks whose lease expired.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use crate::batch::BatchId;
use crate::error::Result;
use crate::store::{BatchDelta, Next, RenewRequest};
use crate::task::{AttemptOutcome, TaskId};
use crate::time::Millis;

/// How many expired leases one cycle rescues; the rest wait for the next cycle.
const RESCUE_LIMIT: i64 = 1000;

/// Extends the leases the worker still holds; returns the ids it still holds.
pub(super) async fn renew(conn: &mut SqliteConnection, request: &RenewRequest) -> Result<Vec<TaskId>> {
    if request.ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(&request.ids).unwrap_or_else(|_| "[]".to_owned());
    let renewed: Vec<i64> = sqlx::query_scalar(
        "UPDATE task SET lease_expires_at = ? \
         WHERE id IN (SELECT value FROM json_each(?)) AND lease_owner = ? AND status = 'running' \
         RETURNING id",
    )
    .bind(request.expires_at)
    .bind(ids)
    .bind(request.owner.as_ref())
    .fetch_all(&mut *conn)
    .await?;
    Ok(renewed.into_iter().map(TaskId).collect())
}

/// Returns tasks whose lease expired to `pending` (or `failed` when that was their last
/// attempt), recording the lost attempt in the history. The attempt is charged: a task that
/// crashes its worker every time must not loop forever.
pub(super) async fn rescue(
    conn: &mut SqliteConnection,
    now: Millis,
    deltas: &mut HashMap<BatchId, BatchDelta>,
) -> Result<u64> {
    let expired = sqlx::query(
        "SELECT id, batch_id, attempt, max_attempts, lease_owner, claimed_at, lease_token FROM task \
         WHERE status = 'running' AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?",
    )
    .bind(now)
    .bind(RESCUE_LIMIT)
    .fetch_all(&mut *conn)
    .await?;
    let mut rescued = 0;
    for row in expired {
        let id: i64 = row.try_get(0)?;
        let batch = BatchId(row.try_get(1)?);
        let attempt: i64 = row.try_get(2)?;
        let max_attempts: i64 = row.try_get(3)?;
        let owner: Option<String> = row.try_get(4)?;
        let claimed_at: Option<Millis> = row.try_get(5)?;
        let token: i64 = row.try_get(6)?;
        let last = attempt >= max_attempts;
        let message = format!(
            "lease expired: worker {} stopped renewing it (crashed, killed or stalled)",
            owner.as_deref().unwrap_or("unknown")
        );
        let changed = sqlx::query(
            "UPDATE task SET status = ?, last_error = ?, finished_at = ?, run_after = ?, \
                 lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ? AND lease_token = ? AND status = 'running'",
        )
        .bind(if last { "failed" } else { "pending" })
        .bind(&message)
        .bind(last.then_some(now))
        .bind(now)
        .bind(id)
        .bind(token)
        .execute(&mut *conn)
        .await?;
        if changed.rows_affected() == 0 {
            continue;
        }
        sqlx::query(
            "INSERT INTO task_attempt (task_id, attempt, worker, started_at, finished_at, outcome, message, retry_at) \
             VALUES (?, ?, ?, ?, ?, 'lease_expired', ?, ?)",
        )
        .bind(id)
        .bind(attempt)
        .bind(owner.as_deref())
        .bind(claimed_at.unwrap_or(now))
        .bind(now)
        .bind(&message)
        .bind((!last).then_some(now))
        .execute(&mut *conn)
        .await?;
        let next = if last { Next::Fail } else { Next::Retry { run_after: now } };
        deltas
            .entry(batch)
            .or_default()
            .record_outcome(&next, AttemptOutcome::LeaseExpired, now);
        tracing::warn!(task = id, batch = batch.0, attempt, owner = owner.as_deref(), "rescued a task whose lease expired");
        rescued += 1;
    }
    Ok(rescued)
}
