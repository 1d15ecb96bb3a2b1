//! Group commit: concurrent appends to one segment share one `fdatasync`.
//!
//! Appenders write their record, then wait here for it to become durable. Whoever finds no
//! sync running becomes the syncer: it notes how far the file has been written, syncs, records
//! that position as durable and wakes every waiter at once. Everyone who wrote before the note
//! is covered by that one sync and returns; anyone who wrote during it finds no sync running
//! and starts the next, which covers everything written meanwhile. Under load each sync covers
//! every append that arrived while the previous one ran, and no waiter queues behind another
//! just to learn it is already done.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;

use super::segment::Flush;

/// The durable length of one segment file, and the right to extend it.
#[derive(Debug)]
pub struct GroupSync {
    syncing: AtomicBool,
    /// Durable length; every change (and every failed sync) wakes the waiters.
    durable: watch::Sender<u64>,
    syncs: AtomicU64,
}

impl GroupSync {
    /// A segment whose first `durable` bytes are already on disk.
    pub fn new(durable: u64) -> GroupSync {
        GroupSync {
            syncing: AtomicBool::new(false),
            durable: watch::Sender::new(durable),
            syncs: AtomicU64::new(0),
        }
    }

    /// How many `fdatasync`s this segment has had since it was opened.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once the file is durable up to `pos`. `snapshot` is called by the syncer to take
    /// the pending bytes and learn how far they reach (and what that means to the caller); the
    /// value it returns is handed back once they are written and synced, so the caller can
    /// publish it. `None` means another append's sync covered `pos`.
    pub async fn sync_to<T: Send + 'static>(
        &self,
        pos: u64,
        snapshot: impl FnOnce() -> (Flush, u64, T),
    ) -> std::io::Result<Option<T>> {
        let mut durable = self.durable.subscribe();
        loop {
            if *durable.borrow_and_update() >= pos {
                return Ok(None);
            }
            if self
                .syncing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let _release = Release(self);
                if *self.durable.borrow() >= pos {
                    return Ok(None);
                }
                let (flush, written, value) = snapshot();
                tokio::task::spawn_blocking(move || flush.write_and_sync())
                    .await
                    .map_err(std::io::Error::other)??;
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.durable.send_if_modified(|durable| {
                    let moved = written > *durable;
                    *durable = (*durable).max(written);
                    moved
                });
                return Ok(Some(value));
            }
            // A sync is running: wait for it to finish (whether or not it covers us).
            if durable.changed().await.is_err() {
                return Err(std::io::Error::other("the segment was closed"));
            }
        }
    }
}

/// Gives up the syncer's role — also when the sync failed or the task was cancelled — and
/// wakes the waiters so one of them can take it.
struct Release<'a>(&'a GroupSync);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.syncing.store(false, Ordering::Release);
        self.0.durable.send_modify(|_| {});
    }
}
