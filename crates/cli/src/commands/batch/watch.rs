//! `tem batch watch`: follows a batch that another process runs, by reading its counters from
//! the database every interval, until it finishes or stops; then prints the report.

use std::process::ExitCode;
use std::time::Duration;

use tem_core::BatchStatus;

use super::{DbArg, find, open};
use crate::plan::Display;
use crate::progress::Progress;
use crate::report_view;
use crate::say;

/// How long a batch may sit still, with nothing running, before watch asks whether anything
/// runs it.
const IDLE_HINT_AFTER: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Args {
    /// The batch code.
    code: String,
    #[command(flatten)]
    db: DbArg,
    /// How often to look.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Give up after this long (exit 1); by default, watch until the batch ends.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// A JSON line of counters per interval, and the report as JSON at the end.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.interval.is_zero() {
        crate::usage!("--interval: must be longer than zero, e.g. 1s");
    }
    let (engine, db) = open(&args.db).await?;
    let batch = find(&engine, &db, &args.code).await?;
    let display = if args.json { Display::Json } else { Display::Human };
    let mut view = Progress::new(display, &args.code);
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticker = tokio::time::interval(args.interval);
    let mut last_change = (tokio::time::Instant::now(), batch.stats);
    let mut hinted = false;
    let batch = loop {
        ticker.tick().await;
        let batch = engine.batch(batch.id).await?;
        view.update(&batch.stats);
        if batch.stats != last_change.1 {
            last_change = (tokio::time::Instant::now(), batch.stats);
        } else if !hinted && batch.stats.running == 0 && last_change.0.elapsed() >= IDLE_HINT_AFTER {
            hinted = true;
            view.note(&format!(
                "nothing has run for {}s and nothing is running: is `tem run-batch` running for `{}`? \
                 (watch only looks; --timeout ends it)",
                IDLE_HINT_AFTER.as_secs(),
                batch.code
            ));
        }
        if args.json {
            say!(
                "{}",
                serde_json::json!({ "batch": batch.code, "status": batch.status, "stats": batch.stats })
            );
        }
        // An active batch whose tasks are all finished is completed by the commit that finished
        // the last one; anything else that is not active has stopped for good or until resumed.
        if batch.status != BatchStatus::Active {
            break batch;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            view.finish(&batch.stats);
            engine.close().await;
            eprintln!(
                "watch timed out; batch `{}` is still {}",
                batch.code, batch.status
            );
            return Ok(ExitCode::from(1));
        }
    };
    view.finish(&batch.stats);
    let report = engine.report(batch.id, tem_core::DEFAULT_TOP_ERRORS).await?;
    engine.close().await;
    if args.json {
        say!("{}", serde_json::to_string(&report)?);
    } else {
        say!("{}", report_view::render(&report));
    }
    Ok(
        if batch.status == BatchStatus::Completed && batch.stats.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
