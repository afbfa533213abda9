//! The cache across time and processes: restarts, wipes, the shared counter, two mounts on one
//! directory (two caches opened separately behave as two processes: locks are per open file),
//! concurrent readers of one object, and readers that go away.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::tests::{KIB, MIB, blocks_on_disk, client, close, config, data, get, gets, open, put};
use super::tests_model::Bucket;
use super::{CachingClient, DiskCacheConfig, ObjectId};
use crate::client::memory::InMemoryClient;
use crate::client::{ETag, ObjectClient};

/// The shared counter, as the file says.
fn usage_file(dir: &Path) -> u64 {
    let bytes = std::fs::read(dir.join("mount-s3-cache/usage")).unwrap();
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

fn set_usage_file(dir: &Path, value: u64) {
    let mut buf = value.to_le_bytes().to_vec();
    buf.extend_from_slice(&crc32c::crc32c(&buf).to_le_bytes());
    std::fs::write(dir.join("mount-s3-cache/usage"), buf).unwrap();
}

#[tokio::test]
async fn a_restart_keeps_the_cache_and_needs_no_get() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * KIB;
    let c = client(&open(config(dir.path(), bs)).await, "b");
    let object = data(5 * bs + 17, 1);
    let etag = put(&c, "jars/app.jar", &object);
    assert_eq!(get(&c, "jars/app.jar", 0..5 * bs + 17, &etag).await.unwrap(), object);
    let inner = c.inner().inner().object_bytes("jars/app.jar").unwrap();
    close(c).await;

    let cache = open(config(dir.path(), bs)).await;
    let c = client(&cache, "b");
    put(&c, "jars/app.jar", &inner); // same ETag: the in-memory bucket numbers ETags in order
    for r in [0..5 * bs + 17, 3..bs, 5 * bs..5 * bs + 17] {
        assert_eq!(get(&c, "jars/app.jar", r.clone(), &etag).await.unwrap(), &object[r.start as usize..r.end as usize]);
    }
    assert_eq!(gets(&c), 0, "served from the previous run's blocks");
    let stats = c.stats();
    assert_eq!((stats.indexed_blocks, stats.misses), (6, 0));
    assert_eq!(stats.size_bytes, blocks_on_disk(dir.path()).1);
}

#[tokio::test]
async fn a_lone_start_recounts_the_counter_and_a_shared_start_trusts_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = client(&open(config(dir.path(), 4 * KIB)).await, "b");
    let etag = put(&c, "k", &data(10 * KIB, 2));
    get(&c, "k", 0..10 * KIB, &etag).await.unwrap();
    close(c).await;
    let on_disk = blocks_on_disk(dir.path()).1;
    // A crashed mount left the counter wrong.
    set_usage_file(dir.path(), 1 << 40);
    let first = open(config(dir.path(), 4 * KIB)).await;
    assert_eq!((first.stats().size_bytes, usage_file(dir.path())), (on_disk, on_disk));
    // With another mount running the counter is the truth (recounting would race its writes).
    set_usage_file(dir.path(), 12345);
    let second = open(config(dir.path(), 4 * KIB)).await;
    assert_eq!(second.stats().size_bytes, 12345);
    assert_eq!(second.stats().indexed_blocks, 3, "it still indexes what is there");
    drop(first);
}

#[tokio::test]
async fn wipe_at_start_forgets_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 4 * KIB;
    let c = client(&open(config(dir.path(), bs)).await, "b");
    let object = data(10 * KIB, 3);
    let etag = put(&c, "k", &object);
    get(&c, "k", 0..10 * KIB, &etag).await.unwrap();
    close(c).await;
    assert_eq!(blocks_on_disk(dir.path()).0, 3);

    let cache = open(DiskCacheConfig { wipe_at_start: true, ..config(dir.path(), bs) }).await;
    assert_eq!((blocks_on_disk(dir.path()).0, cache.stats().size_bytes), (0, 0));
    let names: Vec<_> =
        std::fs::read_dir(dir.path().join("mount-s3-cache")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "usage, members, v1 and no trash left: {names:?}");
    let c = client(&cache, "b");
    put(&c, "k", &object);
    assert_eq!(get(&c, "k", 0..10 * KIB, &etag).await.unwrap(), object);
    assert_eq!(gets(&c), 1);
}

