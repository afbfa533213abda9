//! [`DiskBlockCache`]: the block store on disk, one per mount, any number per directory.
//!
//! Reads and writes here are blocking file I/O: the async side calls them through
//! `block_in_place` or `spawn_blocking` (`serve_from_disk` in `client.rs`,
//! [`DiskBlockCache::queue_write`]). A read opens the block file, reads and validates its head
//! (see `format.rs`), refreshes its mtime and LRU position ([`DiskBlockCache::open_block`]), then
//! reads the chunks it needs, each checked before it is returned ([`OpenBlock::read_chunks`]); an
//! invalid file is removed. A write goes to a `.tmp-*` file (0600) in the block's directory,
//! then, under the usage lock: skip if the block is already there (another mount stored it), make
//! room, count, rename. Any failure is logged (the first at warn) and counted; the caller never
//! sees it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use super::dir::CacheDir;
use super::evict::{Index, Limit, make_room, tick};
use super::format::{self, BlockName, Expected, Head, Invalid, ObjectId};
use super::usage::Usage;
use super::{CacheError, CacheStats, DiskCacheConfig};

/// A cache with no candidate to evict rescans the directory at most this often.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// Temp file names are unique in the process across caches, and carry the pid across processes.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_read: AtomicU64,
    pub blocks_written: AtomicU64,
    pub evictions: AtomicU64,
    pub invalid_blocks: AtomicU64,
    pub write_errors: AtomicU64,
    pub writes_skipped: AtomicU64,
    pub size_bytes: AtomicU64,
}

/// The disk block store. Share it as `Arc<DiskBlockCache>`.
#[derive(Debug)]
pub struct DiskBlockCache {
    pub(super) config: DiskCacheConfig,
    pub(super) limit: Limit,
    /// The verified `<dir>/mount-s3-cache` (held open), when the cache is on.
    pub(super) dir: Option<Arc<CacheDir>>,
    /// `<dir>/mount-s3-cache`, reached through `dir`'s handle.
    pub(super) base: PathBuf,
    /// `<base>/v1`, where blocks live.
    pub(super) root: PathBuf,
    /// `None`: caching is off (disabled, or the directory is unusable).
    pub(super) usage: Option<Usage>,
    pub(super) index: Mutex<Index>,
    /// False while a wipe is pending (or failed): nothing is served or stored.
    pub(super) usable: AtomicBool,
    /// Set when startup is done. Shared with the startup thread (and `pending` with the write
    /// tasks) so they can signal after letting go of the cache.
    pub(super) ready: Arc<watch::Sender<bool>>,
    pending: Arc<watch::Sender<u64>>,
    pub(super) counters: Counters,
    warned: AtomicBool,
    /// Whether a block skipped for lack of room was logged (once per mount, then debug).
    warned_full: AtomicBool,
    last_rescan: Mutex<Option<Instant>>,
}

impl DiskBlockCache {
    /// Opens the cache described by `config`. Only creates and checks directories: the index is
    /// rebuilt (and a wipe done) in the background. A directory that cannot be used is logged
    /// and leaves the cache off, so the mount still works, reading from S3.
    pub fn open(config: DiskCacheConfig) -> Result<Arc<DiskBlockCache>, CacheError> {
        config.validate()?;
        let dir = match config.max_size {
            Some(0) => None,
            _ => match CacheDir::open(&config.dir) {
                Ok(dir) => Some(Arc::new(dir)),
                Err(e) => {
                    tracing::warn!(error = %e, "disk cache directory unusable; caching off");
                    None
                }
            },
        };
        Self::open_in(config, dir)
    }

