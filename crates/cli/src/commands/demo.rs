//! `tem demo`: the whole tool in one command on a fresh machine. It starts the mock server in
//! this process with a rate-limited, flaky, capacity-capped service, runs a 10,000-call batch
//! against it into a fresh SQLite file exactly as `tem run-batch` would (progress bar, retries,
//! adaptive concurrency, the report), then shows what the API saw.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mock_server::{Algorithm, ErrorSimulation, MockServer, ServiceConfig};
use tem_core::http::InputSource;
use tem_core::{BatchFilter, Engine, EngineOptions};

use crate::config::{self, RunConfig};
use crate::plan::RunPlan;
use crate::run::{RunRequest, run};
use crate::say;
use crate::usage::UsageError;

#[derive(clap::Args)]
pub struct Args {
    /// Calls in the batch.
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// Calls in flight at most; above the API's capacity of 48, so adaptive concurrency has
    /// something to find.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Calls per second the simulated API allows; the run paces itself to 95% of it.
    #[arg(long, default_value_t = 2_000)]
    api_rate: u64,
    /// Database file; an earlier demo's is replaced (any other file is left alone).
    #[arg(long, default_value = "tem-demo.db")]
    db: PathBuf,
    /// Print only the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Calls the simulated API serves at once; beyond that it answers 503.
const API_CAPACITY: u64 = 48;

pub async fn run_command(args: Args) -> anyhow::Result<ExitCode> {
    if args.tasks == 0 || args.api_rate < 2 {
        crate::usage!("--tasks must be at least 1 and --api-rate at least 2");
    }
    remove_old_demo(&args.db).await?;

    let mut service = ServiceConfig::new(API_CAPACITY, args.api_rate, 1_000);
    service.rate_limit.algorithm = Algorithm::SlidingWindow;
    service.delay_ms = [2, 20];
    service.error_simulation = Some(ErrorSimulation {
        rate: 0.03,
        status_code: 500,
        error_message: "internal_server_error".into(),
    });
    let api = MockServer::builder().single(service).bind("127.0.0.1:0").await?;

    let input: String = (0..args.tasks)
        .map(|i| format!("{{\"id\": {i}, \"company\": \"company-{i}\"}}\n"))
        .collect();
    let pace = (args.api_rate * 95 / 100).max(1);
    let settings = RunConfig {
        base_url: Some(api.url()),
        method: Some("POST".into()),
        path: Some("/".into()),
        db: Some(args.db.clone()),
        concurrency: Some(args.concurrency),
        rate: Some(format!("{pace}/s")),
        max_attempts: Some(5),
        backoff: Some("50ms".into()),
        backoff_max: Some("2s".into()),
        timeout: Some("10s".into()),
        json: args.json.then_some(true),
        ..RunConfig::default()
    };
    let plan = RunPlan::new(&config::Loaded::only(settings))?;
    if !args.json {
        say!(
            "a simulated API at {}: {} calls/s (sliding window), {API_CAPACITY} at once (503 above), \
             2–20 ms per call, 3% random 500s",
            api.url(),
            args.api_rate
        );
        say!(
            "running {} calls into {} at up to {pace}/s with {} in flight (adaptive)\n",
            args.tasks,
            args.db.display(),
            args.concurrency
        );
    }
    let code = run(RunRequest {
        plan,
        code: "demo".into(),
        source: InputSource::Memory {
            name: "generated demo input".into(),
            bytes: input.into_bytes().into(),
        },
        resume: false,
        dry_run: None,
    })
    .await?;

    if let Some(stats) = api.stats(mock_server::DEFAULT_SERVICE)
        && !args.json
    {
        let statuses: Vec<String> = stats.by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        say!("what the API saw");
        say!("  requests     {} ({})", stats.requests, statuses.join(", "));
        say!(
            "  busiest 1 s  {} accepted (its limit: {})",
            stats.max_accepted_in_window,
            stats.limit
        );
        say!(
            "  peak         {} calls at once (its capacity: {API_CAPACITY})",
            stats.peak_concurrency
        );
        say!("\nlook closer: tem batch show demo --db {}", args.db.display());
    }
    api.stop().await?;
    Ok(code)
}

/// Removes the database of an earlier demo, and refuses to touch any other file.
async fn remove_old_demo(db: &Path) -> anyhow::Result<()> {
    if !db.exists() {
        return Ok(());
    }
    let options = EngineOptions {
        create_if_missing: false,
        ..EngineOptions::default()
    };
    let refuse = || {
        UsageError(format!(
            "{} is not an earlier demo's database (it holds other batches, or is not a tem database); \
             the demo replaces its database, so give it another --db",
            db.display()
        ))
    };
    let engine = Engine::open_with(&db.display().to_string(), options)
        .await
        .map_err(|_| refuse())?;
    let batches = engine.batches(&BatchFilter::default()).await;
    engine.close().await;
    if !batches?.iter().all(|b| b.code == "demo") {
        return Err(refuse().into());
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing the old {}", path.display()))?;
        }
    }
    Ok(())
}
