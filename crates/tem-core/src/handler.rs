//! Task handlers: async functions from a typed payload to a typed result, and the context each
//! attempt runs with (ids, attempt number, deadline, cancellation, cost reporting).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchId;
use crate::outcome::TaskError;
use crate::task::TaskId;

/// What a handler gets to know about the attempt it runs.
#[derive(Clone, Debug)]
pub struct TaskContext {
    pub task_id: TaskId,
    pub batch_id: BatchId,
    /// The task type.
    pub kind: Arc<str>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    /// When the attempt times out, if it has a timeout.
    pub deadline: Option<Instant>,
    cancel: CancellationToken,
    reported_cost: Arc<AtomicU64>,
}

/// Sentinel: no cost reported.
const NO_COST: u64 = u64::MAX;

impl TaskContext {
    pub(crate) fn new(
        task_id: TaskId,
        batch_id: BatchId,
        kind: Arc<str>,
        attempt: u32,
        max_attempts: u32,
        deadline: Option<Instant>,
        cancel: CancellationToken,
    ) -> Self {
        TaskContext {
            task_id,
            batch_id,
            kind,
            attempt,
            max_attempts,
            deadline,
            cancel,
            reported_cost: Arc::new(AtomicU64::new(NO_COST)),
        }
    }

    /// True once the attempt should stop (timeout, abort, or its lease was lost).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the attempt should stop; for handlers that spawn work of their own.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// The cancellation token of this attempt.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Reports what the call really cost against a weighted budget (e.g. tokens used), to
    /// correct the estimate the task was enqueued with.
    pub fn report_cost(&self, cost: u64) {
        self.reported_cost.store(cost.min(NO_COST - 1), Ordering::Relaxed);
    }

    pub(crate) fn reported_cost(&self) -> Option<u64> {
        match self.reported_cost.load(Ordering::Relaxed) {
            NO_COST => None,
            cost => Some(cost),
        }
    }
}

/// A boxed handler future: the result as JSON text (`None` for no result), or a typed error.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Option<String>, TaskError>> + Send>>;

/// Runs tasks of one type. Implemented for async closures by [`typed`]; implement it directly to
/// work with raw JSON text.
pub trait Handler: Send + Sync + 'static {
    /// Starts one attempt with the task's JSON payload.
    fn call(&self, payload: &str, ctx: TaskContext) -> HandlerFuture;
}

/// Adapts `f(payload: P, ctx) -> Result<R, TaskError>` to a [`Handler`]. A payload that does not
/// parse as `P` fails the task (non-retryable) with the parse error; it never panics.
pub fn typed<P, R, F, Fut>(f: F) -> impl Handler
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(P, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
{
    Typed {
        f,
        _types: PhantomData,
    }
}

struct Typed<P, R, F> {
    f: F,
    _types: PhantomData<fn(P) -> R>,
}

impl<P, R, F, Fut> Handler for Typed<P, R, F>
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(P, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
{
    fn call(&self, payload: &str, ctx: TaskContext) -> HandlerFuture {
        let parsed = match serde_json::from_str::<P>(payload) {
            Ok(parsed) => parsed,
            Err(e) => {
                let message = format!(
                    "payload does not match what the `{}` handler expects: {e}",
                    ctx.kind
                );
                return Box::pin(std::future::ready(Err(TaskError::non_retryable(message))));
            }
        };
        let fut = (self.f)(parsed, ctx);
        Box::pin(async move {
            let result = fut.await?;
            let json = serde_json::to_string(&result).map_err(|e| {
                TaskError::non_retryable(format!("the handler's result is not serialisable: {e}"))
            })?;
            Ok((json != "null").then_some(json))
        })
    }
}
