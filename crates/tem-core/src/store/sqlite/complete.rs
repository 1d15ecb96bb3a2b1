//! Applying finished attempts: one fenced `UPDATE … FROM (VALUES …)` for the task rows and one
//! multi-row INSERT for the attempt history, per chunk of outcomes.

use std::collections::{HashMap, HashSet};

use sqlx::SqliteConnection;

use super::tuples;
use crate::batch::BatchId;
use crate::error::Result;
use crate::store::{BatchDelta, Next, OutcomeRow};
use crate::time::Millis;

const CHUNK: usize = 128;

/// Applies `outcomes` inside the cycle's transaction. An outcome whose lease token no longer
/// matches (the lease expired and the task was rescued or re-claimed) changes nothing.
/// Returns, per outcome, whether it was applied.
pub(super) async fn apply_outcomes(
    conn: &mut SqliteConnection,
    outcomes: &[OutcomeRow],
    now: Millis,
    deltas: &mut HashMap<BatchId, BatchDelta>,
) -> Result<Vec<bool>> {
    let mut accepted = Vec::with_capacity(outcomes.len());
    for chunk in outcomes.chunks(CHUNK) {
        let applied = update_tasks(conn, chunk, now).await?;
        let kept: Vec<&OutcomeRow> = chunk.iter().filter(|o| applied.contains(&o.task_id.0)).collect();
        insert_history(conn, &kept).await?;
        for outcome in chunk {
            let ok = applied.contains(&outcome.task_id.0);
            accepted.push(ok);
            if !ok {
                continue;
            }
            deltas
                .entry(outcome.batch_id)
                .or_default()
                .record_outcome(&outcome.next, outcome.outcome, outcome.finished_at);
            if let Some((key, until)) = &outcome.pause {
                sqlx::query(
                    "INSERT INTO limit_pause (key, until, reason) VALUES (?, ?, ?) \
                     ON CONFLICT (key) DO UPDATE SET until = max(until, excluded.until), reason = excluded.reason",
                )
                .bind(key.as_ref())
                .bind(*until)
                .bind(outcome.message.as_deref())
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(accepted)
}

/// The fenced update; returns the ids it changed.
async fn update_tasks(conn: &mut SqliteConnection, chunk: &[OutcomeRow], now: Millis) -> Result<HashSet<i64>> {
    // v: (id, token, status, result, last_error, run_after, finished_at, refund)
    let sql = format!(
        "WITH v(id, token, status, result, last_error, run_after, finished_at, refund) AS (VALUES {}) \
         UPDATE task SET status = v.status, result = v.result, last_error = v.last_error, \
             run_after = COALESCE(v.run_after, task.run_after), finished_at = v.finished_at, \
             attempt = task.attempt - v.refund, lease_owner = NULL, lease_expires_at = NULL \
         FROM v WHERE task.id = v.id AND task.lease_token = v.token AND task.status = 'running' \
         RETURNING task.id",
        tuples(chunk.len(), 8)
    );
    let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    for o in chunk {
        let (status, result, run_after, finished_at, refund): (&str, Option<&str>, Option<Millis>, Option<Millis>, i64) =
            match &o.next {
                Next::Complete { result } => ("completed", result.as_deref(), None, Some(o.finished_at), 0),
                Next::Retry { run_after } => ("pending", None, Some(*run_after), None, 0),
                Next::Fail => ("failed", None, None, Some(o.finished_at), 0),
                Next::Release => ("pending", None, Some(now), None, 1),
            };
        let last_error = match &o.next {
            Next::Complete { .. } | Next::Release => None,
            _ => o.message.as_deref(),
        };
        query = query
            .bind(o.task_id.0)
            .bind(o.lease_token)
            .bind(status)
            .bind(result.map(str::to_owned))
            .bind(last_error.map(str::to_owned))
            .bind(run_after)
            .bind(finished_at)
            .bind(refund);
    }
    Ok(query.fetch_all(&mut *conn).await?.into_iter().collect())
}

async fn insert_history(conn: &mut SqliteConnection, rows: &[&OutcomeRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO task_attempt (task_id, attempt, worker, started_at, finished_at, outcome, \
         http_status, message, retry_at) VALUES {}",
        tuples(rows.len(), 9)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for o in rows {
        let retry_at = match &o.next {
            Next::Retry { run_after } => Some(*run_after),
            _ => None,
        };
        query = query
            .bind(o.task_id.0)
            .bind(o.attempt)
            .bind(o.worker.as_ref())
            .bind(o.started_at)
            .bind(o.finished_at)
            .bind(o.outcome.as_str())
            .bind(o.http_status)
            .bind(o.message.clone())
            .bind(retry_at);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
