//! `tem run-batch` and `tem batch …` as a user runs them: the real binary against the real mock
//! server (or an echo API) on 127.0.0.1, a real SQLite file, real signals.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use mock_server::{Algorithm, MockServer, ServiceConfig};
use serde_json::Value;
use tem_core::{Engine, EngineOptions, TaskFilter, TaskStatus};
use tem_e2e::binary::tem;
use tem_e2e::{echo, pacing};
use tokio::process::{Child, Command};

/// `tem ARGS` in `dir`, with no TEM_* settings leaking in from the test's environment.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(tem());
    command
        .current_dir(dir)
        .args(args)
        .env_remove("TEM_CONFIG")
        .env_remove("TEM_DB")
        .env_remove("TEM_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `tem ARGS` to its end (bounded).
async fn run(dir: &Path, args: &[&str]) -> Output {
    finish(command(dir, args).spawn().expect("start tem")).await
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("tem finished in time")
        .expect("tem output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_input(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write input");
    path
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read results")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON result line"))
        .collect()
}

/// Waits (bounded) until `ready` holds, checking every 10 ms.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The ids of completed tasks (their `id` payload field), read straight from the database.
async fn completed_ids(db: &Path) -> HashSet<String> {
    let options = EngineOptions {
        create_if_missing: false,
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(&db.display().to_string(), options)
        .await
        .expect("open db");
    let mut ids = HashSet::new();
    let mut after = None;
    loop {
        let filter = TaskFilter {
            status: Some(TaskStatus::Completed),
            after,
            limit: Some(500),
            ..TaskFilter::default()
        };
        let tasks = engine.tasks(&filter).await.expect("tasks");
        let Some(last) = tasks.last() else { break };
        after = Some(last.id);
        for task in &tasks {
            let payload: Value = serde_json::from_str(&task.payload).expect("payload");
            ids.insert(payload["payload"]["id"].as_str().expect("an id").to_owned());
        }
    }
    engine.close().await;
    ids
}

fn item_lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"id": "i{i}", "n": {i}}}"#)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_completes_in_input_order_without_exceeding_the_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = ServiceConfig::new(100, 20, 1_000);
    service.rate_limit.algorithm = Algorithm::SlidingWindow;
    service.delay_ms = [0, 2];
    let api = MockServer::builder()
        .single(service)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let input = write_input(dir.path(), "calls.jsonl", &item_lines(54));

    let output = run(
        dir.path(),
        &[
            "run-batch",
            input.to_str().unwrap(),
            "--base-url",
            &api.url(),
            "--path",
            "/",
            "--rate",
            "18/s",
            "--output",
            "results.jsonl",
            "--quiet",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "stderr: {}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "--quiet prints nothing on success");

    let stats = api.stats(mock_server::DEFAULT_SERVICE).unwrap();
    assert_eq!(stats.requests, 54, "{stats:?}");
    assert_eq!(
        stats.by_status.get("429"),
        None,
        "the rate limit was never hit: {stats:?}"
    );
    // The pacing, from when the calls arrived (refused ones included), at every window start.
    let arrivals = api.arrivals(mock_server::DEFAULT_SERVICE).unwrap();
    assert_eq!(arrivals.len(), 54, "every call arrived once");
    let busiest = pacing::most_in_any_window(&arrivals, Duration::from_millis(stats.window_ms));
    assert!(
        busiest <= 18,
        "--rate 18/s let {busiest} calls arrive within one second"
    );

    let results = read_jsonl(&dir.path().join("results.jsonl"));
    assert_eq!(results.len(), 54);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["line"], i as u64 + 1, "input order");
        assert_eq!(result["status"], "completed");
        assert_eq!(result["http_status"], 200);
        assert_eq!(result["attempts"], 1);
        assert_eq!(result["result"]["data"], "ok", "the response body is the result");
    }
    assert!(
        dir.path().join("tem.db").exists(),
        "the default database is ./tem.db"
    );
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_secrets_and_the_batch_commands() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "tok-5ecret-123";
    let (api, url) = echo::start(&format!("Bearer {secret}"), Duration::ZERO).await;
    let lines = [
        r#"{"id": "a1", "text": "hello"}"#.to_owned(),
        r#"{"method": "GET", "path": "/items/x9"}"#.to_owned(),
        r#"{"id": "a/2", "text": "bye"}"#.to_owned(),
    ];
    let input = write_input(dir.path(), "prompts.jsonl", &lines);
    let mut child = command(
        dir.path(),
        &[
            "run-batch",
            input.to_str().unwrap(),
            "--base-url",
            &url,
            "--path",
            "/items/{id}",
            "--body",
            r#"{"input": "{{text}}", "n": 1}"#,
            "-H",
            "authorization: Bearer ${API_TOKEN}",
            "--db",
            "calls.db",
            "-o",
            "out.jsonl",
            "--json",
            "--log",
            "debug",
        ],
    );
    child.env("API_TOKEN", secret);
    let output = finish(child.spawn().unwrap()).await;
    assert_eq!(output.status.code(), Some(0), "stderr: {}", text(&output.stderr));
    assert!(
        !text(&output.stderr).contains(secret),
        "the secret is not logged, even at debug"
    );
    let document: Value = serde_json::from_slice(&output.stdout).expect("--json prints one JSON document");
    assert_eq!(document["outcome"], "succeeded");
    assert_eq!(
        document["report"]["batch"]["code"], "prompts",
        "named after the input file"
    );
    assert_eq!(document["report"]["batch"]["stats"]["completed"], 3);

    let results = read_jsonl(&dir.path().join("out.jsonl"));
    let echoed: Vec<&Value> = results.iter().map(|r| &r["result"]).collect();
    assert_eq!(echoed[0]["id"], "a1");
    assert_eq!(echoed[0]["method"], "POST");
    assert_eq!(echoed[0]["body"], serde_json::json!({"input": "hello", "n": 1}));
    assert_eq!(echoed[0]["authorized"], true, "the secret was sent");
    assert_eq!(
        (&echoed[1]["id"], &echoed[1]["method"]),
        (&"x9".into(), &"GET".into())
    );
    assert_eq!(echoed[1]["body"], Value::Null);
    assert_eq!(echoed[2]["id"], "a/2", "path fields are percent-encoded");
    assert_eq!(api.calls().len(), 3);
    for file in ["calls.db", "calls.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret never reaches {file}"
        );
    }

    let list = run(dir.path(), &["batch", "list", "--db", "calls.db", "--json"]).await;
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["code"], "prompts");
    let show = run(
        dir.path(),
        &["batch", "show", "prompts", "--db", "calls.db", "--json"],
    )
    .await;
    assert_eq!(show.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(report["batch"]["status"], "completed");
    assert_eq!(report["retries"]["completed_first_attempt"], 3);
    let human = run(dir.path(), &["batch", "show", "prompts", "--db", "calls.db"]).await;
    assert!(
        text(&human.stdout).contains("throughput"),
        "{}",
        text(&human.stdout)
    );
    let export = run(dir.path(), &["batch", "export", "prompts", "--db", "calls.db"]).await;
    assert_eq!(
        text(&export.stdout),
        std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
        "export writes what --output wrote"
    );
    let failed = run(
        dir.path(),
        &[
            "batch", "tasks", "prompts", "--db", "calls.db", "--status", "failed", "--json",
        ],
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&failed.stdout).unwrap(),
        serde_json::json!([])
    );

    // The same command again: nothing is called twice.
    let same = [
        "run-batch",
        input.to_str().unwrap(),
        "--base-url",
        &url,
        "--path",
        "/items/{id}",
        "--body",
        r#"{"input": "{{text}}", "n": 1}"#,
        "-H",
        "authorization: Bearer ${API_TOKEN}",
        "--db",
        "calls.db",
        "--quiet",
    ];
    let mut again = command(dir.path(), &same);
    again.env("API_TOKEN", secret);
    let again = finish(again.spawn().unwrap()).await;
    assert_eq!(again.status.code(), Some(0), "stderr: {}", text(&again.stderr));
    assert_eq!(api.total(), 3);

    // Another request under the same code would send the rest elsewhere: refused, named.
    let mut changed = command(dir.path(), &same[..same.len() - 5]);
    changed.args(["--db", "calls.db", "--quiet"]);
    let changed = finish(changed.spawn().unwrap()).await;
    assert_eq!(changed.status.code(), Some(2));
    assert!(
        text(&changed.stderr).contains("different request (headers differ)"),
        "{}",
        text(&changed.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_rerun_calls_every_successful_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = echo::start("", Duration::from_millis(30)).await;
    let input = write_input(dir.path(), "work.jsonl", &item_lines(150));
    let args = [
        "run-batch",
        input.to_str().unwrap(),
        "--base-url",
        &url,
        "--path",
        "/items/{id}",
        "--concurrency",
        "4",
        "--lease",
        "2s",
        "--quiet",
    ];
    let mut first = command(dir.path(), &args).spawn().unwrap();
    until("40 calls", || api.total() >= 40).await;
    first.start_kill().unwrap(); // SIGKILL
    let killed = first.wait().await.unwrap();
    assert_eq!(killed.code(), None, "killed by a signal");

    let done_before = completed_ids(&dir.path().join("tem.db")).await;
    assert!(
        !done_before.is_empty() && done_before.len() < 150,
        "{} done",
        done_before.len()
    );
    let calls_before = api.calls();

    let rerun = run(dir.path(), &args).await;
    assert_eq!(rerun.status.code(), Some(0), "stderr: {}", text(&rerun.stderr));
    let calls = api.calls();
    assert_eq!(completed_ids(&dir.path().join("tem.db")).await.len(), 150);
    for id in &done_before {
        assert_eq!(calls_before[id], 1, "{id} was called once before the kill");
        assert_eq!(
            calls[id], 1,
            "{id} succeeded before the kill and was not called again"
        );
    }
    assert_eq!(calls.len(), 150, "every task was called");
    // Only tasks the killed run held could run twice: in flight, or finished but not yet
    // committed. A worker holds at most 2 x concurrency (4) leased tasks, those claimed ahead
    // included, and under load all of them may be finished and waiting for their commit.
    let repeated = calls.values().filter(|n| **n > 1).count();
    assert!(
        repeated <= 2 * 4,
        "only tasks the killed run held ran twice ({repeated})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_in_flight_calls_and_the_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = echo::start("", Duration::from_millis(30)).await;
    let input = write_input(dir.path(), "work.jsonl", &item_lines(120));
    let args = [
        "run-batch",
        input.to_str().unwrap(),
        "--base-url",
        &url,
        "--path",
        "/items/{id}",
        "--concurrency",
        "4",
    ];
    let child = command(dir.path(), &args).spawn().unwrap();
    until("20 calls", || api.total() >= 20).await;
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopped = finish(child).await;
    assert_eq!(
        stopped.status.code(),
        Some(1),
        "stderr: {}",
        text(&stopped.stderr)
    );
    let stderr = text(&stopped.stderr);
    assert!(stderr.contains("rerun the same command"), "{stderr}");

    // Drained: nothing left running, every call made so far was recorded as done.
    let done = completed_ids(&dir.path().join("tem.db")).await;
    assert_eq!(
        done.len() as u32,
        api.total(),
        "every call made finished and was recorded"
    );
    let rerun = run(dir.path(), &args).await;
    assert_eq!(rerun.status.code(), Some(0), "stderr: {}", text(&rerun.stderr));
    assert_eq!(api.total(), 120, "no call was made twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_from_another_process_then_resume_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = echo::start("", Duration::from_millis(20)).await;
    let input = write_input(dir.path(), "slow.jsonl", &item_lines(150));
    let args = [
        "run-batch",
        input.to_str().unwrap(),
        "--base-url",
        &url,
        "--path",
        "/items/{id}",
        "--concurrency",
        "2",
        "--quiet",
    ];
    let running = command(dir.path(), &args).spawn().unwrap();
    until("10 calls", || api.total() >= 10).await;
    let interrupt = run(
        dir.path(),
        &["batch", "interrupt", "slow", "-m", "checking the output"],
    )
    .await;
    assert_eq!(
        interrupt.status.code(),
        Some(0),
        "stderr: {}",
        text(&interrupt.stderr)
    );
    let stopped = finish(running).await;
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped.stderr).contains("--resume"),
        "{}",
        text(&stopped.stderr)
    );

    // A stopped batch is measured to its last finish, not to whenever it is looked at.
    let show = run(dir.path(), &["batch", "show", "slow", "--json"]).await;
    let report: Value = serde_json::from_slice(&show.stdout).unwrap();
    let timing = &report["timing"];
    assert_eq!(
        timing["elapsed_ms"].as_i64().unwrap(),
        timing["last_finish"].as_i64().unwrap() - timing["first_start"].as_i64().unwrap()
    );
    let again = run(dir.path(), &args).await;
    assert_eq!(
        again.status.code(),
        Some(1),
        "an interrupted batch does not run without --resume"
    );
    assert!(
        text(&again.stderr).contains("checking the output"),
        "{}",
        text(&again.stderr)
    );

    let mut resumed_args = args.to_vec();
    resumed_args.push("--resume");
    let before = api.total();
    let resumed = command(dir.path(), &resumed_args).spawn().unwrap();
    // Watch once the batch runs again (before that it is still, rightly, interrupted).
    until("the resumed run's first call", || api.total() > before).await;
    let watch = run(
        dir.path(),
        &["batch", "watch", "slow", "--interval", "100ms", "--json"],
    )
    .await;
    assert_eq!(watch.status.code(), Some(0), "stderr: {}", text(&watch.stderr));
    let last = text(&watch.stdout)
        .lines()
        .last()
        .map(str::to_owned)
        .unwrap_or_default();
    let report: Value = serde_json::from_str(&last).expect("watch ends with the report");
    assert_eq!(report["batch"]["status"], "completed");
    assert_eq!(report["interruptions"][0]["message"], "checking the output");
    let resumed = finish(resumed).await;
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "stderr: {}",
        text(&resumed.stderr)
    );
    assert_eq!(api.total(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_named_and_the_other_lines_run() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = echo::start("", Duration::ZERO).await;
    let lines = [
        r#"{"id": "ok1"}"#.to_owned(),
        "{not json".to_owned(),
        r#"{"path": "/items/b", "method": "YELL"}"#.to_owned(),
        r#"{"text": "no id"}"#.to_owned(),
        r#"{"id": "ok2"}"#.to_owned(),
    ];
    let input = write_input(dir.path(), "mixed.jsonl", &lines);
    let output = run(
        dir.path(),
        &[
            "run-batch",
            input.to_str().unwrap(),
            "--base-url",
            &url,
            "--path",
            "/items/{id}",
            "--output",
            "out.jsonl",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "some tasks failed");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 2: (line): not valid JSON"), "{stderr}");
    assert!(stderr.contains("line 3: method: `YELL`"), "{stderr}");
    assert!(
        stderr.contains("tem batch retry-failed mixed"),
        "says what to do next: {stderr}"
    );

    let results = read_jsonl(&dir.path().join("out.jsonl"));
    let statuses: Vec<&str> = results.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "failed", "failed", "failed", "completed"]);
    let error = results[3]["error"].as_str().unwrap();
    assert_eq!(results[3]["line"], 4);
    assert!(
        error.starts_with("id: the path template needs this payload field"),
        "{error}"
    );
    assert_eq!(
        results[1]["attempts"], 1,
        "a bad line fails at once, without retries"
    );
    assert_eq!(api.total(), 2);
}

#[tokio::test]
async fn usage_errors_exit_2_and_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["batch", "list", "--db", "missing.db"][..],
        &["batch", "show", "x", "--db", "missing.db"][..],
        &["batch", "export", "x", "--db", "missing.db"][..],
    ] {
        let output = run(dir.path(), args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            text(&output.stderr).contains("missing.db does not exist"),
            "{}",
            text(&output.stderr)
        );
    }
    assert!(!dir.path().join("missing.db").exists(), "no database was created");

    let input = write_input(dir.path(), "in.jsonl", &item_lines(1));
    let cases: [(&[&str], &str); 4] = [
        (&["run-batch", "-", "--base-url", "http://127.0.0.1:9"], "--batch"),
        (
            &[
                "run-batch",
                "in.jsonl",
                "--base-url",
                "http://127.0.0.1:9",
                "--rate",
                "lots",
            ],
            "--rate",
        ),
        (
            &[
                "run-batch",
                "in.jsonl",
                "--base-url",
                "http://127.0.0.1:9",
                "-H",
                "x-key ${NOPE_NOT_SET}",
            ],
            "--header",
        ),
        (
            &["run-batch", "nowhere.jsonl", "--base-url", "http://127.0.0.1:9"],
            "nowhere.jsonl",
        ),
    ];
    for (args, named) in cases {
        let output = run(dir.path(), args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains(named),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    let unset = run(
        dir.path(),
        &[
            "run-batch",
            "in.jsonl",
            "--base-url",
            "http://127.0.0.1:9",
            "-H",
            "x-key: ${NOPE_NOT_SET}",
        ],
    )
    .await;
    assert_eq!(unset.status.code(), Some(2));
    assert!(
        text(&unset.stderr).contains("`NOPE_NOT_SET` is not set"),
        "{}",
        text(&unset.stderr)
    );
    let _ = input;
    assert!(
        !dir.path().join("tem.db").exists(),
        "a usage error creates no database"
    );
}
