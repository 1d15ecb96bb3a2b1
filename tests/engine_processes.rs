//! The engine across processes, on a SQLite file and on a Postgres database: claims stay
//! exclusive with eight workers in two processes serving several batches at once, a worker
//! process killed with SIGKILL mid-batch loses nothing, and two processes crossing a limit
//! together log one interruption.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use tem_core::{
    AttemptOutcome, BatchId, BatchStatus, Engine, InterruptionCriteria, InterruptionReason, NewBatch,
    NewTask, RunReport, TaskContext, TaskError, TaskFilter, TaskStatus, WorkerOptions,
};
use tem_e2e::postgres::TestDatabase;
use tem_e2e::recorder;
use tokio::process::{Child, Command};

fn worker_process(db: &str, recorder: &str, envs: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_engine-worker"))
        .env("TEM_FIXTURE_DB", db)
        .env("TEM_FIXTURE_RECORDER", recorder)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start engine-worker")
}

async fn report_of(child: Child) -> RunReport {
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("worker process finished in time")
        .expect("worker process output");
    assert!(
        output.status.success(),
        "worker process failed: {:?}",
        output.status
    );
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .ok()
        .and_then(|v| {
            Some(RunReport {
                succeeded: v["succeeded"].as_u64()?,
                failed: v["failed"].as_u64()?,
                ..Default::default()
            })
        })
        .expect("worker process printed its report")
}

/// Where a test's processes meet: a fresh SQLite file or a fresh Postgres database.
struct Db {
    url: String,
    _dir: tempfile::TempDir,
    _postgres: Option<TestDatabase>,
}

async fn fresh(postgres: bool) -> Db {
    let dir = tempfile::tempdir().unwrap();
    if postgres {
        let database = TestDatabase::create().await;
        Db {
            url: database.url().to_owned(),
            _dir: dir,
            _postgres: Some(database),
        }
    } else {
        Db {
            url: format!("sqlite://{}", dir.path().join("tem.db").display()),
            _dir: dir,
            _postgres: None,
        }
    }
}

/// Runs `$body` (an async fn of `postgres: bool`) as two tests, one per backend.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(false).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(true).await
            }
        }
    };
}

async fn setup(postgres: bool, tasks: u64) -> (Db, String, Engine, BatchId) {
    let dir = fresh(postgres).await;
    let db = dir.url.clone();
    let engine = Engine::open(&db).await.unwrap();
    let batch = engine.create_batch(NewBatch::new("procs", "e2e")).await.unwrap();
    engine
        .enqueue(batch.id, (0..tasks).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    (dir, db, engine, batch.id)
}

on_both!(claims_are_exclusive_with_eight_workers_in_two_processes);

async fn claims_are_exclusive_with_eight_workers_in_two_processes(postgres: bool) {
    const TASKS: u64 = 3000;
    let (_dir, db, engine, batch) = setup(postgres, TASKS).await;
    // Two more batches beside it: the workers serve every batch, so commits touch several
    // batch rows at once (in id order on Postgres, or they could deadlock).
    let mut others = Vec::new();
    for code in ["procs-2", "procs-3"] {
        let other = engine.create_batch(NewBatch::new(code, "e2e")).await.unwrap();
        engine
            .enqueue(other.id, (0..500u64).map(|i| NewTask::new("call", &i).unwrap()))
            .await
            .unwrap();
        others.push(other.id);
    }
    const ALL: u64 = TASKS + 1000;
    let (calls, url) = recorder::start().await;
    let envs = [
        ("TEM_FIXTURE_WORKERS", "4"),
        ("TEM_FIXTURE_CONCURRENCY", "4"),
        ("TEM_FIXTURE_SLEEP_MS", "1"),
    ];
    let a = worker_process(&db, &url, &envs);
    let b = worker_process(&db, &url, &envs);
    let (a, b) = tokio::join!(report_of(a), report_of(b));

    assert_eq!(a.succeeded + b.succeeded, ALL);
    assert!(
        a.succeeded > 0 && b.succeeded > 0,
        "both processes claimed work: {a:?} {b:?}"
    );
    for other in others {
        assert_eq!(engine.batch(other).await.unwrap().status, BatchStatus::Completed);
    }
    let calls = recorder::snapshot(&calls);
    assert!(
        calls.overlaps.is_empty(),
        "tasks ran twice at once: {:?}",
        calls.overlaps
    );
    assert_eq!(calls.starts.len() as u64, ALL);
    let repeated: Vec<_> = calls.starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "tasks started more than once: {repeated:?}");

    let batch = engine.batch(batch).await.unwrap();
    assert_eq!(batch.status, BatchStatus::Completed);
    assert_eq!(
        (batch.stats.completed, batch.stats.lost, batch.stats.retried),
        (TASKS as i64, 0, 0)
    );
}

on_both!(a_worker_killed_with_sigkill_loses_no_task);

