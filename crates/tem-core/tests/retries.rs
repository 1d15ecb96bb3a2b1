//! Retries: backoff written as run_after and respected, Retry-After honoured and pausing the
//! whole limit key (across engines on one file), typed outcomes from real HTTP responses.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use tem_core::{
    AttemptOutcome, BatchStatus, Engine, Jitter, NewBatch, NewTask, RetryPolicy, TaskContext, TaskError,
    TaskStatus, WorkerOptions,
};

fn policy(max_attempts: u32, base_ms: u64, jitter: Jitter) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(base_ms),
        cap: Duration::from_secs(5),
        jitter,
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backoff_is_scheduled_and_respected_then_the_task_fails(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("backoff", "t").retry(policy(4, 100, Jitter::None)))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, [NewTask::new("flaky", &()).unwrap()])
            .await
            .unwrap();
        engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("flaky", |(): (), _| async {
                Err::<(), _>(TaskError::retryable("still broken"))
            })
            .run_until_idle()
            .await
            .unwrap();

        let task = engine.task(ids[0]).await.unwrap();
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(task.attempt, 4);
        assert_eq!(task.last_error.as_deref(), Some("still broken"));
        let attempts = engine.attempts(ids[0]).await.unwrap();
        assert_eq!(attempts.len(), 4);
        for (k, pair) in attempts.windows(2).enumerate() {
            let retry_at = pair[0]
                .retry_at
                .expect("a retried attempt says when the next may start");
            let nominal = 100i64 << k;
            // retry_at is the attempt's recorded end plus the backoff.
            let scheduled = retry_at - pair[0].finished_at;
            assert_eq!(scheduled, nominal, "attempt {}", k + 1);
            assert!(
                pair[1].started_at >= retry_at,
                "attempt {} started before its run_after",
                k + 2
            );
        }
        assert_eq!(attempts[3].retry_at, None, "the last attempt schedules nothing");
        assert!(attempts.iter().all(|a| a.outcome == AttemptOutcome::Retryable));
        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!(
            (stats.failed, stats.retried, stats.consecutive_failures),
            (1, 3, 1)
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_jitter_delays_are_respected_too(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("jitter", "t").retry(policy(3, 50, Jitter::Full)))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, (0..10).map(|i| NewTask::new("flaky", &i).unwrap()))
            .await
            .unwrap();
        engine
            .worker(WorkerOptions::default().concurrency(4).batch(batch.id))
            .handle("flaky", |_: u32, ctx: TaskContext| async move {
                if ctx.attempt < 3 {
                    Err(TaskError::retryable("once more"))
                } else {
                    Ok(ctx.attempt)
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        for id in ids {
            let attempts = engine.attempts(id).await.unwrap();
            assert_eq!(attempts.len(), 3);
            for pair in attempts.windows(2) {
                assert!(pair[1].started_at >= pair[0].retry_at.unwrap());
            }
            assert_eq!(
                engine.task(id).await.unwrap().result_as::<u32>().unwrap(),
                Some(3)
            );
        }
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn non_retryable_errors_fail_at_once(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("fatal", "t").retry(policy(5, 10, Jitter::None)))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, [NewTask::new("bad", &()).unwrap()])
            .await
            .unwrap();
        engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("bad", |(): (), _| async {
                Err::<(), _>(TaskError::non_retryable("400: nope").with_status(400))
            })
            .run_until_idle()
            .await
            .unwrap();
        let attempts = engine.attempts(ids[0]).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, AttemptOutcome::NonRetryable);
        assert_eq!(attempts[0].http_status, Some(400));
        assert_eq!(
            engine.batch(batch.id).await.unwrap().status,
            BatchStatus::Completed
        );
    }
}

/// A provider that answers its first request with 429 and `Retry-After: 1`, then 200.
struct Provider {
    arrivals: Mutex<Vec<Instant>>,
    first_reply_at: Mutex<Option<Instant>>,
    hits: AtomicUsize,
}

async fn provider() -> (Arc<Provider>, String) {
    let state = Arc::new(Provider {
        arrivals: Mutex::new(Vec::new()),
        first_reply_at: Mutex::new(None),
        hits: AtomicUsize::new(0),
    });
    let shared = state.clone();
    let router = axum::Router::new().route(
        "/call",
        get(move || {
            let state = shared.clone();
            async move {
                state.arrivals.lock().unwrap().push(Instant::now());
                if state.hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    *state.first_reply_at.lock().unwrap() = Some(Instant::now());
                    let mut headers = HeaderMap::new();
                    headers.insert("retry-after", "1".parse().unwrap());
                    return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down");
                }
                (StatusCode::OK, HeaderMap::new(), "ok")
            }
        }),
    );
    let addr = common::serve(router).await;
    (state, format!("http://{addr}/call"))
}

