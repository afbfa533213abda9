//! The file-system core: POSIX operations over an [`ObjectClient`], with no kernel in sight.
//!
//! [`S3Filesystem`] owns the inode table, the open file and directory handles, and the
//! policies (TTLs, permissions, what is allowed). Every method is async and returns
//! `Result<_, FsError>`; the FUSE adapter only converts arguments and replies, and
//! [`FsError::errno`] is the one place an errno is chosen. Nothing here imports fuser,
//! aws-sdk-s3, aws-config or clap.

mod append;
pub mod config;
pub mod error;
pub mod lookup;
pub mod memory;
pub mod modify;
pub mod namespace;
pub mod part_buffer;
pub mod posix;
pub mod prefetch;
pub mod read;
pub mod readdir;
pub mod rename;
pub mod resume;
pub mod settle;
pub mod staging;
pub mod upload;
pub mod write;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::client::ObjectClient;
pub use config::{FsConfig, MetadataTtl};
pub use error::FsError;
use memory::MemoryBudget;
use namespace::names::{NAME_MAX, parse_name};
use namespace::{Inode, InodeKind, LocalState, Namespace, ROOT_INO};
use prefetch::{PrefetchConfig, Prefetcher};
use read::{FileReader, ObjectVersion};
use readdir::{DirListing, DirSlot};
use write::WriteHandle;
pub use write::{SetAttr, ShutdownReport};

/// Attributes of an inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: InodeKind,
    pub size: u64,
    /// S3 has one timestamp (LastModified; mount time for directories): atime = mtime = ctime,
    /// unless `--posix-metadata` found them stored.
    pub mtime: SystemTime,
    pub atime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// 512-byte blocks.
    pub blocks: u64,
}

/// A looked-up entry and how long the kernel may cache it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// One readdirplus entry.
#[derive(Clone, Debug)]
pub struct DirEntry<'a> {
    pub name: &'a str,
    /// Offset to pass to the next readdir to continue after this entry.
    pub next_offset: u64,
    pub entry: Entry,
}

/// A successful open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache (the file was opened with O_DIRECT).
    pub direct_io: bool,
}

/// statfs numbers: an effectively unlimited file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

struct DirHandle {
    ino: u64,
    listing: tokio::sync::Mutex<DirListing>,
}

/// An open file: read or write for its whole life.
#[derive(Clone)]
enum Handle {
    Read {
        ino: u64,
        reader: Arc<FileReader>,
    },
    Write(Arc<WriteHandle>),
    /// A write handle of a dead worker ([`resume`]): its data is gone, every use is EIO.
    Lost,
    /// A staged file (`--allow-modify`), read and written through its local copy.
    Staged(Arc<modify::StagedHandle>),
}

/// The file system over one bucket (and prefix).
pub struct S3Filesystem {
    client: Arc<dyn ObjectClient>,
    config: FsConfig,
    /// Names and their state: inodes, local entries, who has what open, metadata caches.
    ns: Namespace,
    files: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    mount_time: SystemTime,
    prefetcher: Arc<Prefetcher>,
    /// `--posix-metadata`: symlink targets read from S3.
    symlinks: posix::ops::SymlinkCache,
    /// Set by [`S3Filesystem::shutdown`].
    shut_down: AtomicBool,
    /// Where rename intents are made durable (`--allow-rename`).
    intents: Option<rename::intent::IntentLog>,
    /// Where handles are recorded for a restarted worker ([`resume`]).
    resume_log: Option<Arc<resume::ResumeLog>>,
    /// Where files are staged with `--allow-modify` ([`modify`]).
    staging: Option<Arc<staging::StagingStore>>,
    /// Staged files by inode, shared by their handles.
    staged: Mutex<HashMap<u64, Arc<staging::StagedObject>>>,
    /// Names S3 just said are absent, for the create that follows ([`lookup::RecentAbsence`]).
    absent: lookup::RecentAbsence,
    /// How lookups ask S3 ([`lookup::Lookups`]).
    lookups: lookup::Lookups,
}

impl std::fmt::Debug for S3Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Filesystem").field("bucket", &self.client.bucket()).field("config", &self.config).finish()
    }
}

