//! `--rate` holds across a SIGKILL and an immediate rerun on SQLite: the rerun resumes from the
//! rate state the killed run made durable, so the two runs together never put more than the
//! quota into any window — judged from when the calls arrived at the mock, refused ones included.

use std::time::Duration;

use mock_server::{Algorithm, MockServer, ServiceConfig};
use tem_e2e::cli::{command, finish, item_lines, text, until, write_input};
use tem_e2e::pacing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_rerun_batch_never_exceeds_its_rate_in_any_window() {
    let dir = tempfile::tempdir().unwrap();
    // The mock refuses nothing: only the client's pacing decides when calls arrive.
    let mut service = ServiceConfig::new(100, 1_000_000, 1_000);
    service.rate_limit.algorithm = Algorithm::SlidingWindow;
    service.delay_ms = [0, 0];
    let api = MockServer::builder()
        .single(service)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let input = write_input(dir.path(), "paced.jsonl", &item_lines(6));
    // 3 per 3 s: a call every second. A rerun takes well under a second to make its first
    // call, so one that started with a fresh quota would put a fourth call into the window
    // of the killed run's three.
    let (count, period) = (3, Duration::from_secs(3));
    let args = [
        "run-batch",
        input.to_str().unwrap(),
        "--base-url",
        &api.url(),
        "--path",
        "/",
        "--rate",
        "3/3s",
        "--lease",
        "2s",
        "--quiet",
    ];
    let arrived = || api.arrivals(mock_server::DEFAULT_SERVICE).unwrap().len();
    let mut first = command(dir.path(), &args).spawn().unwrap();
    until("the first run's third call", || arrived() >= 3).await;
    first.start_kill().unwrap(); // SIGKILL
    assert_eq!(first.wait().await.unwrap().code(), None, "killed by a signal");
    let before_rerun = arrived();

    let rerun = finish(command(dir.path(), &args).spawn().unwrap()).await;
    assert_eq!(rerun.status.code(), Some(0), "stderr: {}", text(&rerun.stderr));

    let arrivals = api.arrivals(mock_server::DEFAULT_SERVICE).unwrap();
    assert!(
        arrivals.len() >= 6 && arrivals.len() > before_rerun,
        "both runs called: {} arrivals, {before_rerun} before the rerun",
        arrivals.len()
    );
    let busiest = pacing::most_in_any_window(&arrivals, period);
    assert!(
        busiest <= count,
        "--rate 3/3s across a kill and a rerun let {busiest} calls arrive within 3 s: {arrivals:?}"
    );
    api.stop().await.unwrap();
}
