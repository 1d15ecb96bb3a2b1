//! Lease-token fencing on Postgres, with two real `tem run-batch` processes: one is frozen
//! (SIGSTOP) while it holds leased, in-flight calls; its leases lapse, the other process rescues,
//! reruns and completes those tasks; then the frozen one is thawed (SIGCONT) with its old
//! outcomes in hand. None of them may land: each task ends with exactly one success, recorded
//! by the process that held its lease, and the thawed process's report tells the same story.
//! A process frozen inside a transaction must not stall the other one either (the server ends
//! a transaction left idle).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tem_core::{Attempt, AttemptOutcome, Engine, EngineOptions, Task, TaskFilter, TaskStatus};
use tem_e2e::cli::{command, finish, item_lines, signal, text, until, write_input};
use tem_e2e::echo;
use tem_e2e::postgres::TestDatabase;

const TASKS: usize = 12;

async fn tasks(engine: &Engine) -> Vec<Task> {
    let filter = TaskFilter {
        limit: Some(1_000),
        ..TaskFilter::default()
    };
    engine.tasks(&filter).await.expect("tasks")
}

async fn history(engine: &Engine, tasks: &[Task]) -> HashMap<i64, Vec<Attempt>> {
    let mut all = HashMap::new();
    for task in tasks {
        all.insert(task.id.0, engine.attempts(task.id).await.expect("attempts"));
    }
    all
}

fn owned_by(task: &Task, pid: u32) -> bool {
    task.lease_owner
        .as_deref()
        .is_some_and(|owner| owner.contains(&format!("-{pid}-")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_whose_leases_were_taken_over_writes_nothing_when_thawed() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Every call takes 2 s: the frozen process is surely mid-call when it is stopped.
    let (api, url) = echo::start("", Duration::from_secs(2)).await;
    let input = write_input(dir.path(), "work.jsonl", &item_lines(TASKS));
    let args = |concurrency: &'static str| {
        vec![
            "run-batch".to_owned(),
            input.display().to_string(),
            "--db".into(),
            db.url().into(),
            "--base-url".into(),
            url.clone(),
            "--path".into(),
            "/items/{id}".into(),
            "--concurrency".into(),
            concurrency.into(),
            "--lease".into(),
            "1s".into(),
            "--json".into(),
        ]
    };
    let as_str = |args: &[String]| args.iter().map(String::as_str).collect::<Vec<_>>().join("\u{0}");
    let (stale_args, live_args) = (as_str(&args("4")), as_str(&args("8")));
    let stale_args: Vec<&str> = stale_args.split('\u{0}').collect();
    let live_args: Vec<&str> = live_args.split('\u{0}').collect();

    let stale = command(dir.path(), &stale_args).spawn().unwrap();
    let stale_pid = stale.id().unwrap();
    until("the first process's calls", || api.total() >= 4).await;
    signal(stale_pid, "STOP");

    let engine = Engine::open_with(
        db.url(),
        EngineOptions {
            create_if_missing: false,
            ..EngineOptions::default()
        },
    )
    .await
    .unwrap();
    let held: Vec<i64> = tasks(&engine)
        .await
        .iter()
        .filter(|t| t.status == TaskStatus::Running && owned_by(t, stale_pid))
        .map(|t| t.id.0)
        .collect();
    assert!(!held.is_empty(), "the frozen process holds leased tasks");

    // The other process takes over once those leases lapse, and finishes the batch.
    let live = command(dir.path(), &live_args).spawn().unwrap();
    let live_pid = live.id().unwrap();
    let live = finish(live).await;
    assert_eq!(live.status.code(), Some(0), "stderr: {}", text(&live.stderr));
    let settled = tasks(&engine).await;
    let settled_history = history(&engine, &settled).await;
    for task in &settled {
        assert_eq!(task.status, TaskStatus::Completed, "{task:?}");
        if held.contains(&task.id.0) {
            assert!(owned_by(task, live_pid), "the live process recorded it: {task:?}");
            // The frozen attempt was charged as lapsed; the live process's run succeeded.
            let attempts = &settled_history[&task.id.0];
            let first = attempts.first().expect("attempts");
            assert_eq!(first.outcome, AttemptOutcome::LeaseExpired, "{attempts:?}");
            assert!(
                first
                    .worker
                    .as_deref()
                    .is_some_and(|w| w.contains(&format!("-{stale_pid}-"))),
                "{attempts:?}"
            );
            let last = attempts.last().expect("attempts");
            assert_eq!(last.outcome, AttemptOutcome::Succeeded, "{attempts:?}");
            assert!(
                last.worker
                    .as_deref()
                    .is_some_and(|w| w.contains(&format!("-{live_pid}-"))),
                "{attempts:?}"
            );
        }
    }

    // Thawed: it finds its calls answered and its leases gone.
    signal(stale_pid, "CONT");
    let stale = finish(stale).await;
    let stderr = text(&stale.stderr);
    let after = tasks(&engine).await;
    let after_history = history(&engine, &after).await;
    for (before, now) in settled.iter().zip(&after) {
        assert_eq!(
            (
                now.status,
                &now.result,
                &now.lease_owner,
                now.attempt,
                &now.finished_at
            ),
            (
                before.status,
                &before.result,
                &before.lease_owner,
                before.attempt,
                &before.finished_at
            ),
            "the thawed process changed a task it no longer held"
        );
        assert_eq!(
            after_history[&now.id.0].len(),
            settled_history[&now.id.0].len(),
            "no attempt recorded twice: {:?}",
            after_history[&now.id.0]
        );
        let successes = after_history[&now.id.0]
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Succeeded)
            .count();
        assert_eq!(successes, 1, "exactly one success for task {}", now.id.0);
    }
    let batch = engine.batch_by_code("work").await.unwrap();
    assert_eq!(batch.stats.completed, TASKS as i64);
    assert_eq!(
        (batch.stats.failed, batch.stats.running, batch.stats.pending),
        (0, 0, 0)
    );

    // What the thawed process says matches the database.
    assert_eq!(stale.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("stopping the attempt before its lease lapses"),
        "the thawed process says it let its stale attempts go: {stderr}"
    );
    let document: Value = serde_json::from_slice(&stale.stdout).expect("one JSON report");
    assert_eq!(document["outcome"], "succeeded", "{document}");
    assert_eq!(
        document["report"]["batch"]["stats"]["completed"], TASKS as u64,
        "{document}"
    );
    engine.close().await;
}
