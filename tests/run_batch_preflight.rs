//! `tem run-batch` checks what it can before it writes or calls anything: settings wrong for
//! every line, a file that is mostly not JSON and an `--output` it could not write stop it with
//! exit 2 and the fix, with no database created and no call made — so the corrected command
//! then runs under the same batch code. `--dry-run` shows the requests and stops there.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tem_e2e::binary::tem;
use tem_e2e::echo;
use tokio::process::Command;

async fn tem_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(tem());
    command
        .current_dir(dir)
        .args(args)
        .env_remove("TEM_CONFIG")
        .env_remove("TEM_DB")
        .env_remove("TEM_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("tem finished in time")
        .expect("tem output")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn items(dir: &Path, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"id": "{i}", "text": "t{i}"}}"#))
        .collect();
    std::fs::write(dir.join("items.jsonl"), lines.join("\n") + "\n").unwrap();
}

/// Exit 2, the message holds every one of `names`, and nothing was written or called.
fn refused(output: &Output, dir: &Path, api: &echo::EchoApi, names: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    for name in names {
        assert!(err.contains(name), "`{name}` not named in: {err}");
    }
    assert!(
        err.contains("Nothing was written") || err.contains("--output"),
        "{err}"
    );
    assert!(!dir.join("tem.db").exists(), "a refused run created the database");
    assert_eq!(api.total(), 0, "a refused run made calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_wrong_for_every_line_are_refused_before_anything_is_written() {
    let (api, url) = echo::start("", Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    items(dir.path(), 30);

    let no_base = tem_in(dir.path(), &["run-batch", "items.jsonl"], &[]).await;
    refused(&no_base, dir.path(), &api, &["--base-url", "line 1"]);
    let path_without_base = tem_in(
        dir.path(),
        &["run-batch", "items.jsonl", "--path", "/items/{id}"],
        &[],
    )
    .await;
    assert_eq!(path_without_base.status.code(), Some(2));
    assert!(stderr(&path_without_base).contains("--base-url"));
    assert!(!dir.path().join("tem.db").exists());

    let no_field = tem_in(
        dir.path(),
        &[
            "run-batch",
            "items.jsonl",
            "--base-url",
            &url,
            "--path",
            "/items/{name}",
        ],
        &[],
    )
    .await;
    refused(&no_field, dir.path(), &api, &["`name`", "line 1"]);

    let no_body_field = tem_in(
        dir.path(),
        &[
            "run-batch",
            "items.jsonl",
            "--base-url",
            &url,
            "--path",
            "/items/{id}",
            "--body",
            r#"{"input": "{{prompt}}"}"#,
        ],
        &[],
    )
    .await;
    refused(&no_body_field, dir.path(), &api, &["`prompt`"]);

    // The corrected command runs under the same code: nothing blocked it.
    let fixed = tem_in(
        dir.path(),
        &[
            "run-batch",
            "items.jsonl",
            "--base-url",
            &url,
            "--path",
            "/items/{id}",
            "--quiet",
        ],
        &[],
    )
    .await;
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    assert_eq!(api.total(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_is_mostly_not_json_is_refused_with_the_count_and_the_first_bad_line() {
    let (api, url) = echo::start("", Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut bytes: Vec<u8> = (0u8..=255).cycle().take(8_000).collect();
    bytes.extend_from_slice(b"\n{\"id\": \"1\"}\n");
    std::fs::write(dir.path().join("items.jsonl"), &bytes).unwrap();
    let output = tem_in(
        dir.path(),
        &[
            "run-batch",
            "items.jsonl",
            "--base-url",
            &url,
            "--path",
            "/items/{id}",
        ],
        &[],
    )
    .await;
    refused(&output, dir.path(), &api, &["are not JSON objects", "line 1"]);
    assert!(stderr(&output).contains(" of "), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_cannot_be_written_is_found_before_the_first_call() {
    let (api, url) = echo::start("", Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    items(dir.path(), 5);
    let output = tem_in(
        dir.path(),
        &[
            "run-batch",
            "items.jsonl",
            "--base-url",
            &url,
            "--path",
            "/items/{id}",
            "--output",
            "missing/answers.jsonl",
        ],
        &[],
    )
    .await;
    refused(
        &output,
        dir.path(),
        &api,
        &["--output", "missing", "does not exist"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_the_requests_as_sent_with_secrets_masked_and_calls_nothing() {
    let (api, url) = echo::start("", Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    items(dir.path(), 10);
    let args = [
        "run-batch",
        "items.jsonl",
        "--base-url",
        &url,
        "--path",
        "/items/{id}",
        "--body",
        r#"{"input": "{{text}}"}"#,
        "--header",
        "authorization: Bearer ${PREFLIGHT_TOKEN}",
        "--dry-run",
        "2",
    ];
    let output = tem_in(dir.path(), &args, &[("PREFLIGHT_TOKEN", "s3cret-value")]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("s3cret-value"), "a secret was shown: {stdout}");
    let shown: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[1]["line"], 2);
    assert_eq!(shown[1]["request"]["url"], format!("{url}/items/1"));
    assert_eq!(shown[1]["request"]["method"], "POST");
    assert_eq!(shown[1]["request"]["body"]["input"], "t1");
    assert_eq!(shown[1]["request"]["headers"]["authorization"], "Bearer ***");
    assert!(stderr(&output).contains("10 lines"), "{}", stderr(&output));
    assert!(!dir.path().join("tem.db").exists());
    assert_eq!(api.total(), 0);

    // One bad line: still a dry run, and the exit status says something is wrong.
    let mut text = std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap();
    text.push_str("{\"id\": 7, \"text\": }\n");
    std::fs::write(dir.path().join("items.jsonl"), text).unwrap();
    let output = tem_in(dir.path(), &args, &[("PREFLIGHT_TOKEN", "s3cret-value")]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("1 of them cannot"),
        "{}",
        stderr(&output)
    );
    assert_eq!(api.total(), 0);
}
