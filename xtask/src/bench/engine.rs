//! `cargo xtask bench engine`: N tasks into an on-disk SQLite file (synchronous=FULL by default),
//! then one worker at concurrency C runs them with (a) a no-op handler and (b) a handler that
//! sleeps 5 ms. Reports enqueue rows/s and processing tasks/s (median of `--runs`).
//!
//! For the 5 ms case it also measures the ceiling this machine's timer allows: C loops that each
//! sleep 5 ms back to back, no engine. A tokio sleep rounds up to the next millisecond tick, so the
//! real ceiling is below the nominal C / 5 ms; the engine's efficiency is judged against both.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tem_core::{Durability, Engine, EngineOptions, NewBatch, NewTask, TaskError, WorkerOptions};

use super::{load_average, median};

#[derive(clap::Args)]
pub struct Args {
    /// Tasks per run.
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// Worker concurrency.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Runs per case; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Use synchronous=NORMAL instead of FULL.
    #[arg(long)]
    normal: bool,
    /// Where the databases go (must be a real disk, not tmpfs).
    #[arg(long, default_value = "target/xtask-bench")]
    dir: PathBuf,
    /// One JSON object per case per line.
    #[arg(long)]
    json: bool,
    /// Tasks claimed ahead of free slots (default: the worker's, i.e. as many as --concurrency).
    #[arg(long)]
    prefetch: Option<usize>,
    /// Only this case (`noop` or `sleep5ms`).
    #[arg(long)]
    case: Option<String>,
}

#[derive(Clone, Copy)]
enum Case {
    Noop,
    Sleep5ms,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Noop => "noop",
            Case::Sleep5ms => "sleep5ms",
        }
    }
}

struct Measured {
    enqueue_per_sec: f64,
    tasks_per_sec: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let load_before = load_average();
    let mut rows = Vec::new();
    for case in [Case::Noop, Case::Sleep5ms] {
        if args.case.as_deref().is_some_and(|only| only != case.name()) {
            continue;
        }
        let mut enqueue = Vec::new();
        let mut process = Vec::new();
        for _ in 0..args.runs.max(1) {
            let m = once(&args, case).await?;
            enqueue.push(m.enqueue_per_sec);
            process.push(m.tasks_per_sec);
        }
        let ceiling = match case {
            Case::Noop => None,
            Case::Sleep5ms => Some(timer_ceiling(args.concurrency, Duration::from_millis(5)).await),
        };
        rows.push((case, median(enqueue), median(process), ceiling));
    }
    let load_after = load_average();

    for (case, enqueue, tasks, ceiling) in &rows {
        if args.json {
            let mut line = json!({
                "bench": "engine",
                "case": case.name(),
                "tasks": args.tasks,
                "concurrency": args.concurrency,
                "tasks_per_sec": tasks.round(),
                "enqueue_per_sec": enqueue.round(),
                "synchronous": if args.normal { "normal" } else { "full" },
                "runs": args.runs,
            });
            if let Some(ceiling) = ceiling {
                line["timer_ceiling_per_sec"] = json!(ceiling.round());
                line["nominal_ceiling_per_sec"] = json!(nominal(args.concurrency));
            }
            println!("{line}");
        }
    }
    if !args.json {
        println!(
            "engine bench: {} tasks, concurrency {}, synchronous={}, median of {} run(s), db in {}",
            args.tasks,
            args.concurrency,
            if args.normal { "NORMAL" } else { "FULL" },
            args.runs,
            args.dir.display()
        );
        println!("{:<10} {:>14} {:>12}  notes", "case", "enqueue/s", "tasks/s");
        for (case, enqueue, tasks, ceiling) in &rows {
            let note = match ceiling {
                Some(ceiling) => format!(
                    "{:.1}% of this machine's timer ceiling ({:.0}/s), {:.1}% of nominal {:.0}/s",
                    100.0 * tasks / ceiling,
                    ceiling,
                    100.0 * tasks / nominal(args.concurrency),
                    nominal(args.concurrency)
                ),
                None => String::new(),
            };
            println!("{:<10} {:>14.0} {:>12.0}  {note}", case.name(), enqueue, tasks);
        }
        if let (Some(before), Some(after)) = (load_before, load_after) {
            println!("load average: {before:.2} before, {after:.2} after (2 cores)");
        }
    }
    Ok(())
}

/// Concurrency / 5 ms.
fn nominal(concurrency: usize) -> f64 {
    concurrency as f64 / 0.005
}

async fn once(args: &Args, case: Case) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir_in(&args.dir)?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let options = EngineOptions {
        durability: if args.normal {
            Durability::Normal
        } else {
            Durability::Full
        },
        ..Default::default()
    };
    let engine = Engine::open_with(&url, options).await?;
    let batch = engine.create_batch(NewBatch::new("bench", "bench")).await?;
    let tasks: Vec<NewTask> = (0..args.tasks)
        .map(|i| {
            NewTask::new(
                "work",
                &json!({ "n": i, "prompt": "classify this company into an industry" }),
            )
        })
        .collect::<Result<_, _>>()?;

    let started = Instant::now();
    engine.enqueue(batch.id, tasks).await?;
    let enqueue_secs = started.elapsed().as_secs_f64();

    let mut options = WorkerOptions::default()
        .concurrency(args.concurrency)
        .fixed_concurrency()
        .batch(batch.id);
    options.prefetch = args.prefetch;
    let worker = engine.worker(options);
    let worker = match case {
        Case::Noop => worker.handle("work", |_: serde_json::Value, _| async { Ok::<_, TaskError>(()) }),
        Case::Sleep5ms => worker.handle("work", |_: serde_json::Value, _| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, TaskError>(())
        }),
    };
    let started = Instant::now();
    let report = worker.run_until_idle().await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.succeeded == args.tasks,
        "only {} of {} tasks succeeded",
        report.succeeded,
        args.tasks
    );
    engine.close().await;
    Ok(Measured {
        enqueue_per_sec: args.tasks as f64 / enqueue_secs,
        tasks_per_sec: args.tasks as f64 / secs,
    })
}

/// Sleeps/s achieved by `concurrency` loops sleeping `sleep` back to back for two seconds.
async fn timer_ceiling(concurrency: usize, sleep: Duration) -> f64 {
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let loops: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while started.elapsed() < window {
                    tokio::time::sleep(sleep).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}
