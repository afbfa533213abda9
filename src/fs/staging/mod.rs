//! Local staging of existing files being modified (`--allow-modify`).
//!
//! # What it guarantees
//! A file opened for writing without `O_TRUNC` (or truncated) is staged: its new version lives in
//! a sparse local file ([`StagedFile`]) until it is uploaded whole at close or fsync, so S3 only
//! ever holds complete versions. Bytes of the old object are fetched only when a program reads
//! them (in 1 MiB blocks) or when an upload must send them; written bytes are kept as written, so
//! a pure append downloads nothing. The upload reuses the old object's bytes server-side where
//! they did not change ([`plan`]), and is conditional on the old object still being the one the
//! file was staged from; see the file-system core for how it is wired to open/write/close.
//!
//! # Layout
//! ```text
//! <ROOT>/staging/                 0700: under `--cache DIR/mount-s3-cache/`, else under
//!                                 `$TMPDIR/mount-s3-<euid>/mount-s3-cache/`
//!   s-<pid>-<nanos>/              one directory per mount, `lock` flock'ed for its life
//!     lock
//!     <n>.data                    sparse copy of the new version (0600)
//!     <n>.record                  which bucket, key and base ETag it belongs to (record.rs)
//!   kept/<n>-<name>               a file whose upload met a conflicting change: kept for the
//!                                 user, named in the log, never removed by us
//! ```
//! A record exists from the moment a file is staged until it is uploaded or discarded. A mount
//! that dies (crash, SIGKILL) leaves its directory behind; the next mount that can take its
//! `lock` finds the records, logs each discarded file by bucket and key at warn, and removes the
//! directory. Nothing staged is ever uploaded half: the old object stays whole in S3.
//!
//! # Budget
//! Every byte kept on local disk draws on one [`StagingBudget`]: at most `max_size` bytes when
//! given, and never leaving less than 5% (at most 1 GiB) of the file system free. A write
//! or fetch that does not fit fails with ENOSPC and a message naming the directory.

pub mod commit;
mod file;
mod object;
pub mod plan;
mod ranges;
mod record;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use file::{Base, FILL_BLOCK, StageError, StagedFile};
pub use object::StagedObject;
pub use ranges::RangeSet;
pub use record::StageRecord;

use crate::escape::escaped;

/// Share of the file system kept free, as the block cache does...
const MIN_FREE_RATIO: f64 = 0.05;
/// ...but never more than this: a staged write failing on a large, mostly full disk that still
/// has gigabytes free would fail programs for no reason.
const MAX_FREE_RESERVE: u64 = 1 << 30;
/// Largest record read back from disk.
const MAX_RECORD: u64 = 16 * 1024;

/// What staged files' uploads moved, for `--log-metrics`.
#[derive(Debug, Default)]
pub struct StagingStats {
    /// Uploads of a changed file that completed.
    pub uploads: AtomicU64,
    /// Bytes sent from local disk.
    pub sent: AtomicU64,
    /// Bytes copied server-side from the old object (UploadPartCopy).
    pub copied: AtomicU64,
    /// Bytes fetched from the old object (reads and uploads).
    pub fetched: AtomicU64,
    /// Uploads refused because the object changed since it was staged.
    pub conflicts: AtomicU64,
}

/// Local disk bytes held by staged files, against a limit.
#[derive(Debug)]
pub struct StagingBudget {
    stats: StagingStats,
    used: AtomicU64,
    peak: AtomicU64,
    /// Files staged now.
    pub(crate) files: AtomicU64,
    max_size: Option<u64>,
    /// The directory whose file system must keep 5% free.
    dir: PathBuf,
    shown: PathBuf,
}

impl StagingBudget {
    /// Takes `need` bytes, or says why there is no room (`key` is for the message).
    fn charge(&self, need: u64, key: &str) -> Result<(), StageError> {
        if need == 0 {
            return Ok(());
        }
        let used = self.used.fetch_add(need, Ordering::AcqRel) + need;
        let refuse = |reason: String| {
            self.used.fetch_sub(need, Ordering::AcqRel);
            Err(StageError::NoRoom { need, reason: format!("{reason}; staging {}", escaped(key)) })
        };
        if let Some(max) = self.max_size
            && used > max
        {
            return refuse(format!("the staging limit of {max} bytes is reached in {}", self.shown.display()));
        }
        if let Ok(stat) = nix::sys::statvfs::statvfs(&self.dir) {
            let frsize = stat.fragment_size().max(1);
            let total = stat.blocks() * frsize;
            let free = stat.blocks_available() * frsize;
            let keep = ((total as f64 * MIN_FREE_RATIO) as u64).min(MAX_FREE_RESERVE);
            if free < need.saturating_add(keep) {
                return refuse(format!(
                    "{} would have less than 5% (at most 1 GiB) of its file system free ({free} bytes free)",
                    self.shown.display()
                ));
            }
        }
        self.peak.fetch_max(used, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes of local disk held by staged files now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The most held at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// What uploads of staged files moved.
    pub fn stats(&self) -> &StagingStats {
        &self.stats
    }

    /// Files staged now.
    pub fn staged_files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }
}

/// The staging directory of this mount.
#[derive(Debug)]
pub struct StagingStore {
    bucket: String,
    /// `<ROOT>/staging`, resolved through a held descriptor when possible, and as shown.
    root: PathBuf,
    shown: PathBuf,
    session: PathBuf,
    /// Our flock on `session/lock`: held for the life of the mount.
    _lock: File,
    next: AtomicU64,
    budget: Arc<StagingBudget>,
    /// Whatever keeps `root` reachable (the held descriptor a `/proc/self/fd/N` path names).
    _anchor: Option<Arc<dyn std::fmt::Debug + Send + Sync>>,
}

fn private_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// What [`StagingStore::open`] found left behind by mounts that ended without uploading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// (bucket, key) of each staged file discarded.
    pub discarded: Vec<(String, String)>,
    /// Records that could not be read (removed with their data).
    pub unreadable: usize,
}

