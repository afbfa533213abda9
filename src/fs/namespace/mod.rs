//! The namespace: the one owner of names and their state.
//!
//! Everything this mount knows about a name lives here: its inode (number, kernel references,
//! what S3 last said, until when that may be trusted), whether it exists only in this mount
//! (created or being replaced here, not uploaded yet), who has it open (one writer or any number
//! of readers), and the metadata and listing caches (with their journal for `indefinite`).
//! The file-system core ([`crate::fs::S3Filesystem`]) asks S3 and moves bytes; it changes names
//! only through the small transaction-style methods below, each of which takes the one lock
//! (the inode table's), applies a whole change and lets go; none waits on I/O under it.
//!
//! Keys are derived, never stored: a node holds its parent and its name, and its S3 key is the
//! path up to the root ([`table`]). A node is kept while anything needs it (kernel references,
//! local state, open handles, nodes below it), so a key can always be derived.
//!
//! The caches (`metacache`) are keyed by S3 key so they outlive kernel references; they are
//! updated by the same methods that change the table, after the table, so a reader of the table
//! never sees a name the caches contradict for longer than one method call.
//!
//! Room for what comes next, as methods here rather than new state elsewhere: rename moves a
//! node between (parent, name) pairs (keys below follow by construction); per-entry POSIX
//! attributes go into [`Stat`]; a staged local copy replacing an object is a [`LocalState`];
//! and the table can be exported as `ino -> (parent, name, kind, etag)` for a restarted daemon.

pub mod metacache;
pub mod names;
mod table;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::client::ETag;
use crate::fs::FsError;
use crate::fs::config::MetadataTtl;
use crate::fs::posix::PosixAttrs;
use crate::fs::readdir::ListedEntry;
use metacache::MetadataCache;
use table::{Tables, same_object};

/// Inode number of the mount's root directory.
pub const ROOT_INO: u64 = 1;

/// Files and directories: the only kinds S3 keys can express; and, with `--posix-metadata`,
/// symbolic links (objects whose stored mode says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InodeKind {
    File,
    Directory,
    Symlink,
}

/// What S3 last told us about an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime: SystemTime,
    /// Unknown for directories, and for files seen only in listings without ETags.
    pub etag: Option<ETag>,
    /// `None` means STANDARD.
    pub storage_class: Option<String>,
    /// In an archive tier and not restored: it cannot be read (see [`crate::client::ObjectMeta::archived`]).
    pub archived: bool,
    /// `--posix-metadata`: the stored attributes (`Some`, possibly empty, once a HeadObject or
    /// this mount said; `None` when only a listing did, which carries no metadata).
    pub posix: Option<PosixAttrs>,
    /// Until when this may be served without asking S3 again.
    pub expiry: Instant,
}

impl Stat {
    /// True while the stat may be trusted without asking S3.
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.expiry
    }

    fn remote(entry: &RemoteEntry, ttl: Duration) -> Self {
        Stat {
            size: entry.size,
            mtime: entry.mtime,
            etag: entry.etag.clone(),
            storage_class: entry.storage_class.clone(),
            archived: entry.archived,
            posix: entry.posix,
            expiry: Instant::now() + ttl,
        }
    }
}

/// State this mount holds that S3 does not have yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalState {
    /// Created here (create/mknod, or opened with O_TRUNC to overwrite); in S3 once its upload
    /// completes.
    File,
    /// Made by mkdir; in S3 once a file is written under it (S3 has no empty directories).
    Directory,
}

/// A snapshot of one inode, its key derived when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub parent: u64,
    /// Entry name in the parent (empty for the root).
    pub name: String,
    /// Full S3 key: `prefix/a/b` for a file, `prefix/a/b/` for a directory.
    pub key: String,
    pub kind: InodeKind,
    pub stat: Stat,
    /// `Some` while the inode exists only in this mount.
    pub local: Option<LocalState>,
}

