//! The inode table: which inode number stands for which name, and what S3 last said about it.
//!
//! Invariants:
//! - The root is inode 1; other numbers are handed out from 2 upwards and never reused.
//! - A (parent, name) keeps its inode number while the object behind it is unchanged (same
//!   kind and ETag; when a listing has no ETag, same size and mtime). A changed object gets a
//!   new number, so a handle opened on the old one can never read the new bytes.
//! - The kernel's lookup count is honoured: entries the kernel knows stay until it forgets
//!   them; entries it does not know are never kept (no unbounded growth).
//!
//! One mutex guards the table; it is never held across an await.

pub mod names;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::client::ETag;
use crate::fs::FsError;
use crate::fs::posix::PosixAttrs;

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

/// A snapshot of one inode.
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

#[derive(Debug)]
struct Node {
    inode: Inode,
    /// References the kernel holds (lookup, readdirplus); forget() gives them back.
    lookups: u64,
    children: HashMap<String, u64>,
}

#[derive(Debug)]
struct Tables {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

/// The table of live inodes.
#[derive(Debug)]
pub struct InodeTable {
    tables: Mutex<Tables>,
}

impl InodeTable {
    /// A table holding only the root, whose key is the mount prefix.
    pub fn new(prefix: &str, mount_time: SystemTime) -> Self {
        let root = Inode {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            key: prefix.to_string(),
            kind: InodeKind::Directory,
            local: None,
            stat: Stat {
                size: 0,
                mtime: mount_time,
                etag: None,
                storage_class: None,
                archived: false,
                posix: None,
                // The root always exists; nothing to revalidate.
                expiry: Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
            },
        };
        let root = Node { inode: root, lookups: 1, children: HashMap::new() };
        InodeTable { tables: Mutex::new(Tables { nodes: HashMap::from([(ROOT_INO, root)]), next_ino: ROOT_INO + 1 }) }
    }

    /// A snapshot of inode `ino`.
    pub fn get(&self, ino: u64) -> Result<Inode, FsError> {
        let tables = self.tables.lock().unwrap();
        tables.nodes.get(&ino).map(|n| n.inode.clone()).ok_or(FsError::UnknownInode(ino))
    }

    /// The S3 key a child of `parent` named `name` has, as a file or as a directory.
    pub fn child_key(parent: &Inode, name: &str, kind: InodeKind) -> String {
        match kind {
            InodeKind::File | InodeKind::Symlink => format!("{}{}", parent.key, name),
            InodeKind::Directory => format!("{}{}/", parent.key, name),
        }
    }

