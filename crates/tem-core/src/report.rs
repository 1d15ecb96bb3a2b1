//! [`BatchReport`]: what happened in a batch, computed from the database with millisecond
//! timestamps — counts, timing, throughput, why tasks failed, how much retrying was done, and
//! tasks stuck with a dead worker.
//!
//! Every figure says what it counts. Throughput is finished tasks over the wall-clock span from
//! the first claim to the last finish (not one over the average task time); "retries" are the
//! attempts scheduled again, not a success rate.

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Interruption};
use crate::engine::Engine;
use crate::error::Result;
use crate::store::KeyPause;
use crate::task::{AttemptOutcome, TaskId};
use crate::time::{Millis, now_ms};

/// Everything `tem batch show` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchReport {
    pub batch: Batch,
    pub timing: Timing,
    pub retries: RetryAnalysis,
    /// Why failed tasks failed (their last error), most common first.
    pub failures: Vec<ErrorGroup>,
    /// Why attempts failed, retried ones included, most common first.
    pub attempt_errors: Vec<ErrorGroup>,
    /// Tasks `running` whose lease has expired: their worker is gone; they are requeued when a
    /// worker next rescues leases (or on `resume`).
    pub stuck: Vec<StuckTask>,
    /// Every interruption of the batch, oldest first.
    pub interruptions: Vec<Interruption>,
    /// Limit keys paused now (Retry-After, open circuit), in any batch.
    pub pauses: Vec<KeyPause>,
    /// When the report was computed.
    pub at: Millis,
}

/// Wall-clock timing of the finished (completed or failed) tasks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// The first claim of any task.
    pub first_start: Option<Millis>,
    /// The last task to finish.
    pub last_finish: Option<Millis>,
    /// From the first start to the last finish (or to now, while tasks are running).
    pub elapsed_ms: Option<i64>,
    /// Finished tasks per second over `elapsed_ms`.
    pub throughput_per_sec: Option<f64>,
    /// The last attempt of each task, from its claim to its finish.
    pub execution: Option<Spread>,
    /// Each task from enqueue to finish (queueing, backoff and every attempt).
    pub lifetime: Option<Spread>,
}

/// Average, minimum and maximum, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub avg_ms: f64,
    pub min_ms: i64,
    pub max_ms: i64,
}

/// How much retrying the batch needed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryAnalysis {
    /// Completed tasks with no failed attempt in their history.
    pub completed_first_attempt: i64,
    /// Completed tasks that failed at least once before (counted from the attempt history, so
    /// a retry-failed or a resume does not hide earlier failures).
    pub completed_after_retries: i64,
    /// Failed tasks, after however many attempts they had.
    pub failed: i64,
    /// Attempts that failed and were scheduled again (the retries made).
    pub retries: i64,
    /// Most attempts any finished task made, across retry-failed rounds (aborted ones are not
    /// counted: they were given back unfinished).
    pub max_attempts_used: u32,
    /// Attempts cut short because their worker vanished (counted in `retries` when retried).
    pub lost_to_crashes: i64,
}

/// A group of identical errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorGroup {
    pub outcome: Option<AttemptOutcome>,
    pub http_status: Option<u16>,
    pub message: String,
    pub count: i64,
}

/// A task whose worker stopped renewing its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckTask {
    pub task: TaskId,
    pub worker: Option<String>,
    pub claimed_at: Option<Millis>,
    pub lease_expired_at: Millis,
}

/// How many error groups a report lists by default.
pub const DEFAULT_TOP_ERRORS: u32 = 10;

impl Engine {
    /// The report of `batch`, listing up to `top_errors` error groups of each kind.
    pub async fn report(&self, batch: crate::batch::BatchId, top_errors: u32) -> Result<BatchReport> {
        let at = now_ms();
        let batch = self.batch(batch).await?;
        let store = self.store();
        let mut timing = self
            .patiently("read the report", || store.timing(batch.id))
            .await?;
        // While tasks run the span grows with the clock; a batch that stopped (finished,
        // interrupted, or waiting for a rerun) is measured to its last finish, so its
        // throughput does not decay while nobody runs it.
        let end = match timing.last_finish {
            Some(last) if batch.stats.running == 0 => last,
            _ => at,
        };
        if let Some(first) = timing.first_start {
            let elapsed = (end - first).max(0);
            timing.elapsed_ms = Some(elapsed);
            let finished = batch.stats.completed + batch.stats.failed;
            timing.throughput_per_sec = (elapsed > 0).then(|| finished as f64 * 1000.0 / elapsed as f64);
        }
        let mut retries = self
            .patiently("read the report", || store.retry_analysis(batch.id))
            .await?;
        retries.retries = batch.stats.retried;
        retries.lost_to_crashes = batch.stats.lost;
        Ok(BatchReport {
            timing,
            retries,
            failures: self
                .patiently("read the report", || store.failure_groups(batch.id, top_errors))
                .await?,
            attempt_errors: self
                .patiently("read the report", || {
                    store.attempt_error_groups(batch.id, top_errors)
                })
                .await?,
            stuck: self
                .patiently("read the report", || store.stuck(batch.id, at))
                .await?,
            interruptions: self.interruptions(batch.id).await?,
            pauses: self.pauses().await?,
            batch,
            at,
        })
    }
}
