//! `--allow-modify`: files changed in place through staged local copies ([`crate::fs::staging`]).
//!
//! Everything the flag changes in the core is here, reached from a few hooks in open, create,
//! read, write, flush, fsync, release, setattr and unlink. With the flag, every file opened for
//! writing (existing or new) is a [`StagedObject`] shared by the inode's handles: one writer
//! (the same rule as other writes) and any readers opened while it is staged, which read the
//! staged bytes. close and fsync upload the new version (if it changed) and leave the file
//! staged and writable; the last release uploads what is left and drops the staged copy.
//! An `O_TRUNC` open with `--allow-overwrite` keeps Mountpoint's streaming replacement instead.

use std::ffi::OsStr;
use std::sync::Arc;

use bytes::Bytes;

use crate::client::{ETag, PutOptions};
use crate::escape::escaped;
use crate::fs::namespace::{Inode, InodeKind, LocalState};
use crate::fs::posix::PosixAttrs;
use crate::fs::staging::{Base, StagedObject, StagingStore};
use crate::fs::upload::Uploaded;
use crate::fs::{Entry, FsError, Handle, Opened, S3Filesystem};

/// One open handle on a staged file.
#[derive(Debug)]
pub(crate) struct StagedHandle {
    pub(crate) ino: u64,
    pub(crate) object: Arc<StagedObject>,
    /// Holds the inode's writer claim (opened for writing).
    pub(crate) writer: bool,
}

impl S3Filesystem {
    /// Takes the inode's writer claim (one writer, or any number of readers, as other writes).
    fn claim_writer(&self, inode: &Inode) -> Result<(), FsError> {
        self.ns.open_write(inode.ino).map_err(|_| {
            FsError::PermissionDenied(format!(
                "{:?} is open elsewhere: a file has one writer or any number of readers",
                inode.key
            ))
        })
    }

    fn release_claim(&self, ino: u64) {
        self.ns.close(ino, true);
    }

    /// Stages files in `store` (with `--allow-modify`).
    pub fn with_staging(mut self, store: Arc<StagingStore>) -> Self {
        self.staging = Some(store);
        self
    }

    /// The staged object of inode `ino`, if it is staged.
    pub(crate) fn staged(&self, ino: u64) -> Option<Arc<StagedObject>> {
        self.staged.lock().unwrap().get(&ino).cloned()
    }

    fn staging_store(&self) -> Option<&Arc<StagingStore>> {
        self.staging.as_ref().filter(|_| self.config.allow_modify)
    }

    /// Whether an open of `inode` with `flags` is for [`Self::open_staged`].
    pub(crate) fn opens_staged(&self, inode: &Inode, flags: i32) -> bool {
        if self.staging_store().is_none() {
            return false;
        }
        if self.staged(inode.ino).is_some() {
            return true;
        }
        let access = flags & libc::O_ACCMODE;
        let writes = access == libc::O_WRONLY || access == libc::O_RDWR;
        // `O_TRUNC` with --allow-overwrite streams the new object, as Mountpoint does.
        let streamed = flags & libc::O_TRUNC != 0 && self.config.allow_overwrite;
        writes && inode.local.is_none() && !streamed
    }

