//! The state mounts sharing one cache directory coordinate through: a byte counter under a lock,
//! and a membership lock that tells a starting cache whether it is alone.
//!
//! `usage` holds the total size of all block files as 8 bytes (u64 LE) and their CRC32C (4
//! bytes); an unreadable or damaged value reads as 0 and is rebuilt by the next cache that
//! starts alone. Every change happens under [`Usage::lock`]: an in-process mutex (flock does not
//! exclude threads sharing one open file) and an exclusive `flock`, released when the guard
//! drops, after the new value is written with `pwrite`.
//!
//! `members`: each live cache holds a shared `flock` on it. A starting cache, holding the usage
//! lock, tries an exclusive one: if it gets it, no other cache is running (a cache joins only
//! while holding the usage lock), so it may recount the directory and reset the counter.
//! Locks belong to open file descriptions, so two caches in one process behave as two processes.

use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const VALUE_LEN: usize = 12;

/// The shared counter of one cache directory.
#[derive(Debug)]
pub(crate) struct Usage {
    file: Mutex<File>,
    members: File,
}

impl Usage {
    /// Opens (creating, 0600) `usage` and `members` in `base`; each must be a file of ours.
    pub fn open(base: &Path) -> io::Result<Usage> {
        let open = |name: &str| super::dir::open_private_file(&base.join(name), false, Path::new(name));
        Ok(Usage { file: Mutex::new(open("usage")?), members: open("members")? })
    }

    /// Takes the lock (blocking) and reads the counter.
    pub fn lock(&self) -> io::Result<UsageGuard<'_>> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.lock()?;
        let mut buf = [0u8; VALUE_LEN];
        let total = match file.read_exact_at(&mut buf, 0) {
            Ok(()) if crc32c::crc32c(&buf[..8]).to_le_bytes() == buf[8..] => {
                u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"))
            }
            _ => 0,
        };
        Ok(UsageGuard { file, usage: self, total, written: total })
    }
}

/// The usage lock, held; the counter is written back when it drops.
pub(crate) struct UsageGuard<'a> {
    file: MutexGuard<'a, File>,
    usage: &'a Usage,
    total: u64,
    written: u64,
}

impl UsageGuard<'_> {
    /// Bytes of block files, all mounts together.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn add(&mut self, bytes: u64) {
        self.total = self.total.saturating_add(bytes);
    }

    pub fn sub(&mut self, bytes: u64) {
        self.total = self.total.saturating_sub(bytes);
    }

    pub fn set(&mut self, bytes: u64) {
        self.total = bytes;
    }

    /// Tries to become the only member; true if no other cache is running. Only at startup,
    /// before [`UsageGuard::join`].
    pub fn try_alone(&self) -> bool {
        match self.usage.members.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(e)) => {
                tracing::debug!(error = %e, "cache members lock failed; assuming other mounts");
                false
            }
        }
    }

    /// Joins as a (shared) member, dropping the exclusive lock `try_alone` may have taken. Safe to
    /// do in two steps: nobody else can try to be alone while this guard is held.
    pub fn join(&self) -> io::Result<()> {
        let _ = self.usage.members.unlock();
        self.usage.members.lock_shared()
    }
}

impl Drop for UsageGuard<'_> {
    fn drop(&mut self) {
        if self.total != self.written {
            let mut buf = [0u8; VALUE_LEN];
            buf[..8].copy_from_slice(&self.total.to_le_bytes());
            let crc = crc32c::crc32c(&buf[..8]).to_le_bytes();
            buf[8..].copy_from_slice(&crc);
            if let Err(e) = self.file.write_all_at(&buf, 0) {
                tracing::debug!(error = %e, "cache usage counter not written");
            }
        }
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_persists_and_damage_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let a = Usage::open(dir.path()).unwrap();
        a.lock().unwrap().add(1234);
        let b = Usage::open(dir.path()).unwrap();
        assert_eq!(b.lock().unwrap().total(), 1234, "another open sees the value");
        std::fs::write(dir.path().join("usage"), b"garbage garbage").unwrap();
        assert_eq!(b.lock().unwrap().total(), 0);
    }

    #[test]
    fn only_a_lone_cache_is_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = Usage::open(dir.path()).unwrap();
        let b = Usage::open(dir.path()).unwrap();
        {
            let g = a.lock().unwrap();
            assert!(g.try_alone());
            g.join().unwrap();
        }
        let g = b.lock().unwrap();
        assert!(!g.try_alone(), "a is a member");
        g.join().unwrap();
        drop(g);
        drop(a);
        let c = Usage::open(dir.path()).unwrap();
        assert!(!c.lock().unwrap().try_alone(), "b still is");
    }
}
