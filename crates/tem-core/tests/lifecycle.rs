//! A batch from enqueue to completion: results, history, counters, events, and bad input.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};

use tem_core::{
    AttemptOutcome, BatchStatus, Engine, EngineOptions, Error, Event, NewBatch, NewTask, TaskError,
    TaskFilter, TaskStatus, WorkerOptions,
};

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_runs_to_completion_with_results_history_and_counters(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("double-1", "math"))
            .await
            .unwrap();
        let ids = engine
            .enqueue(batch.id, (0..200u64).map(|i| NewTask::new("double", &i).unwrap()))
            .await
            .unwrap();
        assert_eq!(ids.len(), 200);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow input order");

        let mut events = engine.events();
        let worker = engine
            .worker(WorkerOptions::default().concurrency(8).batch(batch.id))
            .handle("double", |n: u64, _ctx| async move { Ok::<_, TaskError>(n * 2) });
        let worker_id = worker.id().to_owned();
        let report = worker.run_until_idle().await.unwrap();
        assert_eq!(report.succeeded, 200);

        let batch = engine.batch(batch.id).await.unwrap();
        assert_eq!(batch.status, BatchStatus::Completed);
        assert_eq!(
            (
                batch.stats.total,
                batch.stats.completed,
                batch.stats.pending,
                batch.stats.running
            ),
            (200, 200, 0, 0)
        );
        assert!(batch.started_at.is_some() && batch.finished_at.is_some());
        assert!(batch.finished_at >= batch.started_at);

        for (i, id) in ids.iter().enumerate() {
            let task = engine.task(*id).await.unwrap();
            assert_eq!(task.status, TaskStatus::Completed);
            assert_eq!(task.result_as::<u64>().unwrap(), Some(i as u64 * 2));
            assert_eq!(task.attempt, 1);
            assert!(task.lease_expires_at.is_none(), "a finished task holds no lease");
            assert_eq!(
                task.lease_owner.as_deref(),
                Some(worker_id.as_str()),
                "it remembers who ran it"
            );
            let attempts = engine.attempts(*id).await.unwrap();
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].outcome, AttemptOutcome::Succeeded);
            assert_eq!(attempts[0].worker.as_deref(), Some(worker_id.as_str()));
            assert!(attempts[0].finished_at >= attempts[0].started_at);
        }

        // Progress events were published; the last one shows the committed end state.
        let mut last = None;
        while let Ok(Event::Progress(p)) = events.try_recv() {
            last = Some(p);
        }
        let last = last.expect("progress events");
        assert_eq!(last.status, BatchStatus::Completed);
        assert_eq!(last.stats.completed, 200);
    }
}

on_both_backends! {
    #[tokio::test]
    async fn payload_that_does_not_parse_fails_only_its_own_task(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("mixed", "math")).await.unwrap();
        let good = NewTask::new("square", &3u32).unwrap();
        let bad = NewTask::from_json("square", "\"three\"".to_owned());
        let ids = engine.enqueue(batch.id, [good, bad]).await.unwrap();
        engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("square", |n: u32, _| async move { Ok::<_, TaskError>(n * n) })
            .run_until_idle()
            .await
            .unwrap();
        let good = engine.task(ids[0]).await.unwrap();
        let bad = engine.task(ids[1]).await.unwrap();
        assert_eq!(good.result_as::<u32>().unwrap(), Some(9));
        assert_eq!(bad.status, TaskStatus::Failed);
        assert_eq!(bad.attempt, 1, "a payload error is not retried");
        let error = bad.last_error.unwrap();
        assert!(
            error.contains("payload does not match") && error.contains("square"),
            "{error}"
        );
        let batch = engine.batch(batch.id).await.unwrap();
        assert_eq!((batch.stats.completed, batch.stats.failed), (1, 1));
        assert_eq!(batch.status, BatchStatus::Completed);
    }
}

