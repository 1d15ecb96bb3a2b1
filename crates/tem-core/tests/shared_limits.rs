//! What a database shared by many processes adds (Postgres): limits that hold for every engine
//! on it together, and wake-ups across engines. Each engine here is a separate `Engine::open`
//! of the same database: its own pools, committer and workers, as another process would have.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tem_core::limit::Quota;
use tem_core::{Engine, Limits, NewBatch, NewTask, TaskError, WorkerOptions};

#[derive(Default)]
struct Probe {
    running: AtomicUsize,
    peak: AtomicUsize,
    done: AtomicUsize,
    starts: std::sync::Mutex<Vec<std::time::Instant>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_concurrency_cap_holds_for_every_engine_together() {
    let (db, first) = common::engine(common::Backend::Postgres).await;
    let second = Engine::open(db.url()).await.unwrap();
    let batch = first.create_batch(NewBatch::new("capped", "t")).await.unwrap();
    first
        .enqueue(batch.id, (0..60).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    let probe = Arc::new(Probe::default());
    let run = |engine: &Engine| {
        let probe = probe.clone();
        let mut options = WorkerOptions::default()
            .concurrency(8)
            .fixed_concurrency()
            .batch(batch.id);
        options.batch_concurrency = Some(5);
        engine
            .worker(options)
            .handle("call", move |_: u32, _| {
                let probe = probe.clone();
                async move {
                    let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
                    probe.peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    probe.running.fetch_sub(1, Ordering::SeqCst);
                    probe.done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, TaskError>(())
                }
            })
            .run_until_idle()
    };
    let (a, b) = tokio::join!(run(&first), run(&second));
    assert_eq!(a.unwrap().succeeded + b.unwrap().succeeded, 60);
    // Two workers of 8 each, but never more than 5 of the batch's tasks at once between them.
    assert_eq!(probe.peak.load(Ordering::SeqCst), 5);
    second.close().await;
    first.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_wakes_when_another_engine_enqueues() {
    let (db, first) = common::engine(common::Backend::Postgres).await;
    let second = Engine::open(db.url()).await.unwrap();
    let batch = first.create_batch(NewBatch::new("woken", "t")).await.unwrap();
    let probe = Arc::new(Probe::default());
    let seen = probe.clone();
    let mut options = WorkerOptions::default().batch(batch.id);
    // Polling alone would find the work a minute late.
    options.poll_interval = Duration::from_secs(60);
    let worker = first.worker(options).handle("call", move |_: u32, _| {
        let probe = seen.clone();
        async move {
            probe.done.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TaskError>(())
        }
    });
    let shutdown = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());
    // Both engines listen from a task started at open; a notification sent before the first
    // one's LISTEN took effect would be lost, and this test would time out on a race.
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    common::eventually(Duration::from_secs(10), "both engines listening", || {
        let pool = pool.clone();
        async move {
            let listening: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%' AND state = 'idle'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            listening == 2
        }
    })
    .await;
    pool.close().await;
    // One task through the worker: after it, the worker's next look finds nothing and it
    // waits, for a minute unless something wakes it.
    first
        .enqueue(batch.id, [NewTask::new("call", &0).unwrap()])
        .await
        .unwrap();
    common::eventually(Duration::from_secs(5), "the first task", || {
        let probe = probe.clone();
        async move { probe.done.load(Ordering::SeqCst) == 1 }
    })
    .await;
    second
        .enqueue(batch.id, (1..4).map(|i| NewTask::new("call", &i).unwrap()))
        .await
        .unwrap();
    common::eventually(
        Duration::from_secs(5),
        "the idle worker to run the new tasks",
        || {
            let probe = probe.clone();
            async move { probe.done.load(Ordering::SeqCst) == 4 }
        },
    )
    .await;
    shutdown.drain();
    running.await.unwrap().unwrap();
    second.close().await;
    first.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_budget_is_spent_by_every_engine_together() {
    let (db, first) = common::engine(common::Backend::Postgres).await;
    let second = Engine::open(db.url()).await.unwrap();
    let batch = first.create_batch(NewBatch::new("budgeted", "t")).await.unwrap();
    // 1,000 units a second and 100 per task: ten tasks a second for both engines together.
    first
        .enqueue(
            batch.id,
            (0..24).map(|i| NewTask::new("call", &i).unwrap().cost(100)),
        )
        .await
        .unwrap();
    let budget = Quota::per_second(1_000).unwrap();
    let probe = Arc::new(Probe::default());
    let run = |engine: &Engine| {
        let probe = probe.clone();
        engine
            .worker(WorkerOptions::default().concurrency(8).batch(batch.id))
            .limit("call", Limits::default().with_budget(budget))
            .handle("call", move |_: u32, _| {
                let probe = probe.clone();
                async move {
                    probe.starts.lock().unwrap().push(std::time::Instant::now());
                    Ok::<_, TaskError>(())
                }
            })
            .run_until_idle()
    };
    let (a, b) = tokio::join!(run(&first), run(&second));
    let (a, b) = (a.unwrap().succeeded, b.unwrap().succeeded);
    assert_eq!(a + b, 24);
    assert!(a > 0 && b > 0, "both engines took part ({a} and {b})");
    let starts = probe.starts.lock().unwrap().clone();
    // A budget may be overdrawn by one task's estimate: 10 + 1 in any second, not 2 × 10.
    let worst = common::max_in_window(&starts, Duration::from_secs(1));
    assert!(worst <= 11, "{worst} tasks of cost 100 started within one second");
    second.close().await;
    first.close().await;
}
