//! A database that stops answering for a while: a lock held by another process (SQLite busy, a
//! Postgres table lock), a commit that cannot land. Work waits and retries, the outage is
//! reported once each way, an attempt never outlives a lease it could not renew, and past the
//! tolerance the worker gives up with nothing lost.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tem_core::{
    AttemptOutcome, BatchStatus, Engine, EngineOptions, Error, Event, Jitter, NewBatch, NewTask, RetryPolicy,
    TaskError, TaskFilter, TaskStatus, WorkerOptions,
};
use tokio::sync::{Notify, mpsc};

/// Another process's write lock on the whole database: SQLite's `BEGIN IMMEDIATE` (every write
/// waits, then fails busy), or an exclusive lock on Postgres's `task` table (every statement on
/// it waits).
enum Held {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Held {
    async fn take(url: &str) -> Held {
        if url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query("BEGIN").execute(&mut conn).await.expect("begin");
            sqlx::query("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("lock the task table");
            Held::Postgres(conn)
        } else {
            let options = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .expect("url")
                .busy_timeout(Duration::from_secs(30));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("connect");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .expect("take the write lock");
            Held::Sqlite(conn)
        }
    }

    async fn release(self) {
        match self {
            Held::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("rollback");
            }
            Held::Postgres(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("rollback");
            }
        }
    }
}

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: Jitter::None,
    }
}

/// Records when it is dropped: the moment the executor stopped the handler.
struct Stopped(Arc<Mutex<Option<Instant>>>, Arc<Notify>);

