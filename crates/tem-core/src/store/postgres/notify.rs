//! Wake-ups across processes: a transaction that makes tasks runnable (enqueue, resume, retry,
//! rescue, a task given back) notifies `tem_work` as it commits, and every engine on the
//! database listens, so an idle worker claims within a round trip instead of at its next poll.

use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::PgListener;

use super::PgStore;
use crate::error::Result;

/// The channel every engine listens on.
const CHANNEL: &str = "tem_work";
/// How often a listener with nothing to hear checks that its engine still exists.
const ALIVE_CHECK: Duration = Duration::from_secs(30);

/// Queues a notification, delivered when (and only if) the transaction commits. Postgres
/// folds identical notifications of one transaction into one.
pub(super) async fn work_available(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl PgStore {
    /// Calls `wake` on every notification until the store is closed or `wake` returns false
    /// (its engine is gone; asked at least every [`ALIVE_CHECK`] even when nothing arrives). A
    /// lost connection is re-established; meanwhile workers still find work by polling.
    pub fn listen_for_work(&self, wake: impl Fn() -> bool + Send + Sync + 'static) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while !pool.is_closed() {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::debug!(%error, "cannot listen for work yet; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(error) = listener.listen(CHANNEL).await {
                    tracing::debug!(%error, "LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                loop {
                    let alive = tokio::select! {
                        notification = listener.try_recv() => match notification {
                            Ok(Some(_)) => wake(),
                            // The connection dropped: anything sent meanwhile is lost, so wake
                            // once in case it was work.
                            Ok(None) => wake(),
                            Err(error) => {
                                tracing::debug!(%error, "listening for work failed; reconnecting");
                                break;
                            }
                        },
                        // A spurious wake costs an idle worker one look; a dropped engine must
                        // not keep its listener connection forever.
                        () = tokio::time::sleep(ALIVE_CHECK) => wake(),
                        () = closed(&pool) => return,
                    };
                    if !alive {
                        return;
                    }
                }
            }
        });
    }
}

/// Resolves once the pool is closed.
async fn closed(pool: &sqlx::PgPool) {
    pool.close_event().await;
}
