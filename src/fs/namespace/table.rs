//! The inode table: plain data behind the [`Namespace`](super::Namespace) lock.
//!
//! Invariants:
//! - The root is inode 1; other numbers are handed out from 2 upwards and never reused.
//! - A node stores its parent and its name, never its key: the key is derived by walking up to
//!   the root, so renaming a directory renames everything below it in one step.
//! - A node stays while anything needs it: kernel references, local (not yet uploaded) state,
//!   open handles, or nodes below it (whose keys go through it). Nothing else is kept.
//! - A (parent, name) keeps its inode number while the object behind it is unchanged (same
//!   kind and ETag; when a listing has no ETag, same size and mtime). A changed object gets a
//!   new number, so a handle opened on the old one can never read the new bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Inode, InodeKind, LocalState, ROOT_INO, RemoteEntry, Stat};
use crate::fs::FsError;
use crate::fs::resume::{ResumeLog, SavedStat};

/// Who has a file open: one writer, or any number of readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct OpenCount {
    pub(super) readers: usize,
    pub(super) writer: bool,
}

impl OpenCount {
    pub(super) fn is_idle(&self) -> bool {
        self.readers == 0 && !self.writer
    }
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) ino: u64,
    pub(super) parent: u64,
    /// Entry name in the parent (empty for the root).
    pub(super) name: String,
    pub(super) kind: InodeKind,
    pub(super) stat: Stat,
    pub(super) local: Option<LocalState>,
    /// References the kernel holds (lookup, readdirplus); forget() gives them back.
    pub(super) lookups: u64,
    /// Names in this directory that map to a node.
    pub(super) children: HashMap<String, u64>,
    /// Nodes whose `parent` is this one (named or detached): their keys go through it.
    pub(super) dependents: usize,
    pub(super) open: OpenCount,
}

/// The table of live inodes.
#[derive(Debug)]
pub(super) struct Tables {
    pub(super) prefix: String,
    pub(super) nodes: HashMap<u64, Node>,
    pub(super) next_ino: u64,
    /// Where inode numbers given out are recorded for a restarted worker ([`crate::fs::resume`]).
    pub(super) log: Option<Arc<ResumeLog>>,
    /// Log lines not written yet ([`Tables::record_later`]), in the order they happened.
    pub(super) pending: String,
}

/// Most bytes of log lines held back before they are written anyway.
const PENDING_MAX: usize = 64 << 10;

impl Tables {
    /// A table holding only the root, whose key is the mount prefix.
    pub(super) fn new(prefix: &str, mount_time: SystemTime) -> Self {
        let root = Node {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
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
            lookups: 1,
            children: HashMap::new(),
            dependents: 0,
            open: OpenCount::default(),
        };
        Tables {
            prefix: prefix.to_string(),
            nodes: HashMap::from([(ROOT_INO, root)]),
            next_ino: ROOT_INO + 1,
            log: None,
            pending: String::new(),
        }
    }

    /// Records `ino` as it is now (number, parent, name, object identity), for a restarted
    /// worker: written at once, with any lines held back before it.
    pub(super) fn record(&mut self, ino: u64) {
        self.record_later(ino);
        self.write_pending();
    }

    /// [`record`](Self::record), but the line is held back until the next write: a listing
    /// gathers the lines of one readdirplus reply and writes them in one go, before replying
    /// ([`write_pending`](Self::write_pending)). Anything that hands an inode number to the
    /// kernel writes what is pending first, so no number reaches the kernel unrecorded.
    pub(super) fn record_later(&mut self, ino: u64) {
        if let (Some(_), Some(n)) = (&self.log, self.nodes.get(&ino)) {
            ResumeLog::push_inode(&mut self.pending, ino, n.parent, n.kind, &n.name, &saved_stat(&n.stat));
            if self.pending.len() > PENDING_MAX {
                self.write_pending();
            }
        }
    }

    /// Writes the log lines held back so far.
    pub(super) fn write_pending(&mut self) {
        if let Some(log) = &self.log
            && !self.pending.is_empty()
        {
            log.append_lines(&self.pending);
            self.pending.clear();
        }
    }

    pub(super) fn node(&self, ino: u64) -> Result<&Node, FsError> {
        self.nodes.get(&ino).ok_or(FsError::UnknownInode(ino))
    }

    pub(super) fn node_mut(&mut self, ino: u64) -> Result<&mut Node, FsError> {
        self.nodes.get_mut(&ino).ok_or(FsError::UnknownInode(ino))
    }

