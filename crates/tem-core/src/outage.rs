//! Riding out a database outage: a restart, a failover, a dropped connection or a lock held by
//! another process must not end a batch of hours. Database work that fails with a transient
//! error is retried with backoff until the outage has lasted the engine's tolerance
//! ([`crate::EngineOptions::outage_tolerance`]); only then does the engine give up, as
//! resumable as ever.
//!
//! The tolerance is measured from the first failure of the outage, not per call: every caller
//! that meets the same outage gives up at the same moment. The outage's start and end are
//! published as [`Event::DatabaseUnavailable`] and [`Event::DatabaseRecovered`], once each.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::events::Event;
use crate::time::{duration_ms, now_ms};

/// First pause after a transient failure; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The engine's view of whether its database answers; shared by every caller of the database.
#[derive(Debug)]
pub(crate) struct Outage {
    tolerance: Duration,
    events: broadcast::Sender<Event>,
    /// Fast path: false while the database answers, so a healthy call costs one load.
    failing: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Outage {
    pub fn new(tolerance: Duration, events: broadcast::Sender<Event>) -> Self {
        Outage {
            tolerance,
            events,
            failing: AtomicBool::new(false),
            since: Mutex::new(None),
        }
    }

    /// Runs `op`, retrying it through transient errors until the outage has lasted the
    /// tolerance; then fails with [`Error::DatabaseOutage`]. Other errors return at once.
    /// Only for work that is safe to repeat (reads, and writes fenced by lease tokens).
    pub async fn retry<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pause = FIRST_PAUSE;
        loop {
            let attempt = Instant::now();
            match op().await {
                Ok(value) => {
                    self.answered();
                    return Ok(value);
                }
                Err(error) if error.is_transient() => {
                    let since = self.failed(what, &error, attempt);
                    let waited = since.elapsed();
                    if waited >= self.tolerance {
                        return Err(Error::DatabaseOutage {
                            waited,
                            source: Box::new(error),
                        });
                    }
                    let left = self.tolerance - waited;
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Records a transient failure of an attempt made at `attempt`; returns when the outage
    /// began (the start of its first failed attempt: a connection attempt may have taken a
    /// while to fail).
    fn failed(&self, what: &'static str, error: &Error, attempt: Instant) -> Instant {
        let mut since = lock(&self.since);
        if let Some(since) = *since {
            return since;
        }
        *since = Some(attempt);
        self.failing.store(true, Ordering::Release);
        tracing::warn!(%error, operation = what, tolerance = ?self.tolerance, "the database is not answering; retrying");
        let started_ms = now_ms().saturating_sub(duration_ms(attempt.elapsed()));
        // No subscribers is fine.
        let _ = self.events.send(Event::DatabaseUnavailable {
            error: describe(error),
            since_ms: started_ms,
            gives_up_at_ms: started_ms.saturating_add(duration_ms(self.tolerance)),
        });
        attempt
    }

    /// The database answered: an outage in progress is over.
    fn answered(&self) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let Some(since) = lock(&self.since).take() else {
            return;
        };
        self.failing.store(false, Ordering::Release);
        let after = since.elapsed();
        tracing::info!(?after, "the database answers again");
        let _ = self.events.send(Event::DatabaseRecovered { after });
    }
}

/// The error as a person needs it: a pool that timed out means no connection could be opened.
fn describe(error: &Error) -> String {
    match error {
        Error::Database(sqlx::Error::PoolTimedOut) => {
            "no connection to the database could be opened (is the server up and reachable?)".to_owned()
        }
        Error::Commit(inner) => describe(inner),
        other => other.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn busy() -> Error {
        Error::Database(sqlx::Error::PoolTimedOut)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_transient_error_and_reports_the_outage_once() {
        let (events, mut seen) = broadcast::channel(16);
        let outage = Outage::new(Duration::from_secs(60), events);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let value = outage
            .retry("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 5 {
                    Err(busy())
                } else {
                    Ok(7)
                }
            })
            .await
            .expect("the sixth call succeeds");
        assert_eq!(value, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        // 5 + 10 + 20 + 40 + 80 ms of backoff, on the paused clock.
        assert_eq!(started.elapsed(), Duration::from_millis(155));
        assert!(matches!(seen.try_recv(), Ok(Event::DatabaseUnavailable { .. })));
        match seen.try_recv() {
            Ok(Event::DatabaseRecovered { after }) => assert_eq!(after, Duration::from_millis(155)),
            other => panic!("expected the recovery, got {other:?}"),
        }
        assert!(seen.try_recv().is_err(), "one event for each end of the outage");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_outage_outlasts_the_tolerance() {
        let (events, _) = broadcast::channel(16);
        let outage = Outage::new(Duration::from_secs(3), events);
        let started = Instant::now();
        let error = outage
            .retry("test", || async { Err::<(), _>(busy()) })
            .await
            .expect_err("never answers");
        assert!(matches!(error, Error::DatabaseOutage { waited, .. } if waited == Duration::from_secs(3)));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(!error.is_transient(), "giving up is final");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tolerance_counts_from_the_start_of_the_outage_not_of_each_call() {
        let (events, _) = broadcast::channel(16);
        let outage = Outage::new(Duration::from_secs(2), events);
        let first = outage.retry("first", || async { Err::<(), _>(busy()) });
        let second = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let started = Instant::now();
            let result = outage.retry("second", || async { Err::<(), _>(busy()) }).await;
            (result, started.elapsed())
        };
        let (first, (second, second_waited)) = tokio::join!(first, second);
        assert!(first.is_err() && second.is_err());
        assert!(
            second_waited <= Duration::from_millis(500),
            "the second caller joined an outage 1.5 s old: {second_waited:?}"
        );
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let (events, _) = broadcast::channel(16);
        let outage = Outage::new(Duration::from_secs(60), events);
        let calls = AtomicU32::new(0);
        let error = outage
            .retry("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::invalid("field", "bad"))
            })
            .await
            .expect_err("fails");
        assert!(matches!(error, Error::Invalid { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
