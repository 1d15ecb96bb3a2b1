//! A worker process for the engine's multi-process tests. Configured by environment:
//!
//! - `TEM_FIXTURE_DB`: database URL; `TEM_FIXTURE_RECORDER`: recorder base URL
//! - `TEM_FIXTURE_WORKERS` (default 1) workers, each `TEM_FIXTURE_CONCURRENCY` (default 4) wide
//! - `TEM_FIXTURE_LEASE_MS` (default 30000), `TEM_FIXTURE_SLEEP_MS` per call (default 0)
//! - `TEM_FIXTURE_FAIL=1`: every task fails (non-retryable) after its calls
//!
//! Each task calls `/start/{id}`, sleeps, calls `/end/{id}`. The process runs until no work is
//! left, then prints its report as JSON.

use std::time::Duration;

use tem_core::{Engine, RunReport, TaskContext, TaskError, WorkerOptions};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = std::env::var("TEM_FIXTURE_DB")?;
    let recorder = std::env::var("TEM_FIXTURE_RECORDER")?;
    let workers = env_or("TEM_FIXTURE_WORKERS", 1);
    let concurrency = env_or("TEM_FIXTURE_CONCURRENCY", 4) as usize;
    let lease = Duration::from_millis(env_or("TEM_FIXTURE_LEASE_MS", 30_000));
    let sleep = Duration::from_millis(env_or("TEM_FIXTURE_SLEEP_MS", 0));
    let fail = env_or("TEM_FIXTURE_FAIL", 0) == 1;

    let engine = Engine::open(&db).await?;
    let client = reqwest::Client::new();
    let mut runs = Vec::new();
    for _ in 0..workers {
        let (client, recorder) = (client.clone(), recorder.clone());
        let mut options = WorkerOptions::default()
            .concurrency(concurrency)
            .lease(lease)
            .fixed_concurrency();
        options.rescue_interval = Duration::from_millis(200);
        let worker = engine
            .worker(options)
            .handle("call", move |_: u64, ctx: TaskContext| {
                let (client, recorder) = (client.clone(), recorder.clone());
                async move {
                    let id = ctx.task_id;
                    let send = |path: String| {
                        let request = client.get(format!("{recorder}/{path}/{id}"));
                        async move {
                            request
                                .send()
                                .await
                                .map_err(|e| TaskError::retryable(e.to_string()))
                        }
                    };
                    send("start".into()).await?;
                    tokio::time::sleep(sleep).await;
                    send("end".into()).await?;
                    if fail {
                        return Err(TaskError::non_retryable("the fixture fails every task"));
                    }
                    Ok::<_, TaskError>(id.0)
                }
            });
        runs.push(tokio::spawn(worker.run_until_idle()));
    }
    let mut total = RunReport::default();
    for run in runs {
        let report = run.await??;
        total.succeeded += report.succeeded;
        total.failed += report.failed;
    }
    println!("{}", serde_json::to_string(&total)?);
    Ok(())
}
