//! The file-backed store: a segment file per stream under `segments/`, and `meta.db` with a row
//! per stream.
//!
//! Ordering makes crashes harmless. A create makes its segment durable (file and directory)
//! before its row commits; a delete removes the row before the file. So after any crash a row
//! always has its file, and a file without a row is a create or delete that never finished —
//! recovery removes it. A torn last record is cut by [`segment::Segment::recover`].

pub mod group_sync;
pub mod lock;
pub mod meta;
pub mod preallocate;
pub mod segment;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::store::write_records;
use crate::stream::{Replayed, Stream};
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

/// The data directory.
#[derive(Debug)]
pub struct FileStore {
    segments: PathBuf,
    meta: Meta,
    /// Held for as long as the store is open: no other server writes this directory.
    _lock: DirLock,
}

impl FileStore {
    /// Opens `dir` (creating it if needed) and recovers every stream in it.
    pub async fn open(dir: &Path) -> Result<(FileStore, Vec<Recovered>), Error> {
        let segments = dir.join("segments");
        std::fs::create_dir_all(&segments).map_err(|error| Error::DataDir {
            path: dir.display().to_string(),
            message: format!("cannot create it: {error}"),
        })?;
        let lock = DirLock::acquire(dir)?;
        let meta = Meta::open(dir).await?;
        let store = FileStore {
            segments,
            meta,
            _lock: lock,
        };
        let mut recovered = Vec::new();
        let mut known = HashSet::new();
        for row in store.meta.rows().await? {
            let path = store.segment_path(row.id);
            let mut replayed = Replayed::default();
            match Segment::recover(&path, |record| replayed.apply(record)) {
                Ok((segment, _)) => {
                    known.insert(row.id);
                    let mut row = row;
                    row.last_access_ms = row.last_access_ms.max(replayed.last_write_ms);
                    recovered.push(Recovered {
                        row,
                        segment,
                        replayed,
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(stream = %row.path, "forgetting a stream whose segment file is missing");
                    store.meta.delete(row.id).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        store.remove_orphans(&known)?;
        Ok((store, recovered))
    }

    /// Deletes segment files that no row claims (a create or delete cut short by a crash).
    fn remove_orphans(&self, known: &HashSet<u64>) -> Result<(), Error> {
        for entry in std::fs::read_dir(&self.segments)? {
            let path = entry?.path();
            let id = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| u64::from_str_radix(stem, 16).ok());
            let ours = path.extension().is_some_and(|ext| ext == "seg");
            if ours && id.is_some_and(|id| !known.contains(&id)) {
                tracing::info!(path = %path.display(), "removing a segment no stream claims");
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.segments.join(format!("{id:016x}.seg"))
    }

    /// Creates a durable segment holding `records`.
    pub fn create_segment(&self, id: u64, records: &[Record]) -> std::io::Result<Segment> {
        let mut segment = Segment::create(&self.segment_path(id))?;
        write_records(&mut segment, records);
        segment.take_pending().write_and_sync()?;
        File::open(&self.segments)?.sync_all()?;
        Ok(segment)
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
        match std::fs::remove_file(self.segment_path(id)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Writes renewed access times.
    pub async fn record_access(&self, changes: &[(u64, u64)]) -> Result<(), Error> {
        self.meta.record_access(changes).await
    }
}
