//! Runs claimed tasks: calls a task's handler under a deadline and cancellation, turns what
//! happened into an outcome (retry when, fail, complete), feeds the limits, and hands the outcome
//! to the group commit. A finished executor passes its slot straight to the next task claimed
//! ahead, so a slot never waits for a claim round trip while work is buffered.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handler::TaskContext;
use crate::lane::Lane;
use crate::limit::{Admission, CircuitBreaker, ConcurrencyPermit};
use crate::outcome::{ErrorKind, TaskError};
use crate::store::{BudgetCorrection, ClaimedTask, KeyPause, Next, OutcomeRow};
use crate::task::AttemptOutcome;
use crate::time::{duration_ms, now_ms};
use crate::worker::{Claim, Shared};

/// How an attempt ended, before it is turned into a row.
enum Ending {
    Finished(Result<Option<String>, TaskError>),
    /// The worker was aborted: give the task back without charging the attempt.
    Aborted,
    /// Aborted before its handler started: give it back, and there is no attempt to record.
    AbortedUnstarted,
    /// Another worker owns the task now; whatever we write would be fenced off.
    LeaseLost,
    /// Stopped before its lease lapsed, no renewal having been confirmed in time.
    Lapsed,
}

/// What the gate before a call decided.
enum Gate {
    /// Start, with the circuit breaker's admission if the lane has one.
    Go(Option<Admission>),
    /// The key is paused (or its circuit open) for long: give the task back unstarted.
    GiveBack,
}

/// Longest a task waits for its key's pause or open circuit before it is given back.
const GIVE_BACK_AFTER: Duration = Duration::from_millis(250);

/// A commit acknowledgement still to be awaited, with its bookkeeping.
type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `task`, then whatever tasks are buffered, on one concurrency slot.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    mut lane: Arc<Lane>,
    mut task: ClaimedTask,
    permit: ConcurrencyPermit,
    mut cancel: CancellationToken,
) {
    let mut acks: FuturesUnordered<Pending> = FuturesUnordered::new();
    loop {
        let span = tracing::info_span!(
            "task",
            id = task.id.0,
            batch = task.batch_id.0,
            kind = %task.kind,
            attempt = task.attempt
        );
        if let Some(ack) = run(&shared, &lane, task, cancel).instrument(span).await {
            acks.push(ack);
        }
        // Settle acknowledgements that already arrived, without waiting.
        while let Some(Some(())) = acks.next().now_or_never() {}
        match shared.next_buffered() {
            Some(next) => (lane, task, cancel) = next,
            None => break,
        }
    }
    drop(permit);
    while acks.next().await.is_some() {}
}

