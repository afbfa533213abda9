//! Entries known only from a listing, with `--posix-metadata`.
//!
//! ListObjectsV2 carries no user metadata, so a listed object may be a symlink, and any listed
//! entry may have a stored mode, owner or mtime: nothing the listing says about them may reach
//! the kernel's caches. readdirplus therefore gives such an entry an entry and attribute TTL of
//! zero ([`S3Filesystem::listed_ttl`](crate::fs::S3Filesystem)): `ls` shows the name at no
//! extra cost, and anything that looks at the entry (`ls -l`'s lstat, a path walk) makes the
//! kernel send a LOOKUP first. (A readdirplus entry without any attributes, node id 0, would
//! say the same, but fuser 0.18 then also reports inode number 0 in the dirent, which `getdents`
//! readers such as Go's skip as a deleted entry.) The kernel's dirent type stays "regular file":
//! fuser cannot say "unknown".
//!
//! That LOOKUP costs one HeadObject ([`S3Filesystem::lookup_listed`]): for the directory TTL
//! (1 s by default) the listing's "an object, and no directory of that name" is trusted, as the
//! kernel trusts a directory for that long, so the lookup's ListObjectsV2 is not needed.
//!
//! A listed object the namespace knows as a symlink of the same version stays a symlink
//! ([`S3Filesystem::listed_entry`]), and keeps the attributes a HeadObject read while they are
//! fresh (a listing does not refresh them: another client's chmod keeps the ETag), so within
//! the TTL it costs no request. A symlink's LOOKUP comes twice (the kernel drops the "regular
//! file" it was given and asks again): the second is answered from the first
//! ([`S3Filesystem::fresh_symlink`]). So `ls -l` costs one HeadObject per file or symlink more
//! than without the flag; a directory costs its lookup (HeadObject and ListObjectsV2, and the
//! marker's HeadObject when there is one).

use crate::client::{ClientErrorKind, ObjectMeta};
use crate::fs::namespace::{Inode, InodeKind, RemoteEntry};
use crate::fs::posix::{PosixKind, ops::attrs_of};
use crate::fs::{FsError, S3Filesystem};

/// What a HeadObject answer with `--posix-metadata` says an object is: a symlink when its stored
/// mode says so, else a file (a stored directory type on a key without the slash leaves it a file).
pub fn object_entry(meta: ObjectMeta) -> RemoteEntry {
    let attrs = attrs_of(&meta);
    let symlink = attrs.kind == Some(PosixKind::Symlink);
    RemoteEntry {
        kind: if symlink { InodeKind::Symlink } else { InodeKind::File },
        size: meta.size,
        mtime: meta.last_modified,
        etag: Some(meta.etag),
        storage_class: meta.storage_class,
        archived: meta.archived,
        posix: Some(attrs),
    }
}

/// Whether `known` was made for the object version a listing shows as `listed`.
fn same_version(known: &Inode, listed: &RemoteEntry) -> bool {
    match (&known.stat.etag, &listed.etag) {
        (Some(a), Some(b)) => a == b,
        _ => known.stat.size == listed.size && known.stat.mtime == listed.mtime,
    }
}

impl S3Filesystem {
    /// What the namespace should remember of `listed`, an object a listing showed as `name` in
    /// `parent`: a listing says "object", which a symlink the namespace knows (read by a
    /// HeadObject, same version) still is. Without the flag, `listed` as it is.
    pub(crate) fn listed_entry(&self, parent: u64, name: &str, mut listed: RemoteEntry) -> RemoteEntry {
        if self.config.posix_metadata
            && listed.kind == InodeKind::File
            && let Some(known) = self.ns.child(parent, name)
            && known.kind == InodeKind::Symlink
            && known.local.is_none()
            && same_version(&known, &listed)
        {
            listed.kind = InodeKind::Symlink;
        }
        listed
    }

    /// With `--posix-metadata`, a symlink `name` in `parent` that a HeadObject read within its
    /// TTL. The kernel asks twice for a listed symlink: the first LOOKUP finds it is not the
    /// regular file readdirplus named, so the kernel drops that entry and looks it up again at
    /// once; the second is answered from the first, as the kernel's cache would have answered it.
    pub(crate) fn fresh_symlink(&self, parent: u64, name: &str) -> Option<Inode> {
        let node = self.ns.child(parent, name)?;
        let fresh = self.config.posix_metadata
            && node.kind == InodeKind::Symlink
            && node.local.is_none()
            && node.stat.posix.is_some()
            && node.stat.is_fresh();
        fresh.then_some(node)
    }

    /// With `--posix-metadata`, the lookup of `name` in `parent` (key `dir_key`) when the
    /// namespace knows it only from a listing that is still fresh: one HeadObject reads the
    /// attributes (and whether it is a symlink). `None` when this does not apply, or the object
    /// is gone since the listing: the full lookup then says what the name is now.
    pub(crate) async fn lookup_listed(
        &self,
        parent: u64,
        dir_key: &str,
        name: &str,
    ) -> Result<Option<RemoteEntry>, FsError> {
        if !self.config.posix_metadata {
            return Ok(None);
        }
        let Some(node) = self.ns.child(parent, name) else { return Ok(None) };
        let object = matches!(node.kind, InodeKind::File | InodeKind::Symlink);
        if !object || node.local.is_some() || node.stat.posix.is_some() {
            return Ok(None);
        }
        // The listing's word holds for the directory TTL (the node's own TTL, from the
        // listing, is the file TTL): `ls -l` of a large directory looks its entries up one by
        // one, long after 100 ms.
        let ttl = self.ttl(node.kind);
        let window = self.ttl(InodeKind::Directory).max(ttl);
        if node.stat.expiry + (window - ttl) <= std::time::Instant::now() {
            return Ok(None);
        }
        let key = format!("{dir_key}{name}");
        match self.client.head_object(&key).await {
            Ok(meta) => {
                let mut entry = object_entry(meta);
                // A listing without ETags (some servers) gives Last-Modified in milliseconds,
                // HeadObject in whole seconds: the same version keeps its inode number.
                let second =
                    |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs());
                if node.stat.etag.is_none()
                    && entry.size == node.stat.size
                    && second(entry.mtime) == second(node.stat.mtime)
                {
                    entry.mtime = node.stat.mtime;
                }
                self.ns.learned(dir_key, name, Some(&entry));
                Ok(Some(entry))
            }
            Err(e) if e.kind == ClientErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::client("look up", key, e)),
        }
    }
}
