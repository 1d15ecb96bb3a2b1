//! Results in input order: one [`ResultLine`] per task, for `--output` and `tem batch export`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::input::HTTP_KIND;
use super::request::StoredLine;
use crate::batch::BatchId;
use crate::engine::Engine;
use crate::error::Result;
use crate::task::{AttemptOutcome, Task, TaskFilter, TaskId, TaskStatus};

/// Tasks read per query while exporting.
const PAGE: u32 = 1_000;

/// What became of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultLine {
    /// The input line the task came from (HTTP batches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub task: TaskId,
    pub status: TaskStatus,
    /// Attempts made (aborted ones are not counted).
    pub attempts: u32,
    /// The HTTP status of the last response, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// What the task returned: for an HTTP call, the response body (JSON, or text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The body was longer than the size cap and was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why the task failed (its last error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Calls `write` with every task of `batch`, in enqueue (input) order; returns how many.
pub async fn export<W>(engine: &Engine, batch: BatchId, mut write: W) -> Result<u64>
where
    W: FnMut(&ResultLine) -> std::io::Result<()>,
{
    let http = engine.batch(batch).await?.kind == HTTP_KIND;
    let mut after = None;
    let mut written = 0u64;
    loop {
        let filter = TaskFilter {
            batch: Some(batch),
            after,
            limit: Some(PAGE),
            ..TaskFilter::default()
        };
        let tasks = engine.tasks(&filter).await?;
        let Some(last) = tasks.last() else {
            return Ok(written);
        };
        after = Some(last.id);
        for task in tasks {
            let line = result_line(engine, task, http).await?;
            write(&line).map_err(crate::error::Error::Io)?;
            written += 1;
        }
    }
}

async fn result_line(engine: &Engine, task: Task, http: bool) -> Result<ResultLine> {
    let line = http
        .then(|| {
            serde_json::from_str::<StoredLine>(&task.payload)
                .ok()
                .map(|s| s.line)
        })
        .flatten();
    let mut out = ResultLine {
        line,
        task: task.id,
        status: task.status,
        attempts: task.attempt,
        http_status: None,
        result: None,
        truncated: false,
        error: task.last_error.clone(),
    };
    if let Some(text) = &task.result {
        let value: Value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()));
        match value {
            Value::Object(mut response) if http && response.contains_key("status") => {
                out.http_status = response
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok());
                out.truncated = response
                    .get("truncated")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                out.result = response.remove("body");
            }
            value => out.result = Some(value),
        }
    }
    if task.status == TaskStatus::Failed {
        // The history says which response, if any, the last error came from.
        out.http_status = engine
            .attempts(task.id)
            .await?
            .iter()
            .rev()
            .find(|a| a.outcome != AttemptOutcome::Aborted)
            .and_then(|a| a.http_status);
    }
    Ok(out)
}
