//! `tem mock-server` as a user runs it: it prints where it listens, enforces its limits, reads a
//! config file (in snake_case or camelCase), serves the Teraslice mock, refuses bad input naming
//! the flag or key (exit 2), lets single-mode flags imply single mode, answers any path in single
//! mode, echoes requests, takes durations, and exits 0 after `POST /shutdown` or SIGTERM.

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;
use tem_e2e::binary::{start_server, tem};
use tem_e2e::cli::signal;

/// Starts `tem mock-server ARGS` and returns it with the URL it printed.
fn start(args: &[&str]) -> (Child, String) {
    start_server(std::iter::once("mock-server").chain(args.iter().copied()))
}

/// Waits (bounded) for the process to exit; returns its exit code.
fn exit_code(mut child: Child) -> i32 {
    for _ in 0..500 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("tem mock-server did not exit within 5 s");
}

#[tokio::test]
async fn single_mode_enforces_its_limit_and_exits_0_after_shutdown() {
    let (child, url) = start(&[
        "--mode",
        "single",
        "--port",
        "0",
        "--limit",
        "3",
        "--window-ms",
        "60000",
        "--delay-ms",
        "0,0",
    ]);
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            http.get(format!("{url}/"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let stats: Value = http
        .get(format!("{url}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["maxAcceptedInWindow"], 3);
    let answer = http.post(format!("{url}/shutdown")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(exit_code(child), 0);
}

#[tokio::test]
async fn services_come_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    std::fs::write(
        &path,
        r#"
[services.llm]
maxConcurrency = 2
rateLimit = { limit = 1, windowMs = 60000, algorithm = "sliding_window" }
delayMs = [0, 0]

[services.flaky]
maxConcurrency = 5
rateLimit = { limit = 100, windowMs = 1000 }
delayMs = [0, 0]
errorSimulation = { rate = 1.0, statusCode = 502, errorMessage = "bad gateway" }
"#,
    )
    .unwrap();
    let (child, url) = start(&["--config", path.to_str().unwrap(), "--port", "0"]);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{url}/mock/llm")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.get(format!("{url}/mock/llm")).send().await.unwrap().status(),
        429
    );
    let flaky = http.post(format!("{url}/mock/flaky")).send().await.unwrap();
    assert_eq!(flaky.status(), 502);
    http.post(format!("{url}/shutdown")).send().await.unwrap();
    assert_eq!(exit_code(child), 0);
}

#[tokio::test]
async fn the_teraslice_mock_serves_the_cluster() {
    let (child, url) = start(&["--teraslice", "--port", "0", "--seed", "7"]);
    let executions: Value = reqwest::get(format!("{url}/v1/ex?size=1000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!executions.as_array().unwrap().is_empty());
    let unknown = reqwest::get(format!("{url}/v1/jobs/nope")).await.unwrap();
    assert_eq!(unknown.status(), 404);
    reqwest::Client::new()
        .post(format!("{url}/shutdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(exit_code(child), 0, "shutdown works for the Teraslice mock too");
}

#[test]
fn bad_input_names_the_flag_or_field() {
    let output = Command::new(tem())
        .args([
            "mock-server",
            "--mode",
            "single",
            "--delay-ms",
            "50,10",
            "--port",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a bad flag is a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--delay-ms"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        r#"{"services": {"x": {"maxConcurrency": 1, "rateLimit": {"limit": 1, "windowMs": 0}}}}"#,
    )
    .unwrap();
    let output = Command::new(tem())
        .args(["mock-server", "--config", path.to_str().unwrap(), "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "a bad config value is a usage error"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("services.x.rateLimit.windowMs"), "{stderr}");

    let output = Command::new(tem())
        .args(["mock-server", "--mode", "sideways"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "usage errors exit 2");
}

#[tokio::test]
async fn kind_openai_serves_the_providers_routes_at_the_root_with_its_limits() {
    let (child, url) = start(&[
        "--kind",
        "openai",
        "--rpm",
        "2",
        "--tpm",
        "100000",
        "--first-token-ms",
        "0,0",
        "--per-token-ms",
        "0,0",
        "--port",
        "0",
    ]);
    let http = reqwest::Client::new();
    let body = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "hi"}]});
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = http
            .post(format!("{url}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let remaining = response.headers()["x-ratelimit-remaining-requests"]
            .to_str()
            .unwrap()
            .to_owned();
        seen.push((response.status().as_u16(), remaining));
    }
    let expected: Vec<(u16, String)> = vec![(200, "1".into()), (200, "0".into()), (429, "0".into())];
    assert_eq!(seen, expected);
    let models: Value = http
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    http.post(format!("{url}/shutdown")).send().await.unwrap();
    assert_eq!(exit_code(child), 0);
}

#[test]
fn llm_flags_are_checked_naming_the_flag() {
    for (args, flag) in [
        (&["--kind", "anthropic", "--tpm", "5"][..], "--tpm"),
        (&["--kind", "openai", "--rpm", "0"][..], "--rpm"),
        (&["--rpm", "5"][..], "--kind"),
    ] {
        let output = Command::new(tem())
            .arg("mock-server")
            .args(args)
            .args(["--port", "0"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

/// Runs `tem mock-server ARGS` that must refuse to start; returns its exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(tem())
        .arg("mock-server")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn statuses(http: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(http.get(url).send().await.unwrap().status().as_u16());
    }
    seen
}

async fn shut_down(child: Child, url: &str) {
    reqwest::Client::new()
        .post(format!("{url}/shutdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(exit_code(child), 0);
}

#[tokio::test]
async fn single_mode_flags_imply_single_mode_and_are_refused_where_another_mode_is_asked() {
    // No --mode: --limit means single mode, not a multi-mode server answering `/` with 400.
    let (child, url) = start(&[
        "--limit",
        "1",
        "--window-ms",
        "60000",
        "--delay-ms",
        "0,0",
        "--port",
        "0",
    ]);
    let http = reqwest::Client::new();
    assert_eq!(statuses(&http, &format!("{url}/"), 2).await, [200, 429]);
    shut_down(child, &url).await;

    let (code, stderr) = refused(&["--mode", "multi", "--limit", "3", "--port", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--limit") && stderr.contains("--mode multi"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multi.toml");
    std::fs::write(&path, "mode = \"multi\"\n").unwrap();
    let (code, stderr) = refused(&["--config", path.to_str().unwrap(), "--echo", "--port", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--echo") && stderr.contains("--mode single"),
        "{stderr}"
    );

    let (code, stderr) = refused(&["--teraslice", "--delay", "0ms", "--port", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--delay") && stderr.contains("--with-teraslice"),
        "{stderr}"
    );
}

#[tokio::test]
async fn single_mode_answers_any_path_but_not_the_named_services_routes() {
    let (child, url) = start(&["--mode", "single", "--delay-ms", "0,0", "--port", "0"]);
    let http = reqwest::Client::new();
    // The README's `--path /v1/answer/{id}`, rendered.
    let answer = http.post(format!("{url}/v1/answer/42")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["data"], "ok");
    assert_eq!(
        http.get(format!("{url}/any/depth?x=1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let named = http.get(format!("{url}/mock/llm")).send().await.unwrap();
    assert_eq!(named.status(), 400, "/mock/NAME keeps its single-mode answer");
    let stats: Value = http
        .get(format!("{url}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["requests"], 2,
        "the control routes are not the service's: {stats}"
    );
    shut_down(child, &url).await;
}

#[tokio::test]
async fn echo_answers_with_the_request_it_received() {
    let (child, url) = start(&["--echo", "--delay", "0ms", "--port", "0"]);
    let shown: Value = reqwest::Client::new()
        .post(format!("{url}/v1/answer/7?lang=en"))
        .header("authorization", "Bearer sk-test")
        .json(&serde_json::json!({"id": 7, "text": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["method"], "POST");
    assert_eq!(shown["path"], "/v1/answer/7");
    assert_eq!(shown["query"], "lang=en");
    assert_eq!(shown["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(shown["headers"]["content-type"], "application/json");
    assert_eq!(shown["json"], serde_json::json!({"id": 7, "text": "hi"}));
    assert_eq!(shown["body"], r#"{"id":7,"text":"hi"}"#);
    shut_down(child, &url).await;

    let (code, stderr) = refused(&["--kind", "openai", "--echo", "--port", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--echo"), "{stderr}");
}

#[tokio::test]
async fn duration_flags_take_durations_and_the_old_ms_names_still_work() {
    let (child, url) = start(&[
        "--limit", "2", "--window", "60s", "--delay", "0ms,0ms", "--port", "0",
    ]);
    let http = reqwest::Client::new();
    let first = http.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(
        first.headers()["ratelimit-policy"],
        "2;w=60",
        "the window is 60 s, not 60 ms"
    );
    assert_eq!(statuses(&http, &format!("{url}/"), 2).await, [200, 429]);
    shut_down(child, &url).await;

    let (child, url) = start(&[
        "--kind",
        "openai",
        "--rpm",
        "1",
        "--limit-window",
        "1m",
        "--first-token",
        "0ms,0ms",
        "--per-token-ms",
        "0,0",
        "--port",
        "0",
    ]);
    let body = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 2,
                                  "messages": [{"role": "user", "content": "hi"}]});
    let answer = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-ratelimit-reset-requests"], "1m0s");
    shut_down(child, &url).await;

    for (args, flag) in [
        (&["--window", "1000"][..], "--window"),
        (&["--delay", "soon"][..], "--delay"),
        (&["--kind", "anthropic", "--per-token", "5"][..], "--per-token"),
        (&["--window", "1s", "--window-ms", "1000"][..], "--window-ms"),
    ] {
        let (code, stderr) = refused(&[args, &["--port", "0"]].concat());
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn config_files_take_snake_case_keys_and_help_lists_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.toml");
    std::fs::write(
        &path,
        r#"
[services.llm]
max_concurrency = 2
rate_limit = { limit = 1, window_ms = 60000, algorithm = "sliding_window" }
delay_ms = [0, 0]
headers = { rate_limit_on_success = false }
"#,
    )
    .unwrap();
    let (child, url) = start(&["--config", path.to_str().unwrap(), "--port", "0"]);
    let http = reqwest::Client::new();
    let first = http.get(format!("{url}/mock/llm")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        !first.headers().contains_key("x-ratelimit-limit"),
        "headers.rate_limit_on_success = false was read"
    );
    assert_eq!(statuses(&http, &format!("{url}/mock/llm"), 1).await, [429]);
    shut_down(child, &url).await;

    std::fs::write(
        &path,
        "[services.x]\nmax_concurrency = 1\nrate_limit = { limit = 1, window_ms = 0 }\n",
    )
    .unwrap();
    let (code, stderr) = refused(&["--config", path.to_str().unwrap(), "--port", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("services.x.rate_limit.window_ms"), "{stderr}");

    let help = Command::new(tem())
        .args(["mock-server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for key in mock_server::config_keys() {
        for part in key.split('.') {
            assert!(
                help.contains(&format!("{part} =")),
                "`{part} =` of {key} in --help:\n{help}"
            );
        }
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let (child, url) = start(&["--mode", "single", "--port", "0"]);
    assert_eq!(
        reqwest::get(format!("{url}/stats")).await.unwrap().status(),
        200,
        "serving before the signal"
    );
    signal(child.id(), "TERM");
    assert_eq!(exit_code(child), 0, "SIGTERM stops it as Ctrl-C does, exit 0");
}
