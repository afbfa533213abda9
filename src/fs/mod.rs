//! The file-system core: POSIX operations over an [`ObjectClient`], with no kernel in sight.
//!
//! [`S3Filesystem`] owns the inode table, the open file and directory handles, and the
//! policies (TTLs, permissions, what is allowed). Every method is async and returns
//! `Result<_, FsError>`; the FUSE adapter only converts arguments and replies, and
//! [`FsError::errno`] is the one place an errno is chosen. Nothing here imports fuser,
//! aws-sdk-s3, aws-config or clap.

pub mod config;
pub mod error;
pub mod inode;
pub mod lookup;
pub mod read;
pub mod readdir;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::client::ObjectClient;
pub use config::{FsConfig, MetadataTtl};
pub use error::FsError;
use inode::names::{NAME_MAX, parse_name};
use inode::{Inode, InodeKind, InodeTable, ROOT_INO};
use read::{FileReader, ObjectVersion};
use readdir::{DirListing, DirSlot};

/// Attributes of an inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: InodeKind,
    pub size: u64,
    /// atime = mtime = ctime: S3 has one timestamp (LastModified; mount time for directories).
    pub mtime: SystemTime,
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

/// The file system over one bucket (and prefix).
pub struct S3Filesystem {
    client: Arc<dyn ObjectClient>,
    config: FsConfig,
    inodes: InodeTable,
    files: Mutex<HashMap<u64, Arc<FileReader>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    mount_time: SystemTime,
}

impl std::fmt::Debug for S3Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Filesystem").field("bucket", &self.client.bucket()).field("config", &self.config).finish()
    }
}

impl S3Filesystem {
    /// A file system over `client` rooted at `config.prefix`.
    pub fn new(client: Arc<dyn ObjectClient>, config: FsConfig) -> Self {
        let mount_time = SystemTime::now();
        S3Filesystem {
            inodes: InodeTable::new(&config.prefix, mount_time),
            client,
            config,
            files: Mutex::default(),
            dirs: Mutex::default(),
            next_fh: AtomicU64::new(1),
            mount_time,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// Number of inodes the table holds (root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// How long metadata of `kind` may be cached, by us and by the kernel.
    fn ttl(&self, kind: InodeKind) -> Duration {
        match (self.config.metadata_ttl, kind) {
            (MetadataTtl::Minimal, InodeKind::File) => self.config.file_kernel_ttl,
            (MetadataTtl::Minimal, InodeKind::Directory) => self.config.dir_kernel_ttl,
            (ttl, _) => ttl.as_duration(),
        }
    }

    fn attr(&self, inode: &Inode) -> Attr {
        let (perm, nlink) = match inode.kind {
            InodeKind::File => (self.config.file_mode, 1),
            InodeKind::Directory => (self.config.dir_mode, 2),
        };
        Attr {
            ino: inode.ino,
            kind: inode.kind,
            size: inode.stat.size,
            mtime: inode.stat.mtime,
            perm,
            uid: self.config.uid,
            gid: self.config.gid,
            nlink,
            blocks: inode.stat.size.div_ceil(512),
        }
    }

    fn entry(&self, inode: &Inode) -> Entry {
        Entry { attr: self.attr(inode), ttl: self.ttl(inode.kind) }
    }

    /// The key of the directory holding `inode` (empty or ending in `/`).
    fn parent_key(inode: &Inode) -> &str {
        let own = inode.name.len() + usize::from(inode.kind == InodeKind::Directory);
        &inode.key[..inode.key.len() - own]
    }

    /// Looks `name` up in directory `parent`, asking S3. Takes a kernel lookup reference.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry, FsError> {
        let name = parse_name(name)?;
        let dir = self.inodes.get(parent)?;
        if dir.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(parent));
        }
        match lookup::remote_lookup(self.client.as_ref(), &dir.key, name, self.mount_time).await? {
            Some(remote) => {
                let ttl = self.ttl(remote.kind);
                let inode = self.inodes.lookup_upsert(parent, name, remote, ttl)?;
                Ok(self.entry(&inode))
            }
            None => {
                self.inodes.remove_name(parent, name);
                Err(FsError::NotFound { parent, name: name.to_string() })
            }
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Attributes of `ino`, asking S3 again once the cached ones expire.
    pub async fn getattr(&self, ino: u64) -> Result<Entry, FsError> {
        let inode = self.inodes.get(ino)?;
        if inode.stat.is_fresh() {
            return Ok(self.entry(&inode));
        }
        let inode = self.revalidate(&inode).await?;
        Ok(self.entry(&inode))
    }

    async fn revalidate(&self, inode: &Inode) -> Result<Inode, FsError> {
        let remote =
            lookup::remote_lookup(self.client.as_ref(), Self::parent_key(inode), &inode.name, self.mount_time).await?;
        let ttl = self.ttl(inode.kind);
        self.inodes.revalidate(inode.ino, remote, ttl)
    }

    /// setattr: S3 objects have no mutable mode, owner, size or times.
    pub async fn setattr(&self, ino: u64, what: &'static str) -> Result<Entry, FsError> {
        let inode = self.inodes.get(ino)?;
        Err(FsError::PermissionDenied(format!(
            "cannot change {what} of {:?}: S3 objects have fixed attributes",
            inode.key
        )))
    }

    /// Opens a file for reading. Write access to existing objects is refused.
    pub async fn open(&self, ino: u64, flags: i32) -> Result<Opened, FsError> {
        let inode = self.inodes.get(ino)?;
        if inode.kind == InodeKind::Directory {
            return Err(FsError::IsADirectory(ino));
        }
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            return Err(FsError::InvalidOpenFlags(flags));
        }
        let write = flags & libc::O_ACCMODE == libc::O_WRONLY || flags & libc::O_TRUNC != 0;
        if write {
            return Err(FsError::PermissionDenied(format!(
                "cannot open {:?} for writing: overwriting objects is not supported yet",
                inode.key
            )));
        }
        let direct_io = flags & libc::O_DIRECT != 0;
        // Reading needs the current ETag; O_DIRECT asks for the freshest view.
        let inode = if direct_io || !inode.stat.is_fresh() || inode.stat.etag.is_none() {
            self.revalidate(&inode).await?
        } else {
            inode
        };
        let Some(etag) = inode.stat.etag.clone() else {
            return Err(FsError::StaleInode { ino, key: inode.key });
        };
        let reader =
            FileReader::new(self.client.clone(), ObjectVersion { key: inode.key, etag, size: inode.stat.size });
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap().insert(fh, Arc::new(reader));
        Ok(Opened { fh, direct_io })
    }

