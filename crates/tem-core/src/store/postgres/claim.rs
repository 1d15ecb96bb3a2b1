//! The claim, as one section of a group commit: up to N runnable tasks leased to one worker,
//! taken with `FOR UPDATE SKIP LOCKED` so concurrent claimers never wait on each other's rows.
//!
//! Before the rows are taken, the claim respects what every process shares: the key's durable
//! pause, the batch's concurrency cap (its `running` counter, exact because the batch row is
//! locked by this transaction) and the key's shared rate schedule (each task gets a start slot).

use std::time::Duration;

use sqlx::{PgConnection, Row};

use super::shared_rate::{self, LOOKAHEAD, Slots};
use crate::error::{Error, Result};
use crate::store::rows::{self, CLAIMED_COLUMNS};
use crate::store::{ClaimRequest, ClaimResult};
use crate::time::{Millis, duration_ms};

/// How soon a claim held back by the shared concurrency cap asks again: slots free up in other
/// processes, which do not say so.
const CAPPED_RETRY: Duration = Duration::from_millis(25);

const SET_LEASE: &str = "status = 'running', attempt = task.attempt + 1, lease_token = task.lease_token + 1, \
    lease_owner = $1, lease_expires_at = $2, claimed_at = $3, first_started_at = coalesce(task.first_started_at, $3)";

/// Claims tasks for `request`; the batch rows it may touch are already locked.
pub(super) async fn claim(
    conn: &mut PgConnection,
    request: &ClaimRequest,
    now: Millis,
) -> Result<ClaimResult> {
    // The key's pause and the batch's status and running count, in one round trip (the batch
    // side is empty for a claim across batches, or a batch that is gone).
    let state = sqlx::query(
        "SELECT (SELECT until FROM limit_pause WHERE key = $1 AND until > $2), b.status, b.running \
         FROM (SELECT 1) AS one LEFT JOIN batch AS b ON b.id = $3",
    )
    .bind(request.pause_key.as_deref())
    .bind(now)
    .bind(request.batch.map(|b| b.0))
    .fetch_one(&mut *conn)
    .await?;
    if let Some(until) = state.try_get::<Option<Millis>, _>(0)? {
        return Ok(ClaimResult::Paused { until });
    }
    let mut max = i64::from(request.max);
    if request.batch.is_some() {
        if state.try_get::<Option<&str>, _>(1)? != Some("active") {
            return Ok(ClaimResult::Claimed(Vec::new()));
        }
        if let Some(cap) = request.shared.concurrency {
            let room = i64::from(cap) - state.try_get::<i64, _>(2)?;
            if room <= 0 {
                return Ok(ClaimResult::Throttled {
                    until: now + duration_ms(CAPPED_RETRY),
                });
            }
            max = max.min(room);
        }
    }
    let key = request.pause_key.as_deref().unwrap_or("");
    let rate_key = request
        .shared
        .rate
        .map(|_| shared_rate::row_key(request.batch, "rate", key));
    let slots = match (request.shared.rate, &rate_key) {
        (Some(quota), Some(key)) => {
            let (tat, db_now) = shared_rate::lock(conn, key).await?;
            let want = u32::try_from(max).unwrap_or(u32::MAX);
            let slots = Slots::plan(tat, db_now, quota, want, LOOKAHEAD);
            if slots.granted == 0 {
                return Ok(ClaimResult::Throttled {
                    until: now + duration_ms(slots.next_free_in()).max(1),
                });
            }
            max = max.min(i64::from(slots.granted));
            Some(slots)
        }
        _ => None,
    };
    // A weighted budget is a debt: claim while it is not overdrawn, then spend the estimate.
    let budget = match request.shared.budget {
        Some(quota) => {
            let key = shared_rate::row_key(request.batch, "budget", key);
            let (tat, db_now) = shared_rate::lock(conn, &key).await?;
            if tat > db_now {
                let wait = Duration::from_micros(u64::try_from(tat - db_now).unwrap_or(0));
                return Ok(ClaimResult::Throttled {
                    until: now + duration_ms(wait).max(1),
                });
            }
            Some((key, quota, db_now))
        }
        None => None,
    };

    let types: Vec<String> = serde_json::from_str(&request.types_json).map_err(|source| Error::Json {
        what: "task types",
        source,
    })?;
    let expires = now.saturating_add(duration_ms(request.lease));
    let found = match request.batch {
        Some(batch) => {
            let sql = format!(
                "WITH picked AS ( \
                     SELECT id AS pid FROM task \
                     WHERE batch_id = $4 AND status = 'pending' AND run_after <= $3 AND type = ANY($5) \
                     ORDER BY priority DESC, id LIMIT $6 FOR UPDATE SKIP LOCKED) \
                 UPDATE task SET {SET_LEASE} FROM picked WHERE task.id = picked.pid \
                 RETURNING {CLAIMED_COLUMNS}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(request.owner.as_ref())
                .bind(expires)
                .bind(now)
                .bind(batch.0)
                .bind(&types)
                .bind(max)
                .fetch_all(&mut *conn)
                .await?
        }
        None => {
            let sql = format!(
                // Batch by batch, oldest first, each walked in its own index order: a join
                // sorted across batches would read every runnable task of the oldest one.
                "WITH picked AS ( \
                     SELECT t.pid FROM ( \
                         SELECT id FROM batch WHERE status = 'active' AND pending > 0 ORDER BY id) AS b \
                     CROSS JOIN LATERAL ( \
                         SELECT id AS pid FROM task \
                         WHERE batch_id = b.id AND status = 'pending' AND run_after <= $3 AND type = ANY($4) \
                         ORDER BY priority DESC, id LIMIT $5 FOR UPDATE SKIP LOCKED) AS t \
                     LIMIT $5) \
                 UPDATE task SET {SET_LEASE} FROM picked WHERE task.id = picked.pid \
                 RETURNING {CLAIMED_COLUMNS}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(request.owner.as_ref())
                .bind(expires)
                .bind(now)
                .bind(&types)
                .bind(max)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let tasks = found.iter().map(rows::claimed_task).collect::<Result<Vec<_>>>()?;
    let mut tasks = rows::in_claim_order(tasks);
    if let (Some(slots), Some(key)) = (slots, &rate_key) {
        let used = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
        // Slots not used go back: the schedule advances by what was claimed.
        shared_rate::advance(conn, key, slots.tat_after(used)).await?;
        let received = tokio::time::Instant::now();
        for (j, task) in (0u32..).zip(tasks.iter_mut()) {
            task.not_before = Some(received + slots.offset(j));
        }
    }
    if let Some((key, quota, base)) = budget {
        let cost: u64 = tasks.iter().map(|task| task.cost).sum();
        let spent = i64::try_from(cost)
            .unwrap_or(i64::MAX)
            .saturating_mul(shared_rate::interval_us(quota));
        shared_rate::advance(conn, &key, base.saturating_add(spent)).await?;
    }
    Ok(ClaimResult::Claimed(tasks))
}