on_both_backends! {
    #[tokio::test]
    async fn an_unregistered_task_type_is_never_claimed(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine
            .create_batch(NewBatch::new("two-types", "t"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..10u32 {
            tasks.push(NewTask::new("mine", &i).unwrap());
            tasks.push(NewTask::new("theirs", &i).unwrap());
        }
        engine.enqueue(batch.id, tasks).await.unwrap();
        let report = engine
            .worker(WorkerOptions::default().batch(batch.id))
            .handle("mine", |_: u32, _| async { Ok::<_, TaskError>(()) })
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(report.succeeded, 10);
        let theirs = engine
            .tasks(&TaskFilter {
                batch: Some(batch.id),
                kind: Some("theirs".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(theirs.len(), 10);
        assert!(
            theirs
                .iter()
                .all(|t| t.status == TaskStatus::Pending && t.attempt == 0)
        );
        assert_eq!(engine.batch(batch.id).await.unwrap().status, BatchStatus::Active);
    }
}

on_both_backends! {
    #[tokio::test]
    async fn highest_priority_first_then_fifo(backend) {
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("prio", "t")).await.unwrap();
        let priorities = [0, 5, 0, 5, 1, 0];
        let tasks = priorities
            .iter()
            .enumerate()
            .map(|(i, p)| NewTask::new("step", &i).unwrap().priority(*p));
        engine.enqueue(batch.id, tasks).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let seen = order.clone();
        let mut options = WorkerOptions::default()
            .concurrency(1)
            .batch(batch.id)
            .fixed_concurrency();
        options.max_claim = 1;
        engine
            .worker(options)
            .handle("step", move |i: usize, _| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(i);
                    Ok::<_, TaskError>(())
                }
            })
            .run_until_idle()
            .await
            .unwrap();
        assert_eq!(*order.lock().unwrap(), vec![1, 3, 4, 0, 2, 5]);
    }
}

on_both_backends! {
    #[tokio::test]
    async fn bad_input_is_refused_with_the_field_named(backend) {
        let (dir, engine) = common::engine(backend).await;
        engine.create_batch(NewBatch::new("dup", "t")).await.unwrap();
        match engine.create_batch(NewBatch::new("dup", "t")).await {
            Err(Error::DuplicateBatch(code)) => assert_eq!(code, "dup"),
            other => panic!("expected a duplicate-code error, got {other:?}"),
        }
        let err = engine.create_batch(NewBatch::new("  ", "t")).await.unwrap_err();
        assert!(err.to_string().contains("code"), "{err}");
        let batch = engine.batch_by_code("dup").await.unwrap();
        let err = engine
            .enqueue(batch.id, [NewTask::new("", &1).unwrap()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("task type"), "{err}");
        let err = engine
            .enqueue(batch.id, [NewTask::new("t", &1).unwrap().max_attempts(0)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
        assert_eq!(
            engine.stats(batch.id).await.unwrap().total,
            0,
            "a refused enqueue stores nothing"
        );
        assert!(matches!(
            engine.batch_by_code("nope").await,
            Err(Error::BatchNotFound(_))
        ));

        // A worker without handlers is a usage error, not a silent hang.
        let err = engine
            .worker(WorkerOptions::default())
            .run_until_idle()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("handler"), "{err}");
        let err = engine
            .worker(WorkerOptions::default().concurrency(0))
            .handle("t", |_: u32, _| async { Ok::<_, TaskError>(()) })
            .run_until_idle()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("concurrency"), "{err}");

        if backend == common::Backend::Sqlite {
            // Opening a missing file without permission to create it does not create it.
            let missing = dir.dir().join("missing.db");
            let options = EngineOptions {
                create_if_missing: false,
                ..Default::default()
            };
            let err = Engine::open_with(missing.to_str().unwrap(), options)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::DatabaseMissing(_)), "{err}");
            assert!(!missing.exists());
        }
    }
}

#[tokio::test]
async fn another_applications_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("app.db");
    {
        use sqlx::{ConnectOptions, Executor};
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&foreign)
            .create_if_missing(true);
        let mut conn = options.connect().await.unwrap();
        conn.execute("CREATE TABLE _sqlx_migrations (version INTEGER); CREATE TABLE users (id INTEGER)")
            .await
            .unwrap();
    }
    let before = std::fs::read(&foreign).unwrap();
    for create_if_missing in [true, false] {
        let options = EngineOptions {
            create_if_missing,
            ..Default::default()
        };
        let err = Engine::open_with(foreign.to_str().unwrap(), options)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotTemDatabase(_)), "{err}");
    }
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        before,
        "not migrated, not switched to WAL"
    );
    assert!(!dir.path().join("app.db-wal").exists());

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database at all, just some words in a file").unwrap();
    let err = Engine::open(text.to_str().unwrap()).await.unwrap_err();
    assert!(matches!(err, Error::NotTemDatabase(_)), "{err}");
}

