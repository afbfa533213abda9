//! The core's `--posix-metadata` operations: symlinks, readlink, and attribute changes of what is
//! in S3 (a copy of an object onto itself with replaced metadata; a directory's marker object
//! written again).
//!
//! A copy onto itself keeps the object's Content-Type, Content-Encoding, Content-Language,
//! Content-Disposition and Cache-Control (read by the HeadObject it needs anyway), which a
//! `REPLACE` copy would otherwise drop.
//!
//! Costs: reading attributes costs nothing extra (the lookup's HeadObject carries them); a
//! change on a closed object is a HeadObject (current ETag, other tools' metadata) and one
//! CopyObject (objects over 5 GiB: a multipart copy, UploadPartCopy by ranges); a directory's
//! change is one PutObject of its marker; a symlink is one PutObject and its readlink one GetObject,
//! remembered while the object keeps its ETag.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;

use super::convention::{self, DIRECTORY_CONTENT_TYPE, PosixAttrs, PosixKind, SYMLINK_MAX};
use crate::client::{
    ClientErrorKind, CopyOptions, ETag, ListRequest, ObjectMeta, PutOptions, UploadedPart, UserMetadata,
};
use crate::fs::namespace::{Inode, InodeKind, RemoteEntry};
use crate::fs::{Entry, FsError, S3Filesystem, SetAttr};

/// Bytes per UploadPartCopy when an object is too big for one CopyObject.
pub const COPY_PART_SIZE: u64 = 512 << 20;

/// Symlink targets read from S3, by inode, while the object keeps its ETag. Bounded: cleared
/// when it grows past [`SymlinkCache::MAX`] (targets are small, lookups refill it).
#[derive(Debug, Default)]
pub struct SymlinkCache(Mutex<HashMap<u64, (ETag, Bytes)>>);

impl SymlinkCache {
    const MAX: usize = 10_000;

    fn get(&self, ino: u64, etag: &ETag) -> Option<Bytes> {
        let map = self.0.lock().unwrap();
        map.get(&ino).filter(|(e, _)| e == etag).map(|(_, t)| t.clone())
    }

    fn put(&self, ino: u64, etag: ETag, target: Bytes) {
        let mut map = self.0.lock().unwrap();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(ino, (etag, target));
    }
}

