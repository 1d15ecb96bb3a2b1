//! A simulated disk for tests: what a killed process cannot show.
//!
//! Each file keeps its *cached* bytes (what reads see) apart from its *durable* bytes (what a
//! sync made permanent), and remembers the writes since its last sync. A power cut, at a chosen
//! operation, keeps only durable bytes and durable directory entries — plus, as real disks do,
//! any random subset of the unsynced writes' 512-byte sectors — and every later operation fails.
//! A full disk refuses writes past its capacity (after writing what fits, as `pwrite` does). A
//! failed sync drops its dirty bytes as Linux does: the cache keeps them, the disk never gets
//! them, and a later sync does not write them either.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::disk::{Disk, DiskFile};

const SECTOR: usize = 512;

/// A simulated disk; clones share it.
#[derive(Clone, Debug)]
pub struct SimDisk {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    nodes: Vec<Node>,
    names: HashMap<PathBuf, usize>,
    durable_names: HashMap<PathBuf, usize>,
    ops: u64,
    cut_at: Option<u64>,
    /// What survived the power cut, once it happened.
    image: Option<HashMap<PathBuf, Vec<u8>>>,
    capacity: Option<u64>,
    failing_syncs: u32,
    rng: StdRng,
}

#[derive(Debug, Default)]
struct Node {
    cached: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync: `(pos, bytes)`; a length change is a write of no bytes.
    unsynced: Vec<(u64, Vec<u8>, Option<u64>)>,
    /// Byte ranges a failed sync dropped: cached, but never to reach the disk.
    dropped: Vec<(u64, u64)>,
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    node: usize,
}

impl SimDisk {
    /// An empty disk; `seed` decides which unsynced sectors a power cut keeps.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::from_image(HashMap::new(), seed)
    }

    /// A disk holding `image` (files by path), all durable.
    pub fn from_image(image: HashMap<PathBuf, Vec<u8>>, seed: u64) -> SimDisk {
        let mut inner = Inner {
            nodes: Vec::new(),
            names: HashMap::new(),
            durable_names: HashMap::new(),
            ops: 0,
            cut_at: None,
            image: None,
            capacity: None,
            failing_syncs: 0,
            rng: StdRng::seed_from_u64(seed),
        };
        for (path, bytes) in image {
            inner.nodes.push(Node {
                cached: bytes.clone(),
                durable: bytes,
                ..Node::default()
            });
            let node = inner.nodes.len() - 1;
            inner.names.insert(path.clone(), node);
            inner.durable_names.insert(path, node);
        }
        SimDisk {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts the power when the disk is asked for its `op`-th operation from now.
    pub fn cut_power_at(&self, op: u64) {
        let mut inner = self.lock();
        inner.cut_at = Some(inner.ops + op.max(1));
    }

    /// Cuts the power now (if it has not been cut) and returns what survived.
    pub fn power_cut_image(&self) -> HashMap<PathBuf, Vec<u8>> {
        let mut inner = self.lock();
        if inner.image.is_none() {
            inner.cut();
        }
        inner.image.clone().unwrap_or_default()
    }

    /// Whether the power was cut.
    pub fn is_cut(&self) -> bool {
        self.lock().image.is_some()
    }

    /// Limits the bytes all files may hold (`None`: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Bytes all files hold now.
    pub fn used(&self) -> u64 {
        self.lock().used()
    }

    /// Makes the next `count` syncs fail with EIO, dropping their dirty bytes.
    pub fn fail_syncs(&self, count: u32) {
        self.lock().failing_syncs = count;
    }

    /// The cached bytes of the file at `path`.
    pub fn cached(&self, path: &Path) -> Option<Vec<u8>> {
        let inner = self.lock();
        inner
            .names
            .get(path)
            .map(|&node| inner.nodes[node].cached.clone())
    }
}

impl Inner {
    fn used(&self) -> u64 {
        self.names
            .values()
            .map(|&node| self.nodes[node].cached.len() as u64)
            .sum()
    }

    /// Counts an operation; fails it if the power is (or now goes) off.
    fn step(&mut self) -> io::Result<()> {
        if self.image.is_some() {
            return Err(io::Error::other("the power is off"));
        }
        self.ops += 1;
        if self.cut_at.is_some_and(|at| self.ops >= at) {
            self.cut();
            return Err(io::Error::other("the power went off"));
        }
        Ok(())
    }

    fn cut(&mut self) {
        let mut image = HashMap::new();
        let names: Vec<(PathBuf, usize)> = self.durable_names.iter().map(|(p, n)| (p.clone(), *n)).collect();
        for (path, node) in names {
            let mut bytes = self.nodes[node].durable.clone();
            let unsynced = self.nodes[node].unsynced.clone();
            for (pos, data, len) in unsynced {
                if let Some(len) = len {
                    if self.rng.random_bool(0.5) {
                        bytes.resize(len as usize, 0);
                    }
                    continue;
                }
                for (i, sector) in data.chunks(SECTOR).enumerate() {
                    if self.rng.random_bool(0.5) {
                        let at = pos as usize + i * SECTOR;
                        if bytes.len() < at + sector.len() {
                            bytes.resize(at + sector.len(), 0);
                        }
                        bytes[at..at + sector.len()].copy_from_slice(sector);
                    }
                }
            }
            image.insert(path, bytes);
        }
        self.image = Some(image);
    }

    fn sync(&mut self, node: usize) -> io::Result<()> {
        self.step()?;
        let failing = self.failing_syncs > 0;
        let node = &mut self.nodes[node];
        if failing {
            self.failing_syncs -= 1;
            let unsynced = std::mem::take(&mut node.unsynced);
            node.dropped.extend(
                unsynced
                    .iter()
                    .filter(|(_, data, len)| len.is_none() && !data.is_empty())
                    .map(|(pos, data, _)| (*pos, *pos + data.len() as u64)),
            );
            return Err(io::Error::other("EIO: the device failed the sync"));
        }
        let mut durable = node.cached.clone();
        for &(from, to) in &node.dropped {
            for at in from..to.min(durable.len() as u64) {
                durable[at as usize] = node.durable.get(at as usize).copied().unwrap_or(0);
            }
        }
        node.durable = durable;
        node.unsynced.clear();
        Ok(())
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let mut inner = self.lock();
        inner.step()?;
        if inner.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        inner.nodes.push(Node::default());
        let node = inner.nodes.len() - 1;
        inner.names.insert(path.to_owned(), node);
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            node,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let mut inner = self.lock();
        inner.step()?;
        let node = *inner
            .names
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            node,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.step()?;
        inner
            .names
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut inner = self.lock();
        inner.step()?;
        Ok(inner
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.step()?;
        inner.durable_names.retain(|path, _| path.parent() != Some(dir));
        let entries: Vec<_> = inner
            .names
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, node)| (path.clone(), *node))
            .collect();
        inner.durable_names.extend(entries);
        Ok(())
    }
}

