//! What `tem run-batch --help` and the README promise, each driven through the real binary: a
//! second Ctrl-C aborts, SIGTERM drains, `tem batch resume|cancel|retry-failed`, the `--json`
//! document of failed, interrupted and cancelled runs, a redirect to another origin refused,
//! and `--cost-field` spending a `--budget`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mock_server::{Algorithm, MockServer, ServiceConfig};
use serde_json::Value;
use tem_core::{Engine, EngineOptions, Task, TaskFilter, TaskStatus};
use tem_e2e::cli::{command, finish, item_lines, run, signal, text, until, write_input};
use tem_e2e::{echo, pacing};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

async fn open(db: &Path) -> Engine {
    let options = EngineOptions {
        create_if_missing: false,
        ..EngineOptions::default()
    };
    Engine::open_with(&db.display().to_string(), options)
        .await
        .expect("open db")
}

async fn all_tasks(db: &Path) -> Vec<Task> {
    let engine = open(db).await;
    let filter = TaskFilter {
        limit: Some(1_000),
        ..TaskFilter::default()
    };
    let tasks = engine.tasks(&filter).await.expect("tasks");
    engine.close().await;
    tasks
}

fn count(tasks: &[Task], status: TaskStatus) -> usize {
    tasks.iter().filter(|t| t.status == status).count()
}

/// Collects a running `tem`'s stderr lines as they come, so a test can wait for one.
fn stderr_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut reader = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn said(lines: &Mutex<Vec<String>>, what: &str) -> bool {
    lines.lock().unwrap().iter().any(|l| l.contains(what))
}

fn json_document(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| panic!("one JSON document ({e}): {}", text(stdout)))
}

fn echo_args<'a>(input: &'a str, url: &'a str, concurrency: &'a str) -> Vec<&'a str> {
    vec![
        "run-batch",
        input,
        "--base-url",
        url,
        "--path",
        "/items/{id}",
        "--concurrency",
        concurrency,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_aborts_the_calls_in_flight_and_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    // Calls that outlast the test's own deadline: only an abort ends this run.
    let (api, url) = echo::start("", Duration::from_secs(600)).await;
    let input = write_input(dir.path(), "slow.jsonl", &item_lines(10));
    let input = input.to_str().unwrap();
    let mut child = command(dir.path(), &echo_args(input, &url, "4")).spawn().unwrap();
    let stderr = stderr_lines(&mut child);
    let pid = child.id().unwrap();
    until("four calls in flight", || api.total() >= 4).await;
    signal(pid, "INT");
    until("the first Ctrl-C's note", || {
        said(&stderr, "stopping: no new calls")
    })
    .await;
    signal(pid, "INT");
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(said(&stderr, "aborting"), "{:?}", stderr.lock().unwrap());
    assert!(
        said(&stderr, "rerun the same command"),
        "{:?}",
        stderr.lock().unwrap()
    );

    // The aborted calls went back uncharged: nothing ran to an end, nothing is still leased.
    let tasks = all_tasks(&dir.path().join("tem.db")).await;
    assert_eq!(count(&tasks, TaskStatus::Pending), 10, "{tasks:?}");
    assert!(
        tasks.iter().all(|t| t.attempt == 0),
        "aborted attempts are not charged: {tasks:?}"
    );
    assert_eq!(api.total(), 4, "nothing started after the first Ctrl-C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_calls_in_flight_and_starts_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = echo::start("", Duration::from_millis(500)).await;
    let input = write_input(dir.path(), "work.jsonl", &item_lines(40));
    let input = input.to_str().unwrap();
    let mut child = command(dir.path(), &echo_args(input, &url, "4")).spawn().unwrap();
    let stderr = stderr_lines(&mut child);
    until("four calls in flight", || api.total() >= 4).await;
    signal(child.id().unwrap(), "TERM");
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(1), "{:?}", stderr.lock().unwrap());
    assert!(
        said(&stderr, "stopping: no new calls"),
        "{:?}",
        stderr.lock().unwrap()
    );
    assert!(
        said(&stderr, "rerun the same command"),
        "{:?}",
        stderr.lock().unwrap()
    );

    let tasks = all_tasks(&dir.path().join("tem.db")).await;
    let done = count(&tasks, TaskStatus::Completed);
    assert_eq!(
        done as u32,
        api.total(),
        "every call made finished and was recorded"
    );
    assert_eq!(count(&tasks, TaskStatus::Running), 0, "{tasks:?}");
    assert_eq!(
        count(&tasks, TaskStatus::Pending),
        40 - done,
        "the rest was never started"
    );
    assert!(done < 40, "stopped early: {done}");
}

