//! Read-only queries: tasks, attempts, pauses, and whether a worker has anything left to wait for.

use sqlx::Row;

use super::PgStore;
use crate::batch::BatchId;
use crate::error::{Error, Result};
use crate::store::KeyPause;
use crate::store::rows::{self, ATTEMPT_COLUMNS, TASK_COLUMNS};
use crate::task::{Attempt, Task, TaskFilter, TaskId};
use crate::time::Millis;

impl PgStore {
    pub async fn task(&self, id: TaskId) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM task WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::task).transpose()
    }

    /// Tasks matching `filter`, in id (enqueue) order.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM task \
             WHERE ($1::bigint IS NULL OR batch_id = $1) AND ($2::text IS NULL OR status = $2) \
               AND ($3::text IS NULL OR type = $3) AND id > $4 \
             ORDER BY id LIMIT $5"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.batch.map(|b| b.0))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.kind.as_deref())
            .bind(filter.after.map_or(0, |t| t.0))
            .bind(i64::from(filter.limit.unwrap_or(100)))
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::task).collect()
    }

    /// Every attempt of a task, oldest first: the history holds the attempts that did not
    /// succeed, and a completed task's own row is its successful last attempt.
    pub async fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM ( \
                 SELECT 0 AS latest, id AS seq, task_id, attempt, worker, started_at, finished_at, outcome, \
                        http_status, message, retry_at \
                 FROM task_attempt WHERE task_id = $1 \
                 UNION ALL \
                 SELECT 1, 0, id, attempt, lease_owner, claimed_at, finished_at, 'succeeded', NULL, NULL, NULL \
                 FROM task WHERE id = $1 AND status = 'completed') AS a \
             ORDER BY latest, seq"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task.0)
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::attempt).collect()
    }

    /// Limit keys paused now (Retry-After, open circuits), soonest end first.
    pub async fn pauses(&self, now: Millis) -> Result<Vec<KeyPause>> {
        let found = sqlx::query("SELECT key, until, reason FROM limit_pause WHERE until > $1 ORDER BY until")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        found
            .iter()
            .map(|row| {
                Ok(KeyPause {
                    key: row.try_get::<String, _>(0)?.into(),
                    until: row.try_get(1)?,
                    reason: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Whether any task of `types_json` (a JSON array) could still need a worker: pending in an
    /// active batch, or running anywhere (its lease may expire and bring it back).
    pub async fn has_work(&self, types_json: &str, batch: Option<BatchId>) -> Result<bool> {
        let types: Vec<String> = serde_json::from_str(types_json).map_err(|source| Error::Json {
            what: "task types",
            source,
        })?;
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS ( \
                 SELECT 1 FROM batch b JOIN task t ON t.batch_id = b.id \
                 WHERE b.status = 'active' AND ($2::bigint IS NULL OR b.id = $2) \
                   AND t.status = 'pending' AND t.type = ANY($1)) \
             OR EXISTS ( \
                 SELECT 1 FROM task t WHERE t.status = 'running' AND ($2::bigint IS NULL OR t.batch_id = $2) \
                   AND t.type = ANY($1))",
        )
        .bind(&types)
        .bind(batch.map(|b| b.0))
        .fetch_one(&self.pool)
        .await?;
        Ok(found)
    }
}
