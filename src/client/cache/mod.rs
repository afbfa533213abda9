//! The persistent disk block cache (`--cache DIR`): object bytes kept on local disk in
//! self-validating blocks, shared by every mount on the host that uses the same directory, and
//! kept across restarts.
//!
//! # Data flow
//! [`CachingClient`] wraps any [`ObjectClient`](crate::client::ObjectClient). A GET with
//! `If-Match` is split into blocks of `block_size` (1 MiB); each block is served from disk if a
//! valid copy is there, otherwise consecutive missing blocks are fetched with one block-aligned
//! ranged GET (with `If-Match`), streamed to the caller as chunks arrive, and written to disk in
//! the background. A block being fetched or read by one request is joined by every other request
//! that needs it (in-flight dedupe), and stays joinable until it is on disk, so concurrent
//! readers of one object fetch each byte from S3 once (within a process; across processes a
//! block is stored once, though two mounts may fetch it at the same moment). A request claims
//! at most two segments of 64 blocks ahead of its reader; a fetch nobody waits for any more is
//! dropped. GETs without `If-Match`, and every other call, go straight to the wrapped client.
//!
//! # Layout and format (`format.rs`)
//! ```text
//! <DIR>/                          owned by us or root; not writable by others unless sticky
//! <DIR>/mount-s3-cache/           0700, must be ours (owner = euid, no group/other bits)
//!   usage                         shared byte counter + its CRC; flock'ed for every insert/evict
//!   members                       each live cache holds a shared flock on it
//!   metadata/metadata-*.journal   the metadata journal of `--metadata-ttl indefinite`
//!   v1/<hh>/<62 hex>/<index:010>  block files (0600); hex = SHA-256 of (version, block size,
//!                                 namespace, bucket, key, ETag) with length prefixes; hh = first
//!                                 2 hex; the namespace is the store and the reading identity
//!   v1/<hh>/<62 hex>/.tmp-*       block being written; renamed into place when complete
//! ```
//! A block file (format version 2) is a header (magic `MS3CACHE`, format version, header
//! length, object size, block index, offset, length, chunk size, bucket, key, ETag), one CRC32C
//! per 64 KiB chunk of the data, a CRC32C of all that (the *head*), then the data. Keys never
//! become paths, so no key can name a file outside the cache. A block is served only if every
//! field matches what is asked for (bucket, key, ETag, index, offset = index x block size, length
//! = what the object size implies), the head's checksum and the file length are right, and each
//! chunk returned matches its checksum; a read reads the head and only the chunks it needs (the
//! first bytes of a block cost the head and one chunk). Anything else is a miss: the file is
//! removed, and the block is fetched again (when a damaged chunk is found after earlier chunks
//! were served, the rest of the block comes from that fetch). Blocks are keyed by ETag, so a
//! changed object is never served from old blocks (a reader that opened the old version and asks
//! with `If-Match: old` still gets the old, consistent bytes, as a snapshot). Files of format
//! version 1 (one CRC over the whole file) are never read: the version is hashed into the block's
//! path, and they age out of the LRU like unused blocks. `v1/` is the name of the layout (the
//! directory tree), not of the file format.

//! # Renames (`disk.rs` `relink`)
//! A rename copies server-side, pinned to the source's ETag, so the new object's bytes are the
//! cached version's. The file system says so ([`ObjectClient::copied`](crate::client::ObjectClient::copied));
//! the cache then reads each valid block of (source key, source ETag), writes it again as a
//! block of (destination key, the copy's ETag), and removes the old one. Identities are never
//! merged: a block still proves which (namespace, bucket, key, ETag) it holds, and blocks of
//! another version of the source are simply not found.
//!
//! # Sharing between processes (`usage.rs`)
//! The `usage` file holds the total size of all block files, updated under an exclusive `flock`
//! (plus an in-process mutex) for each insert and each removal; the size check, eviction, count
//! and rename of an insert happen in one lock hold, so concurrent mounts together never exceed
//! the limit. A block already on disk (another mount fetched it) is not written or counted again;
//! a removal is subtracted only by the process whose `unlink` succeeded. The count is reserved
//! before the rename, so a crash can only over-count; a removal subtracts the file's real size,
//! so files changed behind the cache's back leave their drift in the counter. Both are repaired
//! when a cache starts and finds itself alone (nobody holds `members`): it then rescans under
//! the lock and rewrites the total (`startup.rs`). Mounts of different buckets, stores or
//! identities can share a directory: all are in the identity, so none sees another's blocks.
//!
//! # Trust (`dir.rs`)
//! Everything under `<DIR>/mount-s3-cache` is used only if it is ours (owner, mode, no symbolic
//! link followed) and is reached through a held descriptor of the checked directory; if
//! anything fails, nothing of the directory is used.
//!
//! # Eviction (`evict.rs`)
//! Each cache keeps an LRU index of the blocks it knows (startup scan + its own writes and hits,
//! rescanned when it has no candidate left). A hit refreshes the block file's mtime, so the order
//! survives restarts and is seen by the other mounts: a candidate whose mtime is newer than the
//! index thinks was used by someone else and goes back in the queue. Before an insert, blocks are
//! evicted until it fits: under `max_size` bytes of block files, or, with no max, while keeping
//! `min_free_ratio` (5%) of the file system free (statvfs). A block that cannot be made room for
//! is not cached; the read still succeeds.
//!
//! # Startup
//! `open` only creates and checks the directories; the scan that rebuilds the index (and the
//! wipe, with `wipe_at_start`) runs on a background thread, so even a huge cache never delays
//! the mount. Until a wipe is done, the cache serves and stores nothing.
//!
//! # Failures
//! Cache I/O errors (disk full, permissions, a directory that is not ours) never fail a read:
//! they are logged (the first at warn) and the bytes come from S3. Cache writes are bounded by
//! `max_pending_writes` bytes queued; past that, blocks are served but not stored.
//!
//! Numbers: 1 MiB blocks of 64 KiB chunks; head 64 bytes + bucket + key + ETag + 4 bytes per
//! chunk + 4; 5% free by default; 64 MiB of queued writes; per block hit: open, fstat, one read
//! of the head, futimens, then one read of the first chunk needed and one per 4 chunks after it.