/// The attributes a HeadObject answer carries, when the flag is on.
pub fn attrs_of(meta: &ObjectMeta) -> PosixAttrs {
    PosixAttrs::from_metadata(meta.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// As user metadata for a request.
pub fn user_metadata(pairs: Vec<(String, String)>) -> UserMetadata {
    pairs.into_iter().collect()
}

/// `change` applied to `attrs`, with ctime now. A mode keeps only permission bits (the kernel
/// sends the type too); `None` fields are left as they are.
pub fn apply(mut attrs: PosixAttrs, change: &SetAttr, now: SystemTime) -> PosixAttrs {
    if let Some(mode) = change.mode {
        attrs.perm = Some((mode & u32::from(convention::PERM_BITS)) as u16);
    }
    if let Some(uid) = change.uid {
        attrs.uid = Some(uid);
    }
    if let Some(gid) = change.gid {
        attrs.gid = Some(gid);
    }
    if let Some(t) = change.mtime {
        attrs.mtime = Some(t);
    }
    if let Some(t) = change.atime {
        attrs.atime = Some(t);
    }
    attrs.ctime = Some(now);
    attrs
}

impl S3Filesystem {
    /// The attributes of a new file created with `mode` by `owner` (the mount's `--uid`/`--gid`
    /// when `None`). Its times are set when its upload is sent.
    pub(crate) fn new_file_attrs(&self, mode: u32, owner: Option<(u32, u32)>) -> PosixAttrs {
        let (uid, gid) = owner.unwrap_or((self.config.uid, self.config.gid));
        PosixAttrs {
            kind: Some(PosixKind::File),
            perm: Some((mode & u32::from(convention::PERM_BITS)) as u16),
            uid: Some(uid),
            gid: Some(gid),
            ..PosixAttrs::default()
        }
    }

    /// The user metadata an upload of `inode` carries: none without the flag; else its
    /// attributes, with the mtime a program set after its last write, or now (its last write
    /// was before now: the upload completes after it).
    pub(crate) fn upload_metadata(&self, inode: &Inode) -> UserMetadata {
        if !self.config.posix_metadata {
            return UserMetadata::new();
        }
        let now = SystemTime::now();
        let attrs = inode.stat.posix.unwrap_or_default();
        let mtime = attrs.mtime.unwrap_or(now);
        let attrs = PosixAttrs { mtime: Some(mtime), ctime: Some(attrs.ctime.unwrap_or(now).max(mtime)), ..attrs };
        user_metadata(attrs.to_metadata())
    }

    /// An upload of `inode` completed as `done`, carrying `carried` where `wanted` was asked
    /// for: a multipart upload created before a chmod or utimes carries the older attributes,
    /// and is copied onto itself once with the wanted ones. The inode then shows what S3 holds.
    pub(crate) async fn uploaded_with(
        &self,
        inode: &Inode,
        done: &mut crate::fs::upload::Uploaded,
        mut wanted: UserMetadata,
        carried: UserMetadata,
    ) {
        // A chmod, chown or utimes that arrived while the upload was in flight (rsync's utimes
        // right after closing an empty file races the upload its release starts) changed the
        // attributes after `wanted` was taken: they are wanted too.
        if let Ok(now) = self.ns.get(inode.ino)
            && now.stat.posix != inode.stat.posix
        {
            wanted = self.upload_metadata(&now);
        }
        let mut stored = carried;
        if stored != wanted {
            let mut dest = self.upload_config(&inode.key, false).options;
            dest.if_none_match_any = false;
            dest.metadata = wanted.clone();
            match self.copy_onto_itself(&inode.key, &done.etag, done.size, dest).await {
                Ok(etag) => {
                    done.etag = etag;
                    stored = wanted;
                }
                Err(e) => tracing::warn!(
                    "{e}: {:?} keeps the attributes it had when its upload began",
                    crate::escape::escaped(&inode.key)
                ),
            }
        }
        let attrs = PosixAttrs::from_metadata(stored.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let _ = self.ns.set_posix(inode.ino, |p| *p = attrs);
    }

    /// The attributes `inode` shows now, as stored attributes: what S3 said, completed with the
    /// mount's defaults, so that writing them back keeps what `stat` showed.
    pub(crate) fn shown_attrs(&self, inode: &Inode) -> PosixAttrs {
        let attr = self.attr(inode);
        let kind = match inode.kind {
            InodeKind::File => PosixKind::File,
            InodeKind::Directory => PosixKind::Directory,
            InodeKind::Symlink => PosixKind::Symlink,
        };
        let stored = inode.stat.posix.unwrap_or_default();
        PosixAttrs {
            kind: Some(kind),
            perm: Some(attr.perm),
            uid: Some(attr.uid),
            gid: Some(attr.gid),
            mtime: Some(attr.mtime),
            atime: stored.atime,
            ctime: stored.ctime,
        }
    }

    /// readlink: the target of a symlink object (one GetObject, remembered per ETag).
    pub async fn readlink(&self, ino: u64) -> Result<Bytes, FsError> {
        let inode = self.ns.get(ino)?;
        if inode.kind != InodeKind::Symlink {
            return Err(FsError::NotASymlink { key: inode.key });
        }
        let Some(etag) = inode.stat.etag.clone() else {
            return Err(FsError::StaleInode { ino, key: inode.key });
        };
        if let Some(target) = self.symlinks.get(ino, &etag) {
            return Ok(target);
        }
        convention::check_symlink_size(inode.stat.size)
            .map_err(|e| FsError::BadSymlink { key: inode.key.clone(), reason: e.to_string() })?;
        let response = match self.client.get_object(&inode.key, 0..inode.stat.size, Some(&etag)).await {
            Ok(r) => r,
            Err(e) if matches!(e.kind, ClientErrorKind::PreconditionFailed | ClientErrorKind::NotFound) => {
                self.ns.stale(ino, &etag);
                return Err(FsError::StaleInode { ino, key: inode.key });
            }
            Err(e) => return Err(FsError::client("read symbolic link", &inode.key, e)),
        };
        let mut body = Vec::with_capacity(inode.stat.size as usize);
        let mut stream = response.body;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FsError::client("read symbolic link", &inode.key, e))?;
            if body.len() + chunk.len() > SYMLINK_MAX {
                return Err(FsError::BadSymlink { key: inode.key, reason: "longer than its size said".into() });
            }
            body.extend_from_slice(&chunk);
        }
        let target = convention::symlink_target(&body)
            .map_err(|e| FsError::BadSymlink { key: inode.key.clone(), reason: e.to_string() })?;
        self.symlinks.put(ino, etag, target.clone());
        Ok(target)
    }

    /// symlink: an object whose body is `target` and whose mode says `S_IFLNK | 0777` (s3fs's
    /// format), created with `If-None-Match: *`.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Entry, FsError> {
        if !self.config.posix_metadata {
            return Err(self.refuse("symlink"));
        }
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong(String::from_utf8_lossy(&target[..64]).into_owned()));
        }
        if target.is_empty() || target.contains(&0) {
            return Err(FsError::InvalidName(String::from_utf8_lossy(target).into_owned()));
        }
        let (dir, name) = self.writable_dir(parent, name)?;
        self.ensure_absent(&dir, &name).await?;
        let key = format!("{}{}", dir.key, name);
        let now = SystemTime::now();
        let attrs = PosixAttrs {
            kind: Some(PosixKind::Symlink),
            perm: Some(0o777),
            uid: Some(uid),
            gid: Some(gid),
            mtime: Some(now),
            atime: None,
            ctime: Some(now),
        };
        let mut options = self.upload_config(&key, true).options;
        options.metadata = user_metadata(attrs.to_metadata());
        let body = Bytes::copy_from_slice(target);
        let put = self.client.put_object(&key, body.clone(), &options).await;
        let put = put.map_err(|e| match e.kind {
            ClientErrorKind::PreconditionFailed => FsError::AlreadyExists { key: key.clone() },
            _ => FsError::client("create symbolic link", &key, e),
        })?;
        let entry = RemoteEntry {
            kind: InodeKind::Symlink,
            size: target.len() as u64,
            mtime: now,
            etag: Some(put.etag.clone()),
            storage_class: None,
            archived: false,
            posix: Some(attrs),
        };
        let inode = self.ns.created(dir.ino, &name, entry, self.ttl(InodeKind::Symlink))?;
        self.symlinks.put(inode.ino, put.etag, body);
        Ok(self.entry(&inode))
    }

    /// mkdir with `--posix-metadata`: the marker object `dir/`, as s3fs writes it, so the
    /// directory and its mode exist in S3 at once.
    pub(crate) async fn mkdir_marker(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry, FsError> {
        let (dir, name) = self.writable_dir(parent, name)?;
        self.ensure_absent(&dir, &name).await?;
        let now = SystemTime::now();
        let attrs = PosixAttrs {
            kind: Some(PosixKind::Directory),
            perm: Some((mode & u32::from(convention::PERM_BITS)) as u16),
            uid: Some(uid),
            gid: Some(gid),
            mtime: Some(now),
            atime: None,
            ctime: Some(now),
        };
        let key = format!("{}{}/", dir.key, name);
        self.put_marker(&key, &attrs, true).await?;
        let entry = RemoteEntry { posix: Some(attrs), ..RemoteEntry::directory(now) };
        let inode = self.ns.created(dir.ino, &name, entry, self.ttl(InodeKind::Directory))?;
        Ok(self.entry(&inode))
    }

    /// rmdir with `--posix-metadata`: a directory whose only key is its marker (as mkdir made
    /// it) is removed by deleting the marker, with `--allow-delete`.
    pub(crate) async fn rmdir_marker(&self, parent: u64, dir_key: &str, name: &str) -> Result<(), FsError> {
        let key = format!("{dir_key}{name}/");
        let request = ListRequest { prefix: key.clone(), delimiter: None, continuation_token: None, max_keys: 2 };
        let page = self.client.list_objects(&request).await.map_err(|e| FsError::client("list", &key, e))?;
        if page.objects.iter().any(|o| o.key != key) || !page.common_prefixes.is_empty() {
            return Err(FsError::NotEmpty { key });
        }
        if page.objects.is_empty() {
            return Err(FsError::NotFound { parent, name: name.to_string() });
        }
        if !self.config.allow_delete {
            return Err(FsError::PermissionDenied(
                "Deletes are disabled. Use '--allow-delete' mount option to enable it.".to_string(),
            ));
        }
        self.client.delete_object(&key).await.map_err(|e| FsError::client("delete", &key, e))?;
        self.ns.unlinked(parent, dir_key, name);
        Ok(())
    }

    async fn put_marker(&self, key: &str, attrs: &PosixAttrs, new: bool) -> Result<ETag, FsError> {
        let mut options = self.upload_config(key, new).options;
        options.content_type = Some(DIRECTORY_CONTENT_TYPE.to_string());
        options.metadata = user_metadata(attrs.to_metadata());
        match self.client.put_object(key, Bytes::new(), &options).await {
            Ok(put) => Ok(put.etag),
            Err(e) if e.kind == ClientErrorKind::PreconditionFailed => Err(FsError::AlreadyExists { key: key.into() }),
            Err(e) => Err(FsError::client("write directory marker", key, e)),
        }
    }

    /// chmod, chown, utimes of something in S3 (not being written here).
    pub(crate) async fn set_remote_attrs(&self, inode: Inode, change: &SetAttr) -> Result<Entry, FsError> {
        if inode.ino == Self::root() {
            return Err(FsError::PermissionDenied(
                "cannot change the attributes of the mount's root: it has no object to keep them on".into(),
            ));
        }
        let attrs = apply(self.shown_attrs(&inode), change, SystemTime::now());
        match inode.kind {
            InodeKind::Directory => {
                let etag = self.put_marker(&inode.key, &attrs, false).await?;
                let inode = self.ns.rewritten(inode.ino, Some(etag), attrs, self.ttl(inode.kind))?;
                Ok(self.entry(&inode))
            }
            InodeKind::File | InodeKind::Symlink => {
                let etag = self.rewrite_metadata(&inode, &attrs).await?;
                let inode = self.ns.rewritten(inode.ino, Some(etag), attrs, self.ttl(inode.kind))?;
                Ok(self.entry(&inode))
            }
        }
    }

    /// Copies the object of `inode` onto itself with `attrs` in place of its POSIX metadata,
    /// pinned to the ETag it had when it was looked up; returns the new ETag.
    pub(crate) async fn rewrite_metadata(&self, inode: &Inode, attrs: &PosixAttrs) -> Result<ETag, FsError> {
        let key = &inode.key;
        let stale = || FsError::StaleInode { ino: inode.ino, key: key.clone() };
        let meta = match self.client.head_object(key).await {
            Ok(meta) => meta,
            Err(e) if e.kind == ClientErrorKind::NotFound => return Err(stale()),
            Err(e) => return Err(FsError::client("change attributes of", key, e)),
        };
        if inode.stat.etag.as_ref().is_some_and(|e| *e != meta.etag) {
            return Err(stale());
        }
        let metadata = attrs.merged_into(meta.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut dest = self.upload_config(key, false).options;
        dest.if_none_match_any = false;
        dest.metadata = user_metadata(metadata);
        // S3 makes a copy STANDARD unless told: keep the object's class. REPLACE also drops the
        // headers describing the body unless sent again: keep its Content-Type and the others.
        dest.storage_class = meta.storage_class.clone().or(dest.storage_class);
        dest.content_type = meta.content_type.clone().or(dest.content_type);
        dest.headers = meta.headers.clone();
        // A source changed since the HeadObject fails the copy (412): ESTALE, nothing changed.
        self.copy_onto_itself(key, &meta.etag, meta.size, dest).await
    }

    /// One CopyObject, or a multipart copy for objects over `single_copy_limit` (5 GiB).
    pub(crate) async fn copy_onto_itself(
        &self,
        key: &str,
        etag: &ETag,
        size: u64,
        dest: PutOptions,
    ) -> Result<ETag, FsError> {
        let (limit, part) = (self.config.single_copy_limit, self.config.copy_part_size);
        self.copy_onto_itself_in(key, etag, size, dest, limit, part).await
    }

    /// [`copy_onto_itself`](Self::copy_onto_itself) with its limits as arguments (tests).
    pub(crate) async fn copy_onto_itself_in(
        &self,
        key: &str,
        etag: &ETag,
        size: u64,
        dest: PutOptions,
        single_copy_limit: u64,
        part_size: u64,
    ) -> Result<ETag, FsError> {
        let action = "change attributes of";
        if size <= single_copy_limit {
            let options = CopyOptions { source_if_match: Some(etag.clone()), replace_metadata: true, dest };
            let copied = self.client.copy_object(key, key, &options).await;
            return copied.map(|r| r.etag).map_err(|e| FsError::client(action, key, e));
        }
        let upload_id =
            self.client.create_multipart_upload(key, &dest).await.map_err(|e| FsError::client(action, key, e))?;
        let result = self.copy_parts(key, &upload_id, etag, size, &dest, part_size).await;
        if result.is_err()
            && let Err(e) = self.client.abort_multipart_upload(key, &upload_id).await
        {
            tracing::warn!(key, "could not abort the multipart copy {upload_id}: {e}");
        }
        result
    }

    async fn copy_parts(
        &self,
        key: &str,
        upload_id: &str,
        etag: &ETag,
        size: u64,
        dest: &PutOptions,
        part_size: u64,
    ) -> Result<ETag, FsError> {
        let action = "change attributes of";
        let mut parts: Vec<UploadedPart> = Vec::new();
        let mut start = 0;
        while start < size {
            let end = (start + part_size.max(1)).min(size);
            let number = parts.len() as u32 + 1;
            let part = self.client.upload_part_copy(key, upload_id, number, key, start..end, Some(etag)).await;
            parts.push(part.map_err(|e| FsError::client(action, key, e))?);
            start = end;
        }
        // The copy replaces the object only while it is still the one we copied.
        let complete = PutOptions { if_match: Some(etag.clone()), ..dest.clone() };
        let done = self.client.complete_multipart_upload(key, upload_id, &parts, &complete).await;
        done.map(|r| r.etag).map_err(|e| FsError::client(action, key, e))
    }
}
