//! The file operations the file store makes, behind one narrow seam.
//!
//! Segments are opened, written, synced, cut and removed only through [`Disk`] and [`DiskFile`],
//! so a test can put a simulated disk underneath — one that keeps written-but-unsynced bytes
//! apart and loses them on a simulated power cut, which a killed process (whose page cache
//! survives it) never shows. Production uses [`RealDisk`], chosen once per store: each call is
//! one dynamic dispatch in front of a system call that costs microseconds.
//!
//! The metadata database is SQLite's to make durable and stays outside the seam.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::preallocate;

/// A directory tree of files, as the file store uses it.
pub trait Disk: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a file at `path`, which must not exist, for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens the existing file at `path` for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes the file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// The paths of the entries in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Makes `dir`'s entries (files created or removed in it) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file.
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// The file's length.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `pos`.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `bytes` at `pos`.
    fn write_at(&self, bytes: &[u8], pos: u64) -> io::Result<()>;
    /// Grows the file from `from` to `to` bytes with allocated zeros (`fallocate(2)`).
    fn reserve(&self, from: u64, to: u64) -> io::Result<()>;
    /// Cuts (or grows) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata — its length — durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
}

/// The machine's file system.
#[derive(Debug, Default)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile(File);

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let file = File::options().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl DiskFile for RealFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }

    fn write_at(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, pos)
    }

    fn reserve(&self, from: u64, to: u64) -> io::Result<()> {
        preallocate::reserve(&self.0, from, to)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}
