//! `tem demo`: the whole engine in one command on a fresh machine. A 10,000-task batch goes into
//! a fresh SQLite file and runs against a simulated API that is slow, flaky and overloaded past a
//! capacity, paced by a rate limit, then the report is printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::say;
use rand::Rng;
use tem_core::limit::Quota;
use tem_core::{
    BatchStatus, Engine, Event, Jitter, Limits, NewBatch, NewTask, RetryPolicy, TaskError, WorkerOptions,
};

#[derive(clap::Args)]
pub struct Args {
    /// Tasks in the batch.
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// Concurrent calls.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Calls per second the simulated API allows (the engine paces itself to it).
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// Database file; replaced if it exists.
    #[arg(long, default_value = "tem-demo.db")]
    db: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", args.db.display()));
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing the old {}", path.display()))?;
        }
    }
    let engine = Engine::open(&args.db.display().to_string()).await?;
    let retry = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(50),
        cap: Duration::from_secs(2),
        jitter: Jitter::Full,
    };
    let batch = engine
        .create_batch(NewBatch::new("demo", "simulated-api").retry(retry))
        .await?;
    let tasks = (0..args.tasks)
        .map(|i| NewTask::new("call", &serde_json::json!({ "company": format!("company-{i}") })))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    engine.enqueue(batch.id, tasks).await?;
    say!(
        "enqueued {} tasks into {} in {:.0} ms; calling a simulated API at up to {}/s with {} concurrent calls",
        args.tasks,
        args.db.display(),
        started.elapsed().as_secs_f64() * 1000.0,
        args.rate,
        args.concurrency
    );

    let mut events = engine.events();
    let progress = tokio::spawn(async move {
        let mut last = Instant::now();
        while let Ok(Event::Progress(p)) = events.recv().await {
            if last.elapsed() >= Duration::from_secs(1) || p.status != BatchStatus::Active {
                last = Instant::now();
                let s = p.stats;
                say!(
                    "  {:>6} done  {:>5} failed  {:>5} retried  {:>5} rate-limited  {:>6} left",
                    s.completed,
                    s.failed,
                    s.retried,
                    s.rate_limited,
                    s.pending + s.running
                );
            }
            if p.status != BatchStatus::Active {
                break;
            }
        }
    });

    let in_flight = Arc::new(AtomicUsize::new(0));
    let run_started = Instant::now();
    let report = engine
        .worker(
            WorkerOptions::default()
                .concurrency(args.concurrency)
                .batch(batch.id),
        )
        .limit("call", Limits::rate(Quota::per_second(args.rate)?))
        .handle("call", move |payload: serde_json::Value, _ctx| {
            simulated_api(payload, in_flight.clone())
        })
        .run_until_idle()
        .await?;
    let elapsed = run_started.elapsed();
    let _ = progress.await;

    let batch = engine.batch(batch.id).await?;
    let s = batch.stats;
    say!("");
    say!("batch `{}`: {}", batch.code, batch.status);
    say!(
        "  tasks       {} completed, {} failed of {}",
        s.completed,
        s.failed,
        s.total
    );
    say!(
        "  attempts    {} retried ({} rate-limited, {} overloaded, {} timed out)",
        s.retried,
        s.rate_limited,
        s.overloaded,
        s.timed_out
    );
    say!(
        "  time        {:.2} s, {:.0} tasks/s",
        elapsed.as_secs_f64(),
        (report.succeeded + report.failed) as f64 / elapsed.as_secs_f64()
    );
    say!("  database    {}", args.db.display());
    engine.close().await;
    Ok(if s.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Calls the simulated API accepts at once; beyond that it answers 503, as real ones do.
const API_CAPACITY: usize = 48;

/// A remote API: 2–20 ms per call, 3% transient 500s, and 503 when more than [`API_CAPACITY`]
/// calls are in flight. The worker starts above that capacity and its adaptive concurrency
/// (AIMD) finds the level the API accepts.
async fn simulated_api(
    payload: serde_json::Value,
    in_flight: Arc<AtomicUsize>,
) -> Result<serde_json::Value, TaskError> {
    let (latency, roll) = {
        let mut rng = rand::rng();
        (rng.random_range(2..=20u64), rng.random::<f64>())
    };
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _leave = scopeguard(&in_flight);
    if now > API_CAPACITY {
        return Err(TaskError::overloaded(None).with_status(503));
    }
    tokio::time::sleep(Duration::from_millis(latency)).await;
    if roll < 0.03 {
        return Err(TaskError::retryable("internal server error").with_status(500));
    }
    Ok(serde_json::json!({ "company": payload["company"], "industry": "software" }))
}

/// Decrements the in-flight count when the call ends, however it ends.
fn scopeguard(count: &Arc<AtomicUsize>) -> impl Drop + use<> {
    struct Leave(Arc<AtomicUsize>);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Leave(count.clone())
}