on_both_backends! {
    #[tokio::test]
    async fn an_engine_reopens_its_file_with_everything_in_it(backend) {
        let (dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("persist", "t")).await.unwrap();
        engine
            .enqueue(batch.id, [NewTask::new("t", &7).unwrap()])
            .await
            .unwrap();
        engine.close().await;
        let engine = Engine::open(dir.url()).await.unwrap();
        let batch = engine.batch_by_code("persist").await.unwrap();
        assert_eq!(batch.stats.pending, 1);
    }
}

#[tokio::test]
async fn in_memory_databases_work_for_tests() {
    let engine = Engine::open("sqlite::memory:").await.unwrap();
    let batch = engine.create_batch(NewBatch::new("m", "t")).await.unwrap();
    engine
        .enqueue(batch.id, (0..20).map(|i| NewTask::new("t", &i).unwrap()))
        .await
        .unwrap();
    let report = engine
        .worker(WorkerOptions::default().batch(batch.id))
        .handle("t", |i: u32, _| async move { Ok::<_, TaskError>(i) })
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(report.succeeded, 20);
}

on_both_backends! {
    // One thread: the give-back below queues all its outcomes before the committer runs, so
    // more than one cycle's worth (2,048) reach it at once.
    #[tokio::test]
    async fn more_outcomes_than_one_commit_takes_are_committed_in_two(backend) {
        const AHEAD: usize = 2_100;
        let (_dir, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("split", "t")).await.unwrap();
        engine
            .enqueue(batch.id, (0..2_200u32).map(|i| NewTask::new("job", &i).unwrap()))
            .await
            .unwrap();
        let mut options = WorkerOptions::default()
            .concurrency(1)
            .fixed_concurrency()
            .batch(batch.id);
        options.prefetch = Some(AHEAD);
        options.max_claim = 4_096;
        let (release, hold) = tokio::sync::watch::channel(false);
        let worker = engine.worker(options).handle("job", move |_: u32, _| {
            let mut hold = hold.clone();
            async move {
                let _ = hold.wait_for(|go| *go).await;
                Ok::<_, TaskError>(())
            }
        });
        let shutdown = worker.shutdown_handle();
        let run = tokio::spawn(worker.run());
        common::eventually(std::time::Duration::from_secs(30), "one running, the rest claimed ahead", || {
            let engine = engine.clone();
            async move { engine.stats(batch.id).await.unwrap().running == AHEAD as i64 + 1 }
        })
        .await;
        let mut events = engine.events();
        // Drain: the running task finishes, then the 2,100 claimed ahead go back in one go.
        shutdown.drain();
        release.send(true).unwrap();
        let report = run.await.unwrap().unwrap();
        assert_eq!((report.succeeded, report.released), (1, AHEAD as u64));

        let mut running = Vec::new();
        while let Ok(Event::Progress(p)) = events.try_recv() {
            if p.batch_id == batch.id && running.last() != Some(&p.stats.running) {
                running.push(p.stats.running);
            }
        }
        // After the last task finished 2,100 are claimed ahead; 2,048 of them go back in the
        // first commit, the other 52 in the next (earlier events may still show 2,101).
        let after_drain = running
            .iter()
            .position(|&n| n == AHEAD as i64)
            .expect("the finished task's commit");
        assert_eq!(&running[after_drain..], [AHEAD as i64, 52, 0], "running after each commit: {running:?}");
        let stats = engine.stats(batch.id).await.unwrap();
        assert_eq!((stats.completed, stats.pending, stats.running), (1, 2_199, 0));
    }
}