impl Inode {
    /// The key of the directory holding this inode (empty or ending in `/`).
    pub fn parent_key(&self) -> &str {
        let own = self.name.len() + usize::from(self.kind == InodeKind::Directory);
        &self.key[..self.key.len() - own]
    }
}

/// What S3 says a name is, from a lookup or a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    pub kind: InodeKind,
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: Option<ETag>,
    pub storage_class: Option<String>,
    /// In an archive tier and not restored.
    pub archived: bool,
    /// `--posix-metadata`: the stored attributes, `None` from a listing (see [`Stat::posix`]).
    pub posix: Option<PosixAttrs>,
}

impl RemoteEntry {
    /// A directory (implicit or marked), timestamped with the mount time.
    pub fn directory(mount_time: SystemTime) -> Self {
        RemoteEntry {
            kind: InodeKind::Directory,
            size: 0,
            mtime: mount_time,
            etag: None,
            storage_class: None,
            archived: false,
            posix: None,
        }
    }
}

/// Why a file cannot be opened now (see [`Namespace::open_read`] and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenConflict {
    /// It has a writer.
    BeingWritten,
    /// It has readers or a writer, and the open needs it to have none.
    InUse,
}

/// The names of one mount and everything known about them.
#[derive(Debug)]
pub struct Namespace {
    tables: Mutex<Tables>,
    meta: MetadataCache,
}

impl Namespace {
    /// A namespace holding only the root (key `prefix`), with caches for these TTLs.
    pub fn new(prefix: &str, mount_time: SystemTime, ttl: MetadataTtl, negative_ttl: MetadataTtl) -> Self {
        Namespace { tables: Mutex::new(Tables::new(prefix, mount_time)), meta: MetadataCache::new(ttl, negative_ttl) }
    }

    /// Persists learned metadata through `journal`, starting from what it already holds.
    pub fn with_journal(mut self, journal: metacache::journal::Journal, loaded: metacache::journal::Loaded) -> Self {
        self.meta = self.meta.with_journal(journal, loaded);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap()
    }

    /// Writes out buffered metadata (at unmount).
    pub fn flush_metadata(&self) {
        self.meta.flush();
    }

    /// Records every inode number given out from now on in `log` ([`crate::fs::resume`]).
    pub fn set_resume_log(&self, log: std::sync::Arc<crate::fs::resume::ResumeLog>) {
        self.lock().log = Some(log);
    }

    /// Brings back the inodes a dead worker gave out, under their numbers (parents first; an
    /// inode whose parent is missing is skipped, with everything below it). Their stat is
    /// expired, so the next use asks S3. The kernel's reference counts are unknown: restored
    /// inodes hold a count no forget reaches, so they stay until unmount.
    pub fn restore(&self, saved: &std::collections::BTreeMap<u64, crate::fs::resume::SavedInode>) -> usize {
        const UNKNOWN_REFERENCES: u64 = 1 << 62;
        let mut t = self.lock();
        let now = Instant::now();
        let mut restored = 0;
        for (&ino, s) in saved {
            if ino <= ROOT_INO || t.nodes.contains_key(&ino) || t.dir(s.parent).is_err() {
                continue;
            }
            let stat = Stat {
                size: s.stat.size,
                mtime: std::time::UNIX_EPOCH + Duration::from_nanos(s.stat.mtime_ns),
                etag: s.stat.etag.clone().map(ETag::new),
                storage_class: None,
                archived: false,
                // Not recorded: with --posix-metadata, unknown attributes are fetched again.
                posix: None,
                expiry: now,
            };
            let node = table::Node {
                ino,
                parent: s.parent,
                name: s.name.clone(),
                kind: s.kind,
                stat,
                local: None,
                lookups: UNKNOWN_REFERENCES,
                children: std::collections::HashMap::new(),
                dependents: 0,
                open: Default::default(),
            };
            t.nodes.insert(ino, node);
            let p = t.nodes.get_mut(&s.parent).expect("checked above");
            p.children.insert(s.name.clone(), ino);
            p.dependents += 1;
            t.next_ino = t.next_ino.max(ino + 1);
            restored += 1;
        }
        restored
    }

