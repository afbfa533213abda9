//! What a cache does when it starts, on its own thread so the mount never waits for it: the
//! optional wipe, the membership check, the scan that rebuilds the LRU index, and cleanup.
//!
//! Under the usage lock: wipe if asked (rename `v1` aside, which is instant however large the
//! cache, and reset the counter), then try to be the only member. Alone, the scan runs under
//! the lock and its total replaces the counter, repairing any drift left by crashed mounts; with
//! others running, the counter is trusted and the scan runs unlocked (it only feeds the index).
//! Last, renamed-aside trees and temp files older than [`STALE_TMP`] (from crashes) are removed.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::disk::DiskBlockCache;
use super::evict::tick;
use super::format::BlockName;

/// A temp file this old belongs to a write that will never finish.
const STALE_TMP: Duration = Duration::from_secs(600);

/// Block files found by a scan.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Name and last use (mtime, ns).
    pub blocks: Vec<(BlockName, u64)>,
    pub bytes: u64,
}

impl DiskBlockCache {
    /// The startup sequence (the caller then sets `ready`, whatever happened).
    pub(super) fn startup(&self) {
        if let Err(e) = self.try_startup() {
            tracing::warn!(dir = %self.show(&self.base).display(), error = %e, "disk cache startup failed");
        }
    }

    fn try_startup(&self) -> io::Result<()> {
        let Some(usage) = &self.usage else { return Ok(()) };
        let started = std::time::Instant::now();
        let mut guard = usage.lock()?;
        if self.config.wipe_at_start {
            let aside = self.base.join(format!("trash-{}-{}", std::process::id(), tick(SystemTime::now())));
            match fs::rename(&self.root, &aside) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            DirBuilder::new().mode(0o700).create(&self.root)?;
            guard.set(0);
        }
        let alone = guard.try_alone();
        let locked_scan = alone.then(|| scan(&self.root));
        if let Some(s) = &locked_scan {
            if s.bytes != guard.total() {
                tracing::info!(counted = guard.total(), found = s.bytes, "disk cache size recounted");
            }
            guard.set(s.bytes);
        }
        guard.join()?;
        self.saw_total(guard.total());
        drop(guard);
        self.usable.store(true, Ordering::Release);
        let found = locked_scan.unwrap_or_else(|| scan(&self.root));
        {
            let mut index = self.index.lock().unwrap();
            for (name, used) in &found.blocks {
                index.found(*name, *used);
            }
        }
        tracing::debug!(blocks = found.blocks.len(), bytes = found.bytes, alone, elapsed = ?started.elapsed(),
            "disk cache indexed");
        self.remove_trash();
        Ok(())
    }

    /// Adds every block on disk to the index (blocks it knows keep their position).
    pub(super) fn rescan(&self) {
        let found = scan(&self.root);
        let mut index = self.index.lock().unwrap();
        for (name, used) in found.blocks {
            index.found(name, used);
        }
    }

    /// Removes trees renamed aside by wipes (ours or a crashed mount's).
    fn remove_trash(&self) {
        let Ok(entries) = fs::read_dir(&self.base) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("trash-")
                && let Err(e) = fs::remove_dir_all(entry.path())
            {
                tracing::debug!(path = %entry.path().display(), error = %e, "cache trash not removed");
            }
        }
    }
}

/// Every block file under `root` (`<hh>/<hex>/<index>`); removes stale temp files on the way.
/// Entries that vanish or change while it runs are simply seen or not.
pub(super) fn scan(root: &Path) -> Scan {
    let mut out = Scan::default();
    let now = SystemTime::now();
    for (hh, hh_path) in dir_entries(root) {
        for (rest, object_dir) in dir_entries(&hh_path) {
            for (file, path) in dir_entries(&object_dir) {
                let Ok(meta) = fs::symlink_metadata(&path) else { continue };
                if !meta.is_file() {
                    continue;
                }
                if let Some(name) = BlockName::parse(&hh, &rest, &file) {
                    out.bytes += meta.len();
                    out.blocks.push((name, meta.modified().map(tick).unwrap_or(0)));
                } else if file.starts_with(".tmp-")
                    && meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|age| age > STALE_TMP)
                {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
    out
}

/// Names and paths of the entries of `dir`; nothing if it cannot be read.
fn dir_entries(dir: &Path) -> impl Iterator<Item = (String, std::path::PathBuf)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
}
