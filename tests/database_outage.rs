//! `tem run-batch` on a Postgres server that blinks: restarted mid-run, the run waits, says so,
//! keeps its calls in flight and finishes with nothing lost; stopped for longer than
//! `--outage-tolerance`, the run gives up with a message that says how to continue, and the
//! rerun finishes the batch. The server is the test's own (never the machine's shared one).

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use mock_server::{MockServer, ServiceConfig};
use sqlx::Connection;
use tem_e2e::binary::tem;
use tem_e2e::pg_cluster::PgCluster;
use tokio::process::{Child, Command};

const TASKS: usize = 6_000;

fn run_batch(dir: &Path, db: &str, api: &str, tolerance: &str) -> Child {
    Command::new(tem())
        .current_dir(dir)
        .args(["run-batch", "calls.jsonl", "--batch", "blink", "--db", db])
        .args(["--base-url", api, "--path", "/", "--concurrency", "16"])
        .args(["--outage-tolerance", tolerance])
        .env_remove("TEM_CONFIG")
        .env_remove("TEM_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tem run-batch")
}

async fn api() -> MockServer {
    let mut service = ServiceConfig::new(10_000, 1_000_000, 1_000);
    service.delay_ms = [3, 8];
    MockServer::builder()
        .single(service)
        .bind("127.0.0.1:0")
        .await
        .expect("start the mock server")
}

fn input(dir: &Path) {
    let lines: Vec<String> = (0..TASKS).map(|i| format!(r#"{{"id": {i}}}"#)).collect();
    std::fs::write(dir.join("calls.jsonl"), lines.join("\n") + "\n").unwrap();
}

/// Waits until the API has answered `n` calls.
async fn calls_reach(api: &MockServer, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api.stats(mock_server::DEFAULT_SERVICE).unwrap().requests < n {
        assert!(tokio::time::Instant::now() < deadline, "the run made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn finished(child: Child, within: Duration) -> Output {
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("tem run-batch ended in time")
        .expect("wait for tem run-batch")
}

/// (completed, failed, pending or running) tasks of the batch, read straight from the database.
async fn counts(url: &str) -> (i64, i64, i64) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let row: (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'), \
         count(*) FILTER (WHERE status IN ('pending', 'running')) FROM task",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count tasks");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_does_not_end_it_and_nothing_is_lost() {
    let Some(cluster) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    let api = api().await;
    let child = run_batch(dir.path(), &cluster.url(), &api.url(), "60s");
    calls_reach(&api, (TASKS / 6) as u64).await;
    cluster.restart();
    let output = finished(child, Duration::from_secs(120)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run survived the restart: {stderr}");
    assert_eq!(counts(&cluster.url()).await, (TASKS as i64, 0, 0));
    let answered = api.stats(mock_server::DEFAULT_SERVICE).unwrap().requests;
    assert!(answered >= TASKS as u64, "{answered} calls for {TASKS} tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_away_for_a_while_is_said_waited_for_and_ridden_out() {
    let Some(cluster) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    let api = api().await;
    let mut child = run_batch(dir.path(), &cluster.url(), &api.url(), "60s");
    let mut stderr = Lines::follow(child.stderr.take().expect("stderr"));
    calls_reach(&api, (TASKS / 6) as u64).await;
    cluster.stop();
    stderr
        .until("waiting for the database", Duration::from_secs(30))
        .await;
    let during = counts_unreachable(&api).await;
    cluster.start_again();
    stderr
        .until("the database answers again", Duration::from_secs(30))
        .await;
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("tem run-batch ended in time")
        .expect("wait");
    assert!(status.success(), "{}", stderr.all().await);
    assert_eq!(counts(&cluster.url()).await, (TASKS as i64, 0, 0));
    assert!(during < TASKS as u64, "the outage came before the end of the run");
}

/// Calls the API answered so far (the database is down: read from the API's side).
async fn counts_unreachable(api: &MockServer) -> u64 {
    api.stats(mock_server::DEFAULT_SERVICE).unwrap().requests
}

/// A child's stderr, read line by line as it comes.
struct Lines {
    seen: std::sync::Arc<tokio::sync::Mutex<Vec<String>>>,
    new: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Lines {
    fn follow(stderr: tokio::process::ChildStderr) -> Lines {
        use tokio::io::AsyncBufReadExt;
        let seen = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let (tx, new) = tokio::sync::mpsc::unbounded_channel();
        let all = seen.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                all.lock().await.push(line.clone());
                let _ = tx.send(line);
            }
        });
        Lines { seen, new }
    }

    /// Waits for a line containing `text`.
    async fn until(&mut self, text: &str, within: Duration) {
        let found = tokio::time::timeout(within, async {
            while let Some(line) = self.new.recv().await {
                if line.contains(text) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "no line with `{text}` on stderr:\n{}",
            self.all().await
        );
    }

    async fn all(&self) -> String {
        self.seen.lock().await.join("\n")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_tolerance_ends_the_run_and_the_rerun_finishes() {
    let Some(cluster) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    input(dir.path());
    let api = api().await;
    let child = run_batch(dir.path(), &cluster.url(), &api.url(), "3s");
    calls_reach(&api, (TASKS / 6) as u64).await;
    cluster.stop();
    let stopped = tokio::time::Instant::now();
    let output = finished(child, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "gave up after {:?}, before its tolerance: {stderr}",
        stopped.elapsed()
    );
    assert!(stderr.contains("waiting for the database"), "{stderr}");
    assert!(stderr.contains("did not answer for"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");

    cluster.start_again();
    let (completed, failed, _) = counts(&cluster.url()).await;
    assert!(
        completed > 0 && failed == 0,
        "{completed} completed, {failed} failed before the rerun"
    );
    let rerun = finished(
        run_batch(dir.path(), &cluster.url(), &api.url(), "60s"),
        Duration::from_secs(120),
    )
    .await;
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stderr}");
    assert_eq!(counts(&cluster.url()).await, (TASKS as i64, 0, 0));
}