/// One attempt. Returns the wait for its commit, once the outcome is queued.
async fn run(
    shared: &Arc<Shared>,
    lane: &Lane,
    task: ClaimedTask,
    cancel: CancellationToken,
) -> Option<Pending> {
    let timeout = shared.timeout_for(task.batch_id).await;
    let claim = Claim {
        task: task.id,
        token: task.lease_token,
    };
    let gate = async {
        // A task claimed ahead must not start while a sibling's Retry-After pauses its key, nor
        // while the key's circuit is open. A short wait is fine; a long one gives the task back
        // unstarted, so it holds no slot and burns no attempt.
        loop {
            let now = Instant::now();
            let wait_until = match lane.paused_until(now) {
                Some(until) => until,
                None => match lane.breaker.as_ref().map(CircuitBreaker::admit) {
                    Some(Ok(admission)) => break Gate::Go(Some(admission)),
                    Some(Err(until)) => until,
                    None => break Gate::Go(None),
                },
            };
            if wait_until > now + GIVE_BACK_AFTER {
                return Gate::GiveBack;
            }
            tokio::time::sleep_until(wait_until).await;
        }
    };
    let gate = async {
        match gate.await {
            Gate::Go(admission) => {
                // A slot in a rate schedule shared with other processes comes first; this
                // process's own gate then spaces the starts it makes.
                if let Some(slot) = task.not_before {
                    tokio::time::sleep_until(slot).await;
                }
                if let Some(gate) = &lane.start_gate {
                    gate.acquire().await;
                }
                // Past what the durable rate state covers, a start could outrun a rerun's
                // quota after a kill: back to the queue, unstarted.
                if task.start_by.is_some_and(|by| Instant::now() > by) {
                    return Gate::GiveBack;
                }
                Gate::Go(admission)
            }
            give_back => give_back,
        }
    };
    let (cancelled_at_gate, given_back, admission) = tokio::select! {
        gate = gate => match gate {
            Gate::Go(admission) => (false, false, admission),
            Gate::GiveBack => (false, true, None),
        },
        () = cancel.cancelled() => (true, false, None),
    };
    // Nothing awaits between the gate and the handler's first poll.
    let started = Instant::now();
    let started_ms = now_ms();
    let deadline = timeout.map(|t| started + t);
    let ctx = TaskContext::new(
        task.id,
        task.batch_id,
        task.kind.as_str().into(),
        task.attempt,
        task.max_attempts,
        deadline,
        cancel.clone(),
    );

    let ending = match shared.handler(&task.kind) {
        _ if given_back => Ending::AbortedUnstarted,
        _ if cancelled_at_gate => {
            if shared.gives_back(task.batch_id) || shared.is_lapsing(claim) {
                Ending::AbortedUnstarted
            } else {
                Ending::LeaseLost
            }
        }
        // Claims only ask for registered types, so this is a schema-level surprise.
        None => Ending::Finished(Err(TaskError::non_retryable(format!(
            "no handler registered for task type `{}`",
            task.kind
        )))),
        Some(handler) => {
            let call = AssertUnwindSafe(handler.call(&task.payload, ctx.clone())).catch_unwind();
            let expiry = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                result = call => Ending::Finished(result.unwrap_or_else(|panic| {
                    Err(TaskError::retryable(format!("the handler panicked: {}", panic_message(&panic))))
                })),
                () = expiry => {
                    cancel.cancel();
                    let after = timeout.map(|t| format!("{t:?}")).unwrap_or_default();
                    Ending::Finished(Err(TaskError::new(ErrorKind::Timeout, format!("timed out after {after}"))))
                }
                () = cancel.cancelled() => {
                    if shared.gives_back(task.batch_id) {
                        Ending::Aborted
                    } else if shared.is_lapsing(claim) {
                        Ending::Lapsed
                    } else {
                        Ending::LeaseLost
                    }
                }
            }
        }
    };

    let finished_ms = now_ms().max(started_ms);
    // The history keeps attempts that did not succeed; a success stays on the task row.
    let history = !matches!(ending, Ending::AbortedUnstarted | Ending::Finished(Ok(_)));
    let opened = feed_breaker(lane, admission, &ending);
    let (next, outcome, error) = match ending {
        Ending::LeaseLost => {
            tracing::warn!("lease lost while running; another worker owns the task now, outcome dropped");
            shared.finish(claim);
            return None;
        }
        // Charged like a lease that expired under a crashed worker: the call may have been made.
        // Fenced like every outcome, so it is dropped if another worker took the task meanwhile.
        Ending::Lapsed => {
            let next = if task.attempt >= task.max_attempts {
                Next::Fail
            } else {
                Next::Retry {
                    run_after: finished_ms,
                }
            };
            (
                next,
                AttemptOutcome::LeaseExpired,
                Some(TaskError::retryable(
                    "stopped before its lease lapsed: the database did not confirm a lease renewal in time",
                )),
            )
        }
        Ending::Aborted | Ending::AbortedUnstarted => (
            Next::Release,
            AttemptOutcome::Aborted,
            Some(TaskError::retryable("worker aborted")),
        ),
        Ending::Finished(Ok(result)) => {
            shared.concurrency.on_success();
            (Next::Complete { result }, AttemptOutcome::Succeeded, None)
        }
        Ending::Finished(Err(error)) => {
            let next = next_after_failure(shared, lane, &task, &error, started, finished_ms).await;
            (next, error.kind.into(), Some(error))
        }
    };
    let mut budget_correction = None;
    if let (Some(budget), Some(actual)) = (&lane.budget, ctx.reported_cost()) {
        budget.correct(task.cost, actual);
        // The loop may be sleeping until the budget the estimate used up comes back.
        shared.limits_changed.notify_one();
        if actual != task.cost {
            budget_correction = Some(BudgetCorrection {
                scope: shared.options.batch,
                key: lane.key.clone(),
                quota: budget.quota(),
                estimated: task.cost,
                actual,
            });
        }
    }
    let retry_after_pause = error.as_ref().and_then(|e| {
        let wait = e.retry_after?;
        matches!(e.kind, ErrorKind::RateLimited | ErrorKind::Overloaded).then(|| KeyPause {
            key: lane.key.clone(),
            until: finished_ms.saturating_add(duration_ms(wait)),
            reason: format!("Retry-After {wait:?}: {}", e.message),
        })
    });
    // An opened circuit pauses the key for every process until its cool-down ends.
    let circuit_pause = opened.map(|until| {
        lane.pause_until(until);
        KeyPause {
            key: lane.key.clone(),
            until: finished_ms.saturating_add(duration_ms(until.saturating_duration_since(Instant::now()))),
            reason: "circuit open: the target kept failing".to_owned(),
        }
    });
    let pause = match (retry_after_pause, circuit_pause) {
        (Some(a), Some(b)) => Some(if a.until >= b.until { a } else { b }),
        (a, b) => a.or(b),
    };
    match &error {
        Some(e) => tracing::debug!(outcome = outcome.as_str(), error = %e, "attempt failed"),
        None => tracing::trace!("attempt succeeded"),
    }
    let row = OutcomeRow {
        task_id: task.id,
        lease_token: task.lease_token,
        batch_id: task.batch_id,
        attempt: task.attempt,
        worker: shared.owner.clone(),
        started_at: started_ms,
        finished_at: finished_ms,
        next,
        outcome,
        http_status: error.as_ref().and_then(|e| e.http_status),
        message: error.map(|e| e.message),
        pause,
        history,
        budget_correction,
    };
    Some(shared.report(row))
}