    /// The S3 key of `ino`, derived from its ancestors' names: `prefix/a/b` for a file,
    /// `prefix/a/b/` for a directory.
    pub(super) fn key(&self, ino: u64) -> Result<String, FsError> {
        let mut names = Vec::new();
        let mut at = self.node(ino)?;
        let kind = at.kind;
        while at.ino != ROOT_INO {
            names.push(at.name.as_str());
            at = self.node(at.parent)?;
        }
        let mut key = self.prefix.clone();
        for (i, name) in names.iter().rev().enumerate() {
            key.push_str(name);
            if i + 1 < names.len() || kind == InodeKind::Directory {
                key.push('/');
            }
        }
        Ok(key)
    }

    /// A snapshot of `ino`, with its key derived now.
    pub(super) fn snapshot(&self, ino: u64) -> Result<Inode, FsError> {
        let n = self.node(ino)?;
        Ok(Inode {
            ino,
            parent: n.parent,
            name: n.name.clone(),
            key: self.key(ino)?,
            kind: n.kind,
            stat: n.stat.clone(),
            local: n.local,
        })
    }

    /// The directory `parent`, checked to be one.
    pub(super) fn dir(&self, parent: u64) -> Result<&Node, FsError> {
        let dir = self.node(parent)?;
        if dir.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(parent));
        }
        Ok(dir)
    }

    pub(super) fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.nodes.get(&parent)?.children.get(name).copied()
    }

    /// A new node named `name` in `parent` with one kernel reference; whatever held the name
    /// before is detached. Recorded at once, or held back with `later` ([`Tables::record_later`]).
    pub(super) fn insert(
        &mut self,
        parent: u64,
        name: &str,
        kind: InodeKind,
        stat: Stat,
        local: Option<LocalState>,
        later: bool,
    ) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let old = self.child(parent, name);
        let node = Node {
            ino,
            parent,
            name: name.to_string(),
            kind,
            stat,
            local,
            lookups: 1,
            children: HashMap::new(),
            dependents: 0,
            open: OpenCount::default(),
        };
        self.nodes.insert(ino, node);
        let p = self.nodes.get_mut(&parent).expect("caller checked the parent");
        p.children.insert(name.to_string(), ino);
        p.dependents += 1;
        if later {
            self.record_later(ino);
        } else {
            self.record(ino);
        }
        // Only after the new node holds the parent: the old one may have been all that did.
        if let Some(old) = old {
            self.collect(old);
        }
        ino
    }

    /// True if `ino` exists only in this mount, or holds something that does: such inodes stay
    /// visible whatever S3 says.
    pub(super) fn is_held(&self, ino: u64) -> bool {
        self.nodes.get(&ino).is_some_and(|n| n.local.is_some() || n.children.values().any(|child| self.is_held(*child)))
    }

    /// Removes the parent's name -> ino mapping if it still points at `ino`; drops `ino` if
    /// nothing needs it any more.
    pub(super) fn detach(&mut self, parent: u64, name: &str, ino: u64) {
        if let Some(p) = self.nodes.get_mut(&parent)
            && p.children.get(name) == Some(&ino)
        {
            p.children.remove(name);
        }
        self.collect(ino);
    }

    /// Drops `ino` (and then its ancestors) while nothing needs it: no kernel reference, no local
    /// state, no open handle, no node below it.
    pub(super) fn collect(&mut self, mut ino: u64) {
        while ino != ROOT_INO {
            let Some(n) = self.nodes.get(&ino) else { return };
            if n.lookups > 0 || n.local.is_some() || !n.open.is_idle() || n.dependents > 0 {
                return;
            }
            let (parent, name) = (n.parent, n.name.clone());
            self.nodes.remove(&ino);
            if self.log.is_some() {
                // Held back: a restarted worker that missed it keeps an inode too many, no more.
                ResumeLog::push_inode_dropped(&mut self.pending, ino);
                if self.pending.len() > PENDING_MAX {
                    self.write_pending();
                }
            }
            let Some(p) = self.nodes.get_mut(&parent) else { return };
            if p.children.get(&name) == Some(&ino) {
                p.children.remove(&name);
            }
            p.dependents = p.dependents.saturating_sub(1);
            ino = parent;
        }
    }
}

/// The identity of a node's object as recorded: what [`same_object`] compares.
fn saved_stat(stat: &Stat) -> SavedStat {
    let mtime = stat.mtime.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    SavedStat { size: stat.size, mtime_ns: mtime, etag: stat.etag.as_ref().map(|e| e.as_str().to_string()) }
}

/// Whether `entry` describes the same object `node` was made for.
pub(super) fn same_object(node: &Node, entry: &RemoteEntry) -> bool {
    if node.kind != entry.kind {
        return false;
    }
    match node.kind {
        InodeKind::Directory => true,
        InodeKind::File | InodeKind::Symlink => match (&node.stat.etag, &entry.etag) {
            (Some(a), Some(b)) => a == b,
            _ => node.stat.size == entry.size && node.stat.mtime == entry.mtime,
        },
    }
}