#[tokio::test]
async fn lru_order_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 4 * KIB;
    let file = super::format::file_len(&ObjectId::new("b", "a", &ETag::new("\"mem-0000000000000001\""), bs), bs);
    let limited = || DiskCacheConfig { max_size: Some(6 * file), ..config(dir.path(), bs) };
    let c = client(&open(limited()).await, "b");
    let etags: Vec<ETag> = ["a", "b", "c", "d"].iter().map(|k| put(&c, k, &data(2 * bs, 4))).collect();
    for (key, etag) in ["a", "b", "c"].iter().zip(&etags) {
        get(&c, key, 0..2 * bs, etag).await.unwrap();
        c.cache().flush().await;
        tokio::time::sleep(Duration::from_millis(30)).await; // past the file system's clock granularity
    }
    get(&c, "a", 0..2 * bs, &etags[0]).await.unwrap(); // a is now the most recently used
    let objects: Vec<_> = ["a", "b", "c", "d"].iter().map(|k| c.inner().inner().object_bytes(k).unwrap()).collect();
    close(c).await;

    let cache = open(limited()).await;
    let c = client(&cache, "b");
    for (k, bytes) in ["a", "b", "c", "d"].iter().zip(&objects) {
        put(&c, k, bytes);
    }
    get(&c, "d", 0..2 * bs, &etags[3]).await.unwrap();
    cache.flush().await;
    let cached = |key: &str, etag: &ETag| cache.block_path(&ObjectId::new("b", key, etag, bs), 0).exists();
    assert!(!cached("b", &etags[1]), "b was the least recently used");
    assert!(cached("a", &etags[0]) && cached("c", &etags[2]) && cached("d", &etags[3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_readers_of_one_object_fetch_each_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(config(dir.path(), MIB)).await;
    let c = Arc::new(client(&cache, "b"));
    let size = 20 * MIB;
    let object = Arc::new(data(size, 5));
    let etag = put(&c, "big.jar", &object);
    let barrier = Arc::new(tokio::sync::Barrier::new(10));
    let readers: Vec<_> = (0..10u64)
        .map(|r| {
            let (c, object, etag, barrier) = (c.clone(), object.clone(), etag.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // Each reader its own, unaligned, part size, as different prefetch windows.
                let part = (r + 1) * 777 * KIB + r;
                let mut at = 0;
                while at < size {
                    let end = (at + part).min(size);
                    let got = get(&*c, "big.jar", at..end, &etag).await.unwrap();
                    assert!(got == object[at as usize..end as usize], "reader {r} at {at}");
                    at = end;
                }
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    cache.flush().await;
    assert_eq!(c.inner().get_bytes_requested(), size, "every byte fetched exactly once");
    assert_eq!(c.stats().misses, 20);
    assert_eq!(blocks_on_disk(dir.path()).0, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_share_one_dir_within_one_limit_and_never_mix_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * KIB;
    let file =
        super::format::file_len(&ObjectId::new("alpha", "obj-0", &ETag::new("\"mem-0000000000000001\""), bs), bs);
    let limit = 8 * file;
    let limited = || DiskCacheConfig { max_size: Some(limit), ..config(dir.path(), bs) };
    let mounts = [("alpha", open(limited()).await), ("beta", open(limited()).await)];
    let tasks: Vec<_> = mounts
        .iter()
        .enumerate()
        .map(|(m, (bucket, cache))| {
            let c = client(cache, bucket);
            // Same keys (and, the buckets being alike, same ETags) in both: only the bucket differs.
            let objects: Vec<(Vec<u8>, ETag)> = (0..3)
                .map(|i| {
                    let bytes = data(6 * bs + 100, (10 * m + i) as u8);
                    let etag = put(&c, &format!("obj-{i}"), &bytes);
                    (bytes, etag)
                })
                .collect();
            tokio::spawn(async move {
                for round in 0..6u64 {
                    for (i, (bytes, etag)) in objects.iter().enumerate() {
                        let start = (round * 50 * KIB + i as u64 * 7) % (3 * bs);
                        let r = start..(start + 3 * bs + round * 999).min(6 * bs + 100);
                        let got = get(&c, &format!("obj-{i}"), r.clone(), etag).await.unwrap();
                        assert!(got == bytes[r.start as usize..r.end as usize], "mount {m} round {round} obj {i}");
                    }
                }
                c.cache().flush().await;
                c.stats()
            })
        })
        .collect();
    let mut evictions = 0;
    for t in tasks {
        let stats = t.await.unwrap();
        assert!(stats.misses > 0 && stats.blocks_written > 0);
        evictions += stats.evictions;
    }
    let (_, on_disk) = blocks_on_disk(dir.path());
    assert!(on_disk <= limit, "{on_disk} > {limit} (one limit for both mounts)");
    assert_eq!(usage_file(dir.path()), on_disk, "the shared counter is exact");
    assert!(evictions > 0);
}

#[tokio::test]
async fn two_mounts_of_one_bucket_fetch_once_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) =
        (client(&open(config(dir.path(), MIB)).await, "b"), client(&open(config(dir.path(), MIB)).await, "b"));
    let object = data(3 * MIB + 5, 6);
    let etag = put(&first, "lib.jar", &object);
    assert_eq!(put(&second, "lib.jar", &object), etag);
    assert_eq!(get(&first, "lib.jar", 0..3 * MIB + 5, &etag).await.unwrap(), object);
    first.cache().flush().await;
    assert_eq!(get(&second, "lib.jar", 0..3 * MIB + 5, &etag).await.unwrap(), object);
    assert_eq!((gets(&first), gets(&second)), (1, 0), "the second executor's mount reads the first one's blocks");
    assert_eq!(second.stats().hits, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_stops_the_fetch_unless_another_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(config(dir.path(), MIB)).await;
    let c = Arc::new(CachingClient::new(Bucket::slow(InMemoryClient::new("b")), cache.clone()));
    let object = Arc::new(data(8 * MIB, 7));
    let etag = c.inner().mem.insert("k", object.to_vec());
    let wait_idle = || async {
        for _ in 0..500 {
            if c.inflight_blocks() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("blocks still in flight");
    };
    // Alone: dropping the body stops the GET soon after.
    let mut body = c.get_object("k", 0..8 * MIB, Some(&etag)).await.unwrap().body;
    assert_eq!(body.next().await.unwrap().unwrap(), &object[..256 * KIB as usize]);
    drop(body);
    wait_idle().await;
    cache.flush().await;
    let fetched = c.stats().bytes_fetched;
    assert!(fetched < 4 * MIB, "fetched {fetched}");
    // With a second reader waiting on the same blocks, the first going away changes nothing.
    let cached = blocks_on_disk(dir.path()).0 as u64;
    let mut first = c.get_object("k", 0..8 * MIB, Some(&etag)).await.unwrap().body;
    let second = tokio::spawn({
        let (c, etag) = (c.clone(), etag.clone());
        async move { get(&*c, "k", 0..8 * MIB, &etag).await }
    });
    let first_chunk = first.next().await.unwrap().unwrap();
    assert_eq!(&first_chunk[..], &object[..first_chunk.len()]);
    tokio::time::sleep(Duration::from_millis(30)).await; // the second reader has joined
    drop(first);
    assert!(second.await.unwrap().unwrap() == *object);
    wait_idle().await;
    cache.flush().await;
    assert_eq!(c.stats().bytes_fetched - fetched, (8 - cached) * MIB, "the rest fetched once");
    assert!(c.stats().joined >= 8 - cached);
}

#[tokio::test]
async fn a_block_another_mount_just_used_is_not_the_one_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 4 * KIB;
    let file = super::format::file_len(&ObjectId::new("b", "x", &ETag::new("\"mem-0000000000000001\""), bs), bs);
    let limited = || DiskCacheConfig { max_size: Some(4 * file), ..config(dir.path(), bs) };
    let (a, b) = (client(&open(limited()).await, "b"), client(&open(limited()).await, "b"));
    let etags: Vec<ETag> = ["x", "y", "z"].iter().map(|k| put(&a, k, &data(2 * bs, 8))).collect();
    for k in ["x", "y", "z"] {
        put(&b, k, &data(2 * bs, 8));
    }
    get(&a, "x", 0..2 * bs, &etags[0]).await.unwrap();
    get(&a, "y", 0..2 * bs, &etags[1]).await.unwrap();
    a.cache().flush().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    get(&b, "x", 0..2 * bs, &etags[0]).await.unwrap(); // hits: x is now the most recently used
    assert_eq!((gets(&b), b.stats().hits), (0, 2));
    get(&a, "z", 0..2 * bs, &etags[2]).await.unwrap(); // a must make room for two blocks
    a.cache().flush().await;
    let cached = |key: &str, etag: &ETag| a.cache().block_path(&ObjectId::new("b", key, etag, bs), 0).exists();
    assert!(cached("x", &etags[0]) && !cached("y", &etags[1]) && cached("z", &etags[2]));
}