    fn reader(&self, fh: u64) -> Result<Arc<FileReader>, FsError> {
        self.files.lock().unwrap().get(&fh).cloned().ok_or(FsError::BadHandle(fh))
    }

    /// Reads up to `size` bytes at `offset` from open handle `fh`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        self.reader(fh)?.read(offset, size).await
    }

    /// Closes handle `fh`.
    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        self.files.lock().unwrap().remove(&fh).map(|_| ()).ok_or(FsError::BadHandle(fh))
    }

    /// Opens directory `ino` for listing.
    pub async fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let inode = self.inodes.get(ino)?;
        if inode.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(ino));
        }
        let listing = DirListing::new(inode.key, self.config.list_page_size, self.mount_time);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(DirHandle { ino, listing: tokio::sync::Mutex::new(listing) });
        self.dirs.lock().unwrap().insert(fh, handle);
        Ok(fh)
    }

    /// Lists directory handle `fh` from `offset`, handing entries to `add` until it returns
    /// true (reply full). Every entry `add` accepts, except `.` and `..`, takes a kernel lookup
    /// reference, as readdirplus requires.
    pub async fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>) -> bool + Send,
    ) -> Result<(), FsError> {
        let handle = self.dirs.lock().unwrap().get(&fh).cloned().ok_or(FsError::BadHandle(fh))?;
        let mut listing = handle.listing.lock().await;
        listing.seek(fh, offset)?;
        let dir = self.inodes.get(handle.ino)?;
        let mut at = offset;
        while let Some(slot) = listing.slot(self.client.as_ref(), at).await? {
            let next_offset = at + 1;
            let full = match slot {
                DirSlot::Dot => add(DirEntry { name: ".", next_offset, entry: self.entry(&dir) }),
                DirSlot::DotDot => {
                    let parent = self.inodes.get(dir.parent).unwrap_or_else(|_| dir.clone());
                    add(DirEntry { name: "..", next_offset, entry: self.entry(&parent) })
                }
                DirSlot::Entry(e) => {
                    let ttl = self.ttl(e.entry.kind);
                    let inode = self.inodes.lookup_upsert(handle.ino, &e.name, e.entry, ttl)?;
                    let full = add(DirEntry { name: &e.name, next_offset, entry: self.entry(&inode) });
                    if full {
                        // Not sent: give the reference back.
                        self.inodes.forget(inode.ino, 1);
                    }
                    full
                }
            };
            if full {
                break;
            }
            at = next_offset;
        }
        Ok(())
    }

    /// Closes directory handle `fh`.
    pub fn releasedir(&self, fh: u64) -> Result<(), FsError> {
        self.dirs.lock().unwrap().remove(&fh).map(|_| ()).ok_or(FsError::BadHandle(fh))
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

    /// Operations that change the bucket are not available in this release.
    pub fn refuse_change(&self, operation: &'static str) -> FsError {
        match operation {
            "unlink" => FsError::PermissionDenied(
                "deleting objects is not supported yet by this version of mount-s3".to_string(),
            ),
            "rmdir" => FsError::PermissionDenied("cannot remove a directory that exists in S3".to_string()),
            "symlink" | "link" => FsError::PermissionDenied(format!("{operation} is not supported by S3")),
            "rename" => FsError::NotSupported("rename on general purpose buckets"),
            _ => FsError::NotYetSupported(operation),
        }
    }

    /// The root inode number.
    pub const fn root() -> u64 {
        ROOT_INO
    }
}

#[cfg(test)]
mod tests;
