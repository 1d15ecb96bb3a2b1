//! `tem batch show`.

use std::process::ExitCode;

use super::{DbArg, find, open};
use crate::report_view;
use crate::say;

#[derive(clap::Args)]
pub struct Args {
    /// The batch code.
    code: String,
    #[command(flatten)]
    db: DbArg,
    /// Error groups listed of each kind.
    #[arg(long, default_value_t = tem_core::DEFAULT_TOP_ERRORS)]
    top: u32,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (engine, db) = open(&args.db).await?;
    let batch = find(&engine, &db, &args.code).await?;
    let report = engine.report(batch.id, args.top).await?;
    engine.close().await;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        say!("{}", report_view::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}
