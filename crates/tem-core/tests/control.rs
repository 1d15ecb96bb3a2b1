//! Stopping and steering: timeouts that really cancel, drain vs abort, a dropped worker whose
//! leases expire (rescue charges the attempt, resume does not), retry-failed and cancel.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tem_core::{
    AttemptOutcome, BatchStatus, Engine, InterruptionCriteria, Jitter, NewBatch, NewTask, RetryPolicy,
    TaskContext, TaskError, TaskFilter, TaskStatus, WorkerOptions,
};

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: Jitter::None,
    }
}

/// Counts drops: proof that a handler's future was cancelled, not left running.
struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn running(engine: &Engine, batch: tem_core::BatchId) -> i64 {
    engine.stats(batch).await.unwrap().running
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_cancels_a_hung_handler_and_counts_as_retryable(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("hang", "t").retry(retry(2)))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, [NewTask::new("hang", &()).unwrap()])
            .await
            .unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let token_fired = Arc::new(AtomicUsize::new(0));
        let (d, t) = (dropped.clone(), token_fired.clone());
        engine
            .worker(
                WorkerOptions::default()
                    .batch(batch.id)
                    .timeout(Duration::from_millis(200)),
            )
            .handle("hang", move |(): (), ctx: TaskContext| {
                let guard = DropCounter(d.clone());
                let fired = t.clone();
                let watcher = ctx.clone();
                tokio::spawn(async move {
                    watcher.cancelled().await;
                    fired.fetch_add(1, Ordering::SeqCst);
                });
                async move {
                    let _guard = guard;
                    assert!(ctx.deadline.is_some(), "the deadline is passed to the handler");
                    std::future::pending::<()>().await;
                    Ok::<_, TaskError>(())
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        let task = engine.task(ids[0]).await.unwrap();
        assert_eq!(task.status, TaskStatus::Failed);
        let attempts = engine.attempts(ids[0]).await.unwrap();
        assert_eq!(
            attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            [AttemptOutcome::Timeout; 2]
        );
        for a in &attempts {
            let ran = a.finished_at - a.started_at;
            assert!((195..1000).contains(&ran), "attempt ran {ran} ms");
        }
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "both hung futures were dropped"
        );
        common::eventually(Duration::from_secs(2), "cancellation tokens", || {
            let fired = token_fired.clone();
            async move { fired.load(Ordering::SeqCst) == 2 }
        })
        .await;
        assert_eq!(engine.stats(batch.id).await.unwrap().timed_out, 2);
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_max_task_runtime_is_an_enforced_timeout(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let criteria = InterruptionCriteria {
            max_task_runtime_ms: Some(150),
            ..Default::default()
        };
        let batch = engine
            .create_batch(NewBatch::new("runtime", "t").retry(retry(1)).criteria(criteria))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, [NewTask::new("slow", &()).unwrap()])
            .await
            .unwrap();
        engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("slow", |(): (), _| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, TaskError>(())
            })
            .run_until_idle()
            .await
            .unwrap();
        let attempts = engine.attempts(ids[0]).await.unwrap();
        assert_eq!(attempts[0].outcome, AttemptOutcome::Timeout);
        assert!(attempts[0].finished_at - attempts[0].started_at < 1000);
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drain_finishes_in_flight_work_and_abort_gives_it_back_uncharged(backend) {
        for abort in [false, true] {
            let (_dir, engine) = common::engine(backend).await;
            let batch = engine.create_batch(NewBatch::new("stop", "t")).await.unwrap();
            engine
                .enqueue(batch.id, (0..10).map(|i| NewTask::new("slow", &i).unwrap()))
                .await
                .unwrap();
            let started = Arc::new(AtomicUsize::new(0));
            let seen = started.clone();
            // Two running and two claimed ahead.
            let mut options = WorkerOptions::default()
                .concurrency(2)
                .fixed_concurrency()
                .batch(batch.id);
            options.prefetch = Some(2);
            let worker = engine.worker(options).handle("slow", move |_: u32, _| {
                seen.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, TaskError>(())
                }
            });
            let shutdown = worker.shutdown_handle();
            let run = tokio::spawn(worker.run());
            common::eventually(
                Duration::from_secs(5),
                "two started and two claimed ahead",
                || {
                    let (engine, started) = (engine.clone(), started.clone());
                    async move { started.load(Ordering::SeqCst) == 2 && running(&engine, batch.id).await == 4 }
                },
            )
            .await;
            if abort {
                shutdown.abort()
            } else {
                shutdown.drain()
            }
            let report = run.await.unwrap().unwrap();
            let stats = engine.stats(batch.id).await.unwrap();
            assert_eq!(stats.running, 0, "nothing is left leased");
            assert_eq!(
                started.load(Ordering::SeqCst),
                2,
                "tasks claimed ahead never start after a stop"
            );
            let tasks = engine
                .tasks(&TaskFilter {
                    batch: Some(batch.id),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut history = Vec::new();
            for t in &tasks {
                history.extend(
                    engine
                        .attempts(t.id)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|a| a.outcome),
                );
            }
            if abort {
                assert_eq!((report.succeeded, report.released), (0, 4));
                assert_eq!(stats.pending, 10);
                assert!(
                    tasks.iter().all(|t| t.attempt == 0),
                    "an abort does not charge the attempt"
                );
                assert_eq!(
                    history,
                    [AttemptOutcome::Aborted; 2],
                    "only started attempts are recorded"
                );
            } else {
                assert_eq!((report.succeeded, report.released), (2, 2));
                assert_eq!((stats.completed, stats.pending), (2, 8));
                assert_eq!(history, [AttemptOutcome::Succeeded; 2]);
            }
        }
    }
}