impl DiskFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        let mut inner = self.disk.lock();
        inner.step()?;
        Ok(inner.nodes[self.node].cached.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let mut inner = self.disk.lock();
        inner.step()?;
        let cached = &inner.nodes[self.node].cached;
        let bytes = cached
            .get(pos as usize..pos as usize + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        let mut inner = self.disk.lock();
        inner.step()?;
        let len = inner.nodes[self.node].cached.len() as u64;
        let growth = (pos + bytes.len() as u64).saturating_sub(len);
        let free = inner
            .capacity
            .map_or(u64::MAX, |capacity| capacity.saturating_sub(inner.used()));
        let fits = if growth > free {
            (bytes.len() as u64 - (growth - free)) as usize
        } else {
            bytes.len()
        };
        let node = &mut inner.nodes[self.node];
        let end = pos as usize + fits;
        if node.cached.len() < end {
            node.cached.resize(end, 0);
        }
        node.cached[pos as usize..end].copy_from_slice(&bytes[..fits]);
        node.dropped.retain(|&(from, to)| to <= pos || from >= end as u64);
        node.unsynced.push((pos, bytes[..fits].to_vec(), None));
        if fits < bytes.len() {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }

    fn reserve(&self, from: u64, to: u64) -> io::Result<()> {
        let mut inner = self.disk.lock();
        inner.step()?;
        let len = inner.nodes[self.node].cached.len() as u64;
        let free = inner
            .capacity
            .map_or(u64::MAX, |capacity| capacity.saturating_sub(inner.used()));
        if to.saturating_sub(len.max(from)) > free {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let node = &mut inner.nodes[self.node];
        if (node.cached.len() as u64) < to {
            node.cached.resize(to as usize, 0);
            node.unsynced.push((0, Vec::new(), Some(to)));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut inner = self.disk.lock();
        inner.step()?;
        let node = &mut inner.nodes[self.node];
        node.cached.resize(len as usize, 0);
        node.dropped.retain(|&(from, _)| from < len);
        node.unsynced.push((0, Vec::new(), Some(len)));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.lock().sync(self.node)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.disk.lock().sync(self.node)
    }
}