async fn a_worker_killed_with_sigkill_loses_no_task(postgres: bool) {
    const TASKS: u64 = 400;
    let (_dir, db, engine, batch) = setup(postgres, TASKS).await;
    let (calls, url) = recorder::start().await;
    let envs = [
        ("TEM_FIXTURE_CONCURRENCY", "8"),
        ("TEM_FIXTURE_LEASE_MS", "1500"),
        ("TEM_FIXTURE_SLEEP_MS", "30"),
    ];
    let mut victim = worker_process(&db, &url, &envs);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = engine.stats(batch).await.unwrap();
        if stats.completed >= 60 && stats.running > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim made no progress: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.expect("reap the victim");

    // What the dead process left: committed successes, and tasks stranded in `running`.
    let all = TaskFilter {
        batch: Some(batch),
        limit: Some(10_000),
        ..Default::default()
    };
    let before = engine.tasks(&all).await.unwrap();
    let done_before: HashSet<_> = before
        .iter()
        .filter(|t| t.status == TaskStatus::Completed)
        .map(|t| t.id)
        .collect();
    let stranded: Vec<_> = before
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .cloned()
        .collect();
    assert!(!stranded.is_empty(), "the kill happened mid-batch");

    // Another worker finishes the batch once the dead worker's leases expire.
    let client = reqwest::Client::new();
    let mut options = WorkerOptions::default().concurrency(8).batch(batch);
    options.rescue_interval = Duration::from_millis(100);
    let recorder_url = url.clone();
    engine
        .worker(options)
        .handle("call", move |_: u64, ctx: TaskContext| {
            let (client, url) = (client.clone(), recorder_url.clone());
            async move {
                let id = ctx.task_id;
                for step in ["start", "end"] {
                    client
                        .get(format!("{url}/{step}/{id}"))
                        .send()
                        .await
                        .map_err(|e| TaskError::retryable(e.to_string()))?;
                }
                Ok::<_, TaskError>(id.0)
            }
        })
        .run_until_idle()
        .await
        .unwrap();

    let after = engine.batch(batch).await.unwrap();
    assert_eq!(after.status, BatchStatus::Completed);
    assert_eq!((after.stats.completed, after.stats.failed), (TASKS as i64, 0));
    assert_eq!(after.stats.lost, stranded.len() as i64);

    let calls = recorder::snapshot(&calls);
    for id in &done_before {
        assert_eq!(
            calls.starts.get(&id.0),
            Some(&1),
            "task {id} succeeded before the kill and was called again"
        );
    }
    for task in &stranded {
        let lease_end = task.lease_expires_at.expect("a running task has a lease");
        let attempts = engine.attempts(task.id).await.unwrap();
        let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [AttemptOutcome::LeaseExpired, AttemptOutcome::Succeeded],
            "task {}",
            task.id
        );
        assert!(
            attempts[0].finished_at > lease_end,
            "rescued before its lease expired"
        );
        assert!(
            attempts[1].started_at >= attempts[0].finished_at,
            "re-run before the rescue"
        );
        let finished = engine.task(task.id).await.unwrap();
        assert_eq!(finished.attempt, 2);
        assert_eq!(finished.result_as::<i64>().unwrap(), Some(task.id.0));
    }
}

on_both!(two_processes_crossing_a_limit_together_log_one_interruption);

async fn two_processes_crossing_a_limit_together_log_one_interruption(postgres: bool) {
    let dir = fresh(postgres).await;
    let db = dir.url.clone();
    let engine = Engine::open(&db).await.unwrap();
    let criteria = InterruptionCriteria {
        max_failed_tasks: Some(5),
        ..Default::default()
    };
    let batch = engine
        .create_batch(NewBatch::new("doomed", "e2e").criteria(criteria))
        .await
        .unwrap();
    engine
        .enqueue(batch.id, (0..2000u64).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    let (_calls, url) = recorder::start().await;
    let envs = [
        ("TEM_FIXTURE_WORKERS", "2"),
        ("TEM_FIXTURE_CONCURRENCY", "8"),
        ("TEM_FIXTURE_FAIL", "1"),
    ];
    let (a, b) = tokio::join!(
        report_of(worker_process(&db, &url, &envs)),
        report_of(worker_process(&db, &url, &envs))
    );

    let batch = engine.batch(batch.id).await.unwrap();
    assert_eq!(batch.status, BatchStatus::Interrupted);
    let log = engine.interruptions(batch.id).await.unwrap();
    assert_eq!(
        log.len(),
        1,
        "exactly one interruption however many workers saw it: {log:?}"
    );
    assert_eq!(log[0].reason, InterruptionReason::FailedTasksExceeded);
    // Both processes stopped early: only what was in flight when it tripped ran to the end.
    assert!(a.failed + b.failed < 100, "{} tasks failed", a.failed + b.failed);
    assert_eq!(batch.stats.running, 0);
    assert_eq!(batch.stats.failed as u64, a.failed + b.failed);
}
