//! Operations that change the bucket: create, write, close, unlink, mkdir, rmdir, setattr.
//!
//! A file is either written or read through a handle, never both, and an inode has one writer
//! or any number of readers. New files live only in this mount (visible in listings, with a
//! growing size) until their upload completes; readers get EPERM until then. Completion
//! happens at the first `flush` (close) from the process that opened the file (any of its
//! threads: the adapter passes thread-group ids), or at `fsync`;
//! an empty file, or a close from another process (a child that inherited the fd), defers it to
//! `release` or the next `open` of the file, whichever comes first (errors can then only be
//! logged). Overwriting needs `--allow-overwrite` and
//! `O_TRUNC`; deleting needs `--allow-delete`. Directories made by `mkdir` are local until a
//! file is written inside them (S3 has no empty directories).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::client::{ListRequest, PutOptions};
use crate::fs::error::Failed;
use crate::fs::memory::WriterTicket;
use crate::fs::namespace::names::parse_name;
use crate::fs::namespace::{Inode, InodeKind, LocalState, OpenConflict};
use crate::fs::upload::{AppendPoint, Upload, UploadConfig, Uploaded};
use crate::fs::{Entry, FsError, Handle, Opened, S3Filesystem};

/// Content-Type of new objects without `--infer-content-type` (or with no type known for the
/// name): S3's own default.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// The write side of one open file.
pub(crate) struct WriteHandle {
    pub(crate) ino: u64,
    /// The process that opened the file: its close completes the upload.
    pub(crate) pid: u32,
    pub(crate) state: tokio::sync::Mutex<WriteState>,
    /// Set once the inode's writer claim was given back (at completion, or at release).
    pub(crate) unclaimed: std::sync::atomic::AtomicBool,
    /// Set once shutdown dealt with this handle (see [`S3Filesystem::end_at_shutdown`]).
    pub(crate) reported: std::sync::atomic::AtomicBool,
    /// Set when a close left the upload to release (nothing written, or another process's
    /// close): the next open of the file completes it instead of waiting for the release.
    pub(crate) deferred: std::sync::atomic::AtomicBool,
    /// Set when a newer open completed the deferred upload: later writes get EBADF.
    pub(crate) invalidated: std::sync::atomic::AtomicBool,
}

pub(crate) enum WriteState {
    Writing(Box<Upload>),
    /// Completed (or failed, with the errno every later call returns).
    Done(Result<Uploaded, Failed>),
}

/// What [`S3Filesystem::shutdown`] did with the uploads it found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Keys whose upload had completed (their close was in progress, or done and not yet released).
    pub completed: Vec<String>,
    /// Keys still open for writing: their upload was aborted, no object was created.
    pub aborted: Vec<String>,
    /// Files open for reading.
    pub readers: usize,
}

/// What a setattr asks to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New mode (the kernel sends the file type bits too).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

impl S3Filesystem {
    /// The options for uploading `key`; `new` objects must not exist yet in S3.
    pub(crate) fn upload_config(&self, key: &str, new: bool) -> UploadConfig {
        let c = &self.config;
        // Sent explicitly: S3 stores `binary/octet-stream` when none is given, but other stores
        // pick their own default (Garage, s3s-fs: `application/octet-stream`).
        let inferred = c.infer_content_type.then(|| mime_guess::from_path(key).first()).flatten();
        let content_type = inferred.map_or_else(|| DEFAULT_CONTENT_TYPE.to_string(), |m| m.essence_str().to_string());
        UploadConfig {
            part_size: c.write_part_size,
            max_parts_in_flight: c.max_parts_in_flight,
            options: PutOptions {
                if_none_match_any: new,
                storage_class: c.storage_class.clone(),
                content_type: Some(content_type),
                sse: c.sse.clone(),
                sse_kms_key_id: c.sse_kms_key_id.clone(),
                checksum_crc32c: c.upload_checksums,
                ..PutOptions::default()
            },
        }
    }

