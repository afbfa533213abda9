//! End to end: the shared cache (`--cache-xz BUCKET`). Two mounts of one source bucket ("two
//! nodes") share a cache bucket on the same local server; requests are counted per bucket at the
//! server.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use common::data::pattern;
use common::helper::HelperClient;
use common::mount::TestMount;
use common::s3_server::LocalS3;
use mount_s3::client::cache::shared::format::{block_key, block_metadata, key_prefix};

const MIB: usize = 1024 * 1024;

struct Fleet {
    s3: LocalS3,
    cache: String,
    cache_helper: HelperClient,
}

fn fleet() -> Fleet {
    let s3 = LocalS3::start();
    let cache = format!("{}-xz", s3.bucket);
    s3.create_bucket(&cache);
    let cache_helper = HelperClient::with_own_runtime(s3.sdk_client(), &cache);
    Fleet { s3, cache, cache_helper }
}

impl Fleet {
    fn mount(&self, extra: &[&str]) -> TestMount {
        let mut args = vec!["--endpoint-url", &self.s3.endpoint, "--force-path-style", "--region", "us-east-1"];
        args.extend_from_slice(&["--cache-xz", &self.cache]);
        args.extend_from_slice(extra);
        TestMount::new(&self.s3.env_vars(), &self.s3.bucket, &args)
    }

    /// Block objects in the cache bucket (keys ending in the 10-digit index).
    fn blocks(&self) -> Vec<String> {
        let is_block =
            |k: &String| k.rsplit('/').next().is_some_and(|l| l.len() == 10 && l.bytes().all(|b| b.is_ascii_digit()));
        self.cache_helper.list_keys("").into_iter().filter(is_block).collect()
    }