impl S3Filesystem {
    /// A file system over `client` rooted at `config.prefix`. The memory budget comes from
    /// `config.memory_target`, or from the machine's memory when it is `None`.
    pub fn new(client: Arc<dyn ObjectClient>, config: FsConfig) -> Self {
        let mount_time = SystemTime::now();
        let target = config.memory_target.unwrap_or_else(memory::default_memory_target);
        let budget = MemoryBudget::for_target(target);
        tracing::debug!(target, budget = budget.limit(), "memory budget for data buffers");
        let prefetcher = Prefetcher::new(PrefetchConfig::from_fs_config(&config), budget);
        let ns = Namespace::new(&config.prefix, mount_time, config.metadata_ttl, config.negative_metadata_ttl);
        let config_file_ttl = config.file_kernel_ttl;
        let (config_posix, config_directory) = (config.posix_metadata, config.directory_bucket);
        S3Filesystem {
            prefetcher,
            ns,
            client,
            config,
            files: Mutex::default(),
            dirs: Mutex::default(),
            next_fh: AtomicU64::new(1),
            mount_time,
            symlinks: posix::ops::SymlinkCache::default(),
            shut_down: AtomicBool::new(false),
            intents: None,
            staging: None,
            staged: Mutex::default(),
            resume_log: None,
            absent: lookup::RecentAbsence::new(config_file_ttl),
            lookups: lookup::Lookups::new(config_posix, config_directory),
        }
    }

    /// Records inode numbers and handles in `log` from now on, after taking back what a dead
    /// worker left in `saved` ([`resume`]): its inodes, its read and directory handles (the
    /// same numbers, reading the same object versions), and its write handles as lost (EIO).
    /// Returns the multipart uploads it left open, for [`S3Filesystem::abort_inherited_uploads`].
    pub fn resumed(mut self, log: Arc<resume::ResumeLog>, saved: resume::Saved) -> (Self, Vec<(String, String)>) {
        let inodes = self.ns.restore(&saved.inodes);
        let (mut reads, mut dirs, mut lost) = (0, 0, 0);
        let mut next_fh = 1;
        for (fh, handle) in saved.handles {
            next_fh = next_fh.max(fh + 1);
            let Ok(inode) = self.ns.get(handle.ino()) else { continue };
            match handle {
                resume::SavedHandle::Read { ino, size, etag } => {
                    let object = ObjectVersion { key: inode.key, etag: crate::client::ETag::new(etag), size };
                    let reader = FileReader::new(self.client.clone(), object, self.prefetcher.clone());
                    self.files.get_mut().unwrap().insert(fh, Handle::Read { ino, reader: Arc::new(reader) });
                    // A restored inode has no writer: the claim cannot conflict.
                    let _ = self.ns.open_read(ino);
                    reads += 1;
                }
                resume::SavedHandle::Write { .. } => {
                    self.files.get_mut().unwrap().insert(fh, Handle::Lost);
                    lost += 1;
                }
                resume::SavedHandle::Dir { ino } => {
                    let listing = DirListing::new(inode.key, self.config.list_page_size, self.mount_time, Vec::new());
                    let handle = Arc::new(DirHandle { ino, listing: tokio::sync::Mutex::new(listing) });
                    self.dirs.get_mut().unwrap().insert(fh, handle);
                    dirs += 1;
                }
            }
        }
        *self.next_fh.get_mut() = next_fh.max(*self.next_fh.get_mut());
        if inodes + reads + dirs + lost > 0 {
            tracing::info!(inodes, reads, dirs, lost_writers = lost, "taken over from the previous worker");
        }
        if saved.damaged > 0 {
            tracing::warn!(damaged = saved.damaged, "damaged lines skipped in the state the previous worker left");
        }
        self.ns.set_resume_log(log.clone());
        // What is restored is recorded again: the log was rewritten from `saved` before.
        self.resume_log = Some(log);
        (self, saved.uploads.into_iter().map(|(id, key)| (key, id)).collect())
    }

    /// Aborts the multipart uploads a dead worker left open (`(key, upload id)`): their files
    /// failed with EIO, and no part of them may ever become an object.
    pub async fn abort_inherited_uploads(&self, uploads: Vec<(String, String)>) {
        for (key, id) in uploads {
            match self.client.abort_multipart_upload(&key, &id).await {
                Ok(()) => tracing::warn!(
                    "aborted the upload of {} left by the previous worker: the file failed with EIO",
                    crate::escape::escaped(&key)
                ),
                Err(e) => tracing::warn!(
                    "cannot abort the upload of {} left by the previous worker: {e}; a lifecycle rule for \
                     incomplete multipart uploads removes it",
                    crate::escape::escaped(&key)
                ),
            }
            if let Some(log) = &self.resume_log {
                log.upload_ended(&id);
            }
        }
    }

