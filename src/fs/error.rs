//! [`FsError`], and the one table that turns each error into the errno the application sees.
//!
//! The match in [`FsError::errno`] has no wildcard arm: a new variant does not compile until
//! someone decides its errno. Throttling and server errors are EIO, never ENOENT.

use crate::client::{ClientError, ClientErrorKind};

/// A failed file-system operation, with the context needed to log it once.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no entry {name:?} in directory inode {parent}")]
    NotFound { parent: u64, name: String },

    #[error("inode {0} is not known (it was forgotten, or never looked up)")]
    UnknownInode(u64),

    #[error("inode {ino} is stale: {key:?} now names a different object or none; look it up again")]
    StaleInode { ino: u64, key: String },

    #[error("invalid file name {0:?}: S3 keys cannot represent it")]
    InvalidName(String),

    #[error("file name {0:?}... is longer than 255 bytes")]
    NameTooLong(String),

    #[error("inode {0} is not a directory")]
    NotADirectory(u64),

    #[error("inode {0} is a directory")]
    IsADirectory(u64),

    #[error("file handle {0} is not open")]
    BadHandle(u64),

    #[error(
        "file handle {0} was being written when the worker serving the mount died: its data is lost and its upload was aborted"
    )]
    LostInRestart(u64),

    #[error("file handle {fh} of {key:?} has been invalidated by a newer handle opened after it was closed")]
    InvalidatedHandle { fh: u64, key: String },

    #[error("readdir offset {offset} on handle {fh} is out of order (next is {expected})")]
    BadDirOffset { fh: u64, offset: u64, expected: u64 },

    #[error("object {key:?} changed or was deleted in S3 after it was opened; reopen to read the new version")]
    ObjectChanged { key: String },

    #[error("{action} {key:?} failed: {source}")]
    Client {
        action: &'static str,
        key: String,
        #[source]
        source: Box<ClientError>,
    },

    #[error(
        "object {key:?} is in storage class {} and must be restored before it can be read",
        crate::escape::escaped(class)
    )]
    NotRestored { key: String, class: String },

    #[error("{0}")]
    PermissionDenied(String),

    #[error("{key:?} is not a symbolic link")]
    NotASymlink { key: String },

    #[error("symbolic link {key:?} cannot be followed: {reason}")]
    BadSymlink { key: String, reason: String },

    #[error("{0} is not supported by mount-s3")]
    NotSupported(&'static str),

    #[error("cannot create {name:?}: only regular files can be created (file type {kind:#o} asked for)")]
    SpecialFile { name: String, kind: u32 },

    #[error("{0} is not supported yet by this version of mount-s3")]
    NotYetSupported(&'static str),

    #[error("open flags {0:#o} are not supported (O_SYNC and O_DSYNC cannot be honoured)")]
    InvalidOpenFlags(i32),

    #[error(
        "write to {key:?} at offset {offset}, before the end of the file at {expected}: written bytes cannot be \
         changed (writes must be sequential)"
    )]
    OutOfOrderWrite { key: String, offset: u64, expected: u64 },

    #[error(
        "append to {key:?} at offset {offset} refused: another writer changed the object since this mount last \
         appended to it; the {dropped} bytes not yet appended were dropped (S3 keeps the other writer's object)"
    )]
    AppendConflict { key: String, offset: u64, dropped: u64 },

    #[error("{key:?} would exceed {limit} bytes, the most --write-part-size x 10,000 parts allows")]
    TooLarge { key: String, limit: u64 },

    #[error(
        "cannot truncate {key:?} to {size} bytes while it is being written: its first {sent} bytes are already \
         sent to S3; only sizes of at least {sent} can be set"
    )]
    CannotTruncate { key: String, size: u64, sent: u64 },

    #[error(
        "cannot open {key:?} for writing: the --memory-target budget is taken by the {part}-byte part buffers \
         of the {writers} files open for writing; close some, or raise --memory-target (or lower --write-part-size)"
    )]
    OutOfMemory { key: String, writers: u64, part: u64 },

    #[error("{key:?} already exists")]
    AlreadyExists { key: String },

    #[error("the upload of {key:?} already failed (errno {}); {}", failed.errno, if failed.unknown {
        "whether S3 took it is unknown (the error logged then says why)"
    } else {
        "nothing was written to S3"
    })]
    UploadFailed { key: String, failed: Failed },

    #[error("the upload of {key:?} is not known to have succeeded: {detail}")]
    UploadOutcome {
        key: String,
        detail: String,
        /// S3 could not be asked: the object may be there or not.
        unknown: bool,
    },

    #[error("directory {key:?} is not empty")]
    NotEmpty { key: String },

    #[error("{key:?} is being written; it can be read once it is closed")]
    BeingWritten { key: String },

    #[error("{key:?} was already uploaded (closed or fsynced); reopen it with O_TRUNC to replace it")]
    AlreadyCommitted { key: String },

    #[error("{key:?} cannot be staged for modification: {reason}")]
    StagingFull { key: String, reason: String },

    #[error("staging {key:?} on local disk failed: {source}")]
    StagingIo {
        key: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{key:?} was changed in S3 by someone else since this mount staged it (it held ETag {}); nothing was \
         uploaded, so the other change stays. {}",
        crate::escape::escaped(base),
        match kept {
            Some(path) => format!("The local copy is kept at {}", path.display()),
            None => "The local copy could not be kept (see the previous message)".to_string(),
        }
    )]
    ModifyConflict { key: String, base: String, kept: Option<std::path::PathBuf> },

    #[error("interrupted: the calling thread {tid} has a signal pending; the request was abandoned")]
    Interrupted { tid: u32 },

    #[error(
        "renaming {key:?} would copy more than {limit} objects (--rename-dir-limit); refused so that the caller copies instead"
    )]
    RenameTooLarge { key: String, limit: usize },

    #[error("rename flags {0:#x} are not supported (RENAME_EXCHANGE and RENAME_WHITEOUT cannot be done on S3)")]
    RenameFlags(u32),

    #[error("cannot move {key:?} into itself")]
    RenameIntoItself { key: String },

    #[error("cannot rename {key:?} now: {why}")]
    RenameBusy { key: String, why: &'static str },

    /// A rename's copy was refused (412): the source is no longer the version the copy was
    /// pinned to, or another client created the target meanwhile. Nothing was renamed.
    #[error(
        "object {key:?} changed in S3 during the rename (another client wrote it or created the target); nothing was renamed"
    )]
    RenameConflict { key: String },
}