    /// EEXIST unless `name` is absent here and in S3. S3 is asked again unless it said so a
    /// moment ago (the kernel's lookup just before a create; see [`super::lookup::RecentAbsence`]).
    pub(crate) async fn ensure_absent(&self, dir: &Inode, name: &str) -> Result<(), FsError> {
        let key = format!("{}{}", dir.key, name);
        if self.ns.local_child(dir.ino, name).is_some() {
            return Err(FsError::AlreadyExists { key });
        }
        if !self.absent.take(&key) && self.resolve(&dir.key, name).await?.is_some() {
            return Err(FsError::AlreadyExists { key });
        }
        Ok(())
    }

    pub(crate) fn writable_dir(&self, parent: u64, name: &OsStr) -> Result<(Inode, String), FsError> {
        let name = parse_name(name)?.to_string();
        let dir = self.ns.get(parent)?;
        if dir.kind != InodeKind::Directory {
            return Err(FsError::NotADirectory(parent));
        }
        Ok((dir, name))
    }

    /// mknod: a new, empty regular file, local until written and closed.
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32) -> Result<Entry, FsError> {
        self.mknod_as(parent, name, mode, None).await
    }

    /// mknod by the user `owner` (uid, gid; `None`: the mount's `--uid`/`--gid`). With
    /// `--posix-metadata` the file is theirs and has `mode` (umask applied by the caller).
    pub async fn mknod_as(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Entry, FsError> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::SpecialFile { name: name.to_string_lossy().into_owned(), kind: mode & libc::S_IFMT });
        }
        let (dir, name) = self.writable_dir(parent, name)?;
        self.ensure_absent(&dir, &name).await?;
        let mut inode = self.ns.create_local(parent, &name, InodeKind::File, self.ttl(InodeKind::File))?;
        if self.config.posix_metadata {
            let attrs = self.new_file_attrs(mode, owner);
            inode = self.ns.set_posix(inode.ino, |p| *p = attrs)?;
        }
        Ok(self.entry(&inode))
    }

    /// create: mknod and open for writing in one step.
    pub async fn create(&self, parent: u64, name: &OsStr, mode: u32, pid: u32) -> Result<(Entry, Opened), FsError> {
        self.create_as(parent, name, mode, pid, None).await
    }

    /// create by the user `owner` (see [`S3Filesystem::mknod_as`]).
    pub async fn create_as(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        pid: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(Entry, Opened), FsError> {
        if let Some(staged) = self.create_staged(parent, name, mode, owner).await {
            return staged;
        }
        let key = format!("{}{}", self.ns.get(parent)?.key, name.to_string_lossy());
        let ticket = self.admit_writer(&key).await?;
        let entry = self.mknod_as(parent, name, mode | libc::S_IFREG, owner).await?;
        let opened = self.open_for_write(entry.attr.ino, pid, true, ticket)?;
        Ok((entry, opened))
    }

    /// A writer's part buffer from the memory budget (see [`MemoryBudget::admit_writer`]):
    /// waits while memory is held for a while, fails with ENOMEM when open writers hold it all.
    ///
    /// [`MemoryBudget::admit_writer`]: crate::fs::memory::MemoryBudget::admit_writer
    pub(crate) async fn admit_writer(&self, key: &str) -> Result<WriterTicket, FsError> {
        let budget = self.memory_budget();
        let part = self.config.write_part_size;
        budget.admit_writer(part, Duration::from_secs(1)).await.ok_or_else(|| FsError::OutOfMemory {
            key: key.to_string(),
            writers: budget.promised() / part.max(1),
            part,
        })
    }

    /// Starts the upload of inode `ino` on a new write handle, with its memory `ticket`. With
    /// `--incremental-upload`, a new file is uploaded as appends from offset 0.
    pub(crate) fn open_for_write(
        &self,
        ino: u64,
        pid: u32,
        new: bool,
        ticket: WriterTicket,
    ) -> Result<Opened, FsError> {
        let at = (new && self.config.incremental_upload).then_some(AppendPoint { size: 0, etag: None, checksum: None });
        self.open_for_write_at(ino, pid, new, ticket, at)
    }

    /// [`Self::open_for_write`], appending to the object at `at` if given.
    pub(crate) fn open_for_write_at(
        &self,
        ino: u64,
        pid: u32,
        new: bool,
        ticket: WriterTicket,
        at: Option<AppendPoint>,
    ) -> Result<Opened, FsError> {
        let inode = self.ns.get(ino)?;
        self.ns.open_write(ino).map_err(|_| {
            FsError::PermissionDenied(format!(
                "{:?} is open elsewhere: a file has one writer or any number of readers",
                inode.key
            ))
        })?;
        let mut config = self.upload_config(&inode.key, new);
        config.options.metadata = self.upload_metadata(&inode);
        let budget = self.memory_budget().clone();
        let upload = match at {
            Some(at) => Upload::appending(self.client.clone(), inode.key.clone(), config, budget, ticket, at),
            None => Upload::new(self.client.clone(), inode.key.clone(), config, budget, ticket),
        }
        .recorded_in(self.resume_log.clone());
        let handle = WriteHandle {
            ino,
            pid,
            state: tokio::sync::Mutex::new(WriteState::Writing(Box::new(upload))),
            unclaimed: std::sync::atomic::AtomicBool::new(false),
            reported: std::sync::atomic::AtomicBool::new(false),
            deferred: std::sync::atomic::AtomicBool::new(false),
            invalidated: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Opened { fh: self.add_handle(Handle::Write(Arc::new(handle))), direct_io: false })
    }

    /// Opens an existing remote file for writing: only to replace it, with `O_TRUNC` and
    /// `--allow-overwrite`.
    pub(crate) async fn open_overwrite(&self, inode: &Inode, flags: i32, pid: u32) -> Result<Opened, FsError> {
        if !self.config.allow_overwrite {
            return Err(FsError::PermissionDenied(format!(
                "{:?} exists and overwriting is disabled; use the --allow-overwrite mount option to enable it",
                inode.key
            )));
        }
        if flags & libc::O_TRUNC == 0 {
            return Err(FsError::PermissionDenied(format!(
                "{:?} can only be replaced as a whole: open it with O_TRUNC",
                inode.key
            )));
        }
        if let Err(OpenConflict::InUse | OpenConflict::BeingWritten) = self.ns.ensure_closed(inode.ino) {
            return Err(FsError::PermissionDenied(format!(
                "{:?} is open elsewhere and cannot be replaced now",
                inode.key
            )));
        }
        let ticket = self.admit_writer(&inode.key).await?;
        self.ns.start_overwrite(inode.ino)?;
        self.open_for_write(inode.ino, pid, false, ticket)
    }

    /// Appends `data` at `offset` to write handle `fh`; returns the bytes written.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        if let Some(Handle::Staged(staged)) = self.handle(fh) {
            return self.write_staged(fh, &staged, offset, data).await;
        }
        let handle = self.write_handle(fh)?;
        if handle.invalidated.load(std::sync::atomic::Ordering::Acquire) {
            let key = self.ns.get(handle.ino).map(|i| i.key).unwrap_or_default();
            return Err(FsError::InvalidatedHandle { fh, key });
        }
        let mut state = handle.state.lock().await;
        let upload = match &mut *state {
            WriteState::Writing(upload) => upload,
            WriteState::Done(done) => {
                let key = self.ns.get(handle.ino).map(|i| i.key).unwrap_or_default();
                return Err(match done {
                    Ok(_) => FsError::AlreadyCommitted { key },
                    // Every later write gets the first failure's errno (EINVAL after an
                    // out-of-order write), with a message that says nothing reached S3.
                    Err(failed) => FsError::UploadFailed { key, failed: *failed },
                });
            }
        };
        let written = upload.write(offset, data).await;
        let size = upload.size();
        if written.is_err() {
            let failed = upload.complete().await.map_err(|e| Failed::from(&e));
            self.finish_upload(handle.ino, &failed);
            *state = WriteState::Done(failed);
            self.unclaim_writer(&handle);
        } else {
            self.ns.set_size(handle.ino, size);
            // A write moves the mtime again, past one a program set (utimes before writing).
            if self.config.posix_metadata {
                let _ = self.ns.set_posix(handle.ino, |p| p.mtime = None);
            }
        }
        written.map(|()| data.len() as u32)
    }

    /// Completes the upload behind `handle`, once; later calls return the same result.
    pub(crate) async fn complete(&self, handle: &WriteHandle) -> Result<(), FsError> {
        let mut state = handle.state.lock().await;
        match &mut *state {
            WriteState::Writing(upload) => {
                // The attributes as they are now (a chmod or utimes while open), mtime included.
                let posix = match self.ns.get(handle.ino) {
                    Ok(inode) if self.config.posix_metadata => {
                        let wanted = self.upload_metadata(&inode);
                        let carried = upload.set_metadata(wanted.clone()).clone();
                        Some((inode, wanted, carried))
                    }
                    _ => None,
                };
                let mut result = upload.complete().await;
                if let (Ok(done), Some((inode, wanted, carried))) = (&mut result, posix) {
                    self.uploaded_with(&inode, done, wanted, carried).await;
                }
                let done = result.as_ref().map(Clone::clone).map_err(Failed::from);
                self.finish_upload(handle.ino, &done);
                *state = WriteState::Done(done);
                // Nothing more can be written: readers may open the file as soon as close()
                // returns, before the kernel's (asynchronous) release arrives.
                self.unclaim_writer(handle);
                result.map(|_| ())
            }
            WriteState::Done(Ok(_)) => Ok(()),
            WriteState::Done(Err(failed)) => {
                let key = self.ns.get(handle.ino).map(|i| i.key).unwrap_or_default();
                Err(FsError::UploadFailed { key, failed: *failed })
            }
        }
    }

    /// Gives back the inode's writer claim, once.
    pub(crate) fn unclaim_writer(&self, handle: &WriteHandle) {
        if !handle.unclaimed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.ns.close(handle.ino, true);
        }
    }

    pub(crate) fn finish_upload(&self, ino: u64, result: &Result<Uploaded, Failed>) {
        match result {
            Ok(done) => self.ns.commit_upload(ino, done.etag.clone(), done.size, self.ttl(InodeKind::File)),
            // Nothing reached S3: forget the local file (an overwritten object is unchanged).
            Err(_) => self.ns.abandon_local(ino),
        }
    }

    /// Whether a close (flush) of `fh` needs the closer's process id: only a write handle's
    /// does (its opener's close completes the upload). The adapter skips reading `/proc` for
    /// every other close, which is on the path of every `cat` of a small file.
    pub fn flush_needs_process(&self, fh: u64) -> bool {
        matches!(self.handle(fh), Some(Handle::Write(_)))
    }

    /// close(): completes the upload if `pid` opened the file and wrote something.
    pub async fn flush(&self, fh: u64, pid: u32) -> Result<(), FsError> {
        if let Some(Handle::Staged(staged)) = self.handle(fh) {
            return self.commit_staged(&staged).await;
        }
        let handle = match self.handle(fh) {
            Some(Handle::Write(handle)) => handle,
            Some(Handle::Lost) => return Err(FsError::LostInRestart(fh)),
            _ => return Ok(()),
        };
        let wrote = match &*handle.state.lock().await {
            WriteState::Writing(upload) => upload.written() > 0,
            WriteState::Done(_) => true,
        };
        if handle.pid == pid && wrote {
            self.complete(&handle).await
        } else {
            handle.deferred.store(true, std::sync::atomic::Ordering::Release);
            Ok(())
        }
    }

    /// Completes an upload of inode `ino` that a close deferred to release, as Mountpoint does
    /// at the next open: so `touch f; echo x > f` never depends on when the kernel's
    /// (asynchronous) release of the first handle arrives. Its errors are logged, as at release:
    /// the close that deferred it has returned already. Returns whether there was one.
    pub(crate) async fn complete_deferred(&self, ino: u64) -> bool {
        let deferred = self.files.lock().unwrap().values().find_map(|h| match h {
            Handle::Write(w) if w.ino == ino && w.deferred.load(std::sync::atomic::Ordering::Acquire) => {
                Some(w.clone())
            }
            _ => None,
        });
        let Some(writer) = deferred else { return false };
        if matches!(*writer.state.lock().await, WriteState::Writing(_))
            && let Err(e) = self.complete(&writer).await
        {
            tracing::warn!("upload failed when the file was opened again, after it was closed: {e}");
        }
        writer.invalidated.store(true, std::sync::atomic::Ordering::Release);
        true
    }

    /// fsync(): completes the upload; no writes after it (an incremental upload appends what is
    /// buffered instead, and stays open).
    pub async fn fsync(&self, fh: u64) -> Result<(), FsError> {
        match self.handle(fh) {
            Some(Handle::Write(handle)) => match self.sync_append(&handle).await {
                Some(result) => result,
                None => self.complete(&handle).await,
            },
            Some(Handle::Staged(staged)) => self.commit_staged(&staged).await,
            Some(Handle::Read { .. }) => Ok(()),
            Some(Handle::Lost) => Err(FsError::LostInRestart(fh)),
            None => Err(FsError::BadHandle(fh)),
        }
    }

    /// Ends every upload before the process goes away: a close in progress is waited for (its
    /// upload completes), an upload still open for writing is aborted (with its multipart upload,
    /// so no parts are left), and each is logged by key, so the operator knows which files made it.
    /// Later writes to aborted files fail with EIO. Only the first call acts.
    pub async fn shutdown(&self) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        if self.shut_down.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return report;
        }
        let handles: Vec<Handle> = self.files.lock().unwrap().values().cloned().collect();
        for handle in handles {
            let writer = match handle {
                Handle::Write(writer) => writer,
                Handle::Read { .. } => {
                    report.readers += 1;
                    continue;
                }
                Handle::Lost => continue,
                Handle::Staged(staged) => {
                    let key = staged.object.key().to_string();
                    match self.end_staged_at_shutdown(&staged).await {
                        Some(true) => report.completed.push(key),
                        Some(false) => report.aborted.push(key),
                        None if staged.writer => {}
                        None => report.readers += 1,
                    }
                    continue;
                }
            };
            let key = self.ns.get(writer.ino).map(|i| i.key).unwrap_or_default();
            match self.end_at_shutdown(&writer).await {
                Some(true) => report.completed.push(key),
                Some(false) => report.aborted.push(key),
                None => {}
            }
        }
        // The process is ending: staged copies whose release will not come are removed now
        // (their changes were uploaded just above, or reported), not left for the next mount.
        self.files.lock().unwrap().retain(|_, h| !matches!(h, Handle::Staged(_)));
        self.staged.lock().unwrap().clear();
        report
    }

    /// Changes the size of a file being written through its upload, never silently ignoring it.
    async fn truncate_local(&self, inode: &Inode, size: u64) -> Result<(), FsError> {
        let writer = self.files.lock().unwrap().values().find_map(|h| match h {
            Handle::Write(w) if w.ino == inode.ino => Some(w.clone()),
            _ => None,
        });
        let Some(writer) = writer else {
            return Err(FsError::PermissionDenied(format!(
                "cannot change the size of {:?}: it is not open for writing",
                inode.key
            )));
        };
        let mut state = writer.state.lock().await;
        let WriteState::Writing(upload) = &mut *state else {
            return Err(FsError::AlreadyCommitted { key: inode.key.clone() });
        };
        let result = upload.truncate(size).await;
        let now = upload.size();
        if let Err(e) = &result
            && !matches!(e, FsError::CannotTruncate { .. })
        {
            // Growing past the largest object failed the upload, as a write would.
            let failed = upload.complete().await.map_err(|e| Failed::from(&e));
            self.finish_upload(writer.ino, &failed);
            *state = WriteState::Done(failed);
            self.unclaim_writer(&writer);
        } else {
            self.ns.set_size(inode.ino, now);
        }
        result
    }

    /// Ends one upload at shutdown, once per handle (a release racing with the shutdown may call
    /// it too): waits for a write or close in progress, aborts an upload still open, and logs
    /// the outcome by key. Returns whether the upload completed, or `None` if there was nothing
    /// to report (it failed earlier and was reported then, or it was reported already).
    pub(crate) async fn end_at_shutdown(&self, writer: &WriteHandle) -> Option<bool> {
        let key = self.ns.get(writer.ino).map(|i| i.key).unwrap_or_default();
        let mut state = writer.state.lock().await;
        if writer.reported.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return None;
        }
        match &mut *state {
            WriteState::Writing(upload) => {
                let (size, append) = (upload.size(), upload.is_append());
                upload.abort().await;
                let aborted = Failed { errno: libc::EIO, unknown: false };
                self.finish_upload(writer.ino, &Err(aborted));
                *state = WriteState::Done(Err(aborted));
                if append {
                    tracing::warn!(
                        key,
                        file_size = size,
                        "incremental upload ended at shutdown: the file was still open for writing; the bytes still \
                         buffered (written since its last append) were not appended; the object keeps what was appended before"
                    );
                } else {
                    tracing::warn!(
                        key,
                        bytes_written = size,
                        "upload aborted at shutdown: the file was still open for writing; no object was created"
                    );
                }
                Some(false)
            }
            WriteState::Done(Ok(done)) => {
                tracing::info!(key, size = done.size, "upload completed before shutdown");
                Some(true)
            }
            // Failed earlier, and reported then.
            WriteState::Done(Err(_)) => None,
        }
    }

    /// unlink: DeleteObject, with `--allow-delete`.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        if !self.config.allow_delete {
            return Err(FsError::PermissionDenied(
                "Deletes are disabled. Use '--allow-delete' mount option to enable it.".to_string(),
            ));
        }
        let (dir, name) = self.writable_dir(parent, name)?;
        // A file closed with its upload left to release (an empty one, as tar's placeholders for
        // symlinks are) is completed first, as an open would, and then deleted like any object.
        let deferred = match self.ns.local_child(parent, &name) {
            Some(local) if local.kind != InodeKind::Directory => self.complete_deferred(local.ino).await,
            _ => false,
        };
        if deferred {
            tracing::debug!(key = %crate::escape::escaped(&format!("{}{}", dir.key, name)), "completed a closed file's upload to delete it");
        }
        if let Some(local) = self.ns.local_child(parent, &name) {
            if self.staged(local.ino).is_some() {
                return Err(FsError::PermissionDenied(format!(
                    "cannot delete {:?} while it has changes not uploaded yet; close or fsync it first",
                    local.key
                )));
            }
            return Err(match local.kind {
                InodeKind::Directory => FsError::IsADirectory(local.ino),
                InodeKind::File | InodeKind::Symlink => FsError::PermissionDenied(format!(
                    "cannot delete {:?} while it is being written; delete it after it is closed",
                    local.key
                )),
            });
        }
        let key = format!("{}{}", dir.key, name);
        match self.resolve(&dir.key, &name).await? {
            None => Err(FsError::NotFound { parent, name }),
            Some(e) if e.kind == InodeKind::Directory => Err(FsError::IsADirectory(parent)),
            Some(_) => {
                self.unlink_staged(&key).await?;
                self.client.delete_object(&key).await.map_err(|e| FsError::client("delete", &key, e))?;
                self.ns.unlinked(parent, &dir.key, &name);
                Ok(())
            }
        }
    }

    /// mkdir: a local directory, real in S3 once a file is written in it.
    pub async fn mkdir(&self, parent: u64, name: &OsStr) -> Result<Entry, FsError> {
        self.mkdir_as(parent, name, u32::from(self.config.dir_mode), None).await
    }

    /// mkdir by the user `owner` with `mode` (umask applied by the caller). With
    /// `--posix-metadata` it writes the directory's marker object at once (see
    /// [`S3Filesystem::mkdir_marker`]); otherwise `mode` and `owner` are the mount's.
    pub async fn mkdir_as(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Entry, FsError> {
        if self.config.posix_metadata {
            let (uid, gid) = owner.unwrap_or((self.config.uid, self.config.gid));
            return self.mkdir_marker(parent, name, mode, uid, gid).await;
        }
        let (dir, name) = self.writable_dir(parent, name)?;
        self.ensure_absent(&dir, &name).await?;
        let inode = self.ns.create_local(parent, &name, InodeKind::Directory, self.ttl(InodeKind::Directory))?;
        Ok(self.entry(&inode))
    }

    /// rmdir: only empty directories made by mkdir; directories in S3 stay.
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), FsError> {
        let (dir, name) = self.writable_dir(parent, name)?;
        if let Some(local) = self.ns.local_child(parent, &name) {
            if local.kind != InodeKind::Directory {
                return Err(FsError::NotADirectory(local.ino));
            }
            if self.ns.has_local_children(local.ino) {
                return Err(FsError::NotEmpty { key: local.key });
            }
            let request =
                ListRequest { prefix: local.key.clone(), delimiter: None, continuation_token: None, max_keys: 1 };
            let page = self.client.list_objects(&request).await.map_err(|e| FsError::client("list", &local.key, e))?;
            if page.objects.is_empty() && page.common_prefixes.is_empty() {
                self.ns.abandon_local(local.ino);
                return Ok(());
            }
        }
        match self.resolve(&dir.key, &name).await? {
            None => Err(FsError::NotFound { parent, name }),
            Some(e) if e.kind != InodeKind::Directory => Err(FsError::NotADirectory(parent)),
            Some(_) if self.config.posix_metadata => self.rmdir_marker(parent, &dir.key, &name).await,
            Some(_) => Err(FsError::PermissionDenied(format!(
                "cannot remove {:?}: the directory exists in S3 (delete its objects instead)",
                format!("{}{}/", dir.key, name)
            ))),
        }
    }

    /// setattr: times of files being written can change, and their size while that is possible
    /// (see [`Upload::truncate`]); mode and owner changes on them are ignored (as Mountpoint
    /// does). Nothing of S3 objects can change.
    pub async fn setattr(&self, ino: u64, change: SetAttr) -> Result<Entry, FsError> {
        let inode = self.ns.get(ino)?;
        if let Some(size) = change.size
            && let Some(result) = self.truncate_staged(&inode, size).await
        {
            result?;
            let inode = match change.mtime {
                Some(t) => self.ns.set_mtime(ino, t)?,
                None => self.ns.get(ino)?,
            };
            return Ok(self.entry(&inode));
        }
        if inode.local == Some(LocalState::File) {
            if let Some(size) = change.size.filter(|&s| s != inode.stat.size) {
                self.truncate_local(&inode, size).await?;
            }
            let mut inode = match change.mtime {
                Some(t) => self.ns.set_mtime(ino, t)?,
                None => self.ns.get(ino)?,
            };
            if self.config.posix_metadata {
                // Carried by the upload (see `complete`).
                let now = SystemTime::now();
                inode = self.ns.set_posix(ino, |p| *p = crate::fs::posix::ops::apply(*p, &change, now))?;
            }
            return Ok(self.entry(&inode));
        }
        let attributes = change.mode.is_some()
            || change.uid.is_some()
            || change.gid.is_some()
            || change.mtime.is_some()
            || change.atime.is_some();
        if self.config.posix_metadata && attributes && change.size.is_none() {
            return self.set_remote_attrs(inode, &change).await;
        }
        let what = if change.mode.is_some() {
            "the mode"
        } else if change.uid.is_some() || change.gid.is_some() {
            "the owner"
        } else if change.size.is_some() {
            "the size (use --allow-overwrite and open with O_TRUNC to replace an object)"
        } else if change.mtime.is_some() || change.atime.is_some() {
            "the times"
        } else {
            return self.getattr(ino).await;
        };
        Err(FsError::PermissionDenied(format!(
            "cannot change {what} of {:?}: S3 objects have fixed attributes",
            inode.key
        )))
    }
}