    /// Persists learned metadata through `journal` (for `--metadata-ttl indefinite` with a
    /// cache directory), starting from what it already holds.
    pub fn with_journal(
        mut self,
        journal: namespace::metacache::journal::Journal,
        loaded: namespace::metacache::journal::Loaded,
    ) -> Self {
        self.ns = self.ns.with_journal(journal, loaded);
        self
    }

    /// Writes out buffered metadata (at unmount).
    pub fn flush_metadata(&self) {
        self.ns.flush_metadata();
    }

    /// What `dir_key` + `name` is: from the metadata cache while it may be trusted, else from S3
    /// (and then remembered).
    pub(crate) async fn resolve(&self, dir_key: &str, name: &str) -> Result<Option<namespace::RemoteEntry>, FsError> {
        if let Some(known) = self.ns.cached(dir_key, name)
            && !self.lacks_posix(known.as_ref())
        {
            return Ok(known);
        }
        let remote = self.lookups.remote(self.client.as_ref(), dir_key, name, self.mount_time).await?;
        self.ns.learned(dir_key, name, remote.as_ref());
        self.absent.record(&format!("{dir_key}{name}"), remote.is_some());
        Ok(remote)
    }

    /// With `--posix-metadata`, an entry known only from a listing: its attributes are unknown
    /// until a lookup's HeadObject reads them.
    fn lacks_posix(&self, entry: Option<&namespace::RemoteEntry>) -> bool {
        self.config.posix_metadata && entry.is_some_and(|e| e.posix.is_none())
    }

    /// The configuration in force.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// The memory budget shared by all read and write buffers.
    pub fn memory_budget(&self) -> &MemoryBudget {
        self.prefetcher.budget()
    }

    /// Number of inodes the table holds (root included).
    pub fn inode_count(&self) -> usize {
        self.ns.len()
    }

    /// How long metadata of `kind` may be cached, by us and by the kernel.
    fn ttl(&self, kind: InodeKind) -> Duration {
        match (self.config.metadata_ttl, kind) {
            (MetadataTtl::Minimal, InodeKind::File | InodeKind::Symlink) => self.config.file_kernel_ttl,
            (MetadataTtl::Minimal, InodeKind::Directory) => self.config.dir_kernel_ttl,
            (ttl, _) => ttl.as_duration(),
        }
    }

    /// How long the kernel may keep what a listing said about `inode`. With `--posix-metadata`,
    /// an entry whose attributes are unknown (no HeadObject read them) is not kept at all, so
    /// anything that looks at it makes the kernel look it up first, and one whose attributes a
    /// HeadObject read is kept while they are fresh (see [`posix::listed`]).
    fn listed_ttl(&self, inode: &Inode) -> Duration {
        if !self.config.posix_metadata || inode.local.is_some() {
            return self.ttl(inode.kind);
        }
        match inode.stat.posix {
            None => Duration::ZERO,
            Some(_) => inode.stat.expiry.saturating_duration_since(std::time::Instant::now()).min(self.ttl(inode.kind)),
        }
    }

    pub(crate) fn attr(&self, inode: &Inode) -> Attr {
        let (perm, nlink) = match inode.kind {
            // As Mountpoint shows objects that cannot be read until restored.
            InodeKind::File if inode.stat.archived => (0, 1),
            InodeKind::File => (self.config.file_mode, 1),
            InodeKind::Symlink => (0o777, 1),
            InodeKind::Directory => (self.config.dir_mode, 2),
        };
        // Stored attributes win (only `--posix-metadata` ever sets them).
        let stored = inode.stat.posix.unwrap_or_default();
        let perm = if inode.stat.archived { perm } else { stored.perm.unwrap_or(perm) };
        let mtime = stored.mtime.unwrap_or(inode.stat.mtime);
        // A staged file's size is its local copy's, whatever S3 last said.
        let size = self.staged(inode.ino).map_or(inode.stat.size, |staged| staged.size());
        Attr {
            ino: inode.ino,
            kind: inode.kind,
            size,
            mtime,
            atime: stored.atime.unwrap_or(mtime),
            ctime: stored.ctime.unwrap_or(mtime),
            perm,
            uid: stored.uid.unwrap_or(self.config.uid),
            gid: stored.gid.unwrap_or(self.config.gid),
            nlink,
            blocks: size.div_ceil(512),
        }
    }