    /// Records what S3 says `parent/name` is and returns its inode, taking one kernel lookup
    /// reference. Keeps the inode number if the object is unchanged, else allocates a new one.
    pub fn lookup_upsert(&self, parent: u64, name: &str, entry: RemoteEntry, ttl: Duration) -> Result<Inode, FsError> {
        let mut tables = self.tables.lock().unwrap();
        let parent_node = tables.nodes.get(&parent).ok_or(FsError::UnknownInode(parent))?;
        if parent_node.inode.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(parent));
        }
        let key = Self::child_key(&parent_node.inode, name, entry.kind);
        let existing = parent_node.children.get(name).copied();
        let stat = Stat {
            size: entry.size,
            mtime: entry.mtime,
            etag: entry.etag.clone(),
            storage_class: entry.storage_class.clone(),
            archived: entry.archived,
            posix: entry.posix,
            expiry: Instant::now() + ttl,
        };
        let held = existing.is_some_and(|ino| Self::is_held(&tables, ino));
        if let Some(node) = existing.and_then(|ino| tables.nodes.get_mut(&ino))
            && held
        {
            // What this mount created wins over what S3 says. A local directory stays local
            // (and visible) until this mount uploads a file under it or removes it, whatever
            // other clients put under it or delete meanwhile.
            node.lookups += 1;
            return Ok(node.inode.clone());
        }
        if let Some(node) = existing.and_then(|ino| tables.nodes.get_mut(&ino))
            && same_object(&node.inode, &entry)
        {
            let known_etag = node.inode.stat.etag.take();
            // A listing carries no user metadata: what a HeadObject said about this object stays.
            let known_posix = node.inode.stat.posix.take();
            node.inode.stat = Stat { etag: stat.etag.or(known_etag), posix: stat.posix.or(known_posix), ..stat };
            node.lookups += 1;
            return Ok(node.inode.clone());
        }
        let ino = tables.next_ino;
        tables.next_ino += 1;
        let inode = Inode { ino, parent, name: name.to_string(), key, kind: entry.kind, stat, local: None };
        Ok(Self::insert(&mut tables, inode))
    }

    fn insert(tables: &mut Tables, inode: Inode) -> Inode {
        let (ino, parent, name) = (inode.ino, inode.parent, inode.name.clone());
        if let Some(old) = tables.nodes.get(&parent).and_then(|p| p.children.get(&name).copied()) {
            Self::detach(tables, parent, &name, old);
        }
        tables.nodes.insert(ino, Node { inode: inode.clone(), lookups: 1, children: HashMap::new() });
        tables.nodes.get_mut(&parent).expect("caller checked the parent").children.insert(name, ino);
        inode
    }

    /// True if `ino` exists only in this mount, or holds something that does: such inodes stay
    /// visible whatever S3 says.
    fn is_held(tables: &Tables, ino: u64) -> bool {
        tables
            .nodes
            .get(&ino)
            .is_some_and(|n| n.inode.local.is_some() || n.children.values().any(|child| Self::is_held(tables, *child)))
    }

    /// The child `name` of `parent` if this mount holds it: created here and not in S3 yet, or
    /// a directory with such a descendant.
    pub fn local_child(&self, parent: u64, name: &str) -> Option<Inode> {
        let tables = self.tables.lock().unwrap();
        let ino = *tables.nodes.get(&parent)?.children.get(name)?;
        Self::is_held(&tables, ino).then(|| tables.nodes.get(&ino).map(|n| n.inode.clone())).flatten()
    }

    /// The children of `parent` this mount holds (see [`local_child`](Self::local_child)), in
    /// name order.
    pub fn local_children(&self, parent: u64) -> Vec<Inode> {
        let tables = self.tables.lock().unwrap();
        let Some(dir) = tables.nodes.get(&parent) else { return vec![] };
        let mut children: Vec<Inode> = dir
            .children
            .values()
            .filter(|ino| Self::is_held(&tables, **ino))
            .filter_map(|ino| tables.nodes.get(ino))
            .map(|n| n.inode.clone())
            .collect();
        children.sort_by(|a, b| a.name.cmp(&b.name));
        children
    }

    /// Creates `parent/name` in this mount only (the caller checked S3 has nothing there),
    /// taking one kernel reference. A name already held locally is `AlreadyExists`.
    pub fn create_local(&self, parent: u64, name: &str, kind: InodeKind, ttl: Duration) -> Result<Inode, FsError> {
        let mut tables = self.tables.lock().unwrap();
        let parent_node = tables.nodes.get(&parent).ok_or(FsError::UnknownInode(parent))?;
        if parent_node.inode.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(parent));
        }
        let key = Self::child_key(&parent_node.inode, name, kind);
        if let Some(existing) = parent_node.children.get(name).and_then(|ino| tables.nodes.get(ino))
            && existing.inode.local.is_some()
        {
            return Err(FsError::AlreadyExists { key });
        }
        let ino = tables.next_ino;
        tables.next_ino += 1;
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
        Ok(Self::insert(&mut tables, Inode { ino, parent, name: name.to_string(), key, kind, stat, local }))
    }

    /// Marks a remote file as being replaced by this mount (an O_TRUNC open), size 0.
    pub fn start_overwrite(&self, ino: u64) -> Result<Inode, FsError> {
        self.update(ino, |inode| {
            inode.local = Some(LocalState::File);
            inode.stat.size = 0;
            inode.stat.etag = None;
            inode.stat.mtime = SystemTime::now();
            // The new object keeps the mode and owner; its times are its own.
            if let Some(p) = inode.stat.posix.as_mut() {
                (p.mtime, p.atime, p.ctime) = (None, None, None);
            }
        })
    }

    /// Applies `change` to inode `ino` and returns the result.
    pub fn update(&self, ino: u64, change: impl FnOnce(&mut Inode)) -> Result<Inode, FsError> {
        let mut tables = self.tables.lock().unwrap();
        let node = tables.nodes.get_mut(&ino).ok_or(FsError::UnknownInode(ino))?;
        change(&mut node.inode);
        Ok(node.inode.clone())
    }

    /// A local file is now the object `etag` in S3.
    pub fn finish_local_file(&self, ino: u64, etag: ETag, size: u64, ttl: Duration) {
        let mut tables = self.tables.lock().unwrap();
        let Some(node) = tables.nodes.get_mut(&ino) else { return };
        node.inode.local = None;
        node.inode.stat = Stat {
            size,
            mtime: SystemTime::now(),
            etag: Some(etag),
            storage_class: None,
            archived: false,
            // The attributes the upload carried.
            posix: node.inode.stat.posix,
            expiry: Instant::now() + ttl,
        };
        let mut ino = node.inode.parent;
        // Its local ancestor directories exist in S3 now, too.
        while let Some(dir) = tables.nodes.get_mut(&ino) {
            if dir.inode.local != Some(LocalState::Directory) {
                break;
            }
            dir.inode.local = None;
            ino = dir.inode.parent;
        }
    }

    /// This mount rewrote the object (or marker) of `ino` with `posix` attributes: its new ETag
    /// is `etag`, and it keeps its inode number (the bytes are the same).
    pub fn rewritten(&self, ino: u64, etag: Option<ETag>, posix: PosixAttrs, ttl: Duration) -> Result<Inode, FsError> {
        self.update(ino, |inode| {
            if etag.is_some() {
                inode.stat.etag = etag;
            }
            inode.stat.posix = Some(posix);
            inode.stat.expiry = Instant::now() + ttl;
        })
    }

    /// Forgets a local inode's name (its upload failed, or the directory was removed). The
    /// inode lives on, detached, until the kernel forgets it.
    pub fn abandon_local(&self, ino: u64) {
        let mut tables = self.tables.lock().unwrap();
        let Some(node) = tables.nodes.get_mut(&ino) else { return };
        node.inode.local = None;
        let (parent, name, lookups) = (node.inode.parent, node.inode.name.clone(), node.lookups);
        Self::detach(&mut tables, parent, &name, ino);
        if lookups == 0 {
            tables.nodes.remove(&ino);
        }
    }

    /// Takes one more kernel reference to `ino`.
    pub fn reference(&self, ino: u64) -> Result<Inode, FsError> {
        let mut tables = self.tables.lock().unwrap();
        let node = tables.nodes.get_mut(&ino).ok_or(FsError::UnknownInode(ino))?;
        node.lookups += 1;
        Ok(node.inode.clone())
    }

    /// True if any child of `ino` exists only in this mount.
    pub fn has_local_children(&self, ino: u64) -> bool {
        !self.local_children(ino).is_empty()
    }

    /// Refreshes inode `ino` with what S3 now says its name is (`None`: gone). If the name now
    /// stands for another object, the inode is detached from its name and `StaleInode` returned,
    /// so the kernel looks the name up again. Takes no lookup reference.
    pub fn revalidate(&self, ino: u64, entry: Option<RemoteEntry>, ttl: Duration) -> Result<Inode, FsError> {
        let mut tables = self.tables.lock().unwrap();
        let node = tables.nodes.get_mut(&ino).ok_or(FsError::UnknownInode(ino))?;
        match entry {
            Some(entry) if same_object(&node.inode, &entry) => {
                let stat = &mut node.inode.stat;
                stat.size = entry.size;
                stat.mtime = entry.mtime;
                stat.etag = entry.etag.or(stat.etag.take());
                stat.storage_class = entry.storage_class;
                stat.archived = entry.archived;
                stat.posix = entry.posix.or(stat.posix.take());
                stat.expiry = Instant::now() + ttl;
                Ok(node.inode.clone())
            }
            _ => {
                let (parent, name, key) = (node.inode.parent, node.inode.name.clone(), node.inode.key.clone());
                Self::detach(&mut tables, parent, &name, ino);
                Err(FsError::StaleInode { ino, key })
            }
        }
    }

    /// Forgets that `parent/name` exists (S3 says it is gone). The inode itself lives on until
    /// the kernel forgets it.
    pub fn remove_name(&self, parent: u64, name: &str) {
        let mut tables = self.tables.lock().unwrap();
        if let Some(ino) = tables.nodes.get(&parent).and_then(|p| p.children.get(name).copied()) {
            Self::detach(&mut tables, parent, name, ino);
        }
    }

    /// The kernel dropped `n` references to `ino`; at zero the inode is removed.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut tables = self.tables.lock().unwrap();
        let Some(node) = tables.nodes.get_mut(&ino) else { return };
        node.lookups = node.lookups.saturating_sub(n);
        // Local inodes are state only this mount holds: they stay until uploaded or removed.
        if node.lookups == 0 && node.inode.local.is_none() {
            let (parent, name) = (node.inode.parent, node.inode.name.clone());
            tables.nodes.remove(&ino);
            Self::detach(&mut tables, parent, &name, ino);
        }
    }

    /// Number of live inodes, the root included.
    pub fn len(&self) -> usize {
        self.tables.lock().unwrap().nodes.len()
    }

    /// Always false: the root is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Removes the parent's name -> ino mapping if it still points at `ino`.
    fn detach(tables: &mut Tables, parent: u64, name: &str, ino: u64) {
        if let Some(p) = tables.nodes.get_mut(&parent)
            && p.children.get(name) == Some(&ino)
        {
            p.children.remove(name);
        }
    }
}