    /// Like [`DiskBlockCache::open`], in an already verified directory (`None`: caching off).
    pub fn open_in(config: DiskCacheConfig, dir: Option<Arc<CacheDir>>) -> Result<Arc<DiskBlockCache>, CacheError> {
        config.validate()?;
        let dir = dir.filter(|_| config.max_size != Some(0));
        let base =
            dir.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_else(|| config.dir.join(super::dir::BASE_NAME));
        let root = base.join("v1");
        let limit = match config.max_size {
            Some(bytes) => Limit::Bytes(bytes),
            None => Limit::KeepFree(config.min_free_ratio),
        };
        let usage = match &dir {
            None => None,
            Some(d) => match prepare(d) {
                Ok(usage) => Some(usage),
                Err(e) => {
                    tracing::warn!(dir = %d.shown().display(), error = %e, "disk cache directory unusable; caching off");
                    None
                }
            },
        };
        let enabled = usage.is_some();
        let cache = Arc::new(DiskBlockCache {
            usable: AtomicBool::new(enabled && !config.wipe_at_start),
            config,
            limit,
            dir,
            base,
            root,
            usage,
            index: Mutex::default(),
            ready: Arc::new(watch::Sender::new(!enabled)),
            pending: Arc::new(watch::Sender::new(0)),
            counters: Counters::default(),
            warned: AtomicBool::new(false),
            warned_full: AtomicBool::new(false),
            last_rescan: Mutex::new(None),
        });
        if enabled {
            let (starting, ready) = (cache.clone(), cache.ready.clone());
            let spawned = std::thread::Builder::new().name("cache-scan".into()).spawn(move || {
                starting.startup();
                drop(starting);
                ready.send_replace(true);
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cache startup thread not started; cache not indexed");
                cache.ready.send_replace(true);
            }
        }
        Ok(cache)
    }

    /// Whether blocks may be served and stored at all (false when disabled or unusable).
    pub fn is_enabled(&self) -> bool {
        self.usage.is_some()
    }

    pub fn block_size(&self) -> u64 {
        self.config.block_size
    }

    /// The namespace blocks of this cache are kept in ([`DiskCacheConfig::namespace`]).
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// The file block `index` of `id` lives in (whether or not it exists).
    pub fn block_path(&self, id: &ObjectId, index: u64) -> PathBuf {
        self.root.join(id.block(index).path())
    }

    /// Waits until the startup scan (and wipe) is done.
    pub async fn ready(&self) {
        let _ = self.ready.subscribe().wait_for(|r| *r).await;
    }

    /// Waits until every queued block write is done.
    pub async fn flush(&self) {
        let _ = self.pending.subscribe().wait_for(|p| *p == 0).await;
    }

    /// The store's counters; the request counters are added by the caching client.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            bytes_read_from_disk: get(&c.bytes_read),
            blocks_written: get(&c.blocks_written),
            evictions: get(&c.evictions),
            invalid_blocks: get(&c.invalid_blocks),
            write_errors: get(&c.write_errors),
            writes_skipped: get(&c.writes_skipped),
            size_bytes: get(&c.size_bytes),
            indexed_blocks: self.index.lock().unwrap().len() as u64,
            ..CacheStats::default()
        }
    }

    /// `path` as the user knows it (not through `/proc/self/fd`), for messages.
    pub(super) fn show(&self, path: &Path) -> PathBuf {
        self.dir.as_ref().map(|d| d.show(path)).unwrap_or_else(|| path.to_path_buf())
    }

    fn usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    pub(super) fn saw_total(&self, total: u64) {
        self.counters.size_bytes.store(total, Ordering::Relaxed);
    }

    /// Asks the kernel to read block `index` of `id` into the page cache in the background
    /// (`POSIX_FADV_WILLNEED`), so a sequential reader's next block is on its way from the disk
    /// while this one is served. Best effort; nothing is read here, so nothing needs checking.
    pub(crate) fn read_ahead(&self, id: &ObjectId, index: u64) {
        if !self.is_enabled() || !self.usable() {
            return;
        }
        let path = self.root.join(id.block(index).path());
        let flags = nix::fcntl::OFlag::O_NOFOLLOW.bits();
        if let Ok(file) = OpenOptions::new().read(true).custom_flags(flags).open(&path) {
            let advice = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED;
            let _ = nix::fcntl::posix_fadvise(file.as_raw_fd(), 0, 0, advice);
        }
    }

    /// How many of `indexes` in a row have no block file, on a blocking thread.
    pub async fn count_absent(self: &Arc<Self>, id: &Arc<ObjectId>, indexes: Vec<u64>) -> usize {
        let (cache, id) = (self.clone(), id.clone());
        let absent = move || indexes.iter().take_while(|i| !cache.block_path(&id, **i).exists()).count();
        tokio::task::spawn_blocking(absent).await.unwrap_or(0)
    }

    /// Queues the write of a block on a blocking thread and calls `then` when it is done. The
    /// block is not stored (and `then` is called at once) if the cache is off or more than
    /// `max_pending_writes` bytes are already queued.
    pub fn queue_write(
        self: &Arc<Self>,
        id: &Arc<ObjectId>,
        index: u64,
        object_size: u64,
        data: Vec<Bytes>,
        then: impl FnOnce() + Send + 'static,
    ) {
        if !self.is_enabled() || !self.usable() {
            return then();
        }
        let len: u64 = data.iter().map(|b| b.len() as u64).sum();
        let mut queued = false;
        self.pending.send_if_modified(|p| {
            queued = *p == 0 || *p + len <= self.config.max_pending_writes;
            if queued {
                *p += len;
            }
            queued
        });
        if !queued {
            self.counters.writes_skipped.fetch_add(1, Ordering::Relaxed);
            return then();
        }
        let (cache, id, pending) = (self.clone(), id.clone(), self.pending.clone());
        tokio::task::spawn_blocking(move || {
            cache.write_block(&id, index, object_size, &data);
            then();
            drop(cache);
            pending.send_modify(|p| *p -= len);
        });
    }

    /// Reads and validates a whole block; removes it if invalid.
    pub(crate) fn read_block(&self, id: &ObjectId, index: u64, object_size: Option<u64>) -> Option<Bytes> {
        let block = self.open_block(id, index, object_size)?;
        block.read_chunks(0..block.head.chunks()).ok()
    }

    /// Opens block `index` of `id` and validates its head (not its data: each chunk is checked
    /// as it is read, [`OpenBlock::read_chunks`]); `None` on a miss. Counts as a use of the
    /// block (mtime and LRU position). An invalid head removes the file.
    pub(crate) fn open_block<'a>(
        &'a self,
        id: &'a ObjectId,
        index: u64,
        object_size: Option<u64>,
    ) -> Option<OpenBlock<'a>> {
        if !self.is_enabled() || !self.usable() {
            return None;
        }
        let name = id.block(index);
        let path = self.root.join(name.path());
        let file = match OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cache block not readable");
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        let want = Expected { id, index, block_size: self.config.block_size, object_size };
        // A head is at most this long (a whole block's); a short last block's is shorter.
        let most = format::head_len(id, self.config.block_size);
        let head = if meta.len() > format::file_len(id, self.config.block_size) {
            Err(format::Invalid::Mismatch("file length"))
        } else {
            let mut buf = vec![0; most.min(meta.len()) as usize];
            if let Err(e) = file.read_exact_at(&mut buf, 0) {
                tracing::debug!(path = %path.display(), error = %e, "cache block read failed");
                return None;
            }
            format::parse_head(&buf, &want).and_then(|head| match meta.len().cmp(&head.file_len()) {
                std::cmp::Ordering::Equal => Ok(head),
                std::cmp::Ordering::Less => Err(format::Invalid::Short),
                std::cmp::Ordering::Greater => Err(format::Invalid::Mismatch("file length")),
            })
        };
        let head = match head {
            Ok(head) => head,
            Err(why) => {
                self.invalid(id, index, &name, &path, &meta, why);
                return None;
            }
        };
        let block = OpenBlock { cache: self, id, index, name, path, file, meta, head };
        let now = SystemTime::now();
        // The mtime is the LRU order that survives restarts and that other mounts see.
        let _ = block.file.set_modified(now);
        self.index.lock().unwrap().touch(name, tick(now));
        Some(block)
    }

    /// A block file found invalid: logged, counted and removed (it is fetched again).
    fn invalid(&self, id: &ObjectId, index: u64, name: &BlockName, path: &Path, meta: &fs::Metadata, why: Invalid) {
        tracing::warn!(key = id.key(), index, path = %self.show(path).display(), reason = ?why,
            "invalid cache block removed; fetching it again");
        self.counters.invalid_blocks.fetch_add(1, Ordering::Relaxed);
        self.remove_block(name, path, meta);
    }

    /// Stores the valid blocks of `from`, an object of `size` bytes, again as blocks of `to`,
    /// then removes `from`'s: the caller knows both hold the same bytes (a copy pinned to
    /// `from`'s ETag made `to`). Every block is read and validated as `from` and rewritten
    /// with `to`'s header, so `to`'s blocks prove their identity as any other. Returns the
    /// blocks now stored under `to`.
    pub(crate) fn relink(&self, from: &ObjectId, to: &ObjectId, size: u64) -> u64 {
        if !self.is_enabled() || !self.usable() || from == to {
            return 0;
        }
        let mut relinked = 0;
        for index in 0..size.div_ceil(self.config.block_size) {
            let Some(block) = self.read_block(from, index, Some(size)) else { continue };
            self.write_block(to, index, size, &[block]);
            if self.block_path(to, index).exists() {
                relinked += 1;
            }
            // The source object is gone (renamed): its blocks would only age out.
            let name = from.block(index);
            let path = self.root.join(name.path());
            if let Ok(meta) = fs::symlink_metadata(&path) {
                self.remove_block(&name, &path, &meta);
            }
        }
        relinked
    }

    /// Removes a block file (invalid, or of a renamed object), unless it was replaced since
    /// `read` was taken.
    fn remove_block(&self, name: &BlockName, path: &Path, read: &fs::Metadata) {
        let Some(usage) = &self.usage else { return };
        let Ok(mut guard) = usage.lock() else { return };
        match fs::symlink_metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (read.dev(), read.ino()) && fs::remove_file(path).is_ok() => {
                guard.sub(now.len());
            }
            _ => {}
        }
        self.saw_total(guard.total());
        drop(guard);
        self.index.lock().unwrap().remove(name);
    }

    /// Stores a block whose bytes are `data` (exactly the block); failures are logged only.
    pub(crate) fn write_block(&self, id: &ObjectId, index: u64, object_size: u64, data: &[Bytes]) {
        let Some(usage) = &self.usage else { return };
        if !self.usable() {
            return;
        }
        let Some((offset, length)) = format::block_extent(index, self.config.block_size, object_size) else {
            return;
        };
        if data.iter().map(|b| b.len() as u64).sum::<u64>() != length {
            debug_assert!(false, "block {index} of {} has the wrong length", id.key());
            return;
        }
        let file_len = format::file_len(id, length);
        if matches!(self.limit, Limit::Bytes(max) if file_len > max) {
            self.counters.writes_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let name = id.block(index);
        let dir = self.root.join(name.dir());
        let path = self.root.join(name.path());
        let head = format::encode_head(id, index, offset, object_size, data);
        let mut parts: Vec<&[u8]> = vec![&head];
        parts.extend(data.iter().map(|b| &b[..]));
        let tmp = match write_temp(&dir, &parts) {
            Ok(tmp) => tmp,
            Err(e) => return self.write_failed(&path, e),
        };
        for attempt in 0..2 {
            let mut guard = match usage.lock() {
                Ok(g) => g,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return self.write_failed(&path, e);
                }
            };
            if fs::symlink_metadata(&path).is_ok() {
                // Another mount stored it first: counted once, by them.
                drop(guard);
                let _ = fs::remove_file(&tmp);
                self.index.lock().unwrap().found(name, tick(SystemTime::now()));
                return;
            }
            let room = make_room(&self.root, &self.limit, &self.index, &mut guard, file_len);
            self.counters.evictions.fetch_add(room.evicted, Ordering::Relaxed);
            if room.fits {
                guard.add(file_len);
                let renamed = fs::rename(&tmp, &path);
                if renamed.is_err() {
                    guard.sub(file_len);
                }
                self.saw_total(guard.total());
                drop(guard);
                return match renamed {
                    Ok(()) => {
                        self.index.lock().unwrap().touch(name, tick(SystemTime::now()));
                        self.counters.blocks_written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        self.write_failed(&path, e)
                    }
                };
            }
            self.saw_total(guard.total());
            drop(guard);
            // Nothing of ours left to evict: learn what the other mounts stored, once.
            if attempt > 0 || !self.may_rescan() {
                break;
            }
            self.rescan();
        }
        let _ = fs::remove_file(&tmp);
        self.counters.writes_skipped.fetch_add(1, Ordering::Relaxed);
        if self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::debug!(key = id.key(), index, "no room in the cache for a block; not stored");
        } else {
            // Silence here would look like a cache that does not work (reads keep going to S3).
            let why = match self.limit {
                Limit::Bytes(max) => format!("the cache holds --max-cache-size ({max} bytes) of blocks in use"),
                Limit::KeepFree(ratio) => format!(
                    "its file system has less than {:.0}% free (the default limit without --max-cache-size)",
                    ratio * 100.0
                ),
            };
            tracing::warn!(
                "the disk cache in {} has no room for more blocks: {why}; reads not cached go to S3 \
                 (logged once; free space or set --max-cache-size)",
                crate::escape::escaped_path(&self.base)
            );
        }
    }

    fn may_rescan(&self) -> bool {
        if !*self.ready.borrow() {
            return false;
        }
        let mut last = self.last_rescan.lock().unwrap();
        if last.is_some_and(|t| t.elapsed() < RESCAN_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn write_failed(&self, path: &Path, e: io::Error) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(path = %self.show(path).display(), error = %e,
                "cannot write to the disk cache; reads go on from S3 (further failures logged at debug)");
        } else {
            tracing::debug!(path = %path.display(), error = %e, "cache write failed");
        }
    }
}

