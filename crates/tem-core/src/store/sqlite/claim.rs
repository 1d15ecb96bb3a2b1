//! The claim: up to N runnable tasks leased to one worker, in one statement per batch.
//!
//! Runnable means: `pending`, `run_after <= now`, of a type the worker can run, in an `active`
//! batch. Order: a batch-scoped claim takes the batch's highest priority first, then FIFO; a
//! global claim serves active batches oldest first, the same order inside each. The statement
//! walks the partial index `task_claim` and never visits rows it skips.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use crate::batch::BatchId;
use crate::error::Result;
use crate::store::{BatchDelta, ClaimRequest, ClaimResult, ClaimedTask};
use crate::task::TaskId;
use crate::time::{Millis, duration_ms};

const CLAIM_SQL: &str = "\
    UPDATE task SET status = 'running', attempt = attempt + 1, lease_token = lease_token + 1, \
        lease_owner = ?1, lease_expires_at = ?2, claimed_at = ?3, \
        first_started_at = COALESCE(first_started_at, ?3) \
    WHERE id IN ( \
        SELECT id FROM task \
        WHERE batch_id = ?4 AND status = 'pending' AND run_after <= ?3 \
          AND type IN (SELECT value FROM json_each(?5)) \
        ORDER BY priority DESC, id \
        LIMIT ?6) \
    RETURNING id, type, attempt, max_attempts, cost, payload, lease_token, priority";

/// Runs one claim request inside the cycle's transaction, recording counter changes in `deltas`.
pub(super) async fn claim(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
    now: Millis,
    deltas: &mut HashMap<BatchId, BatchDelta>,
) -> Result<ClaimResult> {
    if let Some(key) = &request.pause_key {
        let paused: Option<i64> = sqlx::query_scalar("SELECT until FROM limit_pause WHERE key = ? AND until > ?")
            .bind(key.as_ref())
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(until) = paused {
            return Ok(ClaimResult::Paused { until });
        }
    }

    let batches: Vec<i64> = match request.batch {
        Some(batch) => sqlx::query_scalar("SELECT id FROM batch WHERE id = ? AND status = 'active' AND pending > 0")
            .bind(batch.0)
            .fetch_all(&mut *conn)
            .await?,
        None => sqlx::query_scalar("SELECT id FROM batch WHERE status = 'active' AND pending > 0 ORDER BY id")
            .fetch_all(&mut *conn)
            .await?,
    };

    let expires_at = now.saturating_add(duration_ms(request.lease));
    let mut claimed = Vec::new();
    for batch in batches {
        let want = request.max.saturating_sub(u32::try_from(claimed.len()).unwrap_or(u32::MAX));
        if want == 0 {
            break;
        }
        let rows = sqlx::query(CLAIM_SQL)
            .bind(request.owner.as_ref())
            .bind(expires_at)
            .bind(now)
            .bind(batch)
            .bind(request.types_json.as_ref())
            .bind(want)
            .fetch_all(&mut *conn)
            .await?;
        if rows.is_empty() {
            continue;
        }
        let mut tasks = Vec::with_capacity(rows.len());
        for row in &rows {
            let cost: i64 = row.try_get(4)?;
            tasks.push((
                row.try_get::<i32, _>(7)?,
                ClaimedTask {
                    id: TaskId(row.try_get(0)?),
                    batch_id: BatchId(batch),
                    kind: row.try_get(1)?,
                    attempt: row.try_get(2)?,
                    max_attempts: row.try_get(3)?,
                    cost: u64::try_from(cost).unwrap_or(0),
                    payload: row.try_get(5)?,
                    lease_token: row.try_get(6)?,
                },
            ));
        }
        // RETURNING order is unspecified; hand tasks out in claim order.
        tasks.sort_by(|(pa, a), (pb, b)| pb.cmp(pa).then(a.id.cmp(&b.id)));
        let n = i64::try_from(tasks.len()).unwrap_or(i64::MAX);
        let delta = deltas.entry(BatchId(batch)).or_default();
        delta.pending -= n;
        delta.running += n;
        delta.started_at = Some(now);
        claimed.extend(tasks.into_iter().map(|(_, task)| task));
    }
    Ok(ClaimResult::Claimed(claimed))
}