/// Runs a worker whose handler never returns, then drops it mid-run, as a crash would.
async fn strand(engine: &Engine, batch: tem_core::BatchId, lease: Duration) {
    let mut options = WorkerOptions::default()
        .concurrency(3)
        .fixed_concurrency()
        .batch(batch)
        .lease(lease);
    options.prefetch = Some(0);
    let worker = engine
        .worker(options)
        .handle("job", |_: u32, _| std::future::pending::<Result<(), TaskError>>());
    let run = tokio::spawn(worker.run());
    common::eventually(Duration::from_secs(5), "three running tasks", || {
        let engine = engine.clone();
        async move { running(&engine, batch).await == 3 }
    })
    .await;
    run.abort();
    let _ = run.await;
}

async fn leases_expired(engine: &Engine, batch: tem_core::BatchId) -> bool {
    let filter = TaskFilter {
        batch: Some(batch),
        status: Some(TaskStatus::Running),
        ..Default::default()
    };
    let now = tem_core::time::now_ms();
    engine
        .tasks(&filter)
        .await
        .unwrap()
        .iter()
        .all(|t| t.lease_expires_at.is_some_and(|at| at < now))
}

async fn finish(engine: &Engine, batch: tem_core::BatchId) {
    let mut options = WorkerOptions::default().batch(batch);
    options.rescue_interval = Duration::from_millis(50);
    engine
        .worker(options)
        .handle("job", |_: u32, _| async { Ok::<_, TaskError>(()) })
        .run_until_idle()
        .await
        .unwrap();
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_rescued_from_a_cancelled_batch_is_cancelled_not_queued(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("gone", "t")).await.unwrap();
        engine
            .enqueue(batch.id, (0..5).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        // Three tasks run under a worker that dies; the batch is cancelled meanwhile.
        strand(&engine, batch.id, Duration::from_millis(300)).await;
        assert_eq!(engine.cancel(batch.id).await.unwrap(), 2);
        finish(&engine, batch.id).await;

        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!(
            (stats.cancelled, stats.pending, stats.running, stats.lost),
            (5, 0, 0, 3),
            "nothing is left pending in a batch nobody may run: {stats:?}"
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_leases_are_rescued_and_the_lost_attempt_is_recorded(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("rescue", "t")).await.unwrap();
        engine
            .enqueue(batch.id, (0..5).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        strand(&engine, batch.id, Duration::from_millis(300)).await;
        finish(&engine, batch.id).await;

        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!((stats.completed, stats.lost), (5, 3));
        let tasks = engine
            .tasks(&TaskFilter {
                batch: Some(batch.id),
                ..Default::default()
            })
            .await
            .unwrap();
        let rescued: Vec<_> = tasks.iter().filter(|t| t.attempt == 2).collect();
        assert_eq!(rescued.len(), 3, "the lost attempt is charged");
        for task in rescued {
            let outcomes: Vec<_> = engine
                .attempts(task.id)
                .await
                .unwrap()
                .iter()
                .map(|a| a.outcome)
                .collect();
            assert_eq!(
                outcomes,
                [AttemptOutcome::LeaseExpired, AttemptOutcome::Succeeded]
            );
        }
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_requeues_stranded_tasks_without_charging_them(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("resume", "t")).await.unwrap();
        engine
            .enqueue(batch.id, (0..5).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        strand(&engine, batch.id, Duration::from_millis(300)).await;

        // A live lease is not "stranded": resume leaves it alone...
        let early = engine.resume(batch.id).await.unwrap();
        assert_eq!(early.requeued, 0);
        // ...and takes it once it has expired.
        common::eventually(Duration::from_secs(5), "expired leases", || {
            leases_expired(&engine, batch.id)
        })
        .await;
        let resumed = engine.resume(batch.id).await.unwrap();
        assert_eq!(resumed.requeued, 3);
        assert!(!resumed.reactivated, "the batch was active");
        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!((stats.pending, stats.running), (5, 0));

        finish(&engine, batch.id).await;
        let tasks = engine
            .tasks(&TaskFilter {
                batch: Some(batch.id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            tasks
                .iter()
                .all(|t| t.status == TaskStatus::Completed && t.attempt == 1)
        );
        assert_eq!(
            engine.batch(batch.id).await.unwrap().status,
            BatchStatus::Completed
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retry_failed_gives_failed_tasks_a_fresh_start(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("again", "t").retry(retry(2)))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, (0..4).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("job", |i: u32, _| async move {
                if i.is_multiple_of(2) {
                    Err(TaskError::retryable("down"))
                } else {
                    Ok(i)
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        let batch_row = engine.batch(batch.id).await.unwrap();
        assert_eq!(
            (batch_row.status, batch_row.stats.failed),
            (BatchStatus::Completed, 2)
        );

        assert_eq!(engine.retry_failed(batch.id).await.unwrap(), 2);
        let reset = engine.task(ids[0]).await.unwrap();
        assert_eq!((reset.status, reset.attempt), (TaskStatus::Pending, 0));
        assert_eq!(
            (reset.last_error, reset.finished_at),
            (None, None),
            "no stale error or finish time"
        );
        assert_eq!(engine.batch(batch.id).await.unwrap().status, BatchStatus::Active);

        engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("job", |i: u32, _| async move { Ok::<_, TaskError>(i) })
            .run_until_idle()
            .await
            .unwrap();
        let done = engine.batch(batch.id).await.unwrap();
        assert_eq!(
            (done.status, done.stats.completed, done.stats.failed),
            (BatchStatus::Completed, 4, 0)
        );
        assert_eq!(
            engine.attempts(ids[0]).await.unwrap().len(),
            3,
            "history keeps the earlier failures"
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_stops_a_batch_without_deleting_anything(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("cancel", "t")).await.unwrap();
        engine
            .enqueue(batch.id, (0..6).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        assert_eq!(engine.cancel(batch.id).await.unwrap(), 6);
        let report = engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("job", |_: u32, _| async { Ok::<_, TaskError>(()) })
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(report.succeeded, 0, "a cancelled batch is not claimed");
        let b = engine.batch(batch.id).await.unwrap();
        assert_eq!(
            (b.status, b.stats.cancelled, b.stats.total),
            (BatchStatus::Cancelled, 6, 6)
        );
        let err = engine
            .enqueue(batch.id, [NewTask::new("job", &9).unwrap()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        assert!(engine.resume(batch.id).await.is_err());
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renewals_never_mistake_a_retried_task_for_a_lost_one(backend) {
        // A retry due at once is re-claimed by the same worker in the commit that recorded its
        // failure; a renewal in flight for the old claim must not cancel the new one.
        let (_dir, engine) = common::engine(backend).await;
        let retry = RetryPolicy {
            max_attempts: 20,
            base: Duration::ZERO,
            cap: Duration::ZERO,
            jitter: Jitter::None,
        };
        let batch = engine
            .create_batch(NewBatch::new("race", "t").retry(retry))
            .await
            .unwrap();
        engine
            .enqueue(batch.id, (0..40).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        let mut options = WorkerOptions::default()
            .concurrency(4)
            .batch(batch.id)
            .lease(Duration::from_millis(300));
        options.rescue_interval = Duration::from_millis(100);
        // Attempts cancelled under the handler: a renewal that took a live claim for a lost one.
        let cancelled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = cancelled.clone();
        let stalls = common::StallMonitor::start();
        engine
            .worker(options)
            .handle("job", move |_: u32, ctx: TaskContext| {
                let seen = seen.clone();
                async move {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(5)) => {}
                        () = ctx.cancelled() => {
                            seen.lock().unwrap().push((ctx.task_id, ctx.attempt));
                            return Err(TaskError::retryable("cancelled"));
                        }
                    }
                    if ctx.attempt < 10 {
                        Err(TaskError::retryable("again"))
                    } else {
                        Ok(ctx.attempt)
                    }
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        let stalled = stalls.worst();
        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!(stats.completed, 40);
        // The safety property, whatever the machine did: an attempt is cancelled only once its
        // lease really lapsed, which the rescue recorded. A renewal mistaking a retry's new claim
        // for a lost one cancels an attempt whose lease was live.
        let cancelled = cancelled.lock().unwrap().clone();
        for (task, attempt) in cancelled {
            let history = engine.attempts(task).await.unwrap();
            assert!(
                history
                    .iter()
                    .any(|a| a.attempt == attempt && a.outcome == AttemptOutcome::LeaseExpired),
                "task {} attempt {attempt} was cancelled under a live lease: {history:?}",
                task.0
            );
        }
        // The timing bound, judged against the stall this run measured: a lease of 300 ms is
        // renewed every 100 ms, so only a stall past 200 ms may let one lapse.
        if stalled < Duration::from_millis(200) {
            assert_eq!(stats.lost, 0, "no lease lapsed (worst stall {stalled:?})");
            let tasks = engine
                .tasks(&TaskFilter {
                    batch: Some(batch.id),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(
                tasks.iter().all(|t| t.attempt == 10),
                "every task took exactly ten attempts"
            );
        } else {
            eprintln!(
                "a {stalled:?} stall: {} leases lapsed and were rescued, not judged",
                stats.lost
            );
        }
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_rescued_on_its_last_attempt_ends_failed(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("last", "t").retry(retry(1)))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, (0..5).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        // Three tasks run their only attempt under a worker that dies.
        strand(&engine, batch.id, Duration::from_millis(300)).await;
        finish(&engine, batch.id).await;

        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!(
            (stats.completed, stats.failed, stats.lost, stats.pending, stats.running),
            (2, 3, 3, 0, 0),
            "{stats:?}"
        );
        let mut failed = 0;
        for id in ids {
            let task = engine.task(id).await.unwrap();
            if task.status != TaskStatus::Failed {
                assert_eq!((task.status, task.attempt), (TaskStatus::Completed, 1));
                continue;
            }
            failed += 1;
            assert_eq!(task.attempt, 1, "no attempt beyond the last");
            let outcomes: Vec<_> = engine
                .attempts(id)
                .await
                .unwrap()
                .iter()
                .map(|a| a.outcome)
                .collect();
            assert_eq!(outcomes, [AttemptOutcome::LeaseExpired]);
        }
        assert_eq!(failed, 3);
        assert_eq!(
            engine.batch(batch.id).await.unwrap().status,
            BatchStatus::Completed,
            "every task finished"
        );
    }
}
