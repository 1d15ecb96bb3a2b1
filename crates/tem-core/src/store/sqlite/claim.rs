//! The claim, as one section of a group commit: up to N runnable tasks leased to one worker in
//! one statement.
//!
//! Runnable means: `pending`, `run_after <= now`, of a type the worker can run, in an `active`
//! batch, under a limit key that is not paused. Order: a batch-scoped claim takes the batch's
//! highest priority first, then FIFO; a global claim serves active batches oldest first, the same
//! order inside each. Both walk the partial index `task_claim` and never sort.

use std::sync::LazyLock;

use sqlx::Row;

use super::program::{Program, StatementResult, Value};
use crate::error::Result;
use crate::store::rows::{self, CLAIMED_COLUMNS};
use crate::store::{ClaimRequest, ClaimResult};
use crate::time::{Millis, duration_ms};

/// Placeholders: owner, lease expiry, now, now.
const SET_LEASE: &str = "status = 'running', attempt = attempt + 1, lease_token = lease_token + 1, \
    lease_owner = ?, lease_expires_at = ?, claimed_at = ?, first_started_at = coalesce(first_started_at, ?)";
/// Placeholders: key, now.
const NOT_PAUSED: &str = "NOT EXISTS (SELECT 1 FROM limit_pause WHERE key = ? AND until > ?)";

/// A batch-scoped claim. Placeholders: [`SET_LEASE`]'s, batch, now, types, batch, [`NOT_PAUSED`]'s,
/// limit.
static BATCH_CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE task SET {SET_LEASE} WHERE id IN ( \
             SELECT id FROM task \
             WHERE batch_id = ? AND status = 'pending' AND run_after <= ? \
               AND type IN (SELECT value FROM json_each(?)) \
               AND EXISTS (SELECT 1 FROM batch WHERE id = ? AND status = 'active') \
               AND {NOT_PAUSED} \
             ORDER BY priority DESC, id LIMIT ?) \
         RETURNING {CLAIMED_COLUMNS}"
    )
});

/// A claim across active batches, oldest first. Placeholders: [`SET_LEASE`]'s, now, types,
/// [`NOT_PAUSED`]'s, limit.
static GLOBAL_CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE task SET {SET_LEASE} WHERE id IN ( \
             SELECT t.id FROM batch AS b CROSS JOIN task AS t \
             WHERE b.status = 'active' AND b.pending > 0 AND t.batch_id = b.id \
               AND t.status = 'pending' AND t.run_after <= ? \
               AND t.type IN (SELECT value FROM json_each(?)) AND {NOT_PAUSED} \
             ORDER BY b.id, t.priority DESC, t.id LIMIT ?) \
         RETURNING {CLAIMED_COLUMNS}"
    )
});

/// Where the section's results are, once the program ran.
pub(super) struct ClaimSection {
    claim: usize,
    pause: usize,
}

/// Adds the statements of one claim request to `program`.
pub(super) fn push(program: &mut Program, request: &ClaimRequest, now: Millis) -> Result<ClaimSection> {
    let owner = Value::Text(request.owner.clone());
    let expires = Value::Int(now.saturating_add(duration_ms(request.lease)));
    let types = Value::Text(request.types_json.clone());
    let key: Value = request.pause_key.clone().into();
    let max = Value::from(request.max);
    let now = Value::Int(now);
    let claim = match request.batch {
        Some(batch) => {
            let batch = Value::Int(batch.0);
            program.push(
                &BATCH_CLAIM,
                &[
                    owner,
                    expires,
                    now.clone(),
                    now.clone(),
                    batch.clone(),
                    now.clone(),
                    types,
                    batch,
                    key.clone(),
                    now.clone(),
                    max,
                ],
            )?
        }
        None => program.push(
            &GLOBAL_CLAIM,
            &[
                owner,
                expires,
                now.clone(),
                now.clone(),
                now.clone(),
                types,
                key.clone(),
                now.clone(),
                max,
            ],
        )?,
    };
    // In the claim's own transaction: none of its calls starts before this is durable.
    if let Some(spent) = &request.spent_rate {
        super::spent_rate::push(program, spent)?;
    }
    // Tells an empty claim "paused until" from "nothing to do"; a primary-key probe.
    let pause = program.push(
        "SELECT until FROM limit_pause WHERE key = ? AND until > ?",
        &[key, now],
    )?;
    Ok(ClaimSection { claim, pause })
}

impl ClaimSection {
    /// The claim's outcome: the tasks in claim order, or the pause that prevented it.
    pub fn result(&self, results: &[StatementResult]) -> Result<ClaimResult> {
        let rows = &results[self.claim].rows;
        if rows.is_empty()
            && let Some(row) = results[self.pause].rows.first()
        {
            return Ok(ClaimResult::Paused {
                until: row.try_get(0)?,
            });
        }
        let tasks = rows.iter().map(rows::claimed_task).collect::<Result<Vec<_>>>()?;
        // RETURNING order is unspecified; hand tasks out in claim order.
        Ok(ClaimResult::Claimed(rows::in_claim_order(tasks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use crate::store::sqlite::SqliteStore;

    /// SQLite's plan for `statement` exactly as the claim sends it (every `?` bound).
    async fn plan(store: &SqliteStore, statement: &str) -> String {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}")));
        for _ in 0..statement.matches('?').count() {
            query = query.bind(1_i64);
        }
        let rows = query.fetch_all(&store.read).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(3)).collect();
        plan.join("\n")
    }

    #[tokio::test]
    async fn both_claims_walk_the_partial_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, &EngineOptions::default()).await.unwrap();
        for statement in [&*BATCH_CLAIM, &*GLOBAL_CLAIM] {
            let text = plan(&store, statement).await;
            assert!(text.contains("INDEX task_claim"), "{text}");
            assert!(!text.contains("TEMP B-TREE"), "the claim must not sort: {text}");
        }
    }
}
