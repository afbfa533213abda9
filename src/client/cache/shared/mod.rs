//! The shared cache (`--cache-xz BUCKET`): object bytes kept as block objects in a bucket that
//! every node mounting the same source bucket reads and fills.
//!
//! # Layout (`format.rs`)
//! Mountpoint's `V2` layout and block format, so nodes running Mountpoint and nodes running
//! mount-s3 share one cache bucket: `<prefix>/<hash of key and ETag>/<index:010>`, where the
//! prefix hashes the format version, the block size and the source bucket. Keys contain the ETag,
//! so a changed object is a new set of keys and old blocks are never served for it. Every block
//! read back is checked against the request (bucket, key, ETag, index, offset) and its header
//! checksum recomputed over the bytes received; anything else is a miss, and the block is fetched
//! from the source and written again.
//!
//! # Where it sits (`../tiers.rs`)
//! The caching client tries, for each block: the local disk cache (`--cache`), then this bucket,
//! then the source. A block found here is written to the local disk cache; a block fetched from
//! the source is written to both. Unlike Mountpoint, objects of any size are cached (Mountpoint
//! caches objects up to 1 MiB), and the bucket may be any bucket the client can reach: a
//! directory bucket, a general-purpose bucket, or a bucket of another S3-compatible store.
//!
//! # Cross-node single flight (`lease.rs`)
//! Within one process the in-flight map already makes each block fetched once. Across nodes, a
//! node that misses a block takes a lease on it before fetching: a small object next to the block
//! key (`<block key>.lease`) created with `If-None-Match: *`, holding its expiry time
//! ([`LEASE_TTL`] ahead). Whoever creates it fetches the block; a node that finds a live lease
//! waits for the block object to appear (polling, at most [`MAX_WAIT`] and never past the
//! lease's expiry), and fetches the block itself if it does not. An expired lease is taken over.
//! A lease whose block was stored is left to expire (deleting it would let a node that missed
//! just before the store take a fresh lease and fetch again); a lease whose block could not be
//! stored is deleted, so waiters stop waiting. A store that ignores `If-None-Match` (Garage)
//! gives every node the lease: no waiting, each node fetches, as without leases.
//!
//! # Trust
//! The cache bucket is as trusted as its writers: the checks prove a block is what its writer
//! said it is for, not that the writer told the truth. Give write access only to nodes that
//! mount the source. Errors of the cache bucket never fail a read: the block comes from the
//! source; after [`FAILURES_BEFORE_REST`] failed requests in a row the bucket is bypassed for
//! [`REST`], so an outage or throttling does not slow every read down.
//!
//! Requests per block: a hit is one GET; a miss is a GET (404), a lease PUT and a block PUT
//! (plus a lease GET when another node holds the lease, and the polls while waiting).

pub mod format;
pub(crate) mod lease;
pub mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use self::format::{CheckedBlock, block_key, block_metadata, check_block, key_prefix};
use self::store::BlockStore;
use super::format::ObjectId;
use crate::client::ClientError;
use crate::client::aws::StorePut;

/// How long a lease stays valid after it is taken.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// Longest a node waits for a block another node is fetching.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Failed requests in a row after which the bucket is left alone for [`REST`].
const FAILURES_BEFORE_REST: u64 = 8;
/// How long reads bypass a bucket that keeps failing.
pub const REST: Duration = Duration::from_secs(30);
/// Bytes of blocks waiting to be written to the bucket; past this, blocks are not stored.
const MAX_PENDING_PUTS: u64 = 64 * 1024 * 1024;

/// Settings of the shared cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedCacheConfig {
    /// The mounted (source) bucket: part of every key and checked in every block.
    pub source_bucket: String,
    /// Block size in bytes (`--cache-block-size`, 1 MiB by default).
    pub block_size: u64,
    /// `--sse` / `--sse-kms-key-id`, applied to block objects as to uploads.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// See [`LEASE_TTL`] and [`MAX_WAIT`]; shorter in tests.
    pub lease_ttl: Duration,
    pub max_wait: Duration,
}

impl SharedCacheConfig {
    pub fn new(source_bucket: &str, block_size: u64) -> Self {
        SharedCacheConfig {
            source_bucket: source_bucket.to_string(),
            block_size,
            sse: None,
            sse_kms_key_id: None,
            lease_ttl: LEASE_TTL,
            max_wait: MAX_WAIT,
        }
    }
}

/// Counters of the shared cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Blocks served from the bucket.
    pub hits: u64,
    /// Blocks looked up and absent.
    pub misses: u64,
    /// Block objects found but not valid for the request (ignored).
    pub invalid: u64,
    /// Blocks waited for because another node held the lease.
    pub waits: u64,
    /// Of those, blocks that arrived while waiting.
    pub waited_hits: u64,
    /// Block objects written.
    pub puts: u64,
    /// Requests to the bucket that failed.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    invalid: AtomicU64,
    waits: AtomicU64,
    waited_hits: AtomicU64,
    puts: AtomicU64,
    errors: AtomicU64,
}

/// The shared cache on one cache bucket, for one source bucket.
pub struct SharedCache {
    store: Arc<dyn BlockStore>,
    config: SharedCacheConfig,
    prefix: String,
    counters: Counters,
    pending: AtomicU64,
    /// Failed requests in a row, and until when the bucket is bypassed after too many.
    failing: AtomicU64,
    rest_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache").field("bucket", &self.store.name()).field("config", &self.config).finish()
    }
}

impl SharedCache {
    pub fn new(store: Arc<dyn BlockStore>, config: SharedCacheConfig) -> Self {
        let prefix = key_prefix(&config.source_bucket, config.block_size);
        SharedCache {
            store,
            config,
            prefix,
            counters: Counters::default(),
            pending: AtomicU64::new(0),
            failing: AtomicU64::new(0),
            rest_until: std::sync::Mutex::new(None),
        }
    }

