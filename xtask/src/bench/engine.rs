//! `cargo xtask bench engine`: N tasks into an on-disk SQLite file (synchronous=FULL by default),
//! or into a fresh database on the Postgres server of `--db postgres://…`, then workers at
//! concurrency C run them with (a) a no-op handler and (b) a handler that sleeps 5 ms. With
//! `--processes P` the tasks are shared by P worker processes (each C wide) on the one database.
//! Reports enqueue rows/s and processing tasks/s (median of `--runs`); on Postgres also the
//! commits the run made and what one cost, the figure that says how far one batch scales.
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
    /// A Postgres server (`postgres://USER@HOST:PORT/DB`): each run gets a fresh database there,
    /// dropped afterwards. Default: a SQLite file under --dir.
    #[arg(long, value_name = "URL")]
    db: Option<String>,
    /// Worker processes sharing the batch (each --concurrency wide).
    #[arg(long, default_value_t = 1)]
    processes: usize,
}

/// One worker process of a multi-process run.
#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    batch: i64,
    #[arg(long)]
    concurrency: usize,
    #[arg(long)]
    case: String,
    #[arg(long)]
    prefetch: Option<usize>,
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
    /// Write transactions committed during processing (Postgres only).
    commits: Option<u64>,
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
        let mut commits = Vec::new();
        for _ in 0..args.runs.max(1) {
            let m = once(&args, case).await?;
            enqueue.push(m.enqueue_per_sec);
            process.push(m.tasks_per_sec);
            commits.extend(m.commits.map(|c| c as f64));
        }
        let commits = (!commits.is_empty()).then(|| median(commits));
        let ceiling = match case {
            Case::Noop => None,
            Case::Sleep5ms => Some(timer_ceiling(args.concurrency, Duration::from_millis(5)).await),
        };
        rows.push((case, median(enqueue), median(process), ceiling, commits));
    }
    let load_after = load_average();

    let backend = if args.db.is_some() { "postgres" } else { "sqlite" };
    for (case, enqueue, tasks, ceiling, commits) in &rows {
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
                "backend": backend,
                "processes": args.processes,
            });
            if let Some(commits) = commits {
                line["commits"] = json!(commits.round());
                line["ms_per_commit"] = json!(ms_per_commit(args.tasks, *tasks, *commits));
            }
            if let Some(ceiling) = ceiling {
                line["timer_ceiling_per_sec"] = json!(ceiling.round());
                line["nominal_ceiling_per_sec"] = json!(nominal(args.concurrency));
            }
            println!("{line}");
        }
    }
    if !args.json {
        let store = match &args.db {
            Some(url) => format!("Postgres at {}", tem_core::redact_url(url)),
            None => format!(
                "SQLite in {} (synchronous={})",
                args.dir.display(),
                if args.normal { "NORMAL" } else { "FULL" }
            ),
        };
        println!(
            "engine bench: {} tasks, {} process(es) × concurrency {}, {store}, median of {} run(s)",
            args.tasks, args.processes, args.concurrency, args.runs,
        );
        println!("{:<10} {:>14} {:>12}  notes", "case", "enqueue/s", "tasks/s");
        for (case, enqueue, tasks, ceiling, commits) in &rows {
            let mut note = match ceiling {
                Some(ceiling) => format!(
                    "{:.1}% of this machine's timer ceiling ({:.0}/s), {:.1}% of nominal {:.0}/s",
                    100.0 * tasks / ceiling,
                    ceiling,
                    100.0 * tasks / nominal(args.concurrency),
                    nominal(args.concurrency)
                ),
                None => String::new(),
            };
            if let Some(commits) = commits {
                note.push_str(&format!(
                    "{}{commits:.0} commits, {:.1} tasks and {:.2} ms each",
                    if note.is_empty() { "" } else { "; " },
                    args.tasks as f64 / commits,
                    ms_per_commit(args.tasks, *tasks, *commits)
                ));
            }
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

/// The run's length over its commits. On one batch every commit holds the batch row while it
/// runs, so commits take turns whatever the number of processes: this is what one turn costs.
fn ms_per_commit(tasks: u64, tasks_per_sec: f64, commits: f64) -> f64 {
    1000.0 * tasks as f64 / tasks_per_sec / commits
}

async fn once(args: &Args, case: Case) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir_in(&args.dir)?;
    let postgres = match &args.db {
        Some(server) => Some(FreshDatabase::create(server).await?),
        None => None,
    };
    let url = match &postgres {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
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

    let commits_before = match &postgres {
        Some(db) => Some(db.commits().await?),
        None => None,
    };
    let started = Instant::now();
    let succeeded = if args.processes <= 1 {
        run_worker(&engine, batch.id.0, args.concurrency, case.name(), args.prefetch).await?
    } else {
        run_processes(args, &url, batch.id.0, case).await?
    };
    let secs = started.elapsed().as_secs_f64();
    let commits = match (&postgres, commits_before) {
        // Less the one this reading itself took.
        (Some(db), Some(before)) => Some(db.commits().await?.saturating_sub(before + 1)),
        _ => None,
    };
    anyhow::ensure!(
        succeeded == args.tasks,
        "only {succeeded} of {} tasks succeeded",
        args.tasks
    );
    engine.close().await;
    if let Some(db) = postgres {
        db.drop_now().await?;
    }
    Ok(Measured {
        enqueue_per_sec: args.tasks as f64 / enqueue_secs,
        tasks_per_sec: args.tasks as f64 / secs,
        commits,
    })
}

/// One worker on `engine` until the batch is done; returns how many tasks it completed.
async fn run_worker(
    engine: &Engine,
    batch: i64,
    concurrency: usize,
    case: &str,
    prefetch: Option<usize>,
) -> anyhow::Result<u64> {
    let mut options = WorkerOptions::default()
        .concurrency(concurrency)
        .fixed_concurrency()
        .batch(tem_core::BatchId(batch));
    options.prefetch = prefetch;
    let worker = engine.worker(options);
    let worker = match case {
        "noop" => worker.handle("work", |_: serde_json::Value, _| async { Ok::<_, TaskError>(()) }),
        _ => worker.handle("work", |_: serde_json::Value, _| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, TaskError>(())
        }),
    };
    Ok(worker.run_until_idle().await?.succeeded)
}

/// `--processes` copies of this program as worker processes; the sum of what they completed.
async fn run_processes(args: &Args, url: &str, batch: i64, case: Case) -> anyhow::Result<u64> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..args.processes {
        let mut command = tokio::process::Command::new(&exe);
        command
            .args([
                "bench",
                "engine-worker",
                "--url",
                url,
                "--batch",
                &batch.to_string(),
            ])
            .args([
                "--concurrency",
                &args.concurrency.to_string(),
                "--case",
                case.name(),
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(prefetch) = args.prefetch {
            command.args(["--prefetch", &prefetch.to_string()]);
        }
        children.push(command.spawn().context("starting a worker process")?);
    }
    let mut total = 0;
    for child in children {
        let output = child.wait_with_output().await?;
        anyhow::ensure!(output.status.success(), "a worker process failed");
        total += String::from_utf8_lossy(&output.stdout).trim().parse::<u64>()?;
    }
    Ok(total)
}

/// The body of a worker process: runs its share and prints how many tasks it completed.
pub async fn worker_process(args: WorkerArgs) -> anyhow::Result<()> {
    let engine = Engine::open(&args.url).await?;
    let done = run_worker(&engine, args.batch, args.concurrency, &args.case, args.prefetch).await?;
    engine.close().await;
    println!("{done}");
    Ok(())
}

/// A database created on a Postgres server for one run.
struct FreshDatabase {
    server: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create(server: &str) -> anyhow::Result<FreshDatabase> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("tem_bench_{}_{nanos}", std::process::id());
        let admin = sqlx::PgPool::connect(server)
            .await
            .with_context(|| format!("connecting to {}", tem_core::redact_url(server)))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let (base, _) = server
            .rsplit_once('/')
            .context("--db must name a database, e.g. postgres://postgres@127.0.0.1:5432/postgres")?;
        Ok(FreshDatabase {
            server: server.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// The server's transaction-id counter: every write transaction takes one, so the
    /// difference across a run counts its commits (on a server nothing else writes to; the
    /// statistics views lag by up to a second and miss short runs).
    async fn commits(&self) -> anyhow::Result<u64> {
        let admin = sqlx::PgPool::connect(&self.server).await?;
        let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
            .fetch_one(&admin)
            .await?;
        admin.close().await;
        Ok(u64::try_from(xid).unwrap_or(0))
    }

    async fn drop_now(self) -> anyhow::Result<()> {
        let admin = sqlx::PgPool::connect(&self.server).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
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
