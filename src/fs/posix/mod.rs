//! `--posix-metadata`: POSIX attributes kept in S3 user metadata, in the conventions s3fs
//! writes and rclone reads, so that objects written by either read back the same here and ours
//! read back the same there.
//!
//! [`convention`] reads and writes the metadata (pure functions over untrusted strings);
//! [`ops`] holds the core's operations that exist only with the flag (symlink, readlink,
//! directory markers, attribute changes of objects in S3); [`listed`] keeps what listings cannot
//! know (they carry no metadata) out of the kernel's caches. The rest of the core consults
//! [`crate::fs::namespace::Stat::posix`]: set from a lookup's HeadObject, shown by `attr`.
//! Without the flag nothing here is used: every object shows the mount's fixed attributes.

pub mod convention;
pub mod listed;
pub mod ops;

pub use convention::{PosixAttrs, PosixKind};

#[cfg(test)]
mod tests;
