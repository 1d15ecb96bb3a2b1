//! `tem mock-server` as a user runs it: it prints where it listens, enforces its limits, reads a
//! config file, serves the Teraslice mock, refuses bad input naming the flag or field, and exits
//! 0 after `POST /shutdown`.

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;
use tem_e2e::binary::{start_server, tem};

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
    assert_eq!(output.status.code(), Some(1));
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
    assert_eq!(output.status.code(), Some(1));
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
