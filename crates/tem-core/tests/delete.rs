//! Deleting a batch: everything of it goes in one transaction (tasks, attempt history, rate
//! state), nothing of another batch does, the code can be used again, and a batch a live worker
//! holds is refused.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use tem_core::{BatchId, Engine, Error, NewBatch, NewTask, TaskError, TaskFilter, TaskStatus, WorkerOptions};

/// Rows of `limit_rate` whose key starts with `prefix`, read with plain SQL (the engine exposes
/// no reader for them).
async fn rate_rows(url: &str, prefix: &str) -> i64 {
    let pattern = format!("{prefix}%");
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM limit_rate WHERE key LIKE $1")
            .bind(pattern)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM limit_rate WHERE key LIKE ?")
            .bind(pattern)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }
}

/// Writes a spent-rate row for `batch`, as a rate-limited run would leave it.
async fn spend_rate(url: &str, batch: BatchId) {
    let key = format!("batch {} rate: api", batch.0);
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query("INSERT INTO limit_rate (key, tat_us) VALUES ($1, 1)")
            .bind(key)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query("INSERT INTO limit_rate (key, tat_us) VALUES (?, 1)")
            .bind(key)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// A batch of `n` tasks where odd numbers fail for good (one attempt recorded each).
async fn run_half_failing(engine: &Engine, code: &str, n: u64) -> BatchId {
    let batch = engine.create_batch(NewBatch::new(code, "math")).await.unwrap();
    engine
        .enqueue(batch.id, (0..n).map(|i| NewTask::new("odd-fails", &i).unwrap()))
        .await
        .unwrap();
    engine
        .worker(WorkerOptions::default().concurrency(4).batch(batch.id))
        .handle("odd-fails", |i: u64, _ctx| async move {
            if i % 2 == 1 {
                Err(TaskError::non_retryable(format!("{i} is odd")))
            } else {
                Ok(i)
            }
        })
        .run_until_idle()
        .await
        .unwrap();
    batch.id
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_removes_everything_of_the_batch_and_frees_its_code(backend) {
        let (db, engine) = common::engine(backend).await;
        let doomed = run_half_failing(&engine, "doomed", 10).await;
        let kept = run_half_failing(&engine, "kept", 4).await;
        spend_rate(db.url(), doomed).await;
        spend_rate(db.url(), kept).await;
        let doomed_tasks = engine
            .tasks(&TaskFilter { batch: Some(doomed), ..TaskFilter::default() })
            .await
            .unwrap();
        assert_eq!(engine.attempts(doomed_tasks[1].id).await.unwrap().len(), 1, "a failed attempt is recorded");

        let deleted = engine.delete_batch(doomed).await.unwrap();
        assert_eq!((deleted.tasks, deleted.attempts), (10, 5));

        assert!(engine.find_batch("doomed").await.unwrap().is_none());
        for task in &doomed_tasks {
            assert!(engine.task(task.id).await.is_err(), "task {:?} is gone", task.id);
            assert!(engine.attempts(task.id).await.unwrap().is_empty(), "its attempts are gone");
        }
        assert_eq!(rate_rows(db.url(), &format!("batch {} ", doomed.0)).await, 0);
        assert_eq!(rate_rows(db.url(), &format!("batch {} ", kept.0)).await, 1, "another batch keeps its rate");
        let other = engine.batch(kept).await.unwrap();
        assert_eq!(other.stats.total, 4);
        assert_eq!(
            engine.tasks(&TaskFilter { batch: Some(kept), ..TaskFilter::default() }).await.unwrap().len(),
            4
        );

        // The code is free again, and the new batch starts with nothing of the old one.
        let again = run_half_failing(&engine, "doomed", 2).await;
        let again = engine.batch(again).await.unwrap();
        assert_eq!((again.stats.total, again.stats.completed, again.stats.failed), (2, 1, 1));
        assert_eq!(rate_rows(db.url(), &format!("batch {} ", again.id.0)).await, 0);

        assert!(matches!(engine.delete_batch(doomed).await, Err(Error::BatchNotFound(_))));
        engine.close().await;
    }
}

on_both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_a_live_worker_holds_is_not_deleted(backend) {
        let (_db, engine) = common::engine(backend).await;
        let batch = engine.create_batch(NewBatch::new("busy", "wait")).await.unwrap();
        engine.enqueue(batch.id, [NewTask::new("wait", &0u64).unwrap()]).await.unwrap();
        let release = Arc::new(tokio::sync::Notify::new());
        let gate = release.clone();
        let worker = engine
            .worker(WorkerOptions::default().concurrency(1).batch(batch.id))
            .handle("wait", move |i: u64, _ctx| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok::<_, TaskError>(i)
                }
            });
        let run = tokio::spawn(worker.run_until_idle());
        let running = TaskFilter { batch: Some(batch.id), status: Some(TaskStatus::Running), ..TaskFilter::default() };
        common::eventually(Duration::from_secs(10), "the task to be claimed", || async {
            !engine.tasks(&running).await.unwrap().is_empty()
        })
        .await;

        let err = engine.delete_batch(batch.id).await.unwrap_err();
        assert!(
            matches!(&err, Error::BatchRunning { code, running: 1 } if code == "busy"),
            "{err:?}"
        );
        assert_eq!(engine.batch(batch.id).await.unwrap().stats.total, 1, "nothing was deleted");

        release.notify_one();
        assert_eq!(run.await.unwrap().unwrap().succeeded, 1);
        assert_eq!(engine.delete_batch(batch.id).await.unwrap().tasks, 1);
        engine.close().await;
    }
}