/// Calls `url` and classifies the response with the engine's typed outcomes.
async fn call(client: &reqwest::Client, url: &str) -> Result<String, TaskError> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| TaskError::retryable(e.to_string()))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    match TaskError::from_response(status, &headers, body.clone()) {
        Some(error) => Err(error),
        None => Ok(body),
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retry_after_is_honoured_and_pauses_the_whole_key(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let (provider, url) = provider().await;
        let batch = engine
            .create_batch(NewBatch::new("429", "t").retry(policy(3, 10, Jitter::None)))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, (0..5).map(|i| NewTask::new("call", &i).unwrap()))
            .await
            .unwrap();
        let client = reqwest::Client::new();
        engine
            .worker(
                WorkerOptions::default()
                    .concurrency(1)
                    .fixed_concurrency()
                    .batch(batch.id),
            )
            .handle("call", move |_: u32, _| {
                let (client, url) = (client.clone(), url.clone());
                async move { call(&client, &url).await }
            })
            .run_until_idle()
            .await
            .unwrap();

        let arrivals = provider.arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 6, "five tasks, one of them retried once");
        let first_reply = provider.first_reply_at.lock().unwrap().unwrap();
        // Not only the rate-limited task waits: nothing is sent to the key until Retry-After passed.
        assert!(
            arrivals[1] >= first_reply + Duration::from_secs(1),
            "next call {:?} after the 429",
            arrivals[1] - first_reply
        );

        let first = engine.attempts(ids[0]).await.unwrap();
        assert_eq!(first[0].outcome, AttemptOutcome::RateLimited);
        assert_eq!(first[0].http_status, Some(429));
        let scheduled = first[0].retry_at.unwrap() - first[0].finished_at;
        assert_eq!(scheduled, 1000, "Retry-After overrides the 10 ms backoff");
        assert_eq!(first[1].outcome, AttemptOutcome::Succeeded);
        assert_eq!(engine.stats(batch.id).await.unwrap().rate_limited, 1);
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pause_is_durable_and_holds_for_other_engines_on_the_same_file(backend) {
        let (dir, engine) = common::engine(backend).await;
        let other = Engine::open(dir.url()).await.unwrap();
        // One attempt only: the first engine is done as soon as it has seen the 429.
        let batch = engine
            .create_batch(NewBatch::new("pause", "t").retry(policy(1, 10, Jitter::None)))
            .await
            .unwrap();
        engine
            .enqueue(batch.id, [NewTask::new("api", &0).unwrap()])
            .await
            .unwrap();
        engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("api", |_: u32, _| async move {
                Err::<(), _>(TaskError::rate_limited(Some(Duration::from_secs(2))))
            })
            .run_until_idle()
            .await
            .unwrap();
        let paused_at = Instant::now();

        // A second engine (as another process would) finds new work for the same key but waits.
        other
            .enqueue(batch.id, [NewTask::new("api", &1).unwrap()])
            .await
            .unwrap();
        let started = Arc::new(Mutex::new(Vec::new()));
        let seen = started.clone();
        other
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("api", move |_: u32, _| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(Instant::now());
                    Ok::<_, TaskError>(())
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        let started = started.lock().unwrap().clone();
        assert_eq!(started.len(), 1);
        // The pause ran until ~2 s after the 429 was committed, before `paused_at`.
        assert!(
            started[0] >= paused_at + Duration::from_millis(1500),
            "claimed {:?} into the pause",
            started[0] - paused_at
        );
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_message_with_a_nul_byte_is_stored_and_the_worker_goes_on(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("nul", "t").retry(RetryPolicy {
                max_attempts: 2,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(1),
                jitter: Jitter::None,
            }))
            .await
            .unwrap();
        engine
            .enqueue(batch.id, (0..4).map(|i| NewTask::new("call", &i).unwrap()))
            .await
            .unwrap();
        // A binary error body quoted in the message: Postgres refuses NUL in text.
        let report = engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("call", |n: u32, _| async move {
                if n.is_multiple_of(2) {
                    Err(TaskError::retryable("body: \u{0}\u{1}PNG"))
                } else {
                    Ok(())
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!((report.succeeded, report.failed), (2, 2));
        let failed = engine
            .tasks(&tem_core::TaskFilter {
                batch: Some(batch.id),
                status: Some(tem_core::TaskStatus::Failed),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].last_error.as_deref(), Some("body: \u{FFFD}\u{1}PNG"));
    }
}
