//! HTTP batches: JSONL lines loaded once into a batch, called against a real server on
//! 127.0.0.1, responses classified, results exported in input order, and the report's figures.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tem_core::http::{
    self, HttpHandler, HttpOptions, InputSource, LoadError, LoadOptions, RequestTemplate, ResultLine,
};
use tem_core::{BatchStatus, Event, Jitter, NewTask, RetryPolicy, TaskStatus, WorkerOptions};

/// Calls per path, so a test can see what was retried.
type Calls = Arc<Mutex<HashMap<String, u32>>>;

fn count(calls: &Calls, key: String) -> u32 {
    let mut calls = calls.lock().unwrap();
    let n = calls.entry(key).or_default();
    *n += 1;
    *n
}

async fn api() -> (Calls, String) {
    let calls: Calls = Arc::default();
    let router = axum::Router::new()
        .route(
            "/echo/{id}",
            post(|Path(id): Path<String>, headers: HeaderMap, body: String| async move {
                // Says whether the secret arrived without echoing it (results are stored).
                let authorized = headers.get("authorization").is_some_and(|v| *v == format!("Bearer {SECRET}"));
                axum::Json(json!({ "id": id, "authorized": authorized, "body": serde_json::from_str::<Value>(&body).ok() }))
            }),
        )
        .route("/text", get(|| async { "plain text" }))
        .route(
            "/flaky/{id}",
            post(|State(calls): State<Calls>, Path(id): Path<String>| async move {
                match count(&calls, format!("flaky/{id}")) {
                    1 => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": "boom"}))).into_response(),
                    _ => axum::Json(json!({"ok": id})).into_response(),
                }
            }),
        )
        .route(
            "/limited/{id}",
            post(|State(calls): State<Calls>, Path(id): Path<String>| async move {
                match count(&calls, format!("limited/{id}")) {
                    1 => (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        axum::Json(json!({"error": "rate_limit_exceeded", "retryAfterMs": 0})),
                    )
                        .into_response(),
                    _ => axum::Json(json!({"ok": id})).into_response(),
                }
            }),
        )
        .route(
            "/missing",
            get(|State(calls): State<Calls>| async move {
                count(&calls, "missing".into());
                (StatusCode::NOT_FOUND, axum::Json(json!({"error": "not_found"})))
            }),
        )
        .route("/big", get(|| async { "x".repeat(10_000) }))
        .with_state(calls.clone());
    let addr = common::serve(router).await;
    (calls, format!("http://{addr}"))
}

fn memory(text: &str) -> InputSource {
    InputSource::Memory {
        name: "input.jsonl".into(),
        bytes: text.as_bytes().into(),
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        jitter: Jitter::None,
    }
}

const SECRET: &str = "s3cret-token-value";

fn handler(base_url: &str) -> HttpHandler {
    let template = RequestTemplate {
        base_url: Some(base_url.to_owned()),
        method: Some("POST".into()),
        path: Some("/echo/{id}".into()),
        headers: [("authorization".to_owned(), "Bearer ${API_TOKEN}".to_owned())].into(),
        body: None,
    };
    let options = HttpOptions {
        max_result_bytes: 1_000,
        ..HttpOptions::default()
    };
    HttpHandler::new(template, options)
        .unwrap()
        .with_secrets(Arc::new(|name| (name == "API_TOKEN").then(|| SECRET.to_owned())))
}

const INPUT: &str = r#"{"id": "a", "text": "hello"}
{"method": "GET", "path": "/text"}

