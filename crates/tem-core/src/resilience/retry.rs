//! `retry(policy, op)`: call until success, a non-retryable error, or the attempts run out,
//! sleeping the policy's backoff (or the error's Retry-After) in between.

use std::future::Future;
use std::time::Duration;

use crate::outcome::TaskError;
use crate::retry::RetryPolicy;

/// A success, with what it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retried<T> {
    pub value: T,
    /// Calls made, the successful one included.
    pub attempts: u32,
    /// Time spent waiting between calls.
    pub total_delay: Duration,
}

/// The last error, with what was tried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error} (after {attempts} attempt(s), {total_delay:?} of backoff)")]
pub struct RetryError<E: std::fmt::Display> {
    pub error: E,
    pub attempts: u32,
    pub total_delay: Duration,
}

/// Retries `op` (given the 1-based attempt number) on retryable [`TaskError`]s, honouring their
/// Retry-After.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, op: F) -> Result<Retried<T>, RetryError<TaskError>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, TaskError>>,
{
    retry_inner(
        policy,
        |e: &TaskError| e.kind.is_retryable(),
        |e| e.retry_after,
        op,
    )
    .await
}

/// Retries `op` on errors for which `is_retryable` says yes.
pub async fn retry_with<T, E, F, Fut>(
    policy: &RetryPolicy,
    is_retryable: impl Fn(&E) -> bool,
    op: F,
) -> Result<Retried<T>, RetryError<E>>
where
    E: std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_inner(policy, is_retryable, |_| None, op).await
}

async fn retry_inner<T, E, F, Fut>(
    policy: &RetryPolicy,
    is_retryable: impl Fn(&E) -> bool,
    retry_after: impl Fn(&E) -> Option<Duration>,
    mut op: F,
) -> Result<Retried<T>, RetryError<E>>
where
    E: std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut total_delay = Duration::ZERO;
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(value) => {
                return Ok(Retried {
                    value,
                    attempts: attempt,
                    total_delay,
                });
            }
            Err(error) if attempt < max_attempts && is_retryable(&error) => {
                let delay = policy.delay(attempt, retry_after(&error));
                tracing::debug!(attempt, ?delay, %error, "retrying");
                tokio::time::sleep(delay).await;
                total_delay += delay;
                attempt += 1;
            }
            Err(error) => {
                return Err(RetryError {
                    error,
                    attempts: attempt,
                    total_delay,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Jitter;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            jitter: Jitter::None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures_and_reports_the_cost() {
        // The paused clock moves only when the retry sleeps: each attempt's virtual start time
        // is the backoff actually waited, not the figure reported.
        let t0 = tokio::time::Instant::now();
        let starts = std::sync::Mutex::new(Vec::new());
        let got = retry(&policy(5), |attempt| {
            starts.lock().unwrap().push(t0.elapsed());
            async move {
                if attempt < 3 {
                    Err(TaskError::retryable("flaky"))
                } else {
                    Ok(attempt * 10)
                }
            }
        })
        .await
        .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(*starts.lock().unwrap(), [ms(0), ms(100), ms(300)]);
        assert_eq!(
            got,
            Retried {
                value: 30,
                attempts: 3,
                total_delay: Duration::from_millis(300)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_once_on_a_non_retryable_error() {
        let err = retry(&policy(5), |_| async {
            Err::<(), _>(TaskError::non_retryable("bad request"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 1);
        assert_eq!(err.total_delay, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_and_gives_up_after_max_attempts() {
        let t0 = tokio::time::Instant::now();
        let err = retry(&policy(3), |_| async {
            Err::<(), _>(TaskError::rate_limited(Some(Duration::from_secs(2))))
        })
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 3);
        assert_eq!(err.total_delay, Duration::from_secs(4));
        assert_eq!(t0.elapsed(), Duration::from_secs(4), "Retry-After waited out");
    }

    #[tokio::test(start_paused = true)]
    async fn custom_predicate() {
        let err = retry_with(
            &policy(4),
            |e: &String| e.starts_with("5"),
            |a| async move {
                Err::<(), _>(if a == 1 {
                    "503".to_owned()
                } else {
                    "404".to_owned()
                })
            },
        )
        .await
        .unwrap_err();
        assert_eq!((err.error.as_str(), err.attempts), ("404", 2));
    }
}
