//! The shared cache on an in-memory bucket: blocks round-trip, anything else is a miss, leases
//! decide who fetches and how long others wait.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::lease::Lease;
use super::store::MemStore;
use super::{SharedCache, SharedCacheConfig};
use crate::client::ETag;
use crate::client::cache::format::ObjectId;

const BS: u64 = 4;

fn cache(store: &Arc<MemStore>) -> Arc<SharedCache> {
    let config = SharedCacheConfig {
        lease_ttl: Duration::from_secs(5),
        max_wait: Duration::from_secs(5),
        ..SharedCacheConfig::new("src", BS)
    };
    Arc::new(SharedCache::new(store.clone(), config))
}

fn id(etag: &str) -> Arc<ObjectId> {
    Arc::new(ObjectId::new("src", "k", &ETag::new(etag), BS))
}

async fn settle(cache: &SharedCache) {
    while cache.pending_bytes() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn blocks_round_trip_per_version_and_damaged_ones_are_misses() {
    let store = Arc::new(MemStore::default());
    let c = cache(&store);
    let v1 = id("\"1\"");
    assert!(c.get(&v1, 0, None).await.is_none());
    c.queue_put(&v1, 0, 6, vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")], false);
    c.queue_put(&v1, 1, 6, vec![Bytes::from_static(b"ef")], false);
    settle(&c).await;
    let b0 = c.get(&v1, 0, None).await.unwrap();
    assert_eq!((&b0.data[..], b0.object_size), (&b"abcd"[..], 6));
    assert_eq!(&c.get(&v1, 1, Some(6)).await.unwrap().data[..], b"ef");
    assert!(c.get(&id("\"2\""), 0, None).await.is_none(), "another version has its own keys");
    assert!(c.get(&v1, 0, Some(7)).await.is_none(), "a size that disagrees is a miss");

    // Damage the stored bytes, then move block 1's object onto block 0's key.
    let key0 = c.key(&v1, 0);
    let key1 = c.key(&v1, 1);
    store.objects.lock().unwrap().get_mut(&key0).unwrap().data = Bytes::from_static(b"abcX");
    assert!(c.get(&v1, 0, None).await.is_none());
    let moved = store.objects.lock().unwrap().get(&key1).cloned().unwrap();
    store.objects.lock().unwrap().insert(key0.clone(), moved);
    assert!(c.get(&v1, 0, None).await.is_none());
    assert_eq!(c.stats().invalid, 3);
    // An oversized object is not even read.
    store.objects.lock().unwrap().get_mut(&key0).unwrap().data = Bytes::from(vec![0u8; 64]);
    assert!(c.get(&v1, 0, None).await.is_none());
}

#[tokio::test]
async fn one_node_takes_a_lease_others_wait_for_its_block() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (cache(&store), cache(&store));
    let v = id("\"1\"");
    assert_eq!(a.take_lease(&v, 0).await, Lease::Ours);
    let Lease::Theirs(until) = b.take_lease(&v, 0).await else { panic!("the lease is a's") };
    let waiter = {
        let (b, v) = (b.clone(), v.clone());
        tokio::spawn(async move { b.wait_for(&v, 0, None, until).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.queue_put(&v, 0, 3, vec![Bytes::from_static(b"xyz")], true);
    let got = waiter.await.unwrap().expect("the block arrives while waiting");
    assert_eq!(&got.data[..], b"xyz");
    assert_eq!((b.stats().waits, b.stats().waited_hits), (1, 1));
    // A stored block's lease stays until it expires, so a late miss waits (and finds it).
    assert!(matches!(b.take_lease(&v, 0).await, Lease::Theirs(_)));
}

#[tokio::test]
async fn a_lease_whose_block_is_not_stored_or_that_expired_stops_the_wait() {
    let store = Arc::new(MemStore::default());
    let (a, b) = (cache(&store), cache(&store));
    let v = id("\"1\"");
    assert_eq!(a.take_lease(&v, 1).await, Lease::Ours);
    let Lease::Theirs(until) = b.take_lease(&v, 1).await else { panic!("the lease is a's") };
    let waiter = {
        let (b, v) = (b.clone(), v.clone());
        tokio::spawn(async move { b.wait_for(&v, 1, None, until).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.release_lease(&v, 1).await;
    let started = Instant::now();
    assert!(waiter.await.unwrap().is_none());
    assert!(started.elapsed() < Duration::from_secs(2), "stopped when the lease went away");

    // An expired lease is taken over; a damaged one counts as expired.
    let key = a.lease_key(&v, 2);
    store.objects.lock().unwrap().insert(key.clone(), Default::default());
    assert_eq!(b.take_lease(&v, 2).await, Lease::Ours);
    store.objects.lock().unwrap().get_mut(&key).unwrap().data = Bytes::from_static(b"expires-unix-ms=1\n");
    assert_eq!(a.take_lease(&v, 2).await, Lease::Ours);
    assert!(store.puts.load(Ordering::Relaxed) >= 4);
}

/// A bucket that fails every request.
#[derive(Debug, Default)]
struct Down(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl super::store::BlockStore for Down {
    fn name(&self) -> &str {
        "down"
    }
    async fn get(
        &self,
        _: &str,
        _: u64,
    ) -> Result<Option<crate::client::aws::StoredObject>, crate::client::ClientError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(crate::client::ClientError::new(crate::client::ClientErrorKind::Throttled, "GetObject", "slow down"))
    }
    async fn put(&self, _: &str, _: Bytes, _: &crate::client::aws::StorePut) -> Result<(), crate::client::ClientError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(crate::client::ClientError::new(crate::client::ClientErrorKind::Throttled, "PutObject", "slow down"))
    }
    async fn delete(&self, _: &str) -> Result<(), crate::client::ClientError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_bucket_that_keeps_failing_is_bypassed_for_a_while() {
    let down = Arc::new(Down::default());
    let c = Arc::new(SharedCache::new(down.clone(), SharedCacheConfig::new("src", BS)));
    let v = id("\"1\"");
    for i in 0..7 {
        assert!(c.get(&v, i, None).await.is_none());
        assert!(!c.resting(), "not yet after {} failures", i + 1);
    }
    assert_eq!(c.take_lease(&v, 0).await, Lease::Unavailable);
    assert!(c.resting(), "8 failures in a row: the bucket is left alone");
    assert_eq!(c.stats().errors, 8);
}
