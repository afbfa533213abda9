//! `--posix-metadata`: POSIX attributes kept in S3 user metadata, in the conventions s3fs
//! writes and rclone reads, so that objects written by either read back the same here and ours
//! read back the same there.
//!
//! [`convention`] reads and writes the metadata (pure functions over untrusted strings).
//! Without the flag nothing here is used: every object shows the mount's fixed attributes.

pub mod convention;

pub use convention::{PosixAttrs, PosixKind};
