//! The file-backed store: a segment file per stream under `segments/`, and `meta.db` with a row
//! per stream.
//!
//! Ordering makes crashes harmless. A create makes its segment durable (file and directory)
//! before its row commits; a delete removes the row before the file. So after any crash a row
//! always has its file, and a file without a row is a create or delete that never finished —
//! recovery removes it. A torn last record is cut by [`segment::Segment::recover`].
//!
//! What recovery cannot explain it leaves alone: a row whose file is missing, or a segment
//! damaged before its tail, makes that stream (and its forks) *unavailable* — logged, answered
//! 500 with the reason, its files untouched for an operator — while every other stream is
//! served. Every file operation goes through [`disk::Disk`].

pub mod disk;
pub mod group_sync;
pub mod lock;
pub mod meta;
#[cfg(test)]
mod power_cut;
pub mod preallocate;
pub mod segment;
#[cfg(test)]
pub mod sim_disk;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::store::write_records;
use crate::stream::{Replayed, Stream};
use disk::{Disk, RealDisk};
use lock::DirLock;
use meta::{Meta, MetaRow};
use segment::{Record, Segment};

/// A stream as found on disk at start-up.
#[derive(Debug)]
pub struct Recovered {
    pub row: MetaRow,
    pub segment: Segment,
    pub replayed: Replayed,
}

/// What start-up found, stream by stream.
#[derive(Debug)]
pub enum Found {
    Recovered(Box<Recovered>),
    /// A stream whose data cannot be opened without losing some; why.
    Unavailable(MetaRow, String),
}

/// The data directory.
#[derive(Debug)]
pub struct FileStore {
    disk: Arc<dyn Disk>,
    segments: PathBuf,
    meta: Meta,
    /// Held for as long as the store is open: no other server writes this directory.
    _lock: DirLock,
}

impl FileStore {
    /// Opens `dir` (creating it if needed) and recovers every stream in it.
    pub async fn open(dir: &Path) -> Result<(FileStore, Vec<Found>), Error> {
        FileStore::open_on(Arc::new(RealDisk), dir).await
    }

    /// [`FileStore::open`], with segment files on `disk`.
    pub async fn open_on(disk: Arc<dyn Disk>, dir: &Path) -> Result<(FileStore, Vec<Found>), Error> {
        let segments = dir.join("segments");
        let unusable = |error: std::io::Error| Error::DataDir {
            path: dir.display().to_string(),
            message: format!("cannot create it: {error}"),
        };
        std::fs::create_dir_all(dir).map_err(unusable)?;
        disk.create_dir_all(&segments).map_err(unusable)?;
        let lock = DirLock::acquire(dir)?;
        let meta = Meta::open(dir).await?;
        let store = FileStore {
            disk,
            segments,
            meta,
            _lock: lock,
        };
        let mut found = Vec::new();
        let mut known = HashSet::new();
        for row in store.meta.rows().await? {
            known.insert(row.id);
            let path = store.segment_path(row.id);
            let mut replayed = Replayed::default();
            match Segment::recover(&*store.disk, &path, |record| replayed.apply(record)) {
                Ok((segment, _)) => {
                    let mut row = row;
                    row.last_access_ms = row.last_access_ms.max(replayed.last_write_ms);
                    found.push(Found::Recovered(Box::new(Recovered {
                        row,
                        segment,
                        replayed,
                    })));
                }
                Err(error) => {
                    let reason = match error.kind() {
                        std::io::ErrorKind::NotFound => format!(
                            "its segment file {} is missing (restore it, or delete the stream's \
                             row from meta.db, and restart)",
                            path.display()
                        ),
                        _ => format!(
                            "its segment file {} cannot be recovered without losing \
                             acknowledged data: {error}",
                            path.display()
                        ),
                    };
                    tracing::error!(stream = %row.path, %reason, "stream unavailable");
                    found.push(Found::Unavailable(row, reason));
                }
            }
        }
        store.remove_orphans(&known)?;
        Ok((store, found))
    }

    /// Deletes segment files that no row claims (a create or delete cut short by a crash).
    fn remove_orphans(&self, known: &HashSet<u64>) -> Result<(), Error> {
        for path in self.disk.list(&self.segments)? {
            let id = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| u64::from_str_radix(stem, 16).ok());
            let ours = path.extension().is_some_and(|ext| ext == "seg");
            if ours && id.is_some_and(|id| !known.contains(&id)) {
                tracing::info!(path = %path.display(), "removing a segment no stream claims");
                self.disk.remove(&path)?;
            }
        }
        Ok(())
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.segments.join(format!("{id:016x}.seg"))
    }

    /// Creates a durable segment holding `records`. A create that fails removes what it made.
    pub fn create_segment(&self, id: u64, records: &[Record]) -> std::io::Result<Segment> {
        let path = self.segment_path(id);
        let mut segment = Segment::create(&*self.disk, &path)?;
        write_records(&mut segment, records);
        let made = segment
            .take_pending()
            .write_and_sync()
            .and_then(|()| self.disk.sync_dir(&self.segments));
        if let Err(error) = made {
            if let Err(cleanup) = self.disk.remove(&path) {
                tracing::warn!(path = %path.display(), %cleanup, "could not remove a failed create's segment");
            }
            return Err(error);
        }
        Ok(segment)
    }

    /// Removes the segment of a create whose row could not be recorded.
    pub fn discard_segment(&self, id: u64) {
        let path = self.segment_path(id);
        if let Err(error) = self.disk.remove(&path) {
            tracing::warn!(path = %path.display(), %error, "could not remove a failed create's segment");
        }
    }

    /// Records a stream whose segment is durable.
    pub async fn insert(&self, stream: &Stream) -> Result<(), Error> {
        self.meta.insert(stream).await
    }

    /// Marks a stream soft-deleted.
    pub async fn soft_delete(&self, id: u64) -> Result<(), Error> {
        self.meta.soft_delete(id).await
    }

    /// Deletes a stream: its row, then its file.
    pub async fn remove(&self, id: u64) -> Result<(), Error> {
        self.meta.delete(id).await?;
        match self.disk.remove(&self.segment_path(id)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Writes renewed access times.
    pub async fn record_access(&self, changes: &[(u64, u64)]) -> Result<(), Error> {
        self.meta.record_access(changes).await
    }
}