impl StagingStore {
    /// Opens the staging directory `root` (`<ROOT>/staging`, already created and checked by the
    /// caller; `shown` is how messages name it) for a mount of `bucket`, starts this mount's
    /// session, and discards what dead mounts left (see the module notes).
    pub fn open(
        root: PathBuf,
        shown: PathBuf,
        bucket: &str,
        max_size: Option<u64>,
    ) -> io::Result<(StagingStore, Abandoned)> {
        let abandoned = discard_abandoned(&root, &shown);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let session = root.join(format!("s-{}-{nanos}", std::process::id()));
        private_dir(&session)?;
        // Locked before it gets its name: another mount discards sessions whose `lock` it can
        // take, and must never see this one's unlocked.
        let lock = open_new(&session.join("lock.new"))?;
        lock.try_lock().map_err(|e| io::Error::other(format!("cannot lock {}: {e}", session.display())))?;
        std::fs::rename(session.join("lock.new"), session.join("lock"))?;
        let budget = Arc::new(StagingBudget {
            stats: StagingStats::default(),
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            files: AtomicU64::new(0),
            max_size,
            dir: root.clone(),
            shown: shown.clone(),
        });
        let store = StagingStore {
            bucket: bucket.to_string(),
            root,
            shown,
            session,
            _lock: lock,
            next: AtomicU64::new(0),
            budget,
            _anchor: None,
        };
        Ok((store, abandoned))
    }

    /// Keeps `anchor` alive as long as the store: the directory handle `root` is reached through.
    pub fn with_anchor(mut self, anchor: Arc<dyn std::fmt::Debug + Send + Sync>) -> Self {
        self._anchor = Some(anchor);
        self
    }

    /// The budget staged files draw on.
    pub fn budget(&self) -> &Arc<StagingBudget> {
        &self.budget
    }

    /// Where staged data lives, as messages show it.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Starts staging `key`, from the object `base` (`None`: a file with no object yet). Its
    /// record is on disk (fsynced) before this returns.
    pub fn stage(&self, key: &str, base: Option<Base>) -> io::Result<StagedFile> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let data_path = self.session.join(format!("{n}.data"));
        let record_path = self.session.join(format!("{n}.record"));
        let record = StageRecord {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            etag: base.as_ref().map(|b| b.etag.as_str().to_string()).unwrap_or_default(),
            base_size: base.as_ref().map_or(0, |b| b.size),
        };
        let tmp = self.session.join(format!("{n}.record.tmp"));
        let mut f = open_new(&tmp)?;
        f.write_all(&record.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &record_path)?;
        File::open(&self.session)?.sync_all()?;
        let data = open_new(&data_path)?;
        StagedFile::new(key.to_string(), base, data, data_path, record_path, self.budget.clone())
    }

    /// Moves a staged file whose upload conflicted out of the staging area, to
    /// `<ROOT>/staging/kept/`, and returns the path (as shown) the log should name. The copy
    /// holds every byte this mount read or wrote; bytes of the old object never read are zeros.
    pub fn keep(&self, file: &mut StagedFile) -> io::Result<PathBuf> {
        let kept = self.root.join("kept");
        private_dir(&kept)?;
        let base: String = file
            .key()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .take(100)
            .collect();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!("{nanos}-{base}");
        file.data_file().sync_all()?;
        std::fs::rename(&file.data_path, kept.join(&name))?;
        let _ = std::fs::remove_file(&file.record_path);
        file.gone = true;
        Ok(self.shown.join("kept").join(name))
    }
}

impl Drop for StagingStore {
    fn drop(&mut self) {
        // Staged files are dropped (and removed) before the store; the session's lock and
        // directory go last.
        let _ = std::fs::remove_file(self.session.join("lock"));
        let _ = std::fs::remove_dir(&self.session);
    }
}

/// Creates (or opens) a private file, not following a symbolic link.
fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Removes the sessions of mounts that are gone (their lock is free), logging each file.
fn discard_abandoned(root: &Path, shown: &Path) -> Abandoned {
    let mut found = Abandoned::default();
    let Ok(entries) = std::fs::read_dir(root) else { return found };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("s-")) else { continue };
        let dir = root.join(name);
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // A live mount holds its lock; a session without a lock file is one being created.
        let Ok(lock) =
            OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(dir.join("lock"))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "record") {
                match read_record(&path) {
                    Ok(record) => {
                        tracing::warn!(
                            "unsaved changes to {} in bucket {} (staged from ETag {}, under {}) were discarded: the \
                             mount that staged them ended before uploading them (crash or SIGKILL); S3 still holds \
                             the last version uploaded",
                            escaped(&record.key),
                            escaped(&record.bucket),
                            escaped(&record.etag),
                            shown.join(name).display()
                        );
                        found.discarded.push((record.bucket, record.key));
                    }
                    Err(e) => {
                        tracing::warn!(
                            "an unreadable staging record {} was discarded: {e}",
                            shown.join(name).display()
                        );
                        found.unreadable += 1;
                    }
                }
            }
        }
        for file in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(file.path());
        }
        let _ = std::fs::remove_dir(&dir);
    }
    found
}

fn read_record(path: &Path) -> io::Result<StageRecord> {
    use std::io::Read;
    let file = OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD).read_to_end(&mut bytes)?;
    StageRecord::decode(&bytes)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests;
