//! [`Engine`]: a database opened for durable batches, and the entry point to everything else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::batch::{Batch, BatchFilter, BatchId, BatchStats, Interruption, NewBatch, Resumed};
use crate::committer::Committer;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::interrupt::InterruptionCriteria;
use crate::outage::Outage;
use crate::retry::RetryPolicy;
use crate::store::{Deleted, KeyPause, Store};
use crate::task::{Attempt, NewTask, Task, TaskFilter, TaskId};
use crate::worker::{Worker, WorkerOptions};

/// [`EngineOptions::outage_tolerance`] unless set: long enough for a server restart or a
/// failover, short enough that a database that is gone is said within a minute.
pub const DEFAULT_OUTAGE_TOLERANCE: Duration = Duration::from_secs(60);

/// How hard SQLite works to keep a commit through a power cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a committed result survives a power cut (the default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process, may lose the last commits on a
    /// power cut; faster at small batch sizes.
    Normal,
}

/// How to open an engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub durability: Durability,
    /// How long a write waits for another process holding SQLite's write lock.
    pub busy_timeout: Duration,
    /// Create the database file when it does not exist (otherwise: [`Error::DatabaseMissing`]).
    pub create_if_missing: bool,
    /// Connections for reads (stats, listings); writes use one connection per process.
    pub read_connections: u32,
    /// Retry policy of batches that have none of their own.
    pub retry: RetryPolicy,
    /// Interruption criteria every batch gets unless it sets the same key itself.
    pub criteria: InterruptionCriteria,
    /// Open for inspection only: nothing is written (no migration, no journal-mode change), so
    /// a read-only SQLite file can be read; writes fail.
    pub read_only: bool,
    /// How long database work is retried through transient errors (a server restarting, a
    /// dropped connection, a lock held by another process) before the engine gives up.
    pub outage_tolerance: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(10),
            create_if_missing: true,
            read_connections: 4,
            retry: RetryPolicy::default(),
            criteria: InterruptionCriteria::default(),
            outage_tolerance: DEFAULT_OUTAGE_TOLERANCE,
            read_only: false,
        }
    }
}

/// A database opened for durable batches. Cheap to clone; all clones share one writer.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    committer: Committer,
    committer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    events: broadcast::Sender<Event>,
    outage: Arc<Outage>,
    wake: Notify,
    options: EngineOptions,
}

impl Engine {
    /// Opens `url` (`sqlite://PATH`, `sqlite::memory:`, or a file path) with default options.
    pub async fn open(url: &str) -> Result<Engine> {
        Self::open_with(url, EngineOptions::default()).await
    }

