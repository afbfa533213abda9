//! The caching client over an in-memory bucket in temp dirs: exact bytes for every range shape,
//! request counts, invalid blocks, size limits, hostile keys and unusable directories.
//! Sharing, restarts and concurrency are in `tests_shared.rs`.

use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;

use super::{CachingClient, DiskBlockCache, DiskCacheConfig, ObjectId};
use crate::client::fault::FaultClient;
use crate::client::memory::InMemoryClient;
use crate::client::{ClientError, ClientErrorKind, CopyOptions, ETag, ObjectClient, PinnedCopy, S3Operation};

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;

pub(super) type Client = CachingClient<FaultClient<InMemoryClient>>;

/// Bytes that differ at every offset and between seeds.
pub(super) fn data(len: u64, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8) ^ seed as u64) as u8).collect()
}

/// A cache in `dir` with blocks of `block_size` and a generous byte limit.
pub(super) fn config(dir: &Path, block_size: u64) -> DiskCacheConfig {
    DiskCacheConfig { block_size, max_size: Some(1 << 30), ..DiskCacheConfig::new(dir) }
}

pub(super) async fn open(config: DiskCacheConfig) -> Arc<DiskBlockCache> {
    let cache = DiskBlockCache::open(config).unwrap();
    cache.ready().await;
    cache
}

pub(super) fn client(cache: &Arc<DiskBlockCache>, bucket: &str) -> Client {
    CachingClient::new(FaultClient::new(InMemoryClient::new(bucket), 0), cache.clone())
}

pub(super) fn put(c: &Client, key: &str, bytes: &[u8]) -> ETag {
    c.inner().inner().insert(key, bytes.to_vec())
}

pub(super) fn gets(c: &Client) -> u64 {
    c.inner().calls(S3Operation::GetObject)
}

/// The body of a GET through `c`, after checking the response names the version asked for.
pub(super) async fn get(
    c: &impl ObjectClient,
    key: &str,
    range: Range<u64>,
    etag: &ETag,
) -> Result<Vec<u8>, ClientError> {
    Ok(get_sized(c, key, range, etag).await?.1)
}

/// The object size a GET reported, and its body.
pub(super) async fn get_sized(
    c: &impl ObjectClient,
    key: &str,
    range: Range<u64>,
    etag: &ETag,
) -> Result<(u64, Vec<u8>), ClientError> {
    let response = c.get_object(key, range, Some(etag)).await?;
    assert_eq!(&response.etag, etag);
    let mut out = Vec::new();
    let mut body = response.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok((response.object_size, out))
}

/// Every regular file under `dir`, with its size.
pub(super) fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out
}

/// Block files under the cache in `dir`, and their total size.
pub(super) fn blocks_on_disk(dir: &Path) -> (usize, u64) {
    let blocks: Vec<_> = files(&dir.join("mount-s3-cache/v1"));
    (blocks.len(), blocks.iter().map(|(_, n)| n).sum())
}

