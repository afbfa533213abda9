//! `--incremental-upload` (directory buckets): opening existing objects to append to them, and
//! fsync that appends while the file stays open. The uploads themselves are
//! [`crate::fs::upload::append`].
//!
//! Which opens append:
//! - Without `--allow-modify`: an `O_WRONLY` open of an existing object without `O_TRUNC`, or an
//!   `O_RDWR` one with `O_APPEND` (an `O_RDWR` open without either stays a read handle, as
//!   Mountpoint decides). Writes must then start at the object's end.
//! - With `--allow-modify` too: only `O_APPEND` opens append; every other change is staged as
//!   `--allow-modify` does (sqlite, writes in the middle, truncate), and so are new files.
//! - New files (without `--allow-modify`) are written as appends from offset 0
//!   ([`S3Filesystem::open_for_write`]).
//!
//! At open, one HeadObject (in checksum mode) gives the object's current size, ETag and checksum
//! algorithm: the appends continue from there. An object changed since the inode was looked up
//! is ESTALE (the kernel then looks it up again, learning its size, and retries the open once).
//! While the file is open for writing, this mount serves it as a file being written (its size
//! grows with the writes, readers through this mount get EPERM); other readers of the bucket see
//! each append as soon as S3 has it.

use crate::fs::namespace::{Inode, InodeKind, OpenConflict, RemoteEntry};
use crate::fs::upload::AppendPoint;
use crate::fs::write::{WriteHandle, WriteState};
use crate::fs::{FsError, Opened, S3Filesystem};

impl S3Filesystem {
    /// Whether an open of `inode` with `flags` appends to its object (see the module notes).
    pub(crate) fn opens_append(&self, inode: &Inode, flags: i32) -> bool {
        if !self.config.incremental_upload || inode.local.is_some() || inode.kind != InodeKind::File {
            return false;
        }
        let access = flags & libc::O_ACCMODE;
        let append = flags & libc::O_APPEND != 0;
        if flags & libc::O_TRUNC != 0 || !(access == libc::O_WRONLY || (access == libc::O_RDWR && append)) {
            return false;
        }
        !self.config.allow_modify || (append && self.staged(inode.ino).is_none())
    }

    /// Opens the object of `inode` for appending: learns its size and ETag (HeadObject), claims
    /// the inode for one writer, and starts an incremental upload at its end.
    pub(crate) async fn open_append(&self, inode: &Inode, pid: u32) -> Result<Opened, FsError> {
        if let Err(OpenConflict::InUse | OpenConflict::BeingWritten) = self.ns.ensure_closed(inode.ino) {
            return Err(FsError::PermissionDenied(format!(
                "{:?} is open elsewhere: a file has one writer or any number of readers",
                inode.key
            )));
        }
        // The object as it is now, whatever this inode last saw: appends continue from its end.
        let head = self.client.head_object(&inode.key).await.map_err(|e| FsError::client("open", &inode.key, e))?;
        if inode.stat.etag.as_ref() != Some(&head.etag) {
            // Changed since the kernel learned its size (another writer): ESTALE, and the kernel
            // looks the name up again (its size with it) and retries the open once.
            let entry = RemoteEntry {
                kind: InodeKind::File,
                size: head.size,
                mtime: head.last_modified,
                etag: Some(head.etag.clone()),
                storage_class: head.storage_class.clone(),
                archived: head.archived,
                posix: None,
            };
            self.ns.revalidated(inode.ino, Some(entry), self.ttl(InodeKind::File))?;
        }
        let ticket = self.admit_writer(&inode.key).await?;
        let at = AppendPoint { size: head.size, etag: Some(head.etag), checksum: head.checksum };
        let opened = self.open_for_write_at(inode.ino, pid, false, ticket, Some(at))?;
        self.ns.start_append(inode.ino, head.size)?;
        Ok(opened)
    }

    /// fsync of an incremental upload: appends what is buffered; the handle stays writable.
    /// `None` if `handle` is not an incremental upload still being written.
    pub(crate) async fn sync_append(&self, handle: &WriteHandle) -> Option<Result<(), FsError>> {
        let mut state = handle.state.lock().await;
        let WriteState::Writing(upload) = &mut *state else { return None };
        if !upload.is_append() {
            return None;
        }
        let synced = upload.sync().await;
        if let Err(e) = &synced {
            let failed = Err(crate::fs::error::Failed::from(e));
            self.finish_upload(handle.ino, &failed);
            *state = WriteState::Done(failed);
            self.unclaim_writer(handle);
        }
        Some(synced.map(|_| ()))
    }
}