/// Creates and checks the block tree (0700, ours) and opens the counter files: a directory
/// someone else can write to could feed us blocks of their making (a CRC proves integrity, not
/// origin). See `dir.rs` for the checks.
fn prepare(dir: &CacheDir) -> io::Result<Usage> {
    dir.subdir("v1")?;
    Usage::open(dir.path())
}

/// Writes `parts` to a new temp file in `dir` (created if missing) and returns its path.
fn write_temp(dir: &Path, parts: &[&[u8]]) -> io::Result<PathBuf> {
    let mut attempt = 0;
    loop {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{seq}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(mut f) => {
                let written = parts.iter().try_for_each(|p| f.write_all(p));
                return match written {
                    Ok(()) => Ok(tmp),
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        Err(e)
                    }
                };
            }
            // An eviction removed the (empty) directory between our mkdir and open: once more.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A block file whose head is valid, open for reading its chunks.
pub(crate) struct OpenBlock<'a> {
    cache: &'a DiskBlockCache,
    id: &'a ObjectId,
    index: u64,
    name: BlockName,
    path: PathBuf,
    file: File,
    meta: fs::Metadata,
    pub head: Head,
}

impl OpenBlock<'_> {
    /// The data of chunks `chunks` (within the block), each checked against the head, in one
    /// read. A damaged chunk removes the file; either failure returns `Err` and nothing else.
    pub fn read_chunks(&self, chunks: Range<u64>) -> Result<Bytes, ()> {
        let head = &self.head;
        let (from, to) = (head.chunk_range(chunks.start).start, head.chunk_range(chunks.end - 1).end);
        let mut buf = vec![0; (to - from) as usize];
        if let Err(e) = self.file.read_exact_at(&mut buf, head.data_start + from) {
            tracing::debug!(path = %self.path.display(), error = %e, "cache block read failed");
            return Err(());
        }
        self.cache.counters.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        for k in chunks {
            let range = head.chunk_range(k);
            if let Err(why) = head.check_chunk(k, &buf[(range.start - from) as usize..(range.end - from) as usize]) {
                self.cache.invalid(self.id, self.index, &self.name, &self.path, &self.meta, why);
                return Err(());
            }
        }
        Ok(Bytes::from(buf))
    }
}
