//! `tem batch interrupt|resume|cancel|retry-failed`: one transition each, atomic in the
//! database, seen by every worker on the file.

use std::process::ExitCode;

use serde_json::json;

use super::{DbArg, find, open};
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
    let (engine, db) = open(&target.db).await?;
    let batch = find(&engine, &db, &target.code).await?;
    let result = engine.interrupt(batch.id, &args.message).await;
    engine.close().await;
    result?;
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
    let (engine, db) = open(&args.db).await?;
    let batch = find(&engine, &db, &args.code).await?;
    let result = engine.resume(batch.id).await;
    engine.close().await;
    let resumed = result?;
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
    let (engine, db) = open(&args.db).await?;
    let batch = find(&engine, &db, &args.code).await?;
    let result = engine.cancel(batch.id).await;
    engine.close().await;
    let cancelled = result?;
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
    let (engine, db) = open(&args.db).await?;
    let batch = find(&engine, &db, &args.code).await?;
    let result = engine.retry_failed(batch.id).await;
    engine.close().await;
    let reset = result?;
    print(
        &args,
        json!({ "batch": args.code, "requeued": reset }),
        format!(
            "{reset} failed task(s) of `{}` are pending again with fresh attempts; rerun the run-batch command to run them",
            args.code
        ),
    )
}

fn print(args: &Args, document: serde_json::Value, text: String) -> anyhow::Result<ExitCode> {
    if args.json {
        say!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        say!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}