/// Whether `entry` describes the same object `inode` was made for.
fn same_object(inode: &Inode, entry: &RemoteEntry) -> bool {
    if inode.kind != entry.kind {
        return false;
    }
    match inode.kind {
        InodeKind::Directory => true,
        InodeKind::File | InodeKind::Symlink => match (&inode.stat.etag, &entry.etag) {
            (Some(a), Some(b)) => a == b,
            _ => inode.stat.size == entry.size && inode.stat.mtime == entry.mtime,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1);

    fn file(size: u64, etag: Option<&str>) -> RemoteEntry {
        RemoteEntry {
            kind: InodeKind::File,
            size,
            mtime: SystemTime::UNIX_EPOCH,
            etag: etag.map(ETag::new),
            storage_class: None,
            archived: false,
            posix: None,
        }
    }

    #[test]
    fn unchanged_object_keeps_its_number_and_changed_gets_a_new_one() {
        let t = InodeTable::new("pre/", SystemTime::now());
        let a = t.lookup_upsert(ROOT_INO, "a", file(3, Some("\"1\"")), TTL).unwrap();
        assert_eq!(a.key, "pre/a");
        assert_eq!(t.lookup_upsert(ROOT_INO, "a", file(3, Some("\"1\"")), TTL).unwrap().ino, a.ino);
        // A listing without ETag and with the same size and mtime is the same object.
        let again = t.lookup_upsert(ROOT_INO, "a", file(3, None), TTL).unwrap();
        assert_eq!(again.ino, a.ino);
        assert_eq!(again.stat.etag, Some(ETag::new("\"1\"")), "known ETag kept");
        let b = t.lookup_upsert(ROOT_INO, "a", file(3, Some("\"2\"")), TTL).unwrap();
        assert_ne!(b.ino, a.ino);
        // The old inode lives until forgotten, but its name now points at the new one.
        assert!(matches!(t.revalidate(a.ino, Some(file(3, Some("\"2\""))), TTL), Err(FsError::StaleInode { .. })));
        assert_eq!(t.get(a.ino).unwrap().ino, a.ino);
        t.forget(a.ino, 3);
        assert!(t.get(a.ino).is_err());
        assert_eq!(t.get(b.ino).unwrap().ino, b.ino);
    }

    #[test]
    fn directory_replacing_file_is_a_new_inode_with_a_slash_key() {
        let t = InodeTable::new("", SystemTime::now());
        let f = t.lookup_upsert(ROOT_INO, "x", file(1, Some("e")), TTL).unwrap();
        let d = t.lookup_upsert(ROOT_INO, "x", RemoteEntry::directory(SystemTime::now()), TTL).unwrap();
        assert_ne!(f.ino, d.ino);
        assert_eq!(d.key, "x/");
        let c = t.lookup_upsert(d.ino, "y", file(1, None), TTL).unwrap();
        assert_eq!(c.key, "x/y");
        assert!(matches!(t.lookup_upsert(c.ino, "z", file(1, None), TTL), Err(FsError::NotADirectory(_))));
    }

    #[test]
    fn forget_removes_only_at_zero_and_never_the_root() {
        let t = InodeTable::new("", SystemTime::now());
        let a = t.lookup_upsert(ROOT_INO, "a", file(1, None), TTL).unwrap();
        t.lookup_upsert(ROOT_INO, "a", file(1, None), TTL).unwrap();
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_ok());
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_err());
        assert_eq!(t.len(), 1);
        t.forget(ROOT_INO, 10);
        assert!(t.get(ROOT_INO).is_ok());
        // After forgetting, the name maps to a fresh inode.
        let again = t.lookup_upsert(ROOT_INO, "a", file(1, None), TTL).unwrap();
        assert_ne!(again.ino, a.ino);
    }
}