mod client;
pub mod dir;
mod disk;
mod evict;
mod flight;
pub(crate) mod format;
pub mod shared;
mod startup;
mod tiers;
mod usage;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_chunks;
#[cfg(test)]
mod tests_fs;
#[cfg(test)]
mod tests_model;
#[cfg(test)]
mod tests_shared;

use std::path::PathBuf;

pub use client::CachingClient;
pub use dir::CacheDir;
pub use disk::DiskBlockCache;
pub use format::ObjectId;
pub use shared::{SharedCache, SharedCacheConfig};

/// Default block size: 1 MiB, as Mountpoint.
pub const DEFAULT_BLOCK_SIZE: u64 = 1024 * 1024;

/// Largest accepted block size.
pub const MAX_BLOCK_SIZE: u64 = 1024 * 1024 * 1024;

/// Settings of the disk block cache.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskCacheConfig {
    /// The `--cache` directory; everything lives in `<dir>/mount-s3-cache/`.
    pub dir: PathBuf,
    /// `--max-cache-size` in bytes (of block files). `None`: keep `min_free_ratio` of the file
    /// system free. `Some(0)`: caching disabled (the caching client passes everything through).
    pub max_size: Option<u64>,
    /// `--cache-block-size` in bytes (1..=1 GiB); the last block of an object may be shorter.
    pub block_size: u64,
    /// Remove every block at start, as Mountpoint does (its cache is never reused).
    pub wipe_at_start: bool,
    /// With no `max_size`: share of the file system kept free (0.05).
    pub min_free_ratio: f64,
    /// Bytes of fetched blocks waiting to be written; past this, blocks are not stored.
    pub max_pending_writes: u64,
    /// Who and where blocks come from (the store and the reading identity, see
    /// `run.rs`); part of every block's identity, so mounts of other stores or identities
    /// sharing the directory never see each other's blocks. Empty in tests.
    pub namespace: String,
}

impl DiskCacheConfig {
    /// The defaults, with the cache under `dir`: 1 MiB blocks, keep 5% free, no wipe.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCacheConfig {
            dir: dir.into(),
            max_size: None,
            block_size: DEFAULT_BLOCK_SIZE,
            wipe_at_start: false,
            min_free_ratio: 0.05,
            max_pending_writes: 64 * 1024 * 1024,
            namespace: String::new(),
        }
    }

    fn validate(&self) -> Result<(), CacheError> {
        if !(1..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return Err(CacheError::InvalidBlockSize(self.block_size));
        }
        if !(0.0..=1.0).contains(&self.min_free_ratio) {
            return Err(CacheError::InvalidFreeRatio(self.min_free_ratio.to_string()));
        }
        Ok(())
    }
}

/// A configuration the cache cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("cache block size must be between 1 byte and 1 GiB, not {0}")]
    InvalidBlockSize(u64),
    #[error("cache minimum free ratio must be between 0 and 1, not {0}")]
    InvalidFreeRatio(String),
}

/// Counters of the cache, for metrics and tests. Sizes are bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks served from disk.
    pub hits: u64,
    /// Blocks fetched from S3.
    pub misses: u64,
    /// Blocks a request found already being read or fetched by another, and waited for.
    pub joined: u64,
    /// Bytes handed to callers that came from disk blocks.
    pub bytes_from_cache: u64,
    /// Bytes received from the wrapped client for blocks.
    pub bytes_fetched: u64,
    /// Data bytes of block files read from disk (whole chunks; heads not counted).
    pub bytes_read_from_disk: u64,
    /// Blocks written to disk by this cache.
    pub blocks_written: u64,
    /// Blocks removed by this cache to make room.
    pub evictions: u64,
    /// Block files found invalid (and removed).
    pub invalid_blocks: u64,
    /// Block writes that failed (disk full, permissions, ...).
    pub write_errors: u64,
    /// Blocks not stored: no room could be made, or too many writes were queued.
    pub writes_skipped: u64,
    /// Total size of block files of every mount sharing the directory, as last seen.
    pub size_bytes: u64,
    /// Blocks this cache's LRU index knows.
    pub indexed_blocks: u64,
}
