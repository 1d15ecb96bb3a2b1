//! Bounded concurrent execution: at most `max_concurrency` operations run, at most `queue_size`
//! wait, and an operation that would overflow the queue is rejected at once instead of piling up.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

/// How [`run_with_limit`] and [`Bulkhead`] run operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitOptions {
    pub max_concurrency: usize,
    /// Operations allowed to wait for a slot (`None`: unbounded).
    pub queue_size: Option<usize>,
    /// Per-operation timeout, measured from when it starts running.
    pub timeout: Option<Duration>,
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions {
            max_concurrency: 10,
            queue_size: None,
            timeout: None,
        }
    }
}

/// Why an operation produced no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError<E> {
    #[error("operation failed: {0}")]
    Failed(E),
    #[error("operation timed out")]
    TimedOut,
    #[error("rejected: the queue is full")]
    Rejected,
}

/// A concurrency limit with a bounded waiting room.
#[derive(Debug)]
pub struct Bulkhead {
    slots: Semaphore,
    waiting: AtomicUsize,
    options: LimitOptions,
}

impl Bulkhead {
    /// A bulkhead with `options` (`max_concurrency` of 0 is treated as 1).
    pub fn new(options: LimitOptions) -> Self {
        Bulkhead {
            slots: Semaphore::new(options.max_concurrency.max(1)),
            waiting: AtomicUsize::new(0),
            options,
        }
    }

    /// Runs `op` when a slot is free, or rejects it now if the queue is full.
    pub async fn run<T, E, Fut>(&self, op: impl FnOnce() -> Fut) -> Result<T, OpError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
                // Leaves the queue however the wait ends, a caller that gives up included.
                let _place = Place(&self.waiting);
                if self.options.queue_size.is_some_and(|max| waiting >= max) {
                    return Err(OpError::Rejected);
                }
                // Never closed: acquiring cannot fail.
                self.slots.acquire().await.map_err(|_| OpError::Rejected)?
            }
        };
        let result = match self.options.timeout {
            Some(timeout) => tokio::time::timeout(timeout, op())
                .await
                .map_err(|_| OpError::TimedOut)?,
            None => op().await,
        };
        drop(permit);
        result.map_err(OpError::Failed)
    }
}

/// A place in the waiting room, given back when dropped.
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs every operation under `options`; results come back in input order.
pub async fn run_with_limit<T, E, F, Fut>(ops: Vec<F>, options: LimitOptions) -> Vec<Result<T, OpError<E>>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let bulkhead = Arc::new(Bulkhead::new(options));
    let runs = ops.into_iter().map(|op| {
        let bulkhead = bulkhead.clone();
        async move { bulkhead.run(op).await }
    });
    futures::future::join_all(runs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn results_in_input_order_with_bounded_concurrency() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let ops: Vec<_> = (0..10u64)
            .map(|i| {
                let (running, peak) = (running.clone(), peak.clone());
                move || async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Later items finish first, so order comes from the runner, not timing.
                    tokio::time::sleep(Duration::from_millis(100 - i * 10)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, String>(i)
                }
            })
            .collect();
        let options = LimitOptions {
            max_concurrency: 3,
            ..Default::default()
        };
        let results = run_with_limit(ops, options).await;
        let values: Vec<u64> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(values, (0..10).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_rejects_and_timeouts_fire() {
        let options = LimitOptions {
            max_concurrency: 1,
            queue_size: Some(1),
            timeout: Some(Duration::from_millis(50)),
        };
        let ops: Vec<_> = (0..3)
            .map(|i| {
                move || async move {
                    tokio::time::sleep(Duration::from_millis(if i == 0 { 10 } else { 100 })).await;
                    Ok::<_, String>(i)
                }
            })
            .collect();
        let results = run_with_limit(ops, options).await;
        assert_eq!(results[0], Ok(0));
        assert_eq!(results[1], Err(OpError::TimedOut));
        assert_eq!(results[2], Err(OpError::Rejected));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_gives_its_place_in_the_queue_back() {
        let bulkhead = Bulkhead::new(LimitOptions {
            max_concurrency: 1,
            queue_size: Some(2),
            timeout: None,
        });
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let busy = bulkhead.run(|| async move {
            let _ = hold.await;
            Ok::<_, String>(())
        });
        tokio::pin!(busy);
        assert!(futures::poll!(busy.as_mut()).is_pending(), "holds the only slot");
        // Queue twice the queue's size, cancelling each wait: every place must come back.
        for _ in 0..4 {
            let waiter = bulkhead.run(|| async { Ok::<_, String>(()) });
            let gave_up = tokio::time::timeout(Duration::from_millis(10), waiter).await;
            assert!(gave_up.is_err(), "the wait was cancelled, not refused");
        }
        let queued = bulkhead.run(|| async { Ok::<_, String>(7) });
        tokio::pin!(queued);
        assert!(
            futures::poll!(queued.as_mut()).is_pending(),
            "a place in the queue"
        );
        release.send(()).unwrap();
        assert_eq!(busy.await, Ok(()));
        assert_eq!(queued.await, Ok(7), "not refused by places never given back");
    }

    #[tokio::test]
    async fn failures_are_reported_not_swallowed() {
        let results = run_with_limit(vec![|| async { Err::<(), _>("boom") }], LimitOptions::default()).await;
        assert_eq!(results, vec![Err(OpError::Failed("boom"))]);
    }
}