    fn entry(&self, inode: &Inode) -> Entry {
        Entry { attr: self.attr(inode), ttl: self.ttl(inode.kind) }
    }

    /// Looks `name` up in directory `parent`, asking S3. Takes a kernel lookup reference.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry, FsError> {
        let name = parse_name(name)?;
        let dir = self.ns.get(parent)?;
        if dir.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(parent));
        }
        let local = self.ns.local_child(parent, name);
        if let Some(file) = local.as_ref().filter(|i| i.local == Some(LocalState::File)) {
            // Being written here: S3 has nothing newer to say.
            let inode = self.ns.reference(file.ino)?;
            return Ok(self.entry(&inode));
        }
        // The kernel's FORGET of the inode the first lookup answered (it forgets a revalidated
        // dentry's new node id) may be handled between finding it and referencing it: then the
        // inode is gone and this is an ordinary lookup.
        if let Some(symlink) = self.fresh_symlink(parent, name)
            && let Ok(inode) = self.ns.reference(symlink.ino)
        {
            return Ok(self.entry(&inode));
        }
        let remote = match self.lookup_listed(parent, &dir.key, name).await? {
            Some(listed) => Some(listed),
            None => self.resolve(&dir.key, name).await?,
        };
        match remote {
            Some(remote) => {
                let ttl = self.ttl(remote.kind);
                let inode = self.ns.remember(parent, name, remote, ttl)?;
                Ok(self.entry(&inode))
            }
            None if local.is_some() => {
                let inode = self.ns.reference(local.expect("checked").ino)?;
                Ok(self.entry(&inode))
            }
            None => {
                self.ns.gone(parent, name);
                Err(FsError::NotFound { parent, name: name.to_string() })
            }
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.ns.forget(ino, n);
    }

    /// Attributes of `ino`, asking S3 again once the cached ones expire.
    pub async fn getattr(&self, ino: u64) -> Result<Entry, FsError> {
        let inode = self.ns.get(ino)?;
        let unknown_attrs = self.config.posix_metadata && inode.stat.posix.is_none() && ino != ROOT_INO;
        if (inode.stat.is_fresh() && !unknown_attrs) || inode.local.is_some() || self.staged(ino).is_some() {
            return Ok(self.entry(&inode));
        }
        let inode = self.revalidate(&inode).await?;
        Ok(self.entry(&inode))
    }

    async fn revalidate(&self, inode: &Inode) -> Result<Inode, FsError> {
        let remote =
            self.lookups.remote(self.client.as_ref(), inode.parent_key(), &inode.name, self.mount_time).await?;
        self.ns.revalidated(inode.ino, remote, self.ttl(inode.kind))
    }

    /// Opens a file. A handle reads or writes, decided here as Mountpoint does: `O_WRONLY`
    /// writes; `O_RDWR` writes only a new file or (with `O_TRUNC`) a replaced one; else read.
    pub async fn open(&self, ino: u64, flags: i32, pid: u32) -> Result<Opened, FsError> {
        let mut inode = self.ns.get(ino)?;
        if inode.local == Some(LocalState::File) && self.complete_deferred(ino).await {
            // Now an object in S3 (or gone, if its upload failed).
            inode = self.ns.get(ino)?;
        }
        if inode.kind == InodeKind::Directory {
            return Err(FsError::IsADirectory(ino));
        }
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            return Err(FsError::InvalidOpenFlags(flags));
        }
        if self.opens_append(&inode, flags) {
            return self.open_append(&inode, pid).await;
        }
        if self.opens_staged(&inode, flags) {
            return self.open_staged(&inode, flags).await;
        }
        let access = flags & libc::O_ACCMODE;
        let wants_write = access == libc::O_WRONLY || access == libc::O_RDWR;
        if inode.local == Some(LocalState::File) {
            return if wants_write {
                let ticket = self.admit_writer(&inode.key).await?;
                self.open_for_write(ino, pid, true, ticket)
            } else {
                Err(FsError::BeingWritten { key: inode.key })
            };
        }
        if access == libc::O_WRONLY || (access == libc::O_RDWR && flags & libc::O_TRUNC != 0) {
            return self.open_overwrite(&inode, flags, pid).await;
        }
        let direct_io = flags & libc::O_DIRECT != 0;
        // Reading needs the current ETag; O_DIRECT asks for the freshest view. An archived
        // object is always asked about: only HeadObject says whether it was restored.
        let inode = if direct_io || !inode.stat.is_fresh() || inode.stat.etag.is_none() || inode.stat.archived {
            self.revalidate(&inode).await?
        } else {
            inode
        };
        if inode.stat.archived {
            let class = inode.stat.storage_class.unwrap_or_else(|| "INTELLIGENT_TIERING (archive access tier)".into());
            return Err(FsError::NotRestored { key: inode.key, class });
        }
        let Some(etag) = inode.stat.etag.clone() else {
            return Err(FsError::StaleInode { ino, key: inode.key });
        };
        self.ns.open_read(ino).map_err(|_| FsError::BeingWritten { key: inode.key.clone() })?;
        let object = ObjectVersion { key: inode.key, etag, size: inode.stat.size };
        let reader = FileReader::new(self.client.clone(), object, self.prefetcher.clone());
        let fh = self.add_handle(Handle::Read { ino, reader: Arc::new(reader) });
        Ok(Opened { fh, direct_io })
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = &self.resume_log {
            match &handle {
                Handle::Read { ino, reader } => {
                    let object = reader.object();
                    log.opened_read(fh, *ino, object.size, object.etag.as_str());
                }
                Handle::Write(w) => log.opened_write(fh, w.ino),
                // Staged changes live in this worker's staging session, which a restarted worker
                // discards: the handle fails with EIO there, as a writer's does.
                Handle::Staged(staged) => log.opened_write(fh, staged.ino),
                Handle::Lost => {}
            }
        }
        self.files.lock().unwrap().insert(fh, handle);
        fh
    }

    fn record_closed(&self, fh: u64) {
        if let Some(log) = &self.resume_log {
            log.closed(fh);
        }
    }

    fn handle(&self, fh: u64) -> Option<Handle> {
        self.files.lock().unwrap().get(&fh).cloned()
    }

    fn write_handle(&self, fh: u64) -> Result<Arc<WriteHandle>, FsError> {
        match self.handle(fh) {
            Some(Handle::Write(w)) => Ok(w),
            Some(Handle::Lost) => Err(FsError::LostInRestart(fh)),
            _ => Err(FsError::BadHandle(fh)),
        }
    }

    /// Reads up to `size` bytes at `offset` from open handle `fh`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        match self.handle(fh) {
            Some(Handle::Read { ino, reader }) => {
                let result = reader.read(offset, size).await;
                if let Err(FsError::ObjectChanged { .. }) = &result {
                    self.ns.stale(ino, &reader.object().etag);
                }
                result
            }
            Some(Handle::Staged(staged)) => self.read_staged(&staged, offset, size).await,
            _ => Err(FsError::BadHandle(fh)),
        }
    }

    /// Closes handle `fh` for good. A write handle's upload completes here if no close did it;
    /// its errors can only be logged, since the application is gone.
    pub async fn release(&self, fh: u64) -> Result<(), FsError> {
        let handle = self.handle(fh).ok_or(FsError::BadHandle(fh))?;
        match handle {
            Handle::Read { ino, .. } => {
                self.files.lock().unwrap().remove(&fh);
                self.ns.close(ino, false);
            }
            Handle::Lost => {
                self.files.lock().unwrap().remove(&fh);
            }
            Handle::Staged(staged) => self.release_staged(fh, &staged).await,
            Handle::Write(w) => {
                // The handle stays listed until its upload is done, so a shutdown meanwhile
                // waits for this completion and reports it, instead of losing it unlogged.
                // After a shutdown began, nothing new is started: the upload is ended as shutdown
                // ends every other one (and logged once).
                let result = if self.shut_down.load(Ordering::SeqCst) {
                    self.end_at_shutdown(&w).await;
                    Ok(())
                } else if matches!(*w.state.lock().await, write::WriteState::Writing(_)) {
                    self.complete(&w).await
                } else {
                    // Completed, or failed and reported, by a close or fsync.
                    Ok(())
                };
                self.files.lock().unwrap().remove(&fh);
                self.unclaim_writer(&w);
                if let Err(e) = result {
                    tracing::warn!("upload failed at release, after the file was closed: {e}");
                }
            }
        }
        self.record_closed(fh);
        Ok(())
    }

    /// Opens directory `ino` for listing.
    pub async fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let inode = self.ns.get(ino)?;
        if inode.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(ino));
        }
        let locals = self.ns.local_children(ino).into_iter().map(|i| (i.name, i.kind)).collect();
        let cached = self.ns.listing(&inode.key);
        let mut listing = DirListing::new(inode.key, self.config.list_page_size, self.mount_time, locals)
            .unordered(self.config.directory_bucket, readdir::UNORDERED_HELD_FILES)
            .prefetching(self.client.clone());
        listing = match cached {
            Some(entries) => listing.with_cached(entries),
            None if self.ns.caches_listings() => listing.collecting(),
            None => listing,
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(DirHandle { ino, listing: tokio::sync::Mutex::new(listing) });
        self.dirs.lock().unwrap().insert(fh, handle);
        if let Some(log) = &self.resume_log {
            log.opened_dir(fh, ino);
        }
        Ok(fh)
    }

    /// Lists directory handle `fh` from `offset`, handing entries to `add` until it returns
    /// true (reply full). Every entry `add` accepts, except `.` and `..`, takes a kernel lookup
    /// reference, as readdirplus requires.
    pub async fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        add: impl FnMut(DirEntry<'_>) -> bool + Send,
    ) -> Result<(), FsError> {
        let result = self.list_into(fh, offset, add).await;
        // The inodes of this reply are recorded for a restarted worker before the kernel
        // hears of them (the reply is sent when this returns).
        self.ns.write_recorded();
        result
    }

    async fn list_into(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>) -> bool + Send,
    ) -> Result<(), FsError> {
        let handle = self.dirs.lock().unwrap().get(&fh).cloned().ok_or(FsError::BadHandle(fh))?;
        let mut listing = handle.listing.lock().await;
        listing.seek(fh, offset)?;
        let dir = self.ns.get(handle.ino)?;
        let mut at = offset;
        while let Some(slot) = listing.slot(self.client.as_ref(), at).await? {
            let next_offset = at + 1;
            let full = match slot {
                DirSlot::Dot => add(DirEntry { name: ".", next_offset, entry: self.entry(&dir) }),
                DirSlot::DotDot => {
                    let parent = self.ns.get(dir.parent).unwrap_or_else(|_| dir.clone());
                    add(DirEntry { name: "..", next_offset, entry: self.entry(&parent) })
                }
                DirSlot::Local(name) => {
                    // Gone since the handle opened (uploaded and forgotten, or removed): skip it.
                    let Some(local) = self.ns.local_child(handle.ino, &name) else {
                        at = next_offset;
                        continue;
                    };
                    let inode = self.ns.reference(local.ino)?;
                    let full = add(DirEntry { name: &name, next_offset, entry: self.entry(&inode) });
                    if full {
                        self.ns.forget(inode.ino, 1);
                    }
                    full
                }
                DirSlot::Entry(e) => {
                    let listed = self.listed_entry(handle.ino, &e.name, e.entry);
                    let ttl = self.ttl(listed.kind);
                    let inode = self.ns.remember_listed(handle.ino, &e.name, listed, ttl)?;
                    let entry = Entry { attr: self.attr(&inode), ttl: self.listed_ttl(&inode) };
                    let full = add(DirEntry { name: &e.name, next_offset, entry });
                    if full {
                        // Not sent: give the reference back.
                        self.ns.forget(inode.ino, 1);
                    }
                    full
                }
            };
            if full {
                break;
            }
            at = next_offset;
        }
        if let Some(entries) = listing.take_complete() {
            self.ns.listed(&dir.key, entries);
        }
        Ok(())
    }

    /// Closes directory handle `fh`.
    pub fn releasedir(&self, fh: u64) -> Result<(), FsError> {
        self.dirs.lock().unwrap().remove(&fh).ok_or(FsError::BadHandle(fh))?;
        self.record_closed(fh);
        Ok(())
    }

    /// File-system statistics: S3 has no capacity limit to report.
    pub fn statfs(&self) -> StatFs {
        let huge = u64::MAX / 1024;
        StatFs {
            blocks: huge,
            bfree: huge,
            bavail: huge,
            files: huge,
            ffree: huge,
            bsize: 512,
            namelen: NAME_MAX as u32,
            frsize: 512,
        }
    }

    /// Operations S3 cannot do.
    pub fn refuse(&self, operation: &'static str) -> FsError {
        match operation {
            "rename" => FsError::NotSupported("rename on general purpose buckets"),
            _ => FsError::PermissionDenied(format!("{operation} is not supported by S3")),
        }
    }

    /// The root inode number.
    pub const fn root() -> u64 {
        ROOT_INO
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_write;

#[cfg(test)]
mod tests_modify;
