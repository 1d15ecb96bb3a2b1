//! One batch on one Postgres database served by several `tem run-batch` processes, one of them
//! killed with SIGKILL mid-run: the batch finishes, no task runs twice while its lease is valid,
//! and the API (the real mock server, rate-limited) never sees the shared rate exceeded.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mock_server::{Algorithm, MockServer, ServiceConfig};
use tem_e2e::binary::tem;
use tem_e2e::pacing;
use tem_e2e::postgres::TestDatabase;
use tokio::process::{Child, Command};

const TASKS: usize = 50_000;
const WORKERS: usize = 4;
/// The API's limit, per second; the workers together pace themselves at 95 % of it.
const API_LIMIT: u64 = 3_000;

fn worker(dir: &Path, db: &str, api: &str) -> Child {
    Command::new(tem())
        .current_dir(dir)
        .args([
            "run-batch",
            "calls.jsonl",
            "--batch",
            "shared",
            "--db",
            db,
            "--base-url",
            api,
        ])
        .args([
            "--path",
            "/",
            "--rate",
            "2850/s",
            "--concurrency",
            "64",
            "--lease",
            "2s",
        ])
        .args(["--quiet"])
        .env_remove("TEM_CONFIG")
        .env_remove("TEM_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tem run-batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_a_batch_its_rate_and_survive_a_sigkill() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..TASKS).map(|i| format!(r#"{{"id": {i}}}"#)).collect();
    std::fs::write(dir.path().join("calls.jsonl"), lines.join("\n") + "\n").unwrap();
    let mut service = ServiceConfig::new(1_000, API_LIMIT, 1_000);
    service.rate_limit.algorithm = Algorithm::SlidingWindow;
    service.delay_ms = [1, 4];
    let api = MockServer::builder()
        .single(service)
        .bind("127.0.0.1:0")
        .await
        .unwrap();

    // All four start together: they race to load the input (exactly once) and then share it.
    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|_| worker(dir.path(), db.url(), &api.url()))
        .collect();

    // Kill one once a fifth of the calls were made: it dies holding leased, in-flight tasks.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api.stats(mock_server::DEFAULT_SERVICE).unwrap().requests < (TASKS / 5) as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the workers made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The victim is the process holding the most leases right now (owners name their pid).
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let victim = loop {
        let owners: Vec<String> = sqlx::query_scalar(
            "SELECT lease_owner FROM task WHERE status = 'running' AND lease_owner IS NOT NULL",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let held = |child: &Child| {
            let pid = format!("-{}-", child.id().unwrap_or(0));
            owners.iter().filter(|owner| owner.contains(&pid)).count()
        };
        let busiest = (0..workers.len()).max_by_key(|&i| held(&workers[i])).unwrap();
        if held(&workers[busiest]) > 0 {
            break busiest;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no worker ever held a lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut victim = workers.remove(victim);
    victim.start_kill().unwrap(); // SIGKILL
    assert_eq!(victim.wait().await.unwrap().code(), None, "killed by a signal");

    for child in workers {
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the surviving workers finished in time")
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let stats = api.stats(mock_server::DEFAULT_SERVICE).unwrap();
    assert_eq!(
        stats.by_status.get("429"),
        None,
        "the API never refused a call: {stats:?}"
    );
    // From when the calls arrived (refused ones included), at every window start: the workers
    // together never sent more than the API's limit in any second.
    let arrivals = api.arrivals(mock_server::DEFAULT_SERVICE).unwrap();
    assert!(arrivals.len() >= TASKS, "every task called the API");
    let busiest = pacing::most_in_any_window(&arrivals, Duration::from_secs(1));
    assert!(
        busiest as u64 <= API_LIMIT,
        "{busiest} calls arrived within one second, all workers together (limit {API_LIMIT})"
    );

    let (status, completed, failed, lost): (String, i64, i64, i64) =
        sqlx::query_as("SELECT status, completed, failed, lost FROM batch WHERE code = 'shared'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), completed, failed),
        ("completed", TASKS as i64, 0)
    );
    assert!(lost > 0, "the killed worker held leases that were rescued");

    // Every attempt of a task, as an interval: a claim to its outcome, or to the rescue that
    // took the task back after its lease expired. Two that overlap would be one task run
    // twice while a lease on it was valid.
    let overlapping: i64 = sqlx::query_scalar(
        "WITH a AS ( \
             SELECT task_id, started_at, finished_at FROM task_attempt \
             UNION ALL SELECT id, claimed_at, finished_at FROM task WHERE status = 'completed') \
         SELECT count(*) FROM a AS x JOIN a AS y ON x.task_id = y.task_id \
             AND x.started_at <= y.started_at AND (x.started_at, x.finished_at) <> (y.started_at, y.finished_at) \
             AND y.started_at < x.finished_at",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(overlapping, 0, "a task ran twice while its lease was valid");

    // Every call the API answered is an attempt on record (the killed worker's last calls
    // among them), and nothing was called that the database does not know of.
    let attempts: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM task_attempt) + (SELECT count(*) FROM task WHERE status = 'completed')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        stats.requests as i64 <= attempts && attempts <= stats.requests as i64 + 64,
        "{} calls answered, {attempts} attempts recorded",
        stats.requests
    );
    // The batch commands read the same database.
    let tem_batch = |args: &[&str]| {
        let mut command = std::process::Command::new(tem());
        command
            .current_dir(dir.path())
            .arg("batch")
            .args(args)
            .args(["--db", db.url(), "--json"]);
        command.env_remove("TEM_CONFIG").env_remove("TEM_DB");
        let output = command.output().expect("run tem batch");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
    };
    let list = tem_batch(&["list"]);
    assert_eq!(list[0]["code"], "shared");
    let report = tem_batch(&["show", "shared"]);
    assert_eq!(report["batch"]["status"], "completed");
    assert_eq!(report["batch"]["stats"]["completed"], TASKS as u64);
    assert_eq!(report["batch"]["stats"]["lost"], lost);

    eprintln!(
        "{TASKS} tasks by {WORKERS} processes (one killed): {} calls, busiest second {busiest} of \
         {API_LIMIT} arrived, {lost} attempts lost to the kill and rescued",
        stats.requests
    );
    pool.close().await;
    api.stop().await.unwrap();
}