    pub fn block_size(&self) -> u64 {
        self.config.block_size
    }

    /// The cache bucket's name.
    pub fn bucket(&self) -> &str {
        self.store.name()
    }

    pub fn stats(&self) -> SharedStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            invalid: get(&c.invalid),
            waits: get(&c.waits),
            waited_hits: get(&c.waited_hits),
            puts: get(&c.puts),
            errors: get(&c.errors),
        }
    }

    /// The mount-time check, as Mountpoint makes it: writes `<prefix>/_mountpoint_cache_metadata`
    /// (a human-readable note of the source bucket and block size). Writing implies reading on
    /// every store we know. Unlike Mountpoint, no storage class is asked for, so any bucket works.
    pub async fn validate(&self) -> Result<(), ClientError> {
        let key = format!("{}/_mountpoint_cache_metadata", self.prefix);
        let body = format!("source_bucket={}\nblock_size={}", self.config.source_bucket, self.config.block_size);
        self.store.put(&key, Bytes::from(body), &self.put_options()).await
    }

    fn put_options(&self) -> StorePut {
        StorePut {
            sse: self.config.sse.clone(),
            sse_kms_key_id: self.config.sse_kms_key_id.clone(),
            ..StorePut::default()
        }
    }

    fn key(&self, id: &ObjectId, index: u64) -> String {
        block_key(&self.prefix, id.key(), id.etag().as_str(), index)
    }

    /// The bucket answered: the failure streak ends.
    pub(super) fn answered(&self) {
        self.failing.store(0, Ordering::Relaxed);
    }

    /// True while the bucket is bypassed after [`FAILURES_BEFORE_REST`] failures in a row: reads
    /// go to the source without waiting on a bucket that does not answer (throttling, an outage).
    pub fn resting(&self) -> bool {
        let mut until = self.rest_until.lock().unwrap();
        match *until {
            Some(t) if std::time::Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn error(&self, what: &str, e: &ClientError) {
        if self.failing.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_BEFORE_REST {
            self.failing.store(0, Ordering::Relaxed);
            *self.rest_until.lock().unwrap() = Some(std::time::Instant::now() + REST);
            tracing::warn!(bucket = self.store.name(), error = %e,
                "shared cache bucket keeps failing; reading from the source only for {} s", REST.as_secs());
        }
        // The first failure at warn (the cache bucket may be misconfigured), the rest at debug.
        if self.counters.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(bucket = self.store.name(), error = %e, "shared cache {what} failed; reading from the source");
        } else {
            tracing::debug!(bucket = self.store.name(), error = %e, "shared cache {what} failed");
        }
    }

    /// Block `index` of `id` from the bucket, if a valid copy is there. `known_size` is the
    /// object size if known; a block that does not fit it is invalid.
    pub async fn get(&self, id: &ObjectId, index: u64, known_size: Option<u64>) -> Option<CheckedBlock> {
        let got = self.lookup(id, index, known_size).await;
        match &got {
            Some(_) => self.counters.hits.fetch_add(1, Ordering::Relaxed),
            None => self.counters.misses.fetch_add(1, Ordering::Relaxed),
        };
        got
    }

    async fn lookup(&self, id: &ObjectId, index: u64, known_size: Option<u64>) -> Option<CheckedBlock> {
        let key = self.key(id, index);
        let object = match self.store.get(&key, self.config.block_size).await {
            Ok(found) => {
                self.answered();
                found?
            }
            Err(e) => {
                self.error("read", &e);
                return None;
            }
        };
        let bs = self.config.block_size;
        match check_block(&self.config.source_bucket, id, index, bs, known_size, object.data, &object.metadata) {
            Ok(block) => Some(block),
            Err(why) => {
                self.counters.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key, %why, "shared cache block ignored");
                None
            }
        }
    }

    /// Writes block `index` of `id` in the background (skipped when too many bytes are queued),
    /// then settles the lease this node took for it (`lease`).
    pub fn queue_put(
        self: &Arc<Self>,
        id: &Arc<ObjectId>,
        index: u64,
        object_size: u64,
        chunks: Vec<Bytes>,
        lease: bool,
    ) {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let queued = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p == 0 || p + len <= MAX_PENDING_PUTS).then_some(p + len)
            })
            .is_ok();
        let (cache, id) = (self.clone(), id.clone());
        tokio::spawn(async move {
            let stored = queued && cache.put(&id, index, object_size, chunks).await;
            if queued {
                cache.pending.fetch_sub(len, Ordering::AcqRel);
            }
            if lease && !stored {
                cache.release_lease(&id, index).await;
            }
        });
    }

    async fn put(&self, id: &ObjectId, index: u64, object_size: u64, chunks: Vec<Bytes>) -> bool {
        let data = if chunks.len() == 1 {
            chunks[0].clone()
        } else {
            let mut joined = BytesMut::new();
            for c in &chunks {
                joined.extend_from_slice(c);
            }
            joined.freeze()
        };
        let offset = index * self.config.block_size;
        let (key, etag) = (id.key(), id.etag().as_str());
        let put = StorePut {
            metadata: block_metadata(&self.config.source_bucket, key, etag, index, offset, &data, object_size),
            crc32c: Some(crc32c::crc32c(&data)),
            ..self.put_options()
        };
        match self.store.put(&self.key(id, index), data, &put).await {
            Ok(()) => {
                self.answered();
                self.counters.puts.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.error("write", &e);
                false
            }
        }
    }

    /// Waits until every queued block write is done, or `timeout` has passed.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Bytes of blocks waiting to be written (for tests).
    #[cfg(test)]
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }
}
