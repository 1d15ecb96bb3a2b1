//! # tem-core: durable batches of rate-limited calls
//!
//! A batch is a named group of tasks stored in SQLite. Workers claim runnable tasks under a
//! lease, run them through async handlers within concurrency and rate limits, and record each
//! attempt's outcome; failures are retried with backoff (or after the API's Retry-After), and a
//! crashed worker loses nothing: its leases expire and the tasks run again elsewhere.
//!
//! ```no_run
//! use tem_core::{Engine, NewBatch, NewTask, TaskError, WorkerOptions};
//!
//! # async fn demo() -> tem_core::Result<()> {
//! let engine = Engine::open("sqlite://tem.db").await?;
//! let batch = engine.create_batch(NewBatch::new("greetings-1", "demo")).await?;
//! let tasks = (0..100).map(|i| NewTask::new("greet", &i)).collect::<Result<Vec<_>, _>>()?;
//! engine.enqueue(batch.id, tasks).await?;
//!
//! let report = engine
//!     .worker(WorkerOptions::default().concurrency(16).batch(batch.id))
//!     .handle("greet", |n: u32, _ctx| async move { Ok::<_, TaskError>(format!("hello {n}")) })
//!     .run_until_idle()
//!     .await?;
//! assert_eq!(report.succeeded, 100);
//! # Ok(()) }
//! ```
//!
//! Map: [`Engine`] opens a database and manages batches; a [`Worker`] runs them; [`limit`]
//! holds the rate limiter (GCRA), weighted budget and adaptive concurrency (AIMD); [`outcome`]
//! turns HTTP responses into typed outcomes; [`http`] runs batches of HTTP calls from JSONL
//! input; [`detect`] finds a remote API's concurrency and rate limits; [`BatchReport`] says what happened in a batch; [`resilience`] offers retry, a bounded
//! runner and a semaphore on their own. Timestamps are integer milliseconds since the Unix epoch (UTC).

mod batch;
mod committer;
pub mod detect;
mod engine;
mod error;
mod events;
mod executor;
mod handler;
pub mod http;
mod interrupt;
mod lane;
mod lease;
pub mod limit;
mod outage;
pub mod outcome;
mod report;
pub mod resilience;
mod retry;
mod store;
mod task;
pub mod time;
mod worker;

pub use batch::{
    Batch, BatchFilter, BatchId, BatchStats, BatchStatus, Interruption, InterruptionReason, NewBatch, Resumed,
};
pub use engine::{DEFAULT_OUTAGE_TOLERANCE, Durability, Engine, EngineOptions};
pub use error::{Error, Result};
pub use events::{BatchProgress, Event};
pub use handler::{Handler, HandlerFuture, TaskContext, typed};
pub use interrupt::{DEFAULT_MIN_SAMPLE, InterruptionCriteria};
pub use lane::Limits;
pub use outcome::{ErrorKind, TaskError, Verdict, classify};
pub use report::{BatchReport, DEFAULT_TOP_ERRORS, ErrorGroup, RetryAnalysis, Spread, StuckTask, Timing};
pub use retry::{Jitter, RetryPolicy};
/// A database URL as messages may show it: the password replaced by `***`.
pub use store::redact_url;
pub use store::{Deleted, KeyPause};
pub use task::{Attempt, AttemptOutcome, NewTask, Task, TaskFilter, TaskId, TaskStatus};
pub use worker::{OnInterrupt, RunReport, Shutdown, Worker, WorkerOptions};
