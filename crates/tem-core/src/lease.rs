//! Keeping leases: while a worker runs, it renews the leases of its in-flight tasks in one
//! statement every third of the lease, and rescues tasks whose lease expired (their worker
//! crashed). A task whose renewal fails is cancelled: someone else owns it now. A task whose
//! renewal does not land in time (a slow commit, a database outage) is stopped before its lease
//! lapses, so no attempt ever runs on a lease another worker may already have taken over. The renewal also
//! learns which in-flight tasks belong to a batch stopped by another process, and once a second
//! the keeper has the interruption criteria judged (the batch-runtime limit is crossed by time
//! alone, without any outcome to trigger the check).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::store::RenewRequest;
use crate::time::{duration_ms, now_ms};
use crate::worker::Shared;

/// How often the interruption criteria of every active batch are judged.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) async fn keep(shared: Arc<Shared>, stop: CancellationToken) {
    // The watch runs beside the renewals, not after them: a renewal stuck behind a slow commit
    // is exactly when an attempt must be stopped.
    tokio::join!(renew_and_rescue(&shared, &stop), watch(&shared, &stop));
}

async fn renew_and_rescue(shared: &Arc<Shared>, stop: &CancellationToken) {
    // Leases were just granted: the first renewal is due a third of a lease from now.
    let every = shared.options.lease / 3;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rescue = tokio::time::interval(shared.options.rescue_interval);
    rescue.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = renew.tick() => renew_once(shared).await,
            _ = rescue.tick() => rescue_once(shared).await,
            _ = check.tick() => check_once(shared).await,
            () = stop.cancelled() => break,
        }
    }
}

/// Stops attempts whose confirmed lease is about to lapse. An attempt is stopped once less than
/// a sixth of a lease is confirmed; looking every tenth of a lease stops it at the latest a
/// fifteenth of a lease before the lapse.
async fn watch(shared: &Shared, stop: &CancellationToken) {
    let margin = shared.options.lease / 6;
    let mut watch = tokio::time::interval((shared.options.lease / 10).max(Duration::from_millis(10)));
    watch.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = watch.tick() => shared.stop_lapsing(tokio::time::Instant::now() + margin),
            () = stop.cancelled() => break,
        }
    }
}

async fn renew_once(shared: &Arc<Shared>) {
    let claims = shared.inflight_claims();
    if claims.is_empty() {
        return;
    }
    let request = RenewRequest {
        owner: shared.owner.clone(),
        ids: claims.iter().map(|claim| claim.task).collect(),
        expires_at: now_ms().saturating_add(duration_ms(shared.options.lease)),
    };
    let leased_until = tokio::time::Instant::now() + shared.options.lease;
    match shared.engine.committer().renew(request).await {
        Ok(renewed) => {
            let still: std::collections::HashSet<_> = renewed.held.iter().copied().collect();
            let (held, lost): (Vec<_>, Vec<_>) =
                claims.into_iter().partition(|claim| still.contains(&claim.task));
            shared.renewed(&held, leased_until);
            for claim in lost {
                shared.lease_lost(claim);
            }
            for id in renewed.stopped {
                shared.task_batch_stopped(id);
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

async fn check_once(shared: &Shared) {
    if let Err(error) = shared.engine.committer().check().await {
        tracing::warn!(%error, "interruption check failed; will retry");
    }
}
