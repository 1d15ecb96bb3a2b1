//! `tem batch tasks`.

use std::process::ExitCode;

use tem_core::http::StoredLine;
use tem_core::{TaskFilter, TaskId, TaskStatus};

use super::{DbArg, find, open};
use crate::report_view::{one_line, timestamp};
use crate::say;

#[derive(clap::Args)]
pub struct Args {
    /// The batch code.
    code: String,
    #[command(flatten)]
    db: DbArg,
    /// Only tasks in this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Only tasks of this type.
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Only tasks after this id (to page through a large batch).
    #[arg(long, value_name = "TASK_ID")]
    after: Option<i64>,
    /// A JSON array of tasks (payload, result, error, timestamps) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusArg {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (engine, db) = open(&args.db).await?;
    let batch = find(&engine, &db, &args.code).await?;
    let filter = TaskFilter {
        batch: Some(batch.id),
        status: args.status.map(|s| match s {
            StatusArg::Pending => TaskStatus::Pending,
            StatusArg::Running => TaskStatus::Running,
            StatusArg::Completed => TaskStatus::Completed,
            StatusArg::Failed => TaskStatus::Failed,
            StatusArg::Cancelled => TaskStatus::Cancelled,
        }),
        kind: args.kind.clone(),
        after: args.after.map(TaskId),
        limit: Some(args.limit),
    };
    let tasks = engine.tasks(&filter).await?;
    engine.close().await;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(ExitCode::SUCCESS);
    }
    if tasks.is_empty() {
        say!("no tasks match");
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "{:>8} {:>6} {:<10} {:>7} {:<24} {}",
        "ID",
        "LINE",
        "STATUS",
        "ATTEMPT",
        "FINISHED",
        "ERROR"
    );
    for task in &tasks {
        let line = serde_json::from_str::<StoredLine>(&task.payload)
            .map(|s| s.line.to_string())
            .unwrap_or_else(|_| "-".into());
        say!(
            "{:>8} {:>6} {:<10} {:>7} {:<24} {}",
            task.id,
            line,
            task.status.to_string(),
            format!("{}/{}", task.attempt, task.max_attempts),
            task.finished_at.map(timestamp).unwrap_or_default(),
            task.last_error
                .as_deref()
                .map(|e| one_line(e, 70))
                .unwrap_or_default()
        );
    }
    if tasks.len() == args.limit as usize
        && let Some(last) = tasks.last()
    {
        say!("… more with --after {}", last.id);
    }
    Ok(ExitCode::SUCCESS)
}
