//! Group commit: concurrent appends to one segment share one `fdatasync`.
//!
//! Appenders write their record, then wait here for it to become durable. One of them at a time
//! is the syncer: it notes how far the file has been written, syncs, and records that position
//! as durable. Everyone who wrote before that note is covered by that one sync; everyone queued
//! behind the syncer finds their record already durable when their turn comes. Under load one
//! sync covers every append that arrived while the previous sync ran.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The durable length of one segment file, and the turn to extend it.
#[derive(Debug, Default)]
pub struct GroupSync {
    turn: tokio::sync::Mutex<()>,
    durable: AtomicU64,
    syncs: AtomicU64,
}

impl GroupSync {
    /// A segment whose first `durable` bytes are already on disk.
    pub fn new(durable: u64) -> GroupSync {
        GroupSync {
            turn: tokio::sync::Mutex::new(()),
            durable: AtomicU64::new(durable),
            syncs: AtomicU64::new(0),
        }
    }

    /// How many `fdatasync`s this segment has had since it was opened.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once the file is durable up to `pos`. `snapshot` is called by the syncer to
    /// learn how far the file is written (and what that means to the caller); the value it
    /// returns with that length is handed back once the sync succeeded, so the caller can
    /// publish it. `None` means another append's sync already covered `pos`.
    pub async fn sync_to<T: Send + 'static>(
        &self,
        pos: u64,
        snapshot: impl FnOnce() -> (Arc<File>, u64, T),
    ) -> std::io::Result<Option<T>> {
        if self.durable.load(Ordering::Acquire) >= pos {
            return Ok(None);
        }
        let _turn = self.turn.lock().await;
        if self.durable.load(Ordering::Acquire) >= pos {
            return Ok(None);
        }
        let (file, written, value) = snapshot();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(std::io::Error::other)??;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.durable.fetch_max(written, Ordering::AcqRel);
        Ok(Some(value))
    }
}
