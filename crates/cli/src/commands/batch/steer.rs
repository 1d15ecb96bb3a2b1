//! `tem batch interrupt|resume|cancel|retry-failed`: one transition each, atomic in the
//! database, seen by every worker on the file.

use std::process::ExitCode;

use serde_json::json;
use tem_core::{BatchId, Engine};

use super::{DbArg, find, open_to_write};
use crate::say;

#[derive(clap::Args)]
pub struct Args {
    /// The batch code.
    code: String,
    #[command(flatten)]
    db: DbArg,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct InterruptArgs {
    #[command(flatten)]
    target: Args,
    /// Why (kept in the batch's interruption log).
    #[arg(long, short = 'm', default_value = "interrupted by hand")]
    message: String,
}

pub async fn interrupt(args: InterruptArgs) -> anyhow::Result<ExitCode> {
    let target = &args.target;
    on_batch(target, async |engine, batch| {
        engine.interrupt(batch, &args.message).await
    })
    .await?;
    print(
        target,
        json!({ "batch": target.code, "status": "interrupted" }),
        format!(
            "batch `{}` interrupted; running calls finish, no new ones start. Continue it with \
             `tem batch resume {}` (or run-batch --resume)",
            target.code, target.code
        ),
    )
}

pub async fn resume(args: Args) -> anyhow::Result<ExitCode> {
    let resumed = on_batch(&args, async |engine, batch| engine.resume(batch).await).await?;
    print(
        &args,
        json!({ "batch": args.code, "reactivated": resumed.reactivated, "requeued": resumed.requeued }),
        format!(
            "batch `{}` {}; {} stranded task(s) requeued. Rerun the run-batch command to run it",
            args.code,
            if resumed.reactivated {
                "is active again"
            } else {
                "was already active"
            },
            resumed.requeued
        ),
    )
}

pub async fn cancel(args: Args) -> anyhow::Result<ExitCode> {
    let cancelled = on_batch(&args, async |engine, batch| engine.cancel(batch).await).await?;
    print(
        &args,
        json!({ "batch": args.code, "cancelled": cancelled }),
        format!(
            "batch `{}` cancelled: {cancelled} pending task(s) will not run",
            args.code
        ),
    )
}

pub async fn retry_failed(args: Args) -> anyhow::Result<ExitCode> {
    let reset = on_batch(&args, async |engine, batch| engine.retry_failed(batch).await).await?;
    print(
        &args,
        json!({ "batch": args.code, "requeued": reset }),
        format!(
            "{reset} failed task(s) of `{}` are pending again with fresh attempts; rerun the run-batch \
             command to run them (with --resume if the batch is interrupted)",
            args.code
        ),
    )
}

/// Opens the database, finds the batch, applies `change`, and closes the database.
async fn on_batch<T>(
    args: &Args,
    change: impl AsyncFnOnce(&Engine, BatchId) -> tem_core::Result<T>,
) -> anyhow::Result<T> {
    let (engine, db) = open_to_write(&args.db).await?;
    let result = match find(&engine, &db, &args.code).await {
        Ok(batch) => change(&engine, batch.id).await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    engine.close().await;
    result
}

fn print(args: &Args, document: serde_json::Value, text: String) -> anyhow::Result<ExitCode> {
    if args.json {
        say!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        say!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}