#[tokio::test]
async fn every_range_shape_is_exact_and_a_second_pass_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * KIB;
    let cache = open(config(dir.path(), bs)).await;
    let c = client(&cache, "bucket");
    let size = 3 * bs + 1000;
    let object = data(size, 1);
    let etag = put(&c, "dir/file.jar", &object);
    let ranges: Vec<Range<u64>> = vec![
        10..20,         // inside one block
        bs..2 * bs,     // exactly one block
        bs - 7..bs + 9, // across a boundary
        1..3 * bs + 5,  // unaligned at both ends, four blocks
        0..size,        // the whole object
        3 * bs..size,   // the short last block
        size - 1..size, // its last byte
        2 * bs + 100..2 * bs + 101,
        100..size + 5000, // past the end: cut at the end, as S3 does
    ];
    for pass in 0..2 {
        let before = gets(&c);
        for r in &ranges {
            let want = &object[r.start as usize..r.end.min(size) as usize];
            let (object_size, got) = get_sized(&c, "dir/file.jar", r.clone(), &etag).await.unwrap();
            assert_eq!((object_size, &got[..]), (size, want), "pass {pass} range {r:?}");
        }
        cache.flush().await;
        if pass == 1 {
            assert_eq!(gets(&c), before, "the second pass is served from disk");
        }
    }
    assert!(c.inner().get_bytes_requested() <= 4 * bs, "each block fetched once");
    let stats = c.stats();
    assert_eq!((stats.misses, stats.blocks_written), (4, 4));
    assert!(stats.hits > 0 && stats.bytes_from_cache > 0);
    assert_eq!(c.inflight_blocks(), 0);
    // Files 0600 in directories 0700, and the counter matches the disk.
    let (n, bytes) = blocks_on_disk(dir.path());
    assert_eq!((n, bytes), (4, stats.size_bytes));
    let id = ObjectId::new("bucket", "dir/file.jar", &etag, bs);
    let block = cache.block_path(&id, 3);
    assert_eq!(std::fs::metadata(&block).unwrap().permissions().mode() & 0o777, 0o600);
    for d in [block.parent().unwrap(), &dir.path().join("mount-s3-cache"), &dir.path().join("mount-s3-cache/v1")] {
        assert_eq!(std::fs::metadata(d).unwrap().permissions().mode() & 0o777, 0o700, "{d:?}");
    }
}

#[tokio::test]
async fn empty_objects_and_requests_without_if_match_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(config(dir.path(), 64 * KIB)).await;
    let c = client(&cache, "bucket");
    let empty = put(&c, "empty", b"");
    let e = get(&c, "empty", 0..1, &empty).await.unwrap_err();
    assert_eq!(e.kind, ClientErrorKind::InvalidRange);
    put(&c, "k", &data(100 * KIB, 2));
    for _ in 0..2 {
        let response = c.get_object("k", 0..100, None).await.unwrap();
        assert_eq!(response.body.map(|b| b.unwrap().len()).collect::<Vec<_>>().await.iter().sum::<usize>(), 100);
    }
    assert_eq!(gets(&c), 3, "every request went to the bucket");
    cache.flush().await;
    assert_eq!(blocks_on_disk(dir.path()).0, 0);
    assert_eq!(c.inflight_blocks(), 0);
}

#[tokio::test]
async fn a_changed_object_is_fetched_again_and_never_served_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * KIB;
    let cache = open(config(dir.path(), bs)).await;
    let c = client(&cache, "bucket");
    let old = data(3 * bs, 3);
    let old_etag = put(&c, "k", &old);
    assert_eq!(get(&c, "k", 0..3 * bs, &old_etag).await.unwrap(), old);
    cache.flush().await;
    let new = data(2 * bs + 5, 4);
    let new_etag = put(&c, "k", &new);
    let before = gets(&c);
    assert_eq!(get(&c, "k", 0..2 * bs + 5, &new_etag).await.unwrap(), new);
    assert_eq!(gets(&c), before + 1);
    assert_eq!(get_sized(&c, "k", 0..10, &new_etag).await.unwrap().0, 2 * bs + 5);
    // A handle still pinned to the old version gets the old version whole (a snapshot), and one
    // asking for a block the cache does not have gets S3's answer: the object changed.
    assert_eq!(get(&c, "k", 0..10, &old_etag).await.unwrap(), &old[..10]);
    std::fs::remove_file(cache.block_path(&ObjectId::new("bucket", "k", &old_etag, bs), 2)).unwrap();
    let e = get(&c, "k", 2 * bs..3 * bs, &old_etag).await.unwrap_err();
    assert_eq!(e.kind, ClientErrorKind::PreconditionFailed);
}

fn pinned_copy(source_key: &str, source_etag: &ETag, dest_key: &str, dest_etag: &ETag, size: u64) -> PinnedCopy {
    let (source_key, dest_key) = (source_key.to_string(), dest_key.to_string());
    PinnedCopy { source_key, source_etag: source_etag.clone(), dest_key, dest_etag: dest_etag.clone(), size }
}

