//! The Teraslice mock on a real socket, under a clock the test moves: shapes, pagination and its
//! limits, 404/422 bodies, `?status=`, views that agree with each other, state transitions from
//! elapsed time, counters that only grow, reproducibility by seed.

use std::collections::HashSet;
use std::time::Duration;

use mock_server::{Clock, ManualClock, MockServer, TerasliceOptions};
use reqwest::StatusCode;
use serde_json::Value;

const START: i64 = 1_795_000_000_000;

async fn teraslice(seed: u64) -> (MockServer, ManualClock) {
    let (clock, hand) = Clock::manual(START);
    let options = TerasliceOptions {
        seed: Some(seed),
        clock,
        ..Default::default()
    };
    let server = MockServer::builder()
        .teraslice_only(options)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server, hand)
}

async fn get(server: &MockServer, path: &str) -> (StatusCode, Value) {
    let response = reqwest::get(format!("{}{path}", server.url())).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

fn is_uuid(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 36 && s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
}

#[tokio::test]
async fn shapes_follow_real_teraslice() {
    let (server, _clock) = teraslice(1).await;
    let (status, root) = get(&server, "/").await;
    // The spec's answers (specs/teraslice.md §3), written out rather than read from the code.
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        root,
        serde_json::json!({"message": "Mock Teraslice API Server", "version": "1.0.0"})
    );
    let (_, info) = get(&server, "/v1").await;
    let mut keys: Vec<&str> = info.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "arch",
            "clustering_type",
            "name",
            "node_version",
            "platform",
            "teraslice_version"
        ]
    );
    let version = info["teraslice_version"].as_str().unwrap();
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "a release number: {version}"
    );

    let (_, jobs) = get(&server, "/v1/jobs?size=10000").await;
    let jobs = jobs.as_array().unwrap();
    assert!((10..=30).contains(&jobs.len()));
    for job in jobs {
        assert!(is_uuid(&job["job_id"]) && is_timestamp(&job["_created"]) && is_timestamp(&job["_updated"]));
        assert_eq!(job["_context"], "job");
        assert!(
            job["operations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|op| op["_op"].is_string())
        );
    }
    let (_, executions) = get(&server, "/v1/ex?size=10000").await;
    for ex in executions.as_array().unwrap() {
        assert!(is_uuid(&ex["ex_id"]) && is_timestamp(&ex["_updated"]));
        assert_eq!(ex["_context"], "ex");
        assert!(ex["_slicer_stats"].is_object(), "never null: {ex}");
        let status = ex["_status"].as_str().unwrap();
        if ["completed", "stopped", "rejected", "failed", "terminated"].contains(&status) {
            assert!(
                ex["_slicer_stats"]["job_duration"].is_u64(),
                "terminal executions keep their stats"
            );
        }
    }
    // The same routes answer without the /v1 prefix, as Teraslice does.
    assert_eq!(get(&server, "/jobs?size=1").await.0, StatusCode::OK);
}