    /// Opens `url` with `options`, creating and migrating the schema as needed.
    pub async fn open_with(url: &str, options: EngineOptions) -> Result<Engine> {
        options.retry.validate()?;
        options.criteria.validate()?;
        let store = Store::open(url, &options).await?;
        let (events, _) = broadcast::channel(1024);
        let outage = Arc::new(Outage::new(options.outage_tolerance, events.clone()));
        let (committer, task) = Committer::spawn(store.clone(), events.clone(), outage.clone());
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                committer,
                committer_task: Mutex::new(Some(task)),
                events,
                outage,
                wake: Notify::new(),
                options,
            }),
        };
        // Work made runnable by another process wakes this one's idle workers. The listener
        // holds the engine weakly: it must not keep a dropped engine alive.
        let weak = Arc::downgrade(&engine.inner);
        engine.inner.store.listen_for_work(move || match weak.upgrade() {
            Some(inner) => {
                inner.wake.notify_waiters();
                true
            }
            None => false,
        });
        Ok(engine)
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Creates a batch; its code must be new.
    pub async fn create_batch(&self, new: NewBatch) -> Result<Batch> {
        new.validate()?;
        self.inner.store.create_batch(&new).await
    }

    /// The batch with `id`.
    pub async fn batch(&self, id: BatchId) -> Result<Batch> {
        self.patiently("read a batch", || self.inner.store.batch(id))
            .await?
            .ok_or_else(|| Error::BatchNotFound(id.to_string()))
    }

    /// The batch with `code`.
    pub async fn batch_by_code(&self, code: &str) -> Result<Batch> {
        self.find_batch(code)
            .await?
            .ok_or_else(|| Error::BatchNotFound(code.to_owned()))
    }

    /// The batch with `code`, if any.
    pub async fn find_batch(&self, code: &str) -> Result<Option<Batch>> {
        self.patiently("read a batch", || self.inner.store.batch_by_code(code))
            .await
    }

    /// Batches matching `filter`, newest first.
    pub async fn batches(&self, filter: &BatchFilter) -> Result<Vec<Batch>> {
        self.patiently("list batches", || self.inner.store.batches(filter))
            .await
    }

    /// A batch's counters.
    pub async fn stats(&self, batch: BatchId) -> Result<BatchStats> {
        Ok(self.batch(batch).await?.stats)
    }

    /// Adds `tasks` to `batch` in one transaction; returns their ids in input order.
    pub async fn enqueue(
        &self,
        batch: BatchId,
        tasks: impl IntoIterator<Item = NewTask>,
    ) -> Result<Vec<TaskId>> {
        self.enqueue_checked(batch, None, tasks).await
    }

    /// [`Engine::enqueue`], but only while the batch holds exactly `expected_total` tasks
    /// (else [`Error::TotalChanged`]): resuming an interrupted load from two processes at once
    /// cannot add the same lines twice.
    pub async fn enqueue_at(
        &self,
        batch: BatchId,
        expected_total: i64,
        tasks: impl IntoIterator<Item = NewTask>,
    ) -> Result<Vec<TaskId>> {
        self.enqueue_checked(batch, Some(expected_total), tasks).await
    }

    async fn enqueue_checked(
        &self,
        batch: BatchId,
        expect_total: Option<i64>,
        tasks: impl IntoIterator<Item = NewTask>,
    ) -> Result<Vec<TaskId>> {
        let tasks: Vec<NewTask> = tasks.into_iter().collect();
        for task in &tasks {
            if task.kind.trim().is_empty() {
                return Err(Error::invalid("task type", "must not be empty"));
            }
            if task.max_attempts == Some(0) {
                return Err(Error::invalid("max_attempts", "must be at least 1"));
            }
        }
        let max_attempts = self.max_attempts_for(batch).await?;
        let (ids, progress) = self
            .inner
            .store
            .enqueue(batch, &tasks, max_attempts, expect_total)
            .await?;
        let _ = self.inner.events.send(Event::Progress(progress));
        self.inner.wake.notify_waiters();
        Ok(ids)
    }

    /// One task.
    pub async fn task(&self, id: TaskId) -> Result<Task> {
        self.patiently("read a task", || self.inner.store.task(id))
            .await?
            .ok_or_else(|| Error::invalid("task id", format!("no task {id}")))
    }

    /// Tasks matching `filter`, in enqueue order.
    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        self.patiently("list tasks", || self.inner.store.tasks(filter))
            .await
    }

    /// Every attempt of a task, oldest first: why each one failed.
    pub async fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>> {
        self.patiently("read attempts", || self.inner.store.attempts(task))
            .await
    }

    /// Re-activates an interrupted batch and requeues its stranded `running` tasks (lease
    /// expired) without charging the attempt their dead worker used.
    pub async fn resume(&self, batch: BatchId) -> Result<Resumed> {
        // Safe to repeat: a second resume finds the batch active and nothing stranded.
        let (resumed, progress) = self
            .patiently("resume a batch", || self.inner.store.resume(batch))
            .await?;
        let _ = self.inner.events.send(Event::Progress(progress));
        self.inner.wake.notify_waiters();
        Ok(resumed)
    }

    /// Failed tasks back to pending with a fresh attempt budget and their stale error cleared.
    pub async fn retry_failed(&self, batch: BatchId) -> Result<u64> {
        let (reset, progress) = self.inner.store.retry_failed(batch).await?;
        let _ = self.inner.events.send(Event::Progress(progress));
        self.inner.wake.notify_waiters();
        Ok(reset)
    }

    /// Interrupts an active batch by hand: the same transition, and log row, as a criterion.
    /// Workers stop claiming its tasks; in-flight ones drain (or are given back, per
    /// [`WorkerOptions::on_interrupt`]). [`Engine::resume`] continues it.
    pub async fn interrupt(&self, batch: BatchId, message: &str) -> Result<()> {
        let message = if message.trim().is_empty() {
            "interrupted by hand"
        } else {
            message
        };
        let progress = self
            .inner
            .store
            .interrupt(batch, message, crate::time::now_ms())
            .await?;
        let _ = self.inner.events.send(Event::Progress(progress));
        Ok(())
    }

    /// A batch's interruptions, oldest first: reason, message and counters at that moment.
    pub async fn interruptions(&self, batch: BatchId) -> Result<Vec<Interruption>> {
        self.patiently("read interruptions", || self.inner.store.interruptions(batch))
            .await
    }

    /// Cancels a batch: its pending tasks become `cancelled`; nothing is deleted.
    pub async fn cancel(&self, batch: BatchId) -> Result<u64> {
        let (cancelled, progress) = self.inner.store.cancel(batch).await?;
        let _ = self.inner.events.send(Event::Progress(progress));
        Ok(cancelled)
    }

    /// Deletes a batch with its tasks, their attempts, its interruptions and its rate state, in
    /// one transaction, so its code can be used again. Refused with [`Error::BatchRunning`]
    /// while a worker holds any of its tasks.
    pub async fn delete_batch(&self, batch: BatchId) -> Result<Deleted> {
        self.inner.store.delete_batch(batch).await
    }

    /// Limit keys paused now, by a Retry-After or an open circuit, in any process.
    pub async fn pauses(&self) -> Result<Vec<KeyPause>> {
        self.patiently("read pauses", || self.inner.store.pauses(crate::time::now_ms()))
            .await
    }

    /// Subscribes to progress events.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// A worker with `options`; register handlers on it, then run it.
    pub fn worker(&self, options: WorkerOptions) -> Worker {
        Worker::new(self.clone(), options)
    }

    /// Commits what is queued, then closes the database. Every clone becomes unusable: calls
    /// fail with [`Error::Closed`] or a closed-pool error. Stop workers first.
    pub async fn close(&self) {
        self.inner.committer.close();
        let task = self
            .inner
            .committer_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.inner.store.close().await;
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs database work that is safe to repeat through an outage (see [`crate::outage`]).
    pub(crate) async fn patiently<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.inner.outage.retry(what, op).await
    }

    pub(crate) fn committer(&self) -> &Committer {
        &self.inner.committer
    }

    pub(crate) fn wake(&self) -> &Notify {
        &self.inner.wake
    }

    /// The retry policy in force for a batch: its own, else the engine's.
    pub(crate) async fn retry_policy(&self, batch: BatchId) -> Result<RetryPolicy> {
        Ok(self
            .batch(batch)
            .await?
            .retry
            .unwrap_or_else(|| self.inner.options.retry.clone()))
    }

    async fn max_attempts_for(&self, batch: BatchId) -> Result<u32> {
        Ok(self.retry_policy(batch).await?.max_attempts)
    }
}