/// After a copy pinned to the source's ETag, the destination is read from the source's blocks
/// (rewritten under its key and ETag): no GET. The source's blocks are gone (it was renamed);
/// a source whose cached blocks are of another version gives the destination nothing.
#[tokio::test]
async fn a_pinned_copy_reuses_the_sources_blocks_and_only_those_of_the_copied_version() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * KIB;
    let cache = open(config(dir.path(), bs)).await;
    let c = client(&cache, "bucket");
    let bytes = data(4 * bs + 7, 5);
    let len = bytes.len() as u64;
    let etag = put(&c, "src", &bytes);
    assert_eq!(get(&c, "src", 0..len, &etag).await.unwrap(), bytes);
    let pinned = CopyOptions { source_if_match: Some(etag.clone()), ..CopyOptions::default() };
    let copy = c.copy_object("src", "dst", &pinned).await.unwrap();
    c.copied(&[pinned_copy("src", &etag, "dst", &copy.etag, len)]).await;
    let before = gets(&c);
    assert_eq!(get(&c, "dst", 0..len, &copy.etag).await.unwrap(), bytes);
    assert_eq!(gets(&c), before, "every block of the copy came from disk");
    let src_block = cache.block_path(&ObjectId::new("bucket", "src", &etag, bs), 0);
    assert!(!src_block.exists(), "the source's blocks were moved, not duplicated");

    // Cached: version 1 of "other". Copied: version 2. Nothing of version 1 is reused.
    let v1 = data(2 * bs, 6);
    let v1_etag = put(&c, "other", &v1);
    assert_eq!(get(&c, "other", 0..2 * bs, &v1_etag).await.unwrap(), v1);
    let v2 = data(2 * bs, 7);
    let v2_etag = put(&c, "other", &v2);
    let pinned = CopyOptions { source_if_match: Some(v2_etag.clone()), ..CopyOptions::default() };
    let copy = c.copy_object("other", "moved", &pinned).await.unwrap();
    c.copied(&[pinned_copy("other", &v2_etag, "moved", &copy.etag, 2 * bs)]).await;
    let before = gets(&c);
    assert_eq!(get(&c, "moved", 0..2 * bs, &copy.etag).await.unwrap(), v2);
    assert_eq!(gets(&c), before + 1, "fetched: the cached blocks were of another version");
}

#[tokio::test]
async fn invalid_blocks_are_detected_removed_and_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * KIB;
    let cache = open(config(dir.path(), bs)).await;
    let c = client(&cache, "bucket");
    let object = data(5 * bs - 10, 5);
    let etag = put(&c, "k", &object);
    let other = put(&c, "other", &data(bs, 6));
    assert_eq!(get(&c, "k", 0..5 * bs, &etag).await.unwrap(), object);
    assert_eq!(get(&c, "other", 0..bs, &other).await.unwrap().len(), bs as usize);
    cache.flush().await;
    let id = ObjectId::new("bucket", "k", &etag, bs);
    let path = |i| cache.block_path(&id, i);
    // Block 1: one flipped data byte. Block 2: truncated. Block 3: a valid block of another object.
    let mut b1 = std::fs::read(path(1)).unwrap();
    let at = b1.len() - 1000;
    b1[at] ^= 0x40;
    std::fs::write(path(1), b1).unwrap();
    let b2 = std::fs::read(path(2)).unwrap();
    std::fs::write(path(2), &b2[..b2.len() / 2]).unwrap();
    std::fs::copy(cache.block_path(&ObjectId::new("bucket", "other", &other, bs), 0), path(3)).unwrap();
    let (before, bytes_before) = (gets(&c), c.inner().get_bytes_requested());
    assert_eq!(get(&c, "k", 0..5 * bs, &etag).await.unwrap(), object, "never the damaged bytes");
    assert_eq!(gets(&c) - before, 3);
    assert_eq!(c.inner().get_bytes_requested() - bytes_before, 3 * bs, "only the three bad blocks");
    assert_eq!(c.stats().invalid_blocks, 3);
    cache.flush().await;
    // Stored again, valid: the next read is free, and the counter still matches the disk.
    let before = gets(&c);
    assert_eq!(get(&c, "k", 0..5 * bs, &etag).await.unwrap(), object);
    assert_eq!(gets(&c), before);
    // Removing a tampered file subtracts what it really took, so the counter keeps the drift
    // the tampering made (here an over-count: the truncated block), until a lone restart recounts.
    let on_disk = blocks_on_disk(dir.path()).1;
    assert!(c.stats().size_bytes > on_disk);
    drop(cache);
    close(c).await;
    assert_eq!(open(config(dir.path(), bs)).await.stats().size_bytes, on_disk);
}