#[tokio::test]
async fn pagination_and_its_limits() {
    let (server, _clock) = teraslice(2).await;
    let (_, all) = get(&server, "/v1/jobs?size=10000").await;
    let all = all.as_array().unwrap().clone();
    let (_, page) = get(&server, "/v1/jobs?size=3&from=2").await;
    assert_eq!(page.as_array().unwrap(), &all[2..5]);
    // Newest `_updated` first by default.
    let updated: Vec<&str> = all.iter().map(|j| j["_updated"].as_str().unwrap()).collect();
    assert!(updated.windows(2).all(|w| w[0] >= w[1]));
    let (_, ascending) = get(&server, "/v1/jobs?size=10000&sort=_created:asc").await;
    let created: Vec<&str> = ascending
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["_created"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]));

    for bad in [
        "size=0",
        "size=10001",
        "size=abc",
        "from=-1",
        "from=9999&size=2",
        "sort=bogus:asc",
    ] {
        let (status, error) = get(&server, &format!("/v1/ex?{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(error["error"], 422, "{bad}");
        assert!(error["message"].as_str().unwrap().len() > 10, "{bad}: {error}");
    }
}

#[tokio::test]
async fn unknown_ids_answer_404_and_status_filters() {
    let (server, _clock) = teraslice(3).await;
    for path in ["/v1/jobs/0000unknown", "/v1/ex/0000unknown"] {
        let (status, error) = get(&server, path).await;
        assert_eq!(
            (status, error["error"].as_u64()),
            (StatusCode::NOT_FOUND, Some(404)),
            "{path}"
        );
        assert!(error["message"].as_str().unwrap().contains("0000unknown"));
    }
    let (_, all) = get(&server, "/v1/ex?size=10000").await;
    let (_, running) = get(&server, "/v1/ex?size=10000&status=running,paused").await;
    let running = running.as_array().unwrap();
    assert!(
        running
            .iter()
            .all(|ex| ["running", "paused"].contains(&ex["_status"].as_str().unwrap()))
    );
    let expected = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|ex| ["running", "paused"].contains(&ex["_status"].as_str().unwrap()))
        .count();
    assert_eq!(running.len(), expected);
    let (status, error) = get(&server, "/v1/ex?status=exploded").await;
    assert_eq!(
        (status, error["error"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(422))
    );
    // A known job answers itself.
    let job_id = all[0]["job_id"].as_str().unwrap();
    let (status, job) = get(&server, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!((status, job["job_id"].as_str()), (StatusCode::OK, Some(job_id)));
}

#[tokio::test]
async fn the_views_agree() {
    for seed in 0..5 {
        let (server, _clock) = teraslice(seed).await;
        let (_, jobs) = get(&server, "/v1/jobs?size=10000").await;
        let (_, executions) = get(&server, "/v1/ex?size=10000").await;
        let (_, controllers) = get(&server, "/v1/cluster/controllers").await;
        let (_, state) = get(&server, "/v1/cluster/state").await;
        let job_ids: HashSet<&str> = jobs
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap())
            .collect();
        let mut living_per_job = std::collections::HashMap::new();
        for ex in executions.as_array().unwrap() {
            assert!(
                job_ids.contains(ex["job_id"].as_str().unwrap()),
                "an execution of an unknown job"
            );
            if !["completed", "stopped", "rejected", "failed", "terminated"]
                .contains(&ex["_status"].as_str().unwrap())
            {
                *living_per_job
                    .entry(ex["job_id"].as_str().unwrap().to_owned())
                    .or_insert(0) += 1;
            }
        }
        assert!(
            living_per_job.values().all(|n| *n == 1),
            "at most one living execution per job"
        );
        let running_group: HashSet<&str> = executions
            .as_array()
            .unwrap()
            .iter()
            .filter(|ex| {
                ["recovering", "running", "failing", "paused", "stopping"]
                    .contains(&ex["_status"].as_str().unwrap())
            })
            .map(|ex| ex["ex_id"].as_str().unwrap())
            .collect();
        let controller_ids: HashSet<&str> = controllers
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["ex_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            controller_ids, running_group,
            "controllers are exactly the running group"
        );
        for node in state.as_object().unwrap().values() {
            for worker in node["active"].as_array().unwrap() {
                if let Some(ex) = worker["ex_id"].as_str() {
                    assert!(
                        controller_ids.contains(ex),
                        "a worker of an execution without a controller"
                    );
                }
            }
        }
    }
}

/// A seed whose cluster has a pending execution right after generation.
async fn with_a_pending_execution() -> (MockServer, ManualClock, String) {
    for seed in 0..200 {
        let (server, clock) = teraslice(seed).await;
        let (_, pending) = get(&server, "/v1/ex?size=10000&status=pending").await;
        if let Some(ex) = pending.as_array().unwrap().first() {
            let id = ex["ex_id"].as_str().unwrap().to_owned();
            return (server, clock, id);
        }
    }
    panic!("no seed in 0..200 drew a pending execution");
}

#[tokio::test]
async fn statuses_advance_with_elapsed_time_and_late_readers_catch_up() {
    let (server, clock, id) = with_a_pending_execution().await;
    let status = |body: &Value| body["_status"].as_str().unwrap().to_owned();
    let (_, ex) = get(&server, &format!("/v1/ex/{id}")).await;
    assert_eq!(status(&ex), "pending");
    assert_eq!(ex["slicer_hostname"], Value::Null);
    // Reading a lot does not move it: only time does.
    for _ in 0..5 {
        assert_eq!(status(&get(&server, &format!("/v1/ex/{id}")).await.1), "pending");
    }
    // Ten seconds at once: pending → scheduling → initializing → running, caught up in one read.
    clock.advance(Duration::from_secs(10));
    let (_, ex) = get(&server, &format!("/v1/ex/{id}")).await;
    assert_eq!(status(&ex), "running");
    assert!(ex["slicer_hostname"].is_string() && ex["slicer_port"].is_u64());
    let (_, controllers) = get(&server, "/v1/cluster/controllers").await;
    assert!(
        controllers
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ex_id"] == id.as_str())
    );

    let processed = |body: &Value| body["_slicer_stats"]["processed"].as_u64().unwrap();
    let mut last = processed(&ex);
    for _ in 0..5 {
        clock.advance(Duration::from_secs(60));
        let (_, ex) = get(&server, &format!("/v1/ex/{id}")).await;
        let now = processed(&ex);
        assert!(now > last, "processed grows while running: {last} -> {now}");
        last = now;
    }
}

#[tokio::test]
async fn the_same_seed_and_clock_give_the_same_answers() {
    let (a, clock_a) = teraslice(42).await;
    let (b, clock_b) = teraslice(42).await;
    for step in 0..4 {
        clock_a.advance(Duration::from_secs(200 * step));
        clock_b.advance(Duration::from_secs(200 * step));
        // One server is asked often, the other only now: the answers still agree.
        for _ in 0..step {
            get(&a, "/v1/ex?size=10000").await;
        }
        assert_eq!(
            get(&a, "/v1/ex?size=10000").await.1,
            get(&b, "/v1/ex?size=10000").await.1
        );
        assert_eq!(
            get(&a, "/v1/cluster/controllers").await.1,
            get(&b, "/v1/cluster/controllers").await.1
        );
    }
}

#[tokio::test]
async fn refresh_regenerates_and_counts() {
    let (server, _clock) = teraslice(5).await;
    let (_, before) = get(&server, "/v1/jobs?size=10000").await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/data/refresh", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed: Value = response.json().await.unwrap();
    assert_eq!(refreshed["message"], "All data refreshed");
    let (_, jobs) = get(&server, "/v1/jobs?size=10000").await;
    let (_, executions) = get(&server, "/v1/ex?size=10000").await;
    let (_, controllers) = get(&server, "/v1/cluster/controllers").await;
    let (_, state) = get(&server, "/v1/cluster/state").await;
    assert_ne!(before, jobs);
    assert_eq!(
        refreshed["counts"]["jobs"].as_u64().unwrap() as usize,
        jobs.as_array().unwrap().len()
    );
    assert_eq!(
        refreshed["counts"]["execution_contexts"].as_u64().unwrap() as usize,
        executions.as_array().unwrap().len()
    );
    assert_eq!(
        refreshed["counts"]["controllers"].as_u64().unwrap() as usize,
        controllers.as_array().unwrap().len()
    );
    assert_eq!(
        refreshed["counts"]["nodes"].as_u64().unwrap() as usize,
        state.as_object().unwrap().len()
    );
}