    /// Waits (bounded) until the cache bucket holds `n` block objects: nodes store blocks in the
    /// background after serving them.
    fn wait_for_blocks(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let blocks = self.blocks();
            if blocks.len() >= n || Instant::now() > deadline {
                return blocks;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn src_gets(&self) -> u64 {
        self.s3.request_count_in(&self.s3.bucket, "GetObject")
    }

    /// The key of block `index` of `key` at `etag` (1 MiB blocks).
    fn block_key(&self, key: &str, etag: &str, index: u64) -> String {
        block_key(&key_prefix(&self.s3.bucket, MIB as u64), key, etag, index)
    }

    /// Writes a block object as a node would (or as a foreign writer, with other bytes).
    fn put_block(&self, cache_key: &str, data: &[u8], metadata: HashMap<String, String>) {
        let (client, bucket, key) = (self.cache_helper.sdk().clone(), self.cache.clone(), cache_key.to_string());
        let body = ByteStream::from(data.to_vec());
        self.cache_helper.block_on(async move {
            client.put_object().bucket(bucket).key(key).set_metadata(Some(metadata)).body(body).send().await.unwrap()
        });
    }
}

fn read(m: &TestMount, name: &str) -> Vec<u8> {
    std::fs::read(m.path().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}\n{}", m.output()))
}

/// The closing scenario of issue 11: node A reads, node B reads the same objects and gets every
/// block from the cache bucket; each block came from the source once.
#[test]
fn two_nodes_share_one_cache_bucket_and_each_block_comes_from_the_source_once() {
    let f = fleet();
    let big = pattern(5 * MIB + 123, 1);
    let small = pattern(1000, 2);
    f.s3.put("data/big", &big);
    f.s3.put("data/small", &small);
    let logs = tempfile::tempdir().unwrap();
    let log_arg = logs.path().to_string_lossy().into_owned();
    let (a, b) = (f.mount(&[]), f.mount(&["--log-metrics", "-l", &log_arg]));
    f.s3.reset_counts();

    assert_eq!(read(&a, "data/big"), big);
    assert_eq!(read(&a, "data/small"), small);
    let blocks = f.wait_for_blocks(7);
    assert_eq!(blocks.len(), 6 + 1, "one block object per MiB of each object: {blocks:?}");
    let after_a = (f.src_gets(), f.s3.get_bytes_in(&f.s3.bucket));
    assert_eq!(after_a.1, (big.len() + small.len()) as u64, "node A read every byte from the source once");
    let cache_a = f.s3.request_counts_in(&f.cache);

    assert_eq!(read(&b, "data/big"), big);
    assert_eq!(read(&b, "data/small"), small);
    let source_b = f.src_gets() - after_a.0;
    let cache_all = f.s3.request_counts_in(&f.cache);
    let cache_gets_b =
        cache_all.get("GetObject").copied().unwrap_or(0) - cache_a.get("GetObject").copied().unwrap_or(0);
    let cache_puts_b =
        cache_all.get("PutObject").copied().unwrap_or(0) - cache_a.get("PutObject").copied().unwrap_or(0);
    println!(
        "two-node counts: node A: {} source GETs ({} bytes), cache bucket {:?}; node B: {source_b} source GETs, \
         {cache_gets_b} cache GETs, {cache_puts_b} cache PUTs; source totals {:?}",
        after_a.0,
        after_a.1,
        cache_a,
        f.s3.request_counts_in(&f.s3.bucket)
    );
    assert_eq!(source_b, 0, "node B read nothing from the source");
    assert_eq!(f.s3.get_bytes_in(&f.s3.bucket), after_a.1);
    assert_eq!(cache_gets_b, 7, "node B: one cache GET per block");
    assert_eq!(cache_puts_b, 0, "node B stored nothing");
    // B's metrics summary counts blocks from the shared cache as hits.
    assert!(b.unmount().success());
    let mut text = String::new();
    for entry in std::fs::read_dir(logs.path()).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    let line = text.lines().find_map(|l| l.split("summary: cache: ").nth(1)).unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("hits=7 misses=0 "), "{line}");
}

/// Both nodes read the same object at the same moment: the leases make each block come from the
/// source once between them.
#[test]
fn two_nodes_reading_at_once_fetch_each_block_from_the_source_once() {
    let f = fleet();
    let data = pattern(12 * MIB + 7, 3);
    f.s3.put("shared/obj", &data);
    let (a, b) = (f.mount(&[]), f.mount(&[]));
    f.s3.reset_counts();
    std::thread::scope(|s| {
        let ta = s.spawn(|| read(&a, "shared/obj"));
        let tb = s.spawn(|| read(&b, "shared/obj"));
        assert!(ta.join().unwrap() == data, "node A read the object");
        assert!(tb.join().unwrap() == data, "node B read the object");
    });
    println!(
        "concurrent two-node counts: source {:?} ({} bytes), cache bucket {:?}",
        f.s3.request_counts_in(&f.s3.bucket),
        f.s3.get_bytes_in(&f.s3.bucket),
        f.s3.request_counts_in(&f.cache)
    );
    // Known race, seen once in 20-odd runs under load: a leased run that the holder's prefetch
    // cancels is released, the waiting node fetches it, and the holder's reader then fetches it
    // too. So at most a couple of blocks may come twice; never the whole object twice.
    let fetched = f.s3.get_bytes_in(&f.s3.bucket);
    assert!(
        fetched >= data.len() as u64 && fetched <= data.len() as u64 + 2 * MIB as u64,
        "each block from the source once (at most two blocks twice): {fetched} bytes for {}",
        data.len()
    );
    assert_eq!(f.wait_for_blocks(13).len(), 13);
}

/// After the source object changes, no node serves the old version's blocks: the new ETag gives
/// new keys.
#[test]
fn a_changed_source_object_is_never_served_from_old_blocks() {
    let f = fleet();
    let v1 = pattern(2 * MIB + 5, 4);
    f.s3.put("obj", &v1);
    let a = f.mount(&[]);
    assert_eq!(read(&a, "obj"), v1);
    f.wait_for_blocks(3);
    drop(a);
    let v2 = pattern(2 * MIB + 5, 5);
    f.s3.put("obj", &v2);
    f.s3.reset_counts();
    let b = f.mount(&[]);
    assert_eq!(read(&b, "obj"), v2, "the new version, not the cached old one");
    assert_eq!(f.s3.get_bytes_in(&f.s3.bucket), v2.len() as u64, "the new version came from the source");
    assert_eq!(f.wait_for_blocks(6).len(), 6, "blocks of both versions, under different keys");
}

/// Block objects that are damaged, or belong to another object, are ignored (and replaced).
#[test]
fn corrupted_or_foreign_block_objects_are_ignored() {
    let f = fleet();
    let data = pattern(2 * MIB + 11, 6);
    let other = pattern(MIB, 7);
    let etag = f.s3.put("victim", &data);
    let other_etag = f.s3.put("other", &other);
    let victim0 = f.block_key("victim", &etag, 0);
    let victim1 = f.block_key("victim", &etag, 1);
    // Block 0: the right metadata over other bytes (a flipped byte).
    let mut flipped = data[..MIB].to_vec();
    flipped[77] ^= 1;
    let meta0 = block_metadata(&f.s3.bucket, "victim", &etag, 0, 0, &data[..MIB], data.len() as u64);
    f.put_block(&victim0, &flipped, meta0);
    // Block 1: a genuine block of another object, stored under the victim's key.
    let meta_other = block_metadata(&f.s3.bucket, "other", &other_etag, 0, 0, &other, other.len() as u64);
    f.put_block(&victim1, &other[..MIB], meta_other);
    // Block 2: no metadata at all.
    f.put_block(&f.block_key("victim", &etag, 2), &data[2 * MIB..], HashMap::new());
    f.s3.reset_counts();

    let m = f.mount(&[]);
    assert_eq!(read(&m, "victim"), data, "only the source's bytes reach the reader");
    assert_eq!(f.s3.get_bytes_in(&f.s3.bucket), data.len() as u64);
    // The node replaced the bad objects with good ones: a second node reads them all.
    drop(m);
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.s3.request_count_in(&f.cache, "PutObject") < 1 + 3 + 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    f.s3.reset_counts();
    let n = f.mount(&[]);
    assert_eq!(read(&n, "victim"), data);
    assert_eq!(f.src_gets(), 0, "the repaired blocks served the second node");
}

/// A node that finds another node's live lease on a block waits for that block instead of
/// fetching it; one whose lease expires without the block falls back to the source.
#[test]
fn a_node_waits_for_a_block_another_node_is_fetching() {
    let f = fleet();
    let data = pattern(3 * MIB, 8);
    let etag = f.s3.put("wait/obj", &data);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    // "Node A" holds the lease on block 0 for 25 s and is fetching it.
    let lease = format!("{}.lease", f.block_key("wait/obj", &etag, 0));
    f.cache_helper.put(&lease, format!("expires-unix-ms={}\n", now_ms + 25_000));
    let b = f.mount(&[]);
    f.s3.reset_counts();
    std::thread::scope(|s| {
        let reader = s.spawn(|| read(&b, "wait/obj"));
        // Node A stores its block a moment later; marked bytes show where B's block came from.
        std::thread::sleep(Duration::from_millis(1500));
        let marked = pattern(MIB, 99);
        let meta = block_metadata(&f.s3.bucket, "wait/obj", &etag, 0, 0, &marked, data.len() as u64);
        f.put_block(&f.block_key("wait/obj", &etag, 0), &marked, meta);
        let got = reader.join().unwrap();
        assert!(got[..MIB] == marked[..], "block 0 is the one node A stored, not a fetch of B's own");
        assert!(got[MIB..] == data[MIB..]);
    });
    assert_eq!(f.s3.get_bytes_in(&f.s3.bucket), 2 * MIB as u64, "B fetched only blocks 1 and 2");

    // A lease that expires (its node died) makes the waiter fetch the block itself.
    let etag2 = f.s3.put("wait/second", &data[..MIB + 1]);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let lease = format!("{}.lease", f.block_key("wait/second", &etag2, 0));
    f.cache_helper.put(&lease, format!("expires-unix-ms={}\n", now_ms + 2_000));
    f.s3.reset_counts();
    assert!(read(&b, "wait/second") == data[..MIB + 1], "served from the source after the lease expired");
    assert_eq!(f.s3.get_bytes_in(&f.s3.bucket), MIB as u64 + 1);
}

/// A cache bucket that cannot be written fails the mount with a message naming it (here the
/// identity may only list: the source's probe passes, the cache's metadata PUT is refused).
#[test]
fn an_unusable_cache_bucket_fails_the_mount() {
    let f = fleet();
    let args =
        ["--endpoint-url", &f.s3.endpoint, "--force-path-style", "--region", "us-east-1", "--cache-xz", &f.cache];
    let err = TestMount::try_new(&f.s3.list_only_env_vars(), &f.s3.bucket, &args).err().expect("the mount fails");
    assert!(err.contains(&format!("cannot use --cache-xz {}", f.cache)), "{err}");
    assert!(err.contains("AccessDenied"), "{err}");
}

/// With `--cache` too: the local disk first, then the shared bucket, then the source. Node B's
/// first read comes from the bucket (and fills its disk); after a restart it reads from its disk
/// alone.
#[test]
fn the_local_disk_cache_comes_first_then_the_bucket_then_the_source() {
    let f = fleet();
    let data = pattern(3 * MIB + 3, 9);
    f.s3.put("layered", &data);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = f.mount(&["--cache", dir_a.path().to_str().unwrap()]);
    assert_eq!(read(&a, "layered"), data);
    f.wait_for_blocks(4);
    f.s3.reset_counts();

    let b = f.mount(&["--cache", dir_b.path().to_str().unwrap()]);
    assert_eq!(read(&b, "layered"), data);
    assert_eq!((f.src_gets(), f.s3.request_count_in(&f.cache, "GetObject")), (0, 4), "B: all from the bucket");
    drop(b);
    f.s3.reset_counts();
    let b = f.mount(&["--cache", dir_b.path().to_str().unwrap()]);
    assert_eq!(read(&b, "layered"), data);
    assert_eq!((f.src_gets(), f.s3.request_count_in(&f.cache, "GetObject")), (0, 0), "B again: all from its disk");
}

/// The cache bucket on the S3 Express One Zone emulator (a directory bucket: session
/// authentication, `--x-s3` name), with a directory bucket as the source on the same emulator:
/// node B reads everything node A read from the cache bucket, none of it from the source.
#[test]
fn a_directory_bucket_on_the_express_emulator_works_as_the_cache_bucket() {
    use common::express::{ExpressOptions, ZONE};
    use common::mem_server::MemS3;
    let server = MemS3::start_express(ExpressOptions::default());
    let cache = format!("xzcache--{ZONE}--x-s3");
    server.create_bucket(&cache);
    let data = pattern(2 * MIB + 1, 10);
    server.put("obj", data.clone());
    let args =
        ["--endpoint-url", &server.endpoint, "--force-path-style", "--region", "us-east-1", "--cache-xz", &cache];
    let a = TestMount::new(&server.env_vars(), &server.bucket, &args);
    assert_eq!(read(&a, "obj"), data);
    let (status, a_log) = a.unmount_with_output();
    assert!(status.success(), "node A's block writes are flushed at unmount:\n{a_log}");
    let b = TestMount::new(&server.env_vars(), &server.bucket, &args);
    server.reset_counts();
    assert_eq!(read(&b, "obj"), data);
    let counts = server.request_counts();
    let (status, b_log) = b.unmount_with_output();
    assert!(status.success(), "{b_log}");
    println!("express emulator, node B: {counts:?}");
    let logs = format!("{counts:?}\nnode A:\n{a_log}\nnode B:\n{b_log}");
    // Node B's own account of where its blocks came from: none from the source, no errors.
    assert!(b_log.contains(" misses: 0,") && b_log.contains("errors: 0 }"), "B fetched from the source: {logs}");
    assert!(!b_log.contains("{ hits: 0,"), "B read nothing from the cache bucket: {logs}");
    // 3 blocks; under load a block whose first reader moved on before it arrived is looked up
    // once more (CI saw 4 GETs once), never fetched from the source (checked above).
    let gets = server.request_count_by_name("GetObject");
    assert!((3..=4).contains(&gets), "3 blocks from the cache bucket: {logs}");
    assert_eq!(server.request_count_by_name("PutObject"), 0, "{logs}");
}
