//! [`Store`]: the backend an engine was opened on, chosen by the URL's scheme. Every operation is
//! forwarded to the backend's own implementation; nothing here knows SQL.

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{BatchProgress, CycleInput, CycleOutput, KeyPause};
use crate::batch::{Batch, BatchFilter, BatchId, Interruption, NewBatch, Resumed};
use crate::engine::EngineOptions;
use crate::error::Result;
use crate::report::{ErrorGroup, RetryAnalysis, StuckTask, Timing};
use crate::task::{Attempt, NewTask, Task, TaskFilter, TaskId};
use crate::time::Millis;

/// A database opened for the engine.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Opens `url`: `postgres://…` (or `postgresql://…`) on Postgres, anything else on SQLite.
    pub async fn open(url: &str, options: &EngineOptions) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::open(url, options).await?))
        } else {
            Ok(Store::Sqlite(SqliteStore::open(url, options).await?))
        }
    }

    /// Whether several processes (or machines) share this database's batches and limits.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// How far earlier runs spent the rate limit of `row` ([`super::limit_row`]), in
    /// microseconds since the epoch. Postgres keeps the schedule itself in that row and reads it
    /// in every claim, so there is nothing to restore.
    pub async fn spent_rate(&self, row: &str) -> Result<Option<i64>> {
        match self {
            Store::Sqlite(store) => store.spent_rate(row).await,
            Store::Postgres(_) => Ok(None),
        }
    }

    /// Calls `wake` whenever another process enqueued work or made tasks runnable, until it
    /// returns false (a no-op on SQLite, whose processes share one machine and poll cheaply).
    pub fn listen_for_work(&self, wake: impl Fn() -> bool + Send + Sync + 'static) {
        if let Store::Postgres(store) = self {
            store.listen_for_work(wake);
        }
    }
}

/// `fn name(&self, args…) -> T;` becomes an async method that forwards to the backend.
macro_rules! forward {
    ($( $(#[$meta:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Store::Sqlite(store) => store.$name($($arg),*).await,
                        Store::Postgres(store) => store.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    /// Closes the connections, waiting for them to finish.
    fn close(&self) -> ();
    fn create_batch(&self, new: &NewBatch) -> Result<Batch>;
    fn batch(&self, id: BatchId) -> Result<Option<Batch>>;
    fn batch_by_code(&self, code: &str) -> Result<Option<Batch>>;
    fn batches(&self, filter: &BatchFilter) -> Result<Vec<Batch>>;
    /// Inserts tasks in one transaction; their ids in input order, and the batch's counters.
    fn enqueue(&self, batch: BatchId, tasks: &[NewTask], default_max_attempts: u32, expect_total: Option<i64>)
        -> Result<(Vec<TaskId>, BatchProgress)>;
    /// One group commit. Nothing in the output is true until this returns `Ok`.
    fn run_cycle(&self, input: &CycleInput) -> Result<CycleOutput>;
    fn interrupt(&self, batch: BatchId, message: &str, now: Millis) -> Result<BatchProgress>;
    fn interruptions(&self, batch: BatchId) -> Result<Vec<Interruption>>;
    fn resume(&self, batch: BatchId) -> Result<(Resumed, BatchProgress)>;
    fn retry_failed(&self, batch: BatchId) -> Result<(u64, BatchProgress)>;
    fn cancel(&self, batch: BatchId) -> Result<(u64, BatchProgress)>;
    /// Removes the batch and everything of it, in one transaction; refused while it runs.
    fn delete_batch(&self, batch: BatchId) -> Result<super::Deleted>;
    fn task(&self, id: TaskId) -> Result<Option<Task>>;
    fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>>;
    fn attempts(&self, task: TaskId) -> Result<Vec<Attempt>>;
    fn pauses(&self, now: Millis) -> Result<Vec<KeyPause>>;
    fn has_work(&self, types_json: &str, batch: Option<BatchId>) -> Result<bool>;
    fn timing(&self, batch: BatchId) -> Result<Timing>;
    fn retry_analysis(&self, batch: BatchId) -> Result<RetryAnalysis>;
    fn failure_groups(&self, batch: BatchId, limit: u32) -> Result<Vec<ErrorGroup>>;
    fn attempt_error_groups(&self, batch: BatchId, limit: u32) -> Result<Vec<ErrorGroup>>;
    fn stuck(&self, batch: BatchId, now: Millis) -> Result<Vec<StuckTask>>;
}
