//! The data directory's lock: one server per directory.
//!
//! Two servers on one directory would each append at offsets the other also hands out, and the
//! restart would keep whichever wrote last. So the server that opens a directory holds an
//! exclusive `flock(2)` on `LOCK` in it for as long as its store is open; the kernel drops it when
//! the process ends, however it ends, so a crash never leaves a stale lock behind. The holder
//! writes its pid into the file, so a refused server can say who holds it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use crate::error::Error;

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// A held lock on a data directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, Error> {
        let path = dir.join(LOCK_FILE);
        let unusable = |error: std::io::Error| Error::DataDir {
            path: dir.display().to_string(),
            message: format!("cannot open its lock file {}: {error}", path.display()),
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(unusable)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::Locked {
                    path: dir.display().to_string(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(error) => return Err(unusable(error.into())),
        }
        file.set_len(0).map_err(unusable)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(unusable)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first");
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).expect("free again");
    }
}
