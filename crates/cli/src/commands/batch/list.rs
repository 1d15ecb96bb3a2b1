//! `tem batch list`.

use std::process::ExitCode;

use tem_core::{BatchFilter, BatchStatus};

use super::{DbArg, open};
use crate::report_view::timestamp;
use crate::say;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: DbArg,
    /// Only batches in this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// A JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusArg {
    Active,
    Interrupted,
    Completed,
    Cancelled,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (engine, _) = open(&args.db).await?;
    let filter = BatchFilter {
        status: args.status.map(|s| match s {
            StatusArg::Active => BatchStatus::Active,
            StatusArg::Interrupted => BatchStatus::Interrupted,
            StatusArg::Completed => BatchStatus::Completed,
            StatusArg::Cancelled => BatchStatus::Cancelled,
        }),
        limit: Some(args.limit),
        ..BatchFilter::default()
    };
    let batches = engine.batches(&filter).await?;
    engine.close().await;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&batches)?);
        return Ok(ExitCode::SUCCESS);
    }
    if batches.is_empty() {
        say!("no batches");
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "{:<24} {:<8} {:<12} {:<24} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "CODE",
        "TYPE",
        "STATUS",
        "CREATED",
        "TOTAL",
        "DONE",
        "FAILED",
        "PENDING",
        "RUNNING"
    );
    for b in batches {
        let s = b.stats;
        say!(
            "{:<24} {:<8} {:<12} {:<24} {:>8} {:>8} {:>8} {:>8} {:>8}",
            b.code,
            b.kind,
            b.status.to_string(),
            timestamp(b.created_at),
            s.total,
            s.completed,
            s.failed,
            s.pending,
            s.running
        );
    }
    Ok(ExitCode::SUCCESS)
}