/// Drops a client and waits until its cache is gone (its background work holds it a moment).
pub(super) async fn close(c: Client) {
    let cache = Arc::downgrade(c.cache());
    c.cache().flush().await;
    drop(c);
    for _ in 0..1000 {
        if cache.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the cache is still held");
}

#[tokio::test]
async fn the_cache_never_grows_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 64 * KIB;
    // In-memory ETags all have the same length.
    let block_file =
        super::format::file_len(&ObjectId::new("bucket", "obj-0", &ETag::new("\"mem-0000000000000001\""), bs), bs);
    let limit = 5 * block_file;
    let cache = open(DiskCacheConfig { max_size: Some(limit), ..config(dir.path(), bs) }).await;
    let c = client(&cache, "bucket");
    let objects: Vec<(Vec<u8>, ETag)> = (0..3)
        .map(|i| {
            let bytes = data(8 * bs, i as u8);
            let etag = put(&c, &format!("obj-{i}"), &bytes);
            (bytes, etag)
        })
        .collect();
    for round in 0..4u64 {
        for (i, (bytes, etag)) in objects.iter().enumerate() {
            let start = (round * 37 * KIB + i as u64 * 11) % (4 * bs);
            let r = start..start + 3 * bs + 123;
            let got = get(&c, &format!("obj-{i}"), r.clone(), etag).await.unwrap();
            assert_eq!(got, &bytes[r.start as usize..r.end as usize]);
            cache.flush().await;
            let (_, on_disk) = blocks_on_disk(dir.path());
            assert!(on_disk <= limit, "round {round}: {on_disk} > {limit}");
            assert_eq!(c.stats().size_bytes, on_disk);
        }
    }
    assert!(c.stats().evictions > 0);
}

#[tokio::test]
async fn keys_that_look_like_paths_never_leave_the_cache_dir() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cache");
    let cache = open(config(&dir, 4 * KIB)).await;
    let c = client(&cache, "bucket");
    let long = "d/".repeat(3000) + "f";
    let keys = ["../../x", "a/../../b", "/etc/passwd", "..", ".", "a//b", "..\\..\\x", "%2e%2e/x", &long];
    for (i, key) in keys.iter().enumerate() {
        let bytes = data(10 * KIB, i as u8);
        let etag = put(&c, key, &bytes);
        assert_eq!(get(&c, key, 0..10 * KIB, &etag).await.unwrap(), bytes, "{key}");
        cache.flush().await;
        let before = gets(&c);
        assert_eq!(get(&c, key, 1..10 * KIB, &etag).await.unwrap(), &bytes[1..], "{key}");
        assert_eq!(gets(&c), before, "{key} cached");
    }
    let names: Vec<String> =
        std::fs::read_dir(parent.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["cache"], "nothing beside the cache dir");
    let root = dir.join("mount-s3-cache/v1");
    for (path, _) in files(&dir) {
        let Ok(rel) = path.strip_prefix(&root) else {
            assert!(["usage", "members"].iter().any(|f| path == dir.join("mount-s3-cache").join(f)), "{path:?}");
            continue;
        };
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(parts.len(), 3, "{rel:?}");
        assert!(parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())), "{rel:?}");
    }
    assert_eq!(blocks_on_disk(&dir).0, 3 * keys.len());
}

