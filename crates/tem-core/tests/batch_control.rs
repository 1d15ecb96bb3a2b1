//! Batch control against a real HTTP server: each interruption criterion fires exactly when it
//! should and never before, batch values override engine defaults, a global worker keeps serving
//! other batches, the runtime limit fires while everything succeeds, the circuit breaker stops
//! calls without burning attempts, and resume finishes a batch without running a task twice.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use tem_core::limit::BreakerConfig;
use tem_core::{
    BatchId, BatchStatus, Engine, EngineOptions, InterruptionCriteria, InterruptionReason, Jitter, Limits,
    NewBatch, NewTask, OnInterrupt, RetryPolicy, TaskError, TaskFilter, TaskStatus, WorkerOptions,
};

/// The test API: `GET /{status}/{task}` answers `status` and records the call.
#[derive(Clone, Default)]
struct Api {
    calls: Arc<Mutex<Vec<(i64, Instant)>>>,
    /// How many of the next calls answer 503 (for the breaker).
    down_for: Arc<AtomicUsize>,
}

impl Api {
    async fn start() -> (Api, String) {
        let api = Api::default();
        let router = axum::Router::new()
            .route("/{status}/{task}", get(answer))
            .with_state(api.clone());
        let addr = common::serve(router).await;
        (api, format!("http://{addr}"))
    }

    fn calls_per_task(&self) -> HashMap<i64, usize> {
        let mut counts = HashMap::new();
        for (task, _) in self.calls.lock().unwrap().iter() {
            *counts.entry(*task).or_default() += 1;
        }
        counts
    }
}

async fn answer(State(api): State<Api>, Path((status, task)): Path<(u16, i64)>) -> StatusCode {
    api.calls.lock().unwrap().push((task, Instant::now()));
    let down = api
        .down_for
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if down.is_ok() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A task asks the API for the status in its payload.
fn task(status: u16) -> NewTask {
    NewTask::new("call", &status).unwrap()
}

/// Retries due at once, so a serial worker takes a retried task before the next one.
fn no_backoff(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::ZERO,
        cap: Duration::ZERO,
        jitter: Jitter::None,
    }
}

/// One call at a time, in enqueue order, so "exactly when" is well defined.
fn serial(batch: BatchId) -> WorkerOptions {
    let mut options = WorkerOptions::default()
        .concurrency(1)
        .fixed_concurrency()
        .batch(batch);
    options.prefetch = Some(0);
    options
}

async fn run(engine: &Engine, options: WorkerOptions, base: &str) -> tem_core::RunReport {
    let client = reqwest::Client::new();
    let base = base.to_owned();
    engine
        .worker(options)
        .handle("call", move |status: u16, ctx: tem_core::TaskContext| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let url = format!("{base}/{status}/{}", ctx.task_id);
                let response = client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| TaskError::retryable(e.to_string()))?;
                match TaskError::from_response(
                    response.status(),
                    response.headers(),
                    format!("HTTP {}", response.status()),
                ) {
                    Some(error) => Err(error),
                    None => Ok(()),
                }
            }
        })
        .run_until_idle()
        .await
        .unwrap()
}

async fn batch_with(
    engine: &Engine,
    code: &str,
    criteria: InterruptionCriteria,
    retry: RetryPolicy,
    tasks: Vec<NewTask>,
) -> BatchId {
    let batch = engine
        .create_batch(NewBatch::new(code, "t").criteria(criteria).retry(retry))
        .await
        .unwrap();
    engine.enqueue(batch.id, tasks).await.unwrap();
    batch.id
}

/// Runs a serial batch of `statuses` under `criteria`; returns the batch and how many calls ran.
async fn interrupted_after(
    backend: common::Backend,
    criteria: InterruptionCriteria,
    retry: RetryPolicy,
    statuses: &[u16],
) -> (Engine, BatchId, usize, common::Db) {
    let (dir, engine) = common::engine(backend).await;
    let (api, base) = Api::start().await;
    let batch = batch_with(
        &engine,
        "b",
        criteria,
        retry,
        statuses.iter().map(|s| task(*s)).collect(),
    )
    .await;
    run(&engine, serial(batch), &base).await;
    let calls = api.calls.lock().unwrap().len();
    (engine, batch, calls, dir)
}