/// An API at `/items/{id}` that answers 400 while `failing` is set, 200 otherwise.
#[derive(Clone, Default)]
struct Switch {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

async fn switched(State(api): State<Switch>, UrlPath(id): UrlPath<String>) -> Response {
    api.calls.fetch_add(1, Ordering::SeqCst);
    if api.failing.load(Ordering::SeqCst) {
        (
            StatusCode::BAD_REQUEST,
            format!("{{\"error\": \"no {id} today\"}}"),
        )
            .into_response()
    } else {
        (StatusCode::OK, format!("{{\"id\": \"{id}\"}}")).into_response()
    }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_in_json_then_retry_failed_and_the_rerun_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let api = Switch::default();
    api.failing.store(true, Ordering::SeqCst);
    let url = serve(
        axum::Router::new()
            .route("/items/{id}", axum::routing::any(switched))
            .with_state(api.clone()),
    )
    .await;
    let input = write_input(dir.path(), "jobs.jsonl", &item_lines(5));
    let mut args = echo_args(input.to_str().unwrap(), &url, "2");
    args.push("--json");

    let failed = run(dir.path(), &args).await;
    assert_eq!(failed.status.code(), Some(1), "stderr: {}", text(&failed.stderr));
    let document = json_document(&failed.stdout);
    assert_eq!(document["outcome"], "failed", "{document}");
    assert_eq!(document["exit_code"], 1);
    assert!(
        document["advice"].as_str().unwrap().contains("retry-failed jobs"),
        "{document}"
    );
    assert_eq!(document["report"]["batch"]["stats"]["failed"], 5, "{document}");
    assert_eq!(api.calls.load(Ordering::SeqCst), 5, "a 400 is not retried");

    // --help: "Put a batch's failed tasks back to pending with fresh attempts."
    let retry = run(dir.path(), &["batch", "retry-failed", "jobs", "--json"]).await;
    assert_eq!(retry.status.code(), Some(0), "stderr: {}", text(&retry.stderr));
    let tasks = all_tasks(&dir.path().join("tem.db")).await;
    assert_eq!(count(&tasks, TaskStatus::Pending), 5, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.attempt == 0), "fresh attempts: {tasks:?}");