{"path": "/flaky/f1", "body": {"x": 1}}
{"method": "GET", "path": "/missing"}
not json
{"method": "GET", "path": "/big"}
{"path": "/limited/l1"}
{"path": "/echo/b", "method": "YELL"}
"#;

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_calls_runs_and_exports_in_input_order(backend) {
        let (dir, engine) = common::engine(backend).await;
        let (calls, base_url) = api().await;
        let options = LoadOptions {
            retry: Some(retry()),
            ..LoadOptions::default()
        };
        let loaded = http::load(&engine, "calls", &memory(INPUT), &options)
            .await
            .unwrap();
        assert_eq!(
            (loaded.input.tasks, loaded.input.invalid, loaded.enqueued),
            (8, 2, 8)
        );
        assert!(!loaded.existed);
        assert!(loaded.input.invalid_reasons[0].starts_with("line 6: (line): not valid JSON"));
        assert!(loaded.input.invalid_reasons[1].starts_with("line 9: method:"));

        let mut events = engine.events();
        engine
            .worker(WorkerOptions::default().batch(loaded.batch.id).concurrency(4))
            .handler(http::HTTP_KIND, handler(&base_url))
            .run_until_idle()
            .await
            .unwrap();
        let mut saw_retrying = false;
        loop {
            match events.try_recv() {
                Ok(Event::Progress(p)) => saw_retrying |= p.stats.retrying > 0,
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        assert!(
            saw_retrying,
            "a progress event counted a task waiting for its retry"
        );

        let mut lines: Vec<ResultLine> = Vec::new();
        http::export(&engine, loaded.batch.id, |line| {
            lines.push(line.clone());
            Ok(())
        })
        .await
        .unwrap();
        let by_line: Vec<u64> = lines.iter().map(|l| l.line.unwrap()).collect();
        assert_eq!(
            by_line,
            [1, 2, 4, 5, 6, 7, 8, 9],
            "input order, blank line skipped"
        );
        let status = |i: usize| (lines[i].status, lines[i].http_status, lines[i].attempts);

        assert_eq!(status(0), (TaskStatus::Completed, Some(200), 1));
        let echo = lines[0].result.as_ref().unwrap();
        assert_eq!(
            echo["body"],
            json!({"id": "a", "text": "hello"}),
            "the payload is the body"
        );
        assert_eq!(echo["authorized"], true, "the secret reached the API");

        assert_eq!(status(1), (TaskStatus::Completed, Some(200), 1));
        assert_eq!(lines[1].result, Some(json!("plain text")));
        assert_eq!(status(2), (TaskStatus::Completed, Some(200), 2), "500 is retried");
        assert_eq!(
            status(3),
            (TaskStatus::Failed, Some(404), 1),
            "404 is not retried"
        );
        assert!(
            lines[3].error.as_deref().unwrap().contains("not_found"),
            "{:?}",
            lines[3].error
        );
        assert_eq!(status(4).0, TaskStatus::Failed);
        assert!(
            lines[4]
                .error
                .as_deref()
                .unwrap()
                .starts_with("(line): not valid JSON"),
            "the line number is the result's, not part of the error"
        );
        assert_eq!(status(5), (TaskStatus::Completed, Some(200), 1));
        assert!(lines[5].truncated);
        assert_eq!(
            lines[5].result.as_ref().and_then(Value::as_str).map(str::len),
            Some(1_000)
        );
        assert_eq!(status(6), (TaskStatus::Completed, Some(200), 2), "429 is retried");
        assert!(lines[7].error.as_deref().unwrap().starts_with("method:"));
        assert_eq!(calls.lock().unwrap()["missing"], 1);

        let report = engine.report(loaded.batch.id, 10).await.unwrap();
        assert_eq!(report.batch.status, BatchStatus::Completed);
        assert_eq!((report.batch.stats.completed, report.batch.stats.failed), (5, 3));
        assert_eq!(report.retries.completed_first_attempt, 3);
        assert_eq!(report.retries.completed_after_retries, 2);
        assert_eq!(report.retries.failed, 3);
        assert_eq!(report.retries.retries, 2);
        assert_eq!(report.retries.max_attempts_used, 2);
        assert_eq!(report.failures.iter().map(|g| g.count).sum::<i64>(), 3);
        let causes: Vec<(Option<u16>, &str)> = report
            .attempt_errors
            .iter()
            .map(|g| (g.http_status, g.message.as_str()))
            .collect();
        assert!(causes.contains(&(Some(500), "boom")), "{causes:?}");
        assert!(causes.contains(&(Some(429), "rate_limit_exceeded")), "{causes:?}");
        let timing = &report.timing;
        let (first, last) = (timing.first_start.unwrap(), timing.last_finish.unwrap());
        assert_eq!(timing.elapsed_ms, Some(last - first));
        assert!(timing.execution.unwrap().min_ms >= 0);
        assert!(timing.lifetime.unwrap().max_ms >= timing.execution.unwrap().max_ms);
        assert!(report.stuck.is_empty());
        engine.close().await;

        match backend {
            // Closing checkpointed the WAL into the file: this is every byte that was stored.
            common::Backend::Sqlite => {
                let stored = std::fs::read(dir.dir().join("tem.db")).unwrap();
                assert!(!dir.dir().join("tem.db-wal").exists());
                assert!(
                    !stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "the secret must never be written to the database"
                );
            }
            // Every row of every table, as text.
            common::Backend::Postgres => {
                let pool = sqlx::PgPool::connect(dir.url()).await.unwrap();
                let found: i64 = sqlx::query_scalar(
                    "SELECT (SELECT count(*) FROM task AS r WHERE r::text LIKE '%' || $1 || '%') \
                          + (SELECT count(*) FROM task_attempt AS r WHERE r::text LIKE '%' || $1 || '%') \
                          + (SELECT count(*) FROM batch AS r WHERE r::text LIKE '%' || $1 || '%')",
                )
                .bind(SECRET)
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(found, 0, "the secret must never be written to the database");
                pool.close().await;
            }
        }
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loading_again_continues_and_refuses_a_different_input(backend) {
        let (_dir, engine) = common::engine(backend).await;
        // Blank lines are not tasks, but they do count as input lines.
        let input: String = (0..20)
            .map(|i| format!("{{\"id\": {i}}}\n{}", if i % 7 == 0 { "\n" } else { "" }))
            .collect();
        let source = memory(&input);

        // A load cut short after three lines: the batch exists with part of its input.
        let summary = http::summarize(&source).unwrap();
        let batch = engine
            .create_batch(
                tem_core::NewBatch::new("resumable", http::HTTP_KIND).metadata(json!({ "input": summary })),
            )
            .await
            .unwrap();
        let first: Vec<NewTask> = input
            .lines()
            .enumerate()
            .filter(|(_, text)| !text.trim().is_empty())
            .take(3)
            .map(|(i, text)| {
                let stored = http::parse_line(i as u64 + 1, text);
                NewTask::from_json(http::HTTP_KIND, serde_json::to_string(&stored).unwrap())
            })
            .collect();
        engine.enqueue(batch.id, first).await.unwrap();

        let loaded = http::load(&engine, "resumable", &source, &LoadOptions::default())
            .await
            .unwrap();
        assert!(loaded.existed);
        assert_eq!((loaded.enqueued, loaded.batch.stats.total), (17, 20));
        let again = http::load(&engine, "resumable", &source, &LoadOptions::default())
            .await
            .unwrap();
        assert_eq!((again.enqueued, again.batch.stats.total), (0, 20));

        let tasks = engine
            .tasks(&tem_core::TaskFilter {
                batch: Some(batch.id),
                ..Default::default()
            })
            .await
            .unwrap();
        let lines: Vec<u64> = tasks
            .iter()
            .map(|t| serde_json::from_str::<http::StoredLine>(&t.payload).unwrap().line)
            .collect();
        let expected: Vec<u64> = input
            .lines()
            .enumerate()
            .filter(|(_, text)| !text.trim().is_empty())
            .map(|(i, _)| i as u64 + 1)
            .collect();
        assert_eq!(
            lines, expected,
            "every line once, in order, numbered as in the file"
        );

        let other = memory("{\"id\": 1}\n");
        match http::load(&engine, "resumable", &other, &LoadOptions::default()).await {
            Err(LoadError::DifferentInput { stored, given, .. }) => {
                assert_eq!((stored.tasks, given.tasks), (20, 1))
            }
            other => panic!("expected a different-input error, got {other:?}"),
        }
        assert!(matches!(
            http::load(&engine, "empty", &memory("\n\n"), &LoadOptions::default()).await,
            Err(LoadError::Empty { .. })
        ));
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_loaders_racing_on_one_batch_load_every_line_once(backend) {
        let (_dir, engine) = common::engine(backend).await;
        // Three chunks, so the loaders interleave.
        let input: String = (0..12_000).map(|i| format!("{{\"id\": {i}}}\n")).collect();
        let (a, b) = (memory(&input), memory(&input));
        let options = LoadOptions::default();
        let (first, second) = tokio::join!(
            http::load(&engine, "raced", &a, &options),
            http::load(&engine, "raced", &b, &options)
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(
            first.enqueued + second.enqueued,
            12_000,
            "each line enqueued by exactly one loader"
        );
        assert_eq!(second.batch.stats.total, 12_000);
        let mut after = None;
        let mut lines = Vec::new();
        loop {
            let page = engine
                .tasks(&tem_core::TaskFilter {
                    batch: Some(first.batch.id),
                    after,
                    limit: Some(5_000),
                    ..Default::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            lines.extend(
                page.iter()
                    .map(|t| serde_json::from_str::<http::StoredLine>(&t.payload).unwrap().line),
            );
        }
        assert_eq!(lines, (1..=12_000).collect::<Vec<u64>>());
    }
}

on_both_backends! {
    #[tokio::test]
    async fn a_rerun_with_another_request_is_refused_naming_what_changed(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let template = RequestTemplate {
            base_url: Some("https://api.test".into()),
            path: Some("/v1/{id}".into()),
            headers: [(
                "authorization".to_owned(),
                "Bearer literal-secret-value".to_owned(),
            )]
            .into(),
            ..RequestTemplate::default()
        };
        let options = LoadOptions {
            template: Some(template.clone()),
            ..LoadOptions::default()
        };
        let source = memory("{\"id\": 1}\n");
        let loaded = http::load(&engine, "shaped", &source, &options).await.unwrap();
        let metadata = serde_json::to_string(&loaded.batch.metadata).unwrap();
        assert!(
            !metadata.contains("literal-secret-value"),
            "header values are never stored: {metadata}"
        );

        // The token may change between runs; where the calls go may not.
        let rotated = RequestTemplate {
            headers: [("Authorization".to_owned(), "Bearer another-value".to_owned())].into(),
            ..template.clone()
        };
        let options = LoadOptions {
            template: Some(rotated),
            ..LoadOptions::default()
        };
        http::load(&engine, "shaped", &source, &options).await.unwrap();
        let moved = RequestTemplate {
            base_url: Some("https://elsewhere.test".into()),
            method: Some("PUT".into()),
            ..template
        };
        let options = LoadOptions {
            template: Some(moved),
            ..LoadOptions::default()
        };
        match http::load(&engine, "shaped", &source, &options).await {
            Err(LoadError::DifferentRequest { fields, .. }) => assert_eq!(fields, ["base_url", "method"]),
            other => panic!("expected a different-request error, got {other:?}"),
        }
    }
}