async fn assert_interrupted(engine: &Engine, batch: BatchId, reason: InterruptionReason, needle: &str) {
    let b = engine.batch(batch).await.unwrap();
    assert_eq!(b.status, BatchStatus::Interrupted);
    let log = engine.interruptions(batch).await.unwrap();
    assert_eq!(log.len(), 1, "one log row: {log:?}");
    assert_eq!(log[0].reason, reason);
    assert!(
        log[0].message.contains(needle),
        "message `{}` lacks `{needle}`",
        log[0].message
    );
    assert_eq!(b.interruption.as_ref().map(|i| i.reason), Some(reason));
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_failed_tasks_fires_on_the_first_failure_over_the_limit(backend) {
        let criteria = InterruptionCriteria {
            max_failed_tasks: Some(2),
            ..Default::default()
        };
        let statuses = [200, 400, 200, 404, 200, 400, 200, 200, 400];
        let (engine, batch, calls, _dir) = interrupted_after(backend, criteria, no_backoff(1), &statuses).await;
        // The third failure is the 6th call; nothing after it is started.
        assert_eq!(calls, 6);
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::FailedTasksExceeded,
            "3 tasks failed; max_failed_tasks is 2",
        )
        .await;
        let stats = engine.stats(batch).await.unwrap();
        assert_eq!((stats.completed, stats.failed, stats.pending), (3, 3, 3));
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_means_zero_tolerance(backend) {
        let criteria = InterruptionCriteria {
            max_failed_tasks: Some(0),
            ..Default::default()
        };
        let (engine, batch, calls, _dir) =
            interrupted_after(backend, criteria, no_backoff(1), &[200, 200, 400, 200]).await;
        assert_eq!(calls, 3);
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::FailedTasksExceeded,
            "1 tasks failed",
        )
        .await;
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consecutive_failures_count_tasks_not_attempts(backend) {
        // Each failing task takes three attempts (500 is retryable): attempts must not count.
        let criteria = InterruptionCriteria {
            max_consecutive_failures: Some(2),
            ..Default::default()
        };
        let statuses = [500, 500, 200, 500, 500, 500, 200];
        let (engine, batch, calls, _dir) = interrupted_after(backend, criteria, no_backoff(3), &statuses).await;
        // Two failed tasks, a success, then the third failing task in a row: 3+3+1+3+3+3 calls.
        assert_eq!(calls, 16);
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::ConsecutiveFailuresExceeded,
            "3 tasks in a row failed",
        )
        .await;
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_error_rate_waits_for_its_minimum_sample(backend) {
        let criteria = InterruptionCriteria {
            max_error_rate: Some(0.5),
            min_sample: Some(4),
            ..Default::default()
        };
        // Three failures out of three is 100%, but the sample is too small until the fourth.
        let statuses = [400, 400, 400, 200, 200, 200];
        let (engine, batch, calls, _dir) = interrupted_after(backend, criteria, no_backoff(1), &statuses).await;
        assert_eq!(calls, 4);
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::ErrorRateExceeded,
            "3 of 4 finished tasks failed (75.0%)",
        )
        .await;

        // Never before: 50% exactly is not over a 50% limit.
        let criteria = InterruptionCriteria {
            max_error_rate: Some(0.5),
            min_sample: Some(4),
            ..Default::default()
        };
        let (engine, batch, calls, _dir) =
            interrupted_after(backend, criteria, no_backoff(1), &[400, 200, 400, 200, 200, 200]).await;
        assert_eq!(calls, 6);
        assert_eq!(engine.batch(batch).await.unwrap().status, BatchStatus::Completed);
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limited_and_overloaded_count_every_attempt(backend) {
        // Every attempt, retried or not, counts: the third 429 crosses a limit of 2.
        let criteria = InterruptionCriteria {
            max_rate_limited: Some(2),
            ..Default::default()
        };
        let (engine, batch, calls, _dir) = interrupted_after(backend, criteria, no_backoff(5), &[429, 200]).await;
        assert_eq!(calls, 3);
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::RateLimitedExceeded,
            "3 attempts were rate-limited",
        )
        .await;

        let criteria = InterruptionCriteria {
            max_overloaded: Some(1),
            ..Default::default()
        };
        let (engine, batch, calls, _dir) = interrupted_after(backend, criteria, no_backoff(5), &[200, 503, 200]).await;
        assert_eq!(calls, 3);
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::OverloadedExceeded,
            "2 attempts hit an overloaded API",
        )
        .await;
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_values_override_engine_defaults_key_by_key(backend) {
        let options = EngineOptions {
            criteria: InterruptionCriteria {
                max_failed_tasks: Some(100),
                max_overloaded: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        let (_dir, engine) = common::engine_with(backend, options).await;
        let (_api, base) = Api::start().await;
        // The batch's own max_failed_tasks (1) wins over the engine's 100...
        let criteria = InterruptionCriteria {
            max_failed_tasks: Some(1),
            ..Default::default()
        };
        let batch = batch_with(
            &engine,
            "own",
            criteria,
            no_backoff(1),
            vec![task(400), task(400), task(200)],
        )
        .await;
        run(&engine, serial(batch), &base).await;
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::FailedTasksExceeded,
            "2 tasks failed",
        )
        .await;
        // ...and a key it leaves unset comes from the engine (max_overloaded 0).
        let batch = batch_with(
            &engine,
            "inherited",
            InterruptionCriteria::default(),
            no_backoff(3),
            vec![task(200), task(503), task(200)],
        )
        .await;
        run(&engine, serial(batch), &base).await;
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::OverloadedExceeded,
            "1 attempts hit an overloaded API",
        )
        .await;
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_batch_runtime_limit_fires_while_everything_succeeds(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let (api, base) = Api::start().await;
        let criteria = InterruptionCriteria {
            max_batch_runtime_ms: Some(400),
            ..Default::default()
        };
        let batch = batch_with(
            &engine,
            "slow",
            criteria,
            no_backoff(1),
            (0..50).map(|_| task(200)).collect(),
        )
        .await;
        let client = reqwest::Client::new();
        engine
            .worker(serial(batch))
            .handle("call", move |status: u16, ctx: tem_core::TaskContext| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    client
                        .get(format!("{base}/{status}/{}", ctx.task_id))
                        .send()
                        .await
                        .map_err(|e| TaskError::retryable(e.to_string()))?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, TaskError>(())
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        assert_interrupted(
            &engine,
            batch,
            InterruptionReason::BatchRuntimeExceeded,
            "max_batch_runtime_ms is 400",
        )
        .await;
        let b = engine.batch(batch).await.unwrap();
        let log = engine.interruptions(batch).await.unwrap();
        let ran_for = log[0].at - b.run_started_at.unwrap();
        assert!(
            ran_for > 400,
            "interrupted after {ran_for} ms, not before the limit"
        );
        assert!(
            ran_for < 2500,
            "checked on a timer, not only at the end: {ran_for} ms"
        );
        assert_eq!(b.stats.failed, 0, "nothing failed: only the clock stopped it");
        assert!(api.calls.lock().unwrap().len() < 50);
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_global_worker_stops_an_interrupted_batch_and_finishes_the_other(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let (api, base) = Api::start().await;
        let zero = InterruptionCriteria {
            max_failed_tasks: Some(0),
            ..Default::default()
        };
        let broken = batch_with(
            &engine,
            "broken",
            zero,
            no_backoff(1),
            (0..200).map(|_| task(400)).collect(),
        )
        .await;
        let healthy = batch_with(
            &engine,
            "healthy",
            InterruptionCriteria::default(),
            no_backoff(1),
            (0..200).map(|_| task(200)).collect(),
        )
        .await;
        let report = run(&engine, WorkerOptions::default().concurrency(4), &base).await;

        let broken = engine.batch(broken).await.unwrap();
        let healthy = engine.batch(healthy).await.unwrap();
        assert_eq!(healthy.status, BatchStatus::Completed);
        assert_eq!(healthy.stats.completed, 200);
        assert_eq!(broken.status, BatchStatus::Interrupted);
        assert_eq!(
            broken.stats.running, 0,
            "in-flight tasks drained, claimed-ahead ones given back"
        );
        // Only the few in flight when it stopped ran after the first failure.
        assert!(
            broken.stats.failed <= 8,
            "{} tasks of the interrupted batch ran",
            broken.stats.failed
        );
        assert_eq!(broken.stats.pending + broken.stats.failed, 200);
        assert_eq!(report.succeeded, 200);
        assert!(api.calls.lock().unwrap().len() <= 208);
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aborting_on_interrupt_gives_in_flight_tasks_back_uncharged(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("abort", "t")).await.unwrap();
        engine
            .enqueue(batch.id, (0..6).map(|i| NewTask::new("hang", &i).unwrap()))
            .await
            .unwrap();
        let mut options = WorkerOptions::default()
            .concurrency(3)
            .fixed_concurrency()
            .batch(batch.id);
        options.on_interrupt = OnInterrupt::Abort;
        let worker = engine.worker(options).handle("hang", |_: u32, _| {
            std::future::pending::<Result<(), TaskError>>()
        });
        let run = tokio::spawn(worker.run_until_idle());
        common::eventually(Duration::from_secs(5), "running tasks", || {
            let engine = engine.clone();
            async move { engine.stats(batch.id).await.unwrap().running >= 3 }
        })
        .await;
        engine.interrupt(batch.id, "stop that").await.unwrap();
        run.await.unwrap().unwrap();
        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!((stats.running, stats.pending), (0, 6));
        let tasks = engine
            .tasks(&TaskFilter {
                batch: Some(batch.id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            tasks.iter().all(|t| t.attempt == 0),
            "aborted attempts are not charged"
        );
        let log = engine.interruptions(batch.id).await.unwrap();
        assert_eq!(
            (log.len(), log[0].reason, log[0].message.as_str()),
            (1, InterruptionReason::Manual, "stop that")
        );
        // Only an active batch can be interrupted.
        assert!(
            engine
                .interrupt(batch.id, "again")
                .await
                .unwrap_err()
                .to_string()
                .contains("interrupted")
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_finishes_an_interrupted_batch_without_running_a_task_twice(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let (api, base) = Api::start().await;
        let batch = batch_with(
            &engine,
            "resume",
            InterruptionCriteria::default(),
            no_backoff(1),
            (0..300).map(|_| task(200)).collect(),
        )
        .await;
        // Interrupt it by hand once a third is done; the worker drains and stops.
        let watcher = {
            let engine = engine.clone();
            tokio::spawn(async move {
                common::eventually(Duration::from_secs(20), "progress", || {
                    let engine = engine.clone();
                    async move { engine.stats(batch).await.unwrap().completed >= 100 }
                })
                .await;
                engine.interrupt(batch, "pause for the night").await.unwrap();
            })
        };
        run(
            &engine,
            WorkerOptions::default().concurrency(8).batch(batch),
            &base,
        )
        .await;
        watcher.await.unwrap();
        let stopped = engine.batch(batch).await.unwrap();
        assert_eq!(stopped.status, BatchStatus::Interrupted);
        assert!(stopped.stats.completed < 300 && stopped.stats.running == 0);

        let resumed = engine.resume(batch).await.unwrap();
        assert!(resumed.reactivated);
        run(
            &engine,
            WorkerOptions::default().concurrency(8).batch(batch),
            &base,
        )
        .await;
        let done = engine.batch(batch).await.unwrap();
        assert_eq!((done.status, done.stats.completed), (BatchStatus::Completed, 300));
        let calls = api.calls_per_task();
        assert_eq!(calls.len(), 300);
        assert!(calls.values().all(|n| *n == 1), "a task ran twice");
        let tasks = engine
            .tasks(&TaskFilter {
                batch: Some(batch),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            tasks
                .iter()
                .all(|t| t.status == TaskStatus::Completed && t.attempt == 1)
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_circuit_stops_calls_without_burning_attempts(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let (api, base) = Api::start().await;
        let batch = batch_with(
            &engine,
            "breaker",
            InterruptionCriteria::default(),
            no_backoff(5),
            (0..20).map(|_| task(200)).collect(),
        )
        .await;
        // The API is down for its first three calls: they open the circuit.
        api.down_for.store(3, Ordering::SeqCst);
        let breaker = BreakerConfig {
            consecutive_failures: 3,
            failure_rate: None,
            cool_down: Duration::from_millis(600),
            half_open_probes: 1,
            ..Default::default()
        };
        let client = reqwest::Client::new();
        let url = base.clone();
        engine
            .worker(serial(batch))
            .limit("call", Limits::breaker(breaker))
            .handle("call", move |status: u16, ctx: tem_core::TaskContext| {
                let (client, base) = (client.clone(), url.clone());
                async move {
                    let response = client
                        .get(format!("{base}/{status}/{}", ctx.task_id))
                        .send()
                        .await
                        .map_err(|e| TaskError::retryable(e.to_string()))?;
                    match TaskError::from_response(response.status(), response.headers(), "down") {
                        Some(error) => Err(error),
                        None => Ok(()),
                    }
                }
            })
            .run_until_idle()
            .await
            .unwrap();

        let calls = api.calls.lock().unwrap().clone();
        // Three failures open the circuit; the next call is the probe after the cool-down.
        assert_eq!(calls.len(), 23, "20 successes and the 3 failures that opened it");
        let gap = calls[3].1 - calls[2].1;
        assert!(
            gap >= Duration::from_millis(600),
            "a call went out {gap:?} after the circuit opened"
        );
        let stats = engine.stats(batch).await.unwrap();
        assert_eq!((stats.completed, stats.failed, stats.overloaded), (20, 0, 3));
        let tasks = engine
            .tasks(&TaskFilter {
                batch: Some(batch),
                ..Default::default()
            })
            .await
            .unwrap();
        let attempts: u32 = tasks.iter().map(|t| t.attempt).sum();
        assert_eq!(attempts, 23, "no attempt was burned while the circuit was open");
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_after_a_criterion_fired_judges_only_what_came_after(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let (api, base) = Api::start().await;

        // Counts since the resume: three failures fire `max_failed_tasks: 2`; after the resume
        // the next two failures are within the limit again, the third is not.
        let failed = batch_with(
            &engine,
            "failed",
            InterruptionCriteria {
                max_failed_tasks: Some(2),
                ..Default::default()
            },
            no_backoff(1),
            [400, 400, 400, 200, 400, 400, 200, 400, 200].map(task).to_vec(),
        )
        .await;
        run(&engine, serial(failed), &base).await;
        assert_eq!(engine.batch(failed).await.unwrap().status, BatchStatus::Interrupted);
        assert!(engine.resume(failed).await.unwrap().reactivated);
        run(&engine, serial(failed), &base).await;
        let log = engine.interruptions(failed).await.unwrap();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[1].message, "3 tasks failed; max_failed_tasks is 2", "counted since the resume");
        let stats = engine.stats(failed).await.unwrap();
        assert_eq!((stats.failed, stats.completed, stats.pending), (6, 2, 1), "totals are never reset");

        // The consecutive-failure counter restarts at zero: two failures in a row after the
        // resume are within `max_consecutive_failures: 2`, and the batch completes.
        let consecutive = batch_with(
            &engine,
            "consecutive",
            InterruptionCriteria {
                max_consecutive_failures: Some(2),
                ..Default::default()
            },
            no_backoff(1),
            [400, 400, 400, 400, 400, 200, 200].map(task).to_vec(),
        )
        .await;
        run(&engine, serial(consecutive), &base).await;
        assert_eq!(engine.batch(consecutive).await.unwrap().status, BatchStatus::Interrupted);
        assert!(engine.resume(consecutive).await.unwrap().reactivated);
        run(&engine, serial(consecutive), &base).await;
        let done = engine.batch(consecutive).await.unwrap();
        assert_eq!(
            (done.status, done.stats.failed, done.stats.completed),
            (BatchStatus::Completed, 5, 2),
            "{:?}",
            engine.interruptions(consecutive).await.unwrap()
        );

        // The runtime clock restarts at the first claim after the resume.
        let slow = batch_with(
            &engine,
            "runtime",
            InterruptionCriteria {
                max_batch_runtime_ms: Some(300),
                ..Default::default()
            },
            no_backoff(1),
            (0..200).map(|_| task(200)).collect(),
        )
        .await;
        let slow_run = |engine: Engine| {
            let (client, base) = (reqwest::Client::new(), base.clone());
            async move {
                engine
                    .worker(serial(slow))
                    .handle("call", move |status: u16, ctx: tem_core::TaskContext| {
                        let (client, base) = (client.clone(), base.clone());
                        async move {
                            client
                                .get(format!("{base}/{status}/{}", ctx.task_id))
                                .send()
                                .await
                                .map_err(|e| TaskError::retryable(e.to_string()))?;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, TaskError>(())
                        }
                    })
                    .run_until_idle()
                    .await
                    .unwrap()
            }
        };
        let first = slow_run(engine.clone()).await.succeeded;
        let interrupted_at = engine.interruptions(slow).await.unwrap()[0].at;
        assert!(engine.resume(slow).await.unwrap().reactivated);
        let second = slow_run(engine.clone()).await.succeeded;
        let b = engine.batch(slow).await.unwrap();
        let log = engine.interruptions(slow).await.unwrap();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[1].reason, InterruptionReason::BatchRuntimeExceeded);
        let restarted = b.run_started_at.unwrap();
        assert!(restarted >= interrupted_at, "the clock restarted after the resume");
        assert!(
            log[1].at - restarted > 300,
            "judged from the restart, not the first run: {} ms",
            log[1].at - restarted
        );
        assert!(first > 0 && second > 0, "both runs made calls ({first}, {second})");
        drop(api);
    }
}