impl Drop for Stopped {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
        self.1.notify_one();
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_is_stopped_before_a_lease_it_cannot_renew_lapses(backend) {
        let (db, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("slow-db", "t").retry(retry(3))).await.unwrap();
        let ids = engine.enqueue(batch.id, [NewTask::new("call", &()).unwrap()]).await.unwrap();
        let lease = Duration::from_millis(1200);
        let stopped_at = Arc::new(Mutex::new(None));
        let stopped = Arc::new(Notify::new());
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let (at, signal) = (stopped_at.clone(), stopped.clone());
        let worker = engine
            .worker(WorkerOptions::default().batch(batch.id).lease(lease).concurrency(1))
            .handle("call", move |(): (), ctx: tem_core::TaskContext| {
                let (at, signal, started_tx) = (at.clone(), signal.clone(), started_tx.clone());
                async move {
                    let _ = started_tx.send(ctx.attempt);
                    if ctx.attempt == 1 {
                        // A long call: only the lease watchdog ends it.
                        let _guard = Stopped(at, signal);
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Ok::<_, TaskError>("done")
                }
            });
        let run = tokio::spawn(worker.run_until_idle());
        assert_eq!(started.recv().await, Some(1));
        // From here no renewal can commit: the lease it holds ends at most one lease from now.
        let held = Held::take(db.url()).await;
        let lapses_by = Instant::now() + lease;
        tokio::time::timeout(Duration::from_secs(10), stopped.notified())
            .await
            .expect("the attempt was stopped while its lease could not be renewed");
        let at = stopped_at.lock().unwrap().expect("stopped");
        assert!(
            at < lapses_by,
            "stopped {:?} after its lease could have lapsed",
            at.duration_since(lapses_by)
        );
        held.release().await;
        let report = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the run ends")
            .unwrap()
            .unwrap();
        assert_eq!(report.succeeded, 1);
        assert_eq!(started.recv().await, Some(2), "the second attempt ran after the first stopped");
        let attempts = engine.attempts(ids[0]).await.unwrap();
        let first = attempts.iter().find(|a| a.attempt == 1).expect("the first attempt is on record");
        assert_eq!(first.outcome, AttemptOutcome::LeaseExpired);
        assert!(
            first.message.as_deref().is_some_and(|e| e.contains("lease renewal")),
            "{first:?}"
        );
        let task = engine.task(ids[0]).await.unwrap();
        assert_eq!((task.status, task.attempt), (TaskStatus::Completed, 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_past_the_busy_timeout_is_ridden_out_and_reported_once() {
    let options = EngineOptions {
        busy_timeout: Duration::from_millis(50),
        ..EngineOptions::default()
    };
    let (db, engine) = common::engine_with(common::Backend::Sqlite, options).await;
    let batch = engine.create_batch(NewBatch::new("busy", "t")).await.unwrap();
    engine
        .enqueue(batch.id, (0..300).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    let mut events = engine.events();
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let worker = engine
        .worker(WorkerOptions::default().batch(batch.id).concurrency(8))
        .handle("call", move |_: u32, _ctx| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok::<_, TaskError>(())
            }
        });
    let run = tokio::spawn(worker.run_until_idle());
    for _ in 0..50 {
        started.recv().await.expect("calls start");
    }
    // Held for thirty busy timeouts: claims, commits and renewals all fail busy meanwhile.
    let held = Held::take(db.url()).await;
    let outage = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(Event::DatabaseUnavailable { error, .. })) => break error,
            Ok(_) => continue,
            Err(_) => panic!("no outage was reported while the database was locked"),
        }
    };
    assert!(outage.contains("locked") || outage.contains("busy"), "{outage}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    held.release().await;
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run rode the outage out");
    assert_eq!(report.succeeded, 300);
    let mut recovered = 0;
    let mut unavailable = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            Event::DatabaseRecovered { after } => {
                recovered += 1;
                assert!(after >= Duration::from_millis(1500), "{after:?}");
            }
            Event::DatabaseUnavailable { .. } => unavailable += 1,
            _ => {}
        }
    }
    assert_eq!(
        (unavailable, recovered),
        (0, 1),
        "one outage, reported once each way"
    );
    let stats = engine.stats(batch.id).await.unwrap();
    assert_eq!((stats.completed, stats.failed), (300, 0));
    assert_eq!(
        engine.batch(batch.id).await.unwrap().status,
        BatchStatus::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_tolerance_the_worker_gives_up_and_a_rerun_loses_nothing() {
    let options = EngineOptions {
        busy_timeout: Duration::from_millis(50),
        outage_tolerance: Duration::from_millis(600),
        ..EngineOptions::default()
    };
    let (db, engine) = common::engine_with(common::Backend::Sqlite, options.clone()).await;
    let batch = engine.create_batch(NewBatch::new("gone", "t")).await.unwrap();
    engine
        .enqueue(batch.id, (0..200).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let options_for = || {
        let mut worker = WorkerOptions::default()
            .batch(batch.id)
            .concurrency(4)
            .lease(Duration::from_secs(1));
        worker.rescue_interval = Duration::from_millis(200);
        worker
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let worker = engine.worker(options_for()).handle("call", move |i: u32, _ctx| {
        let (started_tx, seen) = (started_tx.clone(), seen.clone());
        async move {
            seen.lock().unwrap().push(i);
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, TaskError>(())
        }
    });
    let run = tokio::spawn(worker.run_until_idle());
    for _ in 0..20 {
        started.recv().await.expect("calls start");
    }
    let held = Held::take(db.url()).await;
    let error = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("the worker gives up within its tolerance")
        .unwrap()
        .expect_err("the database never answered");
    let outage = match &error {
        Error::DatabaseOutage { .. } => true,
        Error::Commit(inner) => matches!(**inner, Error::DatabaseOutage { .. }),
        _ => false,
    };
    assert!(outage, "gave up with {error}");
    assert!(error.to_string().contains("did not answer"), "{error}");
    held.release().await;
    engine.close().await;

    // A rerun (a new engine, as a new process would open) finishes the batch.
    let engine = Engine::open_with(db.url(), options).await.unwrap();
    let worker = engine
        .worker(options_for())
        .handle("call", |_: u32, _ctx| async move { Ok::<_, TaskError>(()) });
    tokio::time::timeout(Duration::from_secs(30), worker.run_until_idle())
        .await
        .expect("the rerun ends")
        .unwrap();
    let stats = engine.stats(batch.id).await.unwrap();
    assert_eq!((stats.completed, stats.failed, stats.total), (200, 0, 200));
    let tasks = engine
        .tasks(&TaskFilter {
            batch: Some(batch.id),
            limit: Some(1000),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert!(tasks.iter().all(|t| t.status == TaskStatus::Completed));
}
