//! Read-only queries: tasks, attempts, and whether a worker has anything left to wait for.

use sqlx::Row;

use super::SqliteStore;
use crate::batch::BatchId;
use crate::error::Result;
use crate::store::rows::{self, TASK_COLUMNS};
use crate::task::{Attempt, Task, TaskFilter, TaskId};

impl SqliteStore {
    pub async fn task(&self, id: TaskId) -> Result<Option<Task>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM task WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(rows::task).transpose()
    }

    /// Tasks matching `filter`, in id (enqueue) order.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM task \
             WHERE (?1 IS NULL OR batch_id = ?1) AND (?2 IS NULL OR status = ?2) \
               AND (?3 IS NULL OR type = ?3) AND id > ?4 \
             ORDER BY id LIMIT ?5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.batch.map(|b| b.0))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.kind.as_deref())
            .bind(filter.after.map_or(0, |t| t.0))
            .bind(i64::from(filter.limit.unwrap_or(100)))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(rows::task).collect()
    }

    /// Every attempt of a task, oldest first: the history table holds the attempts that did not
    /// succeed, and a completed task's own row is its successful last attempt.
    pub async fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT task_id, attempt, worker, started_at, finished_at, outcome, http_status, message, retry_at \
             FROM ( \
                 SELECT 0 AS latest, id AS seq, task_id, attempt, worker, started_at, finished_at, outcome, \
                        http_status, message, retry_at \
                 FROM task_attempt WHERE task_id = ?1 \
                 UNION ALL \
                 SELECT 1, 0, id, attempt, lease_owner, claimed_at, finished_at, 'succeeded', NULL, NULL, NULL \
                 FROM task WHERE id = ?1 AND status = 'completed') \
             ORDER BY latest, seq",
        )
        .bind(task.0)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(rows::attempt).collect()
    }

    /// Limit keys paused now (Retry-After, open circuits), soonest end first.
    pub async fn pauses(&self, now: crate::time::Millis) -> Result<Vec<crate::store::KeyPause>> {
        let rows = sqlx::query("SELECT key, until, reason FROM limit_pause WHERE until > ? ORDER BY until")
            .bind(now)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::store::KeyPause {
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
        let found: i64 = sqlx::query_scalar(
            "SELECT EXISTS ( \
                 SELECT 1 FROM batch b JOIN task t ON t.batch_id = b.id \
                 WHERE b.status = 'active' AND (?2 IS NULL OR b.id = ?2) \
                   AND t.status = 'pending' AND t.type IN (SELECT value FROM json_each(?1))) \
             OR EXISTS ( \
                 SELECT 1 FROM task t WHERE t.status = 'running' AND (?2 IS NULL OR t.batch_id = ?2) \
                   AND t.type IN (SELECT value FROM json_each(?1)))",
        )
        .bind(types_json)
        .bind(batch.map(|b| b.0))
        .fetch_one(&self.read)
        .await?;
        Ok(found != 0)
    }
}