    api.failing.store(false, Ordering::SeqCst);
    let rerun = run(dir.path(), &args).await;
    assert_eq!(rerun.status.code(), Some(0), "stderr: {}", text(&rerun.stderr));
    let document = json_document(&rerun.stdout);
    assert_eq!(document["outcome"], "succeeded", "{document}");
    assert_eq!(document["report"]["batch"]["stats"]["completed"], 5, "{document}");
    assert_eq!(document["report"]["batch"]["stats"]["failed"], 0, "{document}");
    assert_eq!(api.calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_in_json_then_batch_resume_and_the_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = echo::start("", Duration::from_millis(50)).await;
    let input = write_input(dir.path(), "long.jsonl", &item_lines(60));
    let mut args = echo_args(input.to_str().unwrap(), &url, "1");
    args.push("--json");
    let running = command(dir.path(), &args).spawn().unwrap();
    until("the first calls", || api.total() >= 3).await;
    let interrupt = run(
        dir.path(),
        &["batch", "interrupt", "long", "-m", "a look at the output"],
    )
    .await;
    assert_eq!(
        interrupt.status.code(),
        Some(0),
        "stderr: {}",
        text(&interrupt.stderr)
    );
    let stopped = finish(running).await;
    assert_eq!(
        stopped.status.code(),
        Some(1),
        "stderr: {}",
        text(&stopped.stderr)
    );
    let document = json_document(&stopped.stdout);
    assert_eq!(document["outcome"], "interrupted", "{document}");
    assert_eq!(document["exit_code"], 1);
    assert!(
        document["advice"]
            .as_str()
            .unwrap()
            .contains("tem batch resume long"),
        "{document}"
    );
    assert_eq!(document["report"]["batch"]["status"], "interrupted", "{document}");
    assert_eq!(
        document["report"]["interruptions"][0]["message"],
        "a look at the output"
    );
    let stats = &document["report"]["batch"]["stats"];
    let done = stats["completed"].as_u64().unwrap();
    assert_eq!(
        done,
        u64::from(api.total()),
        "the report counts what was called: {document}"
    );
    assert_eq!(stats["pending"].as_u64().unwrap(), 60 - done, "{document}");

    // --help: "Continue an interrupted batch"; then the same command runs it (no --resume).
    let resume = run(dir.path(), &["batch", "resume", "long", "--json"]).await;
    assert_eq!(resume.status.code(), Some(0), "stderr: {}", text(&resume.stderr));
    let resumed = json_document(&resume.stdout);
    assert_eq!(resumed["reactivated"], true, "{resumed}");
    let rerun = run(dir.path(), &args).await;
    assert_eq!(rerun.status.code(), Some(0), "stderr: {}", text(&rerun.stderr));
    assert_eq!(json_document(&rerun.stdout)["outcome"], "succeeded");
    assert_eq!(api.total(), 60, "every call once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_in_json_and_its_pending_tasks_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = echo::start("", Duration::from_millis(50)).await;
    let input = write_input(dir.path(), "gone.jsonl", &item_lines(60));
    let mut args = echo_args(input.to_str().unwrap(), &url, "1");
    args.push("--json");
    let running = command(dir.path(), &args).spawn().unwrap();
    until("the first calls", || api.total() >= 3).await;
    let cancel = run(dir.path(), &["batch", "cancel", "gone", "--json"]).await;
    assert_eq!(cancel.status.code(), Some(0), "stderr: {}", text(&cancel.stderr));
    let cancelled = json_document(&cancel.stdout)["cancelled"].as_u64().unwrap();
    let stopped = finish(running).await;
    assert_eq!(
        stopped.status.code(),
        Some(1),
        "stderr: {}",
        text(&stopped.stderr)
    );
    let document = json_document(&stopped.stdout);
    assert_eq!(document["outcome"], "cancelled", "{document}");
    assert_eq!(document["exit_code"], 1);
    assert_eq!(document["report"]["batch"]["status"], "cancelled", "{document}");
    let stats = &document["report"]["batch"]["stats"];
    assert_eq!(stats["cancelled"].as_u64().unwrap(), cancelled, "{document}");
    assert_eq!(
        stats["completed"].as_u64().unwrap(),
        u64::from(api.total()),
        "{document}"
    );
    assert_eq!(stats["completed"].as_u64().unwrap() + cancelled, 60, "{document}");

    // --help: "its pending tasks will never run" — not by a rerun either.
    let calls = api.total();
    let rerun = run(dir.path(), &args).await;
    assert_eq!(rerun.status.code(), Some(1));
    assert_eq!(json_document(&rerun.stdout)["outcome"], "cancelled");
    assert_eq!(api.total(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_refused_and_the_other_server_never_called() {
    let dir = tempfile::tempdir().unwrap();
    let (elsewhere, elsewhere_url) = echo::start("", Duration::ZERO).await;
    let to = elsewhere_url.clone();
    let redirecting = serve(axum::Router::new().route(
        "/items/{id}",
        axum::routing::any(move |UrlPath(id): UrlPath<String>| {
            let to = to.clone();
            async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", format!("{to}/items/{id}"))],
                )
            }
        }),
    ))
    .await;
    let input = write_input(dir.path(), "moved.jsonl", &item_lines(3));
    let mut args = echo_args(input.to_str().unwrap(), &redirecting, "2");
    args.extend(["-H", "x-api-key: k-secret", "--json"]);
    let output = run(dir.path(), &args).await;
    assert_eq!(output.status.code(), Some(1), "stderr: {}", text(&output.stderr));
    assert_eq!(elsewhere.total(), 0, "the other origin was never called");
    let tasks = all_tasks(&dir.path().join("tem.db")).await;
    assert_eq!(count(&tasks, TaskStatus::Failed), 3, "{tasks:?}");
    for task in &tasks {
        let error = task.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains("redirected to") && error.contains(&elsewhere_url),
            "{error}"
        );
        assert_eq!(task.attempt, 1, "refused at once, not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_field_spends_each_lines_cost_against_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = ServiceConfig::new(100, 1_000_000, 1_000);
    service.rate_limit.algorithm = Algorithm::SlidingWindow;
    let api = MockServer::builder()
        .single(service)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    // Each line costs 40 of a budget of 100 per 2 s; `n` is a decoy field.
    let lines: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"id": "c{i}", "n": 1, "tokens": 40}}"#))
        .collect();
    let input = write_input(dir.path(), "costly.jsonl", &lines);
    let args = [
        "run-batch",
        input.to_str().unwrap(),
        "--base-url",
        &api.url(),
        "--path",
        "/",
        "--budget",
        "100/2s",
        "--cost-field",
        "tokens",
        "--quiet",
    ];
    let output = run(dir.path(), &args).await;
    assert_eq!(output.status.code(), Some(0), "stderr: {}", text(&output.stderr));
    let tasks = all_tasks(&dir.path().join("tem.db")).await;
    assert!(
        tasks.iter().all(|t| t.cost == 40),
        "the named field is the cost: {tasks:?}"
    );

    let arrivals = api.arrivals(mock_server::DEFAULT_SERVICE).unwrap();
    assert_eq!(arrivals.len(), 6);
    // A budget is a debt (README): at most one task's cost over it in any window, so 3 × 40.
    let busiest = pacing::most_in_any_window(&arrivals, Duration::from_secs(2));
    assert!(
        busiest * 40 <= 100 + 40,
        "{busiest} calls of cost 40 within 2 s: {arrivals:?}"
    );
    // Spent, not ignored: 240 units at 50 per second put the sixth call 4 s after the first.
    let mut sorted = arrivals.clone();
    sorted.sort_unstable();
    assert!(
        sorted[5] - sorted[0] >= Duration::from_millis(3_900),
        "the budget paced the calls: {arrivals:?}"
    );
    api.stop().await.unwrap();
}