    /// A snapshot of inode `ino`.
    pub fn get(&self, ino: u64) -> Result<Inode, FsError> {
        self.lock().snapshot(ino)
    }

    /// Number of live inodes, the root included.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Always false: the root is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    // ---- names as S3 shows them ----

    /// What the caches say `dir_key` + `name` is (`Some(None)`: known absent), if they know.
    pub fn cached(&self, dir_key: &str, name: &str) -> Option<Option<RemoteEntry>> {
        self.meta.lookup(dir_key, name)
    }

    /// Remembers what S3 said `dir_key` + `name` is, for the caches.
    pub fn learned(&self, dir_key: &str, name: &str, remote: Option<&RemoteEntry>) {
        self.meta.record(dir_key, name, remote);
    }

    /// Records what S3 says `parent/name` is and returns its inode, taking one kernel lookup
    /// reference. Keeps the inode number if the object is unchanged, else allocates a new one.
    /// A name this mount holds (local, or with a local descendant) wins over what S3 says.
    pub fn remember(&self, parent: u64, name: &str, entry: RemoteEntry, ttl: Duration) -> Result<Inode, FsError> {
        self.remember_as(parent, name, entry, ttl, false)
    }

    /// [`remember`](Self::remember) for an entry of a readdirplus reply: the resume-log line of
    /// a new inode is held back until [`write_recorded`](Self::write_recorded), which the
    /// listing calls before it replies (one write per reply instead of one per entry).
    pub fn remember_listed(
        &self,
        parent: u64,
        name: &str,
        entry: RemoteEntry,
        ttl: Duration,
    ) -> Result<Inode, FsError> {
        self.remember_as(parent, name, entry, ttl, true)
    }

    /// Writes the resume-log lines held back by [`remember_listed`](Self::remember_listed).
    pub fn write_recorded(&self) {
        self.lock().write_pending();
    }

    fn remember_as(
        &self,
        parent: u64,
        name: &str,
        entry: RemoteEntry,
        ttl: Duration,
        listed: bool,
    ) -> Result<Inode, FsError> {
        let mut t = self.lock();
        if !listed {
            // The inode may be one a listing has not written out yet: it reaches the kernel now.
            t.write_pending();
        }
        t.dir(parent)?;
        let existing = t.child(parent, name);
        if let Some(ino) = existing {
            let held = t.is_held(ino);
            let node = t.node_mut(ino)?;
            if held {
                // A local directory stays local (and visible) until this mount uploads a file
                // under it or removes it, whatever other clients put under it or delete meanwhile.
                node.lookups += 1;
                return t.snapshot(ino);
            }
            if same_object(node, &entry) {
                let known_etag = node.stat.etag.take();
                // A listing carries no user metadata: what a HeadObject said about this object
                // stays while it is fresh (a listing does not make it so: with the same ETag,
                // the metadata may have changed).
                let (fresh, known_expiry) = (node.stat.is_fresh(), node.stat.expiry);
                let known_posix = node.stat.posix.take().filter(|_| fresh);
                let stat = Stat::remote(&entry, ttl);
                let expiry = if stat.posix.is_none() && known_posix.is_some() { known_expiry } else { stat.expiry };
                let (etag, posix) = (stat.etag.clone().or(known_etag), stat.posix.or(known_posix));
                node.stat = Stat { etag, posix, expiry, ..stat };
                node.lookups += 1;
                return t.snapshot(ino);
            }
        }
        let ino = t.insert(parent, name, entry.kind, Stat::remote(&entry, ttl), None, listed);
        t.snapshot(ino)
    }