#[tokio::test]
async fn reads_succeed_when_the_cache_dir_is_unusable_or_full() {
    let parent = tempfile::tempdir().unwrap();
    let object = data(200 * KIB, 7);
    let read_twice = |c: Client| {
        let object = object.clone();
        async move {
            let etag = put(&c, "k", &object);
            for _ in 0..2 {
                assert_eq!(get(&c, "k", 3..200 * KIB, &etag).await.unwrap(), &object[3..]);
                c.cache().flush().await;
            }
            c
        }
    };
    // The directory cannot be created (a file is in the way): caching off, reads from S3.
    let file = parent.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let cache = open(config(&file.join("cache"), 64 * KIB)).await;
    assert!(!cache.is_enabled());
    let c = read_twice(client(&cache, "b")).await;
    assert_eq!(gets(&c), 2);
    // A directory others may write to is refused: they could plant blocks.
    let open_dir = parent.path().join("open");
    std::fs::create_dir_all(open_dir.join("mount-s3-cache")).unwrap();
    std::fs::set_permissions(open_dir.join("mount-s3-cache"), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(!open(config(&open_dir, 64 * KIB)).await.is_enabled());
    // So is a --cache directory anyone may write to (they could swap ours), unless sticky.
    let shared = parent.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(!open(config(&shared, 64 * KIB)).await.is_enabled());
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert!(open(config(&shared, 64 * KIB)).await.is_enabled(), "like /tmp");
    // Writes failing after start (the block tree replaced by a file, as good as read-only).
    let broken = parent.path().join("broken");
    let cache = open(config(&broken, 64 * KIB)).await;
    let v1 = broken.join("mount-s3-cache/v1");
    std::fs::remove_dir(&v1).unwrap();
    std::fs::write(&v1, b"not a directory").unwrap();
    let c = read_twice(client(&cache, "b")).await;
    assert_eq!(gets(&c), 2);
    assert!(c.stats().write_errors > 0);
    // A full file system: no room can be made, nothing is stored.
    let full = parent.path().join("full");
    let cache = open(DiskCacheConfig { max_size: None, min_free_ratio: 1.0, ..config(&full, 64 * KIB) }).await;
    let c = read_twice(client(&cache, "b")).await;
    assert_eq!(gets(&c), 2);
    assert_eq!(blocks_on_disk(&full).0, 0);
    assert!(c.stats().writes_skipped > 0);
    // Free-space mode with room (a ratio of 0, so the test does not depend on this disk's state).
    let roomy = parent.path().join("roomy");
    let free = DiskCacheConfig { max_size: None, min_free_ratio: 0.0, ..config(&roomy, 64 * KIB) };
    let c = read_twice(client(&open(free).await, "b")).await;
    assert_eq!((gets(&c), blocks_on_disk(&roomy).0), (1, 4));
}

#[tokio::test]
async fn a_zero_max_size_disables_the_cache() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cache");
    let cache = open(DiskCacheConfig { max_size: Some(0), ..config(&dir, 64 * KIB) }).await;
    assert!(!cache.is_enabled());
    let c = client(&cache, "b");
    let etag = put(&c, "k", &data(10, 0));
    for _ in 0..2 {
        assert_eq!(get(&c, "k", 0..10, &etag).await.unwrap(), data(10, 0));
    }
    assert_eq!(gets(&c), 2);
    assert!(!dir.exists(), "nothing created");
    assert_eq!(
        DiskBlockCache::open(DiskCacheConfig { block_size: 0, ..config(&dir, 1) }).unwrap_err(),
        super::CacheError::InvalidBlockSize(0)
    );
}
