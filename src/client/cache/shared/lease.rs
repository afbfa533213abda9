//! Leases: which node fetches a block that several nodes miss at once (see the module notes).
//!
//! A lease object is `<block key>.lease`, a few bytes of text: `expires-unix-ms=<ms>`. It is
//! untrusted like everything in the bucket; one that cannot be read counts as expired, which at
//! worst makes two nodes fetch the same block. Expiry uses the writer's clock, so clock skew
//! between nodes shortens or lengthens a wait, which [`super::MAX_WAIT`] bounds anyway.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::SharedCache;
use super::format::CheckedBlock;
use crate::client::ClientErrorKind;
use crate::client::aws::StorePut;
use crate::client::cache::format::ObjectId;
use std::sync::atomic::Ordering;

/// Largest lease object read.
const MAX_LEASE_LEN: u64 = 256;
/// First and longest pause between two looks at a block being fetched elsewhere.
const FIRST_POLL: Duration = Duration::from_millis(20);
const LONGEST_POLL: Duration = Duration::from_millis(320);

/// The outcome of trying to take the lease on a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This node fetches the block (and stores it).
    Ours,
    /// Another node is fetching it; its lease runs until then.
    Theirs(Instant),
    /// The bucket did not answer usefully: fetch without a lease.
    Unavailable,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The expiry a lease object states, if it is readable.
fn parse_lease(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.lines().find_map(|l| l.strip_prefix("expires-unix-ms=")).and_then(|v| v.trim().parse().ok())
}

impl SharedCache {
    pub(super) fn lease_key(&self, id: &ObjectId, index: u64) -> String {
        format!("{}.lease", self.key(id, index))
    }

    /// When the lease on the block expires, as an [`Instant`]: `None` if there is none, it cannot
    /// be read, or it has expired.
    async fn live_lease(&self, key: &str) -> Option<Instant> {
        let object = match self.store.get(key, MAX_LEASE_LEN).await {
            Ok(found) => {
                self.answered();
                found?
            }
            Err(e) => {
                self.error("lease read", &e);
                return None;
            }
        };
        let expires = parse_lease(&object.data)?;
        let left = expires.checked_sub(unix_ms(SystemTime::now()))?;
        // A lease longer than any we write is not believed past our own bound.
        Some(Instant::now() + Duration::from_millis(left).min(self.config.lease_ttl))
    }

    async fn write_lease(&self, key: &str, create_only: bool) -> Result<(), crate::client::ClientError> {
        let expires = unix_ms(SystemTime::now() + self.config.lease_ttl);
        let put = StorePut { create_only, ..self.put_options() };
        self.store.put(key, Bytes::from(format!("expires-unix-ms={expires}\n")), &put).await
    }

    /// Tries to take the lease on block `index` of `id`.
    pub async fn take_lease(&self, id: &ObjectId, index: u64) -> Lease {
        let key = self.lease_key(id, index);
        match self.write_lease(&key, true).await {
            Ok(()) => {
                self.answered();
                return Lease::Ours;
            }
            // 412: the lease exists; 409: another node is creating it right now.
            Err(e) if e.kind == ClientErrorKind::PreconditionFailed || e.status == Some(409) => {}
            Err(e) => {
                self.error("lease", &e);
                return Lease::Unavailable;
            }
        }
        if let Some(until) = self.live_lease(&key).await {
            self.counters.waits.fetch_add(1, Ordering::Relaxed);
            return Lease::Theirs(until);
        }
        // Expired (its holder died or gave up): take it over. Two nodes doing so at once both
        // fetch, which is what would happen without leases.
        match self.write_lease(&key, false).await {
            Ok(()) => Lease::Ours,
            Err(e) => {
                self.error("lease", &e);
                Lease::Unavailable
            }
        }
    }

    /// Gives up the lease on a block this node could not store, so waiters stop waiting.
    pub(crate) async fn release_lease(&self, id: &ObjectId, index: u64) {
        if let Err(e) = self.store.delete(&self.lease_key(id, index)).await {
            self.error("lease delete", &e);
        }
    }

    /// Waits for block `index` of `id`, which another node holds the lease on until `until`: it
    /// is looked for now, then at growing intervals, until it is there, the lease is gone or
    /// expired, or [`SharedCacheConfig::max_wait`](super::SharedCacheConfig) has passed.
    pub async fn wait_for(
        &self,
        id: &ObjectId,
        index: u64,
        known_size: Option<u64>,
        until: Instant,
    ) -> Option<CheckedBlock> {
        let deadline = until.min(Instant::now() + self.config.max_wait);
        let lease_key = self.lease_key(id, index);
        let mut pause = FIRST_POLL;
        loop {
            if let Some(block) = self.lookup(id, index, known_size).await {
                self.counters.waited_hits.fetch_add(1, Ordering::Relaxed);
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Some(block);
            }
            let now = Instant::now();
            if now >= deadline || self.live_lease(&lease_key).await.is_none() {
                tracing::debug!(key = lease_key, "stopped waiting for a block another node was fetching");
                return None;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(LONGEST_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_objects_parse_or_count_as_expired() {
        assert_eq!(parse_lease(b"expires-unix-ms=1234\n"), Some(1234));
        assert_eq!(parse_lease(b"node=x\nexpires-unix-ms= 99 \n"), Some(99));
        for junk in [&b""[..], b"expires-unix-ms=", b"expires-unix-ms=-1", b"\xff\xfe", b"expires=5"] {
            assert_eq!(parse_lease(junk), None);
        }
    }
}