/// How an upload failed, remembered for every later call on its handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed {
    pub errno: i32,
    /// S3 may hold the object anyway: its answer was lost, and asking failed too.
    pub unknown: bool,
}

impl From<&FsError> for Failed {
    fn from(e: &FsError) -> Self {
        let unknown = match e {
            FsError::UploadOutcome { unknown, .. } => *unknown,
            FsError::UploadFailed { failed, .. } => failed.unknown,
            _ => false,
        };
        Failed { errno: e.errno(), unknown }
    }
}

impl FsError {
    /// A client error met while doing `action` on `key`. A 412, or an object gone while
    /// reading it, is [`FsError::ObjectChanged`], so the application sees ESTALE.
    pub fn client(action: &'static str, key: impl Into<String>, source: ClientError) -> Self {
        let key = key.into();
        match source.kind {
            ClientErrorKind::PreconditionFailed => FsError::ObjectChanged { key },
            _ => FsError::Client { action, key, source: Box::new(source) },
        }
    }

    /// The errno for this error. Exhaustive on purpose: no wildcard arms.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound { .. } => libc::ENOENT,
            FsError::UnknownInode(_) => libc::ENOENT,
            FsError::StaleInode { .. } => libc::ESTALE,
            FsError::InvalidName(_) => libc::EINVAL,
            FsError::NameTooLong(_) => libc::ENAMETOOLONG,
            FsError::NotADirectory(_) => libc::ENOTDIR,
            FsError::IsADirectory(_) => libc::EISDIR,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::InvalidatedHandle { .. } => libc::EBADF,
            FsError::LostInRestart(_) => libc::EIO,
            FsError::BadDirOffset { .. } => libc::EBADF,
            FsError::ObjectChanged { .. } => libc::ESTALE,
            FsError::Client { source, .. } => match source.kind {
                ClientErrorKind::AccessDenied => libc::EACCES,
                // A GET of an object deleted since open: the handle is stale.
                ClientErrorKind::NotFound => libc::ESTALE,
                ClientErrorKind::PreconditionFailed => libc::ESTALE,
                ClientErrorKind::NoSuchBucket => libc::EIO,
                ClientErrorKind::WrongRegion => libc::EIO,
                ClientErrorKind::Throttled => libc::EIO,
                ClientErrorKind::Transient => libc::EIO,
                ClientErrorKind::InvalidRange => libc::EIO,
                ClientErrorKind::Other => libc::EIO,
                // Only when S3 could not be asked either (see `Upload::settle`).
                ClientErrorKind::OutcomeUnknown => libc::EIO,
            },
            FsError::NotRestored { .. } => libc::EACCES,
            FsError::PermissionDenied(_) => libc::EPERM,
            FsError::NotASymlink { .. } => libc::EINVAL,
            FsError::BadSymlink { .. } => libc::EIO,
            FsError::NotSupported(_) => libc::ENOSYS,
            // As Mountpoint answers mknod of a FIFO, socket or device.
            FsError::SpecialFile { .. } => libc::EINVAL,
            FsError::NotYetSupported(_) => libc::ENOSYS,
            FsError::InvalidOpenFlags(_) => libc::EINVAL,
            FsError::OutOfOrderWrite { .. } => libc::EINVAL,
            // As for --allow-modify's conflicts: the version this handle appends to is stale.
            FsError::AppendConflict { .. } => libc::ESTALE,
            FsError::TooLarge { .. } => libc::EFBIG,
            // Bytes in S3 cannot change: the same answer as for an object's fixed attributes.
            FsError::CannotTruncate { .. } => libc::EPERM,
            FsError::OutOfMemory { .. } => libc::ENOMEM,
            FsError::AlreadyExists { .. } => libc::EEXIST,
            FsError::UploadFailed { failed, .. } => failed.errno,
            // A write S3 may or may not have taken, and asking S3 could not show it is ours.
            FsError::UploadOutcome { .. } => libc::EIO,
            FsError::NotEmpty { .. } => libc::ENOTEMPTY,
            FsError::BeingWritten { .. } => libc::EPERM,
            FsError::AlreadyCommitted { .. } => libc::EIO,
            FsError::Interrupted { .. } => libc::EINTR,
            FsError::StagingFull { .. } => libc::ENOSPC,
            FsError::StagingIo { .. } => libc::EIO,
            // As a read of an object changed since open: the file's version is stale.
            FsError::ModifyConflict { .. } => libc::ESTALE,
            // EXDEV makes mv (and most tools) fall back to copying file by file.
            FsError::RenameTooLarge { .. } => libc::EXDEV,
            FsError::RenameFlags(_) => libc::EINVAL,
            FsError::RenameIntoItself { .. } => libc::EINVAL,
            FsError::RenameBusy { .. } => libc::EBUSY,
            FsError::RenameConflict { .. } => libc::ESTALE,
        }
    }

    /// Expected outcomes (a name that does not exist, a caller that gave up) are logged at
    /// debug, the rest at warn.
    pub fn is_expected(&self) -> bool {
        matches!(self, FsError::NotFound { .. } | FsError::Interrupted { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_eio_never_enoent() {
        for kind in [ClientErrorKind::Throttled, ClientErrorKind::Transient, ClientErrorKind::Other] {
            let e = FsError::client("lookup", "k", ClientError::new(kind, "HeadObject", "x"));
            assert_eq!(e.errno(), libc::EIO, "{kind:?}");
        }
    }

    #[test]
    fn precondition_failed_is_estale() {
        let e = FsError::client("read", "k", ClientError::new(ClientErrorKind::PreconditionFailed, "GetObject", "x"));
        assert!(matches!(e, FsError::ObjectChanged { .. }));
        assert_eq!(e.errno(), libc::ESTALE);
    }

    #[test]
    fn access_denied_is_eacces() {
        let e = FsError::client("lookup", "k", ClientError::new(ClientErrorKind::AccessDenied, "HeadObject", "x"));
        assert_eq!(e.errno(), libc::EACCES);
    }
}