    /// Opens `inode` through its staged copy, staging it first for a writer. A reader of a
    /// file that is not staged never comes here.
    pub(crate) async fn open_staged(&self, inode: &Inode, flags: i32) -> Result<Opened, FsError> {
        let store = self.staging_store().expect("opens_staged checked").clone();
        let access = flags & libc::O_ACCMODE;
        let writer = access == libc::O_WRONLY || access == libc::O_RDWR;
        let object = match self.staged(inode.ino) {
            // The first writer holds the inode's writer claim for all of them: handles of this
            // mount share the staged file as they would a local one (a `>>` right after another
            // must not fail because the first one's release has not arrived yet).
            Some(object) => object,
            None => {
                // The version to stage from: asked now (an open for writing revalidates, so the
                // base is what S3 holds, and a conflict later means a change after this open).
                let fresh = self.revalidate(inode).await?;
                let Some(etag) = fresh.stat.etag.clone() else {
                    return Err(FsError::StaleInode { ino: inode.ino, key: inode.key.clone() });
                };
                self.claim_writer(&fresh)?;
                let base = Base { etag, size: fresh.stat.size };
                match StagedObject::new(self.client.clone(), store, &fresh.key, Some(base)) {
                    Ok(object) => self.add_staged(inode.ino, object),
                    Err(e) => {
                        self.release_claim(inode.ino);
                        return Err(e);
                    }
                }
            }
        };
        if writer {
            object.writers.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        let handle = Arc::new(StagedHandle { ino: inode.ino, object: object.clone(), writer });
        let fh = self.add_handle(Handle::Staged(handle.clone()));
        if writer && flags & libc::O_TRUNC != 0 {
            if let Err(e) = object.set_size(0).await {
                self.release_staged(fh, &handle).await;
                return Err(e);
            }
            self.ns.set_size(inode.ino, 0);
        }
        Ok(Opened { fh, direct_io: false })
    }

    fn add_staged(&self, ino: u64, object: StagedObject) -> Arc<StagedObject> {
        let object = Arc::new(object);
        self.staged.lock().unwrap().insert(ino, object.clone());
        object
    }

    /// create with `--allow-modify`: a new local file, staged, so it can be written in any order.
    /// It belongs to `owner` as a created file does (see [`S3Filesystem::mknod_as`]). `None`
    /// when files are not staged.
    pub(crate) async fn create_staged(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Option<Result<(Entry, Opened), FsError>> {
        let store = self.staging_store()?.clone();
        Some(
            async move {
                let entry = self.mknod_as(parent, name, mode | libc::S_IFREG, owner).await?;
                let inode = self.ns.get(entry.attr.ino)?;
                let object = match StagedObject::new(self.client.clone(), store, &inode.key, None) {
                    Ok(object) => object,
                    Err(e) => {
                        self.ns.abandon_local(inode.ino);
                        return Err(e);
                    }
                };
                self.claim_writer(&inode)?;
                object.writers.store(1, std::sync::atomic::Ordering::Release);
                let object = self.add_staged(inode.ino, object);
                let handle = StagedHandle { ino: inode.ino, object, writer: true };
                let opened = Opened { fh: self.add_handle(Handle::Staged(Arc::new(handle))), direct_io: false };
                Ok((entry, opened))
            }
            .await,
        )
    }

    pub(crate) async fn read_staged(&self, handle: &StagedHandle, offset: u64, size: u32) -> Result<Bytes, FsError> {
        handle.object.read(offset, u64::from(size)).await
    }

    pub(crate) async fn write_staged(
        &self,
        fh: u64,
        handle: &StagedHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, FsError> {
        if !handle.writer {
            return Err(FsError::BadHandle(fh));
        }
        let size = handle.object.write(offset, data).await?;
        self.ns.set_size(handle.ino, size);
        let _ = self.ns.set_mtime(handle.ino, std::time::SystemTime::now());
        // As a write handle's write: the mtime its upload carries is the time of its last write.
        if self.config.posix_metadata {
            let _ = self.ns.set_posix(handle.ino, |p| p.mtime = None);
        }
        Ok(data.len() as u32)
    }

    fn staged_put_options(&self, key: &str) -> PutOptions {
        let mut options = self.upload_config(key, false).options;
        options.if_none_match_any = false;
        options
    }

    /// close and fsync of a staged file: uploads its new version if it changed.
    pub(crate) async fn commit_staged(&self, handle: &StagedHandle) -> Result<(), FsError> {
        if !handle.writer {
            return Ok(());
        }
        let object = &handle.object;
        let mut options = self.staged_put_options(object.key());
        // `--posix-metadata`: the new version carries the attributes as a written file's upload.
        let inode = self.ns.get(handle.ino)?;
        options.metadata = self.upload_metadata(&inode);
        let done = object.commit(&options, self.config.write_part_size).await;
        match done {
            Ok(done) => {
                if let Some(etag) = done.etag {
                    self.staged_uploaded(handle.ino, etag, object.size());
                    if self.config.posix_metadata {
                        let stored = &options.metadata;
                        let attrs = PosixAttrs::from_metadata(stored.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                        let _ = self.ns.set_posix(handle.ino, |p| *p = attrs);
                    }
                    tracing::debug!(
                        key = %escaped(object.key()),
                        sent = done.sent,
                        copied = done.copied,
                        fetched = done.fetched,
                        "staged file uploaded"
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The staged file of `ino` is now the object `etag` of `size` bytes.
    fn staged_uploaded(&self, ino: u64, etag: ETag, size: u64) {
        self.finish_upload(ino, &Ok(Uploaded { etag, size }));
    }

    /// release of a staged handle: a writer uploads what no close did (errors can only be
    /// logged); the last handle drops the staged copy.
    pub(crate) async fn release_staged(&self, fh: u64, handle: &StagedHandle) {
        if handle.writer {
            if let Err(e) = self.commit_staged(handle).await {
                tracing::warn!("upload failed at release, after the file was closed: {e}");
            }
            if handle.object.writers.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                self.release_claim(handle.ino);
            }
        }
        self.files.lock().unwrap().remove(&fh);
        let last = !self.files.lock().unwrap().values().any(|h| matches!(h, Handle::Staged(s) if s.ino == handle.ino));
        if last {
            self.staged.lock().unwrap().remove(&handle.ino);
            // A new file that never reached S3 (its first upload failed) is forgotten.
            if let Ok(inode) = self.ns.get(handle.ino)
                && inode.local == Some(LocalState::File)
            {
                self.ns.abandon_local(handle.ino);
            }
        }
    }

    /// truncate with `--allow-modify`: of a staged file, its staged size; of a file in S3 not
    /// open, staged, resized and uploaded at once. `None` when this is not for staging.
    pub(crate) async fn truncate_staged(&self, inode: &Inode, size: u64) -> Option<Result<(), FsError>> {
        let store = self.staging_store()?.clone();
        if let Some(object) = self.staged(inode.ino) {
            return Some(
                async {
                    object.set_size(size).await?;
                    self.ns.set_size(inode.ino, size);
                    Ok(())
                }
                .await,
            );
        }
        if inode.local.is_some() || inode.kind != InodeKind::File {
            return None;
        }
        Some(
            async move {
                let fresh = self.revalidate(inode).await?;
                let Some(etag) = fresh.stat.etag.clone() else {
                    return Err(FsError::StaleInode { ino: inode.ino, key: inode.key.clone() });
                };
                self.claim_writer(&fresh)?;
                let base = Base { etag, size: fresh.stat.size };
                let result = async {
                    let object = StagedObject::new(self.client.clone(), store, &fresh.key, Some(base))?;
                    object.set_size(size).await?;
                    let options = self.staged_put_options(&fresh.key);
                    let done = object.commit(&options, self.config.write_part_size).await?;
                    if let Some(etag) = done.etag {
                        self.staged_uploaded(inode.ino, etag, size);
                    }
                    Ok(())
                }
                .await;
                self.release_claim(inode.ino);
                result
            }
            .await,
        )
    }

    /// unlink of a staged file: refused while it has changes not uploaded; otherwise the
    /// staged copy stops uploading (the caller deletes the object).
    pub(crate) async fn unlink_staged(&self, key: &str) -> Result<(), FsError> {
        let staged = self.staged.lock().unwrap().values().find(|o| o.key() == key).cloned();
        let Some(object) = staged else { return Ok(()) };
        if object.has_changes().await {
            return Err(FsError::PermissionDenied(format!(
                "cannot delete {:?} while it has changes not uploaded yet; close or fsync it first",
                object.key()
            )));
        }
        object.mark_deleted();
        Ok(())
    }

    /// At shutdown: uploads staged files with changes (as a close would), and says so.
    pub(crate) async fn end_staged_at_shutdown(&self, handle: &StagedHandle) -> Option<bool> {
        if !handle.writer || !handle.object.has_changes().await {
            return None;
        }
        let key = handle.object.key().to_string();
        match self.commit_staged(handle).await {
            Ok(()) => {
                tracing::info!(key = %escaped(&key), "staged file uploaded at shutdown");
                Some(true)
            }
            Err(e) => {
                tracing::warn!(key = %escaped(&key), "staged file not uploaded at shutdown: {e}");
                Some(false)
            }
        }
    }
}
