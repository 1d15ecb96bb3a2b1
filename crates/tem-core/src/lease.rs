//! Keeping leases: while a worker runs, it renews the leases of its in-flight tasks in one
//! statement every third of the lease, and rescues tasks whose lease expired (their worker
//! crashed). A task whose renewal fails is cancelled: someone else owns it now.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::store::RenewRequest;
use crate::time::{duration_ms, now_ms};
use crate::worker::Shared;

pub(crate) async fn keep(shared: Arc<Shared>, stop: CancellationToken) {
    let mut renew = tokio::time::interval(shared.options.lease / 3);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rescue = tokio::time::interval(shared.options.rescue_interval);
    rescue.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = renew.tick() => renew_once(&shared).await,
            _ = rescue.tick() => rescue_once(&shared).await,
            () = stop.cancelled() => break,
        }
    }
}

async fn renew_once(shared: &Shared) {
    let ids = shared.inflight_ids();
    if ids.is_empty() {
        return;
    }
    let request = RenewRequest {
        owner: shared.owner.clone(),
        ids: ids.clone(),
        expires_at: now_ms().saturating_add(duration_ms(shared.options.lease)),
    };
    match shared.engine.committer().renew(request).await {
        Ok(renewed) => {
            for id in ids.into_iter().filter(|id| !renewed.contains(id)) {
                shared.lease_lost(id);
            }
        }
        Err(error) => tracing::warn!(%error, "lease renewal failed; will retry"),
    }
}

async fn rescue_once(shared: &Shared) {
    match shared.engine.committer().rescue().await {
        Ok(0) => {}
        Ok(rescued) => {
            tracing::info!(rescued, "returned tasks with expired leases to the queue");
            shared.engine.wake().notify_waiters();
        }
        Err(error) => tracing::warn!(%error, "rescue of expired leases failed; will retry"),
    }
}