    /// Takes one more kernel reference to `ino`.
    pub fn reference(&self, ino: u64) -> Result<Inode, FsError> {
        let mut t = self.lock();
        t.node_mut(ino)?.lookups += 1;
        t.write_pending();
        t.snapshot(ino)
    }

    /// The kernel dropped `n` references to `ino`; it goes once nothing needs it.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.lock();
        let Ok(node) = t.node_mut(ino) else { return };
        node.lookups = node.lookups.saturating_sub(n);
        t.collect(ino);
    }

    /// Refreshes inode `ino` with what S3 now says its name is (`None`: gone), in the caches
    /// too. If the name now stands for another object, the inode is detached from its name and
    /// `StaleInode` returned, so the kernel looks the name up again. Takes no lookup reference.
    pub fn revalidated(&self, ino: u64, entry: Option<RemoteEntry>, ttl: Duration) -> Result<Inode, FsError> {
        let mut t = self.lock();
        let snapshot = t.snapshot(ino)?;
        self.meta.record(snapshot.parent_key(), &snapshot.name, entry.as_ref());
        let node = t.node_mut(ino)?;
        match entry {
            Some(entry) if same_object(node, &entry) => {
                let stat = &mut node.stat;
                stat.size = entry.size;
                stat.mtime = entry.mtime;
                stat.etag = entry.etag.or(stat.etag.take());
                stat.storage_class = entry.storage_class;
                stat.archived = entry.archived;
                stat.posix = entry.posix.or(stat.posix.take());
                stat.expiry = Instant::now() + ttl;
                t.snapshot(ino)
            }
            _ => {
                t.detach(snapshot.parent, &snapshot.name, ino);
                Err(FsError::StaleInode { ino, key: snapshot.key })
            }
        }
    }

    /// S3 says `parent/name` is gone: the name is forgotten (the inode lives on until the
    /// kernel forgets it).
    pub fn gone(&self, parent: u64, name: &str) {
        let mut t = self.lock();
        if let Some(ino) = t.child(parent, name) {
            t.detach(parent, name, ino);
        }
    }

    /// S3 proved that `etag` is no longer what inode `ino` names (412 on an If-Match GET):
    /// whatever trusted that ETag must not. The cached metadata and listing are dropped and the
    /// inode's stat expires, so the next open revalidates and the kernel looks the name up again.
    pub fn stale(&self, ino: u64, etag: &ETag) {
        let mut t = self.lock();
        let Ok(inode) = t.snapshot(ino) else { return };
        self.meta.stale(inode.parent_key(), &inode.name, etag);
        if inode.stat.etag.as_ref() == Some(etag)
            && let Ok(node) = t.node_mut(ino)
        {
            node.stat.expiry = Instant::now();
        }
    }

    // ---- local names: created here, not in S3 yet ----

    /// The child `name` of `parent` if this mount holds it: created here and not in S3 yet, or
    /// a directory with such a descendant.
    pub fn local_child(&self, parent: u64, name: &str) -> Option<Inode> {
        let t = self.lock();
        let ino = t.child(parent, name)?;
        if t.is_held(ino) { t.snapshot(ino).ok() } else { None }
    }

    /// The children of `parent` this mount holds (see [`local_child`](Self::local_child)), in
    /// name order.
    pub fn local_children(&self, parent: u64) -> Vec<Inode> {
        let t = self.lock();
        let Ok(dir) = t.node(parent) else { return vec![] };
        let mut children: Vec<Inode> =
            dir.children.values().filter(|ino| t.is_held(**ino)).filter_map(|ino| t.snapshot(*ino).ok()).collect();
        children.sort_by(|a, b| a.name.cmp(&b.name));
        children
    }

    /// True if any child of `ino` exists only in this mount.
    pub fn has_local_children(&self, ino: u64) -> bool {
        !self.local_children(ino).is_empty()
    }

    /// Creates `parent/name` in this mount only (the caller checked S3 has nothing there),
    /// taking one kernel reference. A name already held locally is `AlreadyExists`.
    pub fn create_local(&self, parent: u64, name: &str, kind: InodeKind, ttl: Duration) -> Result<Inode, FsError> {
        let mut t = self.lock();
        t.dir(parent)?;
        if let Some(existing) = t.child(parent, name)
            && t.node(existing)?.local.is_some()
        {
            return Err(FsError::AlreadyExists { key: t.snapshot(existing)?.key });
        }
        let stat = Stat {
            size: 0,
            mtime: SystemTime::now(),
            etag: None,
            storage_class: None,
            archived: false,
            posix: None,
            expiry: Instant::now() + ttl,
        };
        let local = Some(match kind {
            InodeKind::File | InodeKind::Symlink => LocalState::File,
            InodeKind::Directory => LocalState::Directory,
        });
        let ino = t.insert(parent, name, kind, stat, local, false);
        t.snapshot(ino)
    }

    /// Marks a remote file as being replaced by this mount (an O_TRUNC open), size 0.
    pub fn start_overwrite(&self, ino: u64) -> Result<Inode, FsError> {
        let mut t = self.lock();
        let node = t.node_mut(ino)?;
        node.local = Some(LocalState::File);
        node.stat.size = 0;
        node.stat.etag = None;
        node.stat.mtime = SystemTime::now();
        // The new object keeps the mode and owner; its times are its own.
        if let Some(p) = node.stat.posix.as_mut() {
            (p.mtime, p.atime, p.ctime) = (None, None, None);
        }
        t.snapshot(ino)
    }

    /// Marks a remote file as being appended to by this mount (`--incremental-upload`): a file
    /// being written, from its current `size`, until its upload ends ([`Self::commit_upload`], or
    /// [`Self::abandon_local`] if it failed: the name is then looked up in S3 again).
    pub fn start_append(&self, ino: u64, size: u64) -> Result<Inode, FsError> {
        let mut t = self.lock();
        let node = t.node_mut(ino)?;
        node.local = Some(LocalState::File);
        node.stat.size = size;
        node.stat.etag = None;
        node.stat.mtime = SystemTime::now();
        t.snapshot(ino)
    }

    /// The size of a file being written changed.
    pub fn set_size(&self, ino: u64, size: u64) {
        if let Ok(node) = self.lock().node_mut(ino) {
            node.stat.size = size;
        }
    }

    /// A program set the mtime of a file being written.
    pub fn set_mtime(&self, ino: u64, mtime: SystemTime) -> Result<Inode, FsError> {
        let mut t = self.lock();
        t.node_mut(ino)?.stat.mtime = mtime;
        t.snapshot(ino)
    }

    /// `--posix-metadata`: changes the stored attributes of `ino` (they start empty).
    pub fn set_posix(&self, ino: u64, change: impl FnOnce(&mut PosixAttrs)) -> Result<Inode, FsError> {
        let mut t = self.lock();
        let stat = &mut t.node_mut(ino)?.stat;
        change(stat.posix.get_or_insert_with(PosixAttrs::default));
        t.snapshot(ino)
    }

    /// `parent/name` was created in S3 by this mount as `entry` (a symlink, a directory marker):
    /// the inode, with one kernel reference, and the caches know it.
    pub fn created(&self, parent: u64, name: &str, entry: RemoteEntry, ttl: Duration) -> Result<Inode, FsError> {
        let inode = self.remember(parent, name, entry.clone(), ttl)?;
        self.meta.created(inode.parent_key(), name, &entry);
        Ok(inode)
    }

    /// This mount rewrote the object (or marker) of `ino` with `posix` attributes, as `etag`: it
    /// keeps its inode number (the bytes are the same), and the caches learn the new ETag.
    pub fn rewritten(&self, ino: u64, etag: Option<ETag>, posix: PosixAttrs, ttl: Duration) -> Result<Inode, FsError> {
        let mut t = self.lock();
        let stat = &mut t.node_mut(ino)?.stat;
        if etag.is_some() {
            stat.etag = etag;
        }
        stat.posix = Some(posix);
        stat.expiry = Instant::now() + ttl;
        let inode = t.snapshot(ino)?;
        drop(t);
        let entry = RemoteEntry {
            kind: inode.kind,
            size: inode.stat.size,
            mtime: inode.stat.mtime,
            etag: inode.stat.etag.clone(),
            storage_class: inode.stat.storage_class.clone(),
            archived: inode.stat.archived,
            posix: inode.stat.posix,
        };
        self.meta.created(inode.parent_key(), &inode.name, &entry);
        Ok(inode)
    }

    /// A local file is now the object `etag` of `size` bytes in S3 (its upload completed): its
    /// local ancestor directories exist in S3 now, too, and the caches know it.
    pub fn commit_upload(&self, ino: u64, etag: ETag, size: u64, ttl: Duration) {
        let mut t = self.lock();
        let Ok(node) = t.node_mut(ino) else { return };
        node.local = None;
        node.stat = Stat {
            size,
            mtime: SystemTime::now(),
            etag: Some(etag.clone()),
            storage_class: None,
            archived: false,
            // The attributes the upload carried.
            posix: node.stat.posix,
            expiry: Instant::now() + ttl,
        };
        let mut dir = node.parent;
        while let Ok(d) = t.node_mut(dir) {
            if d.local != Some(LocalState::Directory) {
                break;
            }
            d.local = None;
            dir = d.parent;
        }
        let Ok(inode) = t.snapshot(ino) else { return };
        t.record(ino);
        drop(t);
        let entry = RemoteEntry {
            kind: InodeKind::File,
            size,
            mtime: inode.stat.mtime,
            etag: Some(etag),
            storage_class: None,
            archived: false,
            posix: inode.stat.posix,
        };
        // Journalled (fsynced with `indefinite`) outside the lock.
        self.meta.created(inode.parent_key(), &inode.name, &entry);
    }

    /// Forgets a local inode's name (its upload failed, or the directory was removed). The
    /// inode lives on, detached, until the kernel forgets it.
    pub fn abandon_local(&self, ino: u64) {
        let mut t = self.lock();
        let Ok(node) = t.node_mut(ino) else { return };
        node.local = None;
        let (parent, name) = (node.parent, node.name.clone());
        t.detach(parent, &name, ino);
    }

    /// The object `parent/name` (key `dir_key` + `name`) was deleted from S3 by this mount.
    pub fn unlinked(&self, parent: u64, dir_key: &str, name: &str) {
        self.gone(parent, name);
        // Journalled (fsynced with `indefinite`) outside the lock.
        self.meta.removed(dir_key, name);
    }

    // ---- rename ----

    /// True if `ino` is `ancestor` or lies below it.
    pub fn is_within(&self, ino: u64, ancestor: u64) -> bool {
        let t = self.lock();
        let mut at = ino;
        loop {
            if at == ancestor {
                return true;
            }
            match t.node(at) {
                Ok(n) if n.ino != ROOT_INO => at = n.parent,
                _ => return false,
            }
        }
    }

    /// True if `ino` or anything below it is open (for reading or writing).
    pub fn is_open_within(&self, ino: u64) -> bool {
        let t = self.lock();
        t.nodes.values().any(|n| {
            !n.open.is_idle() && {
                let mut at = n.ino;
                loop {
                    if at == ino {
                        break true;
                    }
                    match t.node(at) {
                        Ok(n) if n.ino != ROOT_INO => at = n.parent,
                        _ => break false,
                    }
                }
            }
        })
    }

    /// The inode named `parent/name`, if the table has one (no S3 request, no reference taken).
    pub fn child(&self, parent: u64, name: &str) -> Option<Inode> {
        let t = self.lock();
        t.child(parent, name).and_then(|ino| t.snapshot(ino).ok())
    }

    /// `parent/name` (a `kind`) is now `newparent/newname`: the node moves in the table (keys
    /// below it follow, being derived) and the caches learn it: the old name is gone, the new
    /// one is `entry` (when known); for a directory everything cached under either key is
    /// dropped and the `moved` old object keys are journalled as deleted. Whatever
    /// `newparent/newname` named before is detached.
    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        kind: InodeKind,
        entry: Option<&RemoteEntry>,
        moved: &[String],
    ) -> Result<(), FsError> {
        let mut t = self.lock();
        t.dir(newparent)?;
        let (old_dir, new_dir) = (t.key(parent)?, t.key(newparent)?);
        let replaced = t.child(newparent, newname);
        if let Some(ino) = t.child(parent, name) {
            if let Ok(p) = t.node_mut(parent) {
                p.children.remove(name);
                p.dependents = p.dependents.saturating_sub(1);
            }
            let node = t.node_mut(ino)?;
            node.parent = newparent;
            node.name = newname.to_string();
            let p = t.node_mut(newparent)?;
            p.children.insert(newname.to_string(), ino);
            p.dependents += 1;
            if let Some(stat) = entry.map(|e| Stat::remote(e, Duration::ZERO)) {
                // What the copy made; expired, so the next open asks S3 for the rest.
                let node = t.node_mut(ino)?;
                node.stat = Stat { mtime: node.stat.mtime, ..stat };
            }
            t.record(ino);
            t.collect(parent);
        } else if let Some(o) = replaced {
            t.detach(newparent, newname, o);
        }
        if let Some(o) = replaced.filter(|o| Some(*o) != t.child(newparent, newname)) {
            t.collect(o);
        }
        drop(t);
        // Journalled (fsynced with `indefinite`) outside the lock.
        self.meta.moved(&old_dir, name, &new_dir, newname, entry, kind, moved);
        Ok(())
    }

    // ---- who has a file open ----

    /// A reader opens `ino`: refused while it has a writer.
    pub fn open_read(&self, ino: u64) -> Result<(), OpenConflict> {
        let mut t = self.lock();
        let Ok(node) = t.node_mut(ino) else { return Ok(()) };
        if node.open.writer {
            return Err(OpenConflict::BeingWritten);
        }
        node.open.readers += 1;
        Ok(())
    }

    /// A writer opens `ino`: refused while anyone has it open.
    pub fn open_write(&self, ino: u64) -> Result<(), OpenConflict> {
        let mut t = self.lock();
        let Ok(node) = t.node_mut(ino) else { return Ok(()) };
        if !node.open.is_idle() {
            return Err(OpenConflict::InUse);
        }
        node.open.writer = true;
        Ok(())
    }

    /// Fails if anyone has `ino` open.
    pub fn ensure_closed(&self, ino: u64) -> Result<(), OpenConflict> {
        match self.lock().node(ino) {
            Ok(node) if !node.open.is_idle() => Err(OpenConflict::InUse),
            _ => Ok(()),
        }
    }

    /// A reader (or the writer) of `ino` is done with it.
    pub fn close(&self, ino: u64, writer: bool) {
        let mut t = self.lock();
        let Ok(node) = t.node_mut(ino) else { return };
        if writer {
            node.open.writer = false;
        } else {
            node.open.readers = node.open.readers.saturating_sub(1);
        }
        t.collect(ino);
    }

    // ---- listings ----

    /// True if listings and lookups are cached at all.
    pub fn caches_listings(&self) -> bool {
        self.meta.is_enabled()
    }

    /// The cached complete listing of directory `dir_key`.
    pub fn listing(&self, dir_key: &str) -> Option<std::sync::Arc<Vec<ListedEntry>>> {
        self.meta.listing(dir_key)
    }

    /// A listing of `dir_key` ran to its end: remember it.
    pub fn listed(&self, dir_key: &str, entries: Vec<ListedEntry>) {
        self.meta.record_listing(dir_key, entries);
    }
}

#[cfg(test)]
mod tests;
