//! Eviction: an LRU index of the blocks this cache knows, and the loop that makes room for a new
//! block under the shared usage lock.
//!
//! The index orders blocks by last access (ns since the epoch: the file's mtime for scanned
//! blocks, the time of the write or hit for ours; hits also set the file's mtime, so the order
//! survives restarts and other mounts see it). [`make_room`] removes the least recently used
//! blocks until the new block fits the [`Limit`]; before removing one it checks the file's mtime,
//! and a block another mount used since goes back in the queue instead. Only a successful
//! `unlink` subtracts the file's size from the shared counter, so two mounts removing the same
//! block count it once. Empty object directories are removed with their last block.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::format::BlockName;
use super::usage::UsageGuard;

/// A block whose mtime is less than this past the index's idea of its last use was not used
/// since by another mount (hits set the mtime to exactly the time the index records).
const MTIME_SLACK: Duration = Duration::from_millis(10);

/// How much the cache may hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Limit {
    /// Bytes of block files, all mounts together.
    Bytes(u64),
    /// Keep this share of the file system free.
    KeepFree(f64),
}

impl Limit {
    /// Whether `incoming` more bytes fit, with `total` bytes cached, on the file system of `root`.
    pub fn fits(&self, root: &Path, total: u64, incoming: u64) -> bool {
        match *self {
            Limit::Bytes(max) => total.saturating_add(incoming) <= max,
            Limit::KeepFree(ratio) => match nix::sys::statvfs::statvfs(root) {
                Ok(s) => {
                    // All u64 on the 64-bit Linux targets we build for.
                    let unit = s.fragment_size();
                    let size = s.blocks().saturating_mul(unit);
                    let avail = s.blocks_available().saturating_mul(unit);
                    avail >= incoming.saturating_add((size as f64 * ratio) as u64)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "statvfs on the cache directory failed");
                    false
                }
            },
        }
    }
}

/// Nanoseconds since the epoch, the unit of the index.
pub(crate) fn tick(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// The blocks this cache knows, least recently used first.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: HashMap<BlockName, u64>,
    order: BTreeSet<(u64, BlockName)>,
}

impl Index {
    /// Records a use of `name` (a write or a hit) at `used`.
    pub fn touch(&mut self, name: BlockName, used: u64) {
        if let Some(old) = self.entries.insert(name, used) {
            self.order.remove(&(old, name));
        }
        self.order.insert((used, name));
    }

    /// Records a block found by a scan, unless this cache already knows better.
    pub fn found(&mut self, name: BlockName, used: u64) {
        if !self.entries.contains_key(&name) {
            self.touch(name, used);
        }
    }

    pub fn remove(&mut self, name: &BlockName) {
        if let Some(old) = self.entries.remove(name) {
            self.order.remove(&(old, *name));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The least recently used block and when it was used.
    fn oldest(&self) -> Option<(BlockName, u64)> {
        self.order.first().map(|(used, name)| (*name, *used))
    }
}

/// What [`make_room`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Room {
    /// Whether the new block fits now.
    pub fits: bool,
    /// Blocks removed.
    pub evicted: u64,
}

/// Removes least recently used blocks under `root` until `incoming` bytes fit `limit`. Called with
/// the usage lock held (`guard`); takes the index lock only briefly, so hits are not held up.
pub(crate) fn make_room(
    root: &Path,
    limit: &Limit,
    index: &std::sync::Mutex<Index>,
    guard: &mut UsageGuard<'_>,
    incoming: u64,
) -> Room {
    let mut evicted = 0;
    loop {
        if limit.fits(root, guard.total(), incoming) {
            return Room { fits: true, evicted };
        }
        let Some((name, used)) = index.lock().unwrap().oldest() else {
            return Room { fits: false, evicted };
        };
        let path = root.join(name.path());
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                let mtime = meta.modified().map(tick).unwrap_or(0);
                if mtime > used.saturating_add(MTIME_SLACK.as_nanos() as u64) {
                    // Another mount read it since: keep it, in its rightful place.
                    index.lock().unwrap().touch(name, mtime);
                    continue;
                }
                match fs::remove_file(&path) {
                    Ok(()) => {
                        guard.sub(meta.len());
                        evicted += 1;
                        if let Some(dir) = path.parent() {
                            // Fails (harmlessly) while the object has other blocks.
                            let _ = fs::remove_dir(dir);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "cache eviction failed");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "cache eviction stat failed"),
        }
        index.lock().unwrap().remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: u64) -> BlockName {
        BlockName { hash: [7; 32], index: i }
    }

    #[test]
    fn index_orders_by_last_use_and_scans_do_not_override() {
        let mut ix = Index::default();
        ix.touch(name(1), 30);
        ix.touch(name(2), 10);
        ix.touch(name(3), 20);
        assert_eq!(ix.oldest(), Some((name(2), 10)));
        ix.touch(name(2), 40);
        assert_eq!(ix.oldest(), Some((name(3), 20)));
        ix.found(name(3), 1);
        assert_eq!(ix.oldest(), Some((name(3), 20)), "a scan does not override what we know");
        ix.remove(&name(3));
        ix.remove(&name(3));
        assert_eq!((ix.oldest(), ix.len()), (Some((name(1), 30)), 2));
    }

    #[test]
    fn byte_limits_fit_exactly() {
        let root = Path::new("/");
        assert!(Limit::Bytes(100).fits(root, 60, 40));
        assert!(!Limit::Bytes(100).fits(root, 61, 40));
        assert!(Limit::KeepFree(0.0).fits(root, 0, 0));
        assert!(!Limit::KeepFree(1.0).fits(root, 0, 1), "nobody has 100% free");
    }
}