/// Reports the attempt to the lane's circuit breaker; returns when the circuit stays open
/// until, if this attempt opened it. A 4xx says the target is up, so it counts as a success.
fn feed_breaker(lane: &Lane, admission: Option<Admission>, ending: &Ending) -> Option<Instant> {
    let (breaker, admission) = (lane.breaker.as_ref()?, admission?);
    match ending {
        Ending::Finished(Ok(_)) => breaker.on_success(admission),
        Ending::Finished(Err(error)) if error.kind == ErrorKind::NonRetryable => {
            breaker.on_success(admission)
        }
        Ending::Finished(Err(error)) => return breaker.on_failure(admission, error.retry_after),
        Ending::Aborted | Ending::AbortedUnstarted | Ending::LeaseLost | Ending::Lapsed => {
            breaker.cancel(admission)
        }
    }
    None
}

/// Retry (when, honouring Retry-After) or fail; pauses the key and shrinks concurrency on
/// rate-limit and overload responses.
async fn next_after_failure(
    shared: &Shared,
    lane: &Lane,
    task: &ClaimedTask,
    error: &TaskError,
    started: Instant,
    finished_ms: crate::time::Millis,
) -> Next {
    if matches!(error.kind, ErrorKind::RateLimited | ErrorKind::Overloaded) {
        shared.concurrency.on_congestion(started);
        if let Some(wait) = error.retry_after {
            lane.pause_until(Instant::now() + wait);
        }
    }
    if !error.kind.is_retryable() || task.attempt >= task.max_attempts {
        return Next::Fail;
    }
    let policy = shared.retry_policy(task.batch_id).await;
    let delay = policy.delay(task.attempt, error.retry_after);
    shared.note_retry(Instant::now() + delay);
    // From the attempt's recorded end: the history shows exactly the delay the policy chose.
    Next::Retry {
        run_after: finished_ms.saturating_add(duration_ms(delay)),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
