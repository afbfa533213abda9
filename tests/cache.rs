//! End to end: metadata and listing caches (and, with `--cache`, the disk block cache),
//! with S3 requests counted at the server.

mod common;

use std::process::Command;

use common::mount::mount;
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;

/// Seeds `count` small objects from several threads.
fn seed(s3: &LocalS3, keys: Vec<String>) {
    std::thread::scope(|scope| {
        for chunk in keys.chunks(keys.len().div_ceil(8)) {
            scope.spawn(move || {
                for key in chunk {
                    s3.put(key, b"x");
                }
            });
        }
    });
}

fn find(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("find").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn a_second_find_with_a_ttl_issues_no_list_requests() {
    let s3 = LocalS3::start();
    let keys: Vec<String> = (0..10_000).map(|i| format!("data/dir{:03}/obj{i:05}", i % 100)).collect();
    seed(&s3, keys);
    let m = mount(&s3, &["--metadata-ttl", "300"]);
    s3.reset_counts();
    let first = find(m.path());
    assert_eq!(first.len(), 1 + 1 + 100 + 10_000, "root, data, 100 dirs, 10,000 files");
    let lists_first = s3.request_count(S3Operation::ListObjectsV2);
    assert!(lists_first >= 100, "the first find lists every directory ({lists_first})");
    s3.reset_counts();
    let second = find(m.path());
    assert_eq!(second, first);
    assert_eq!(s3.request_count(S3Operation::ListObjectsV2), 0, "second find: 0 LIST");
    assert_eq!(s3.request_count(S3Operation::HeadObject), 0, "second find: 0 HEAD");
}

#[test]
fn without_a_ttl_every_find_lists_again() {
    let s3 = LocalS3::start();
    seed(&s3, (0..50).map(|i| format!("d{}/o{i}", i % 5)).collect());
    let m = mount(&s3, &[]);
    find(m.path());
    s3.reset_counts();
    // Let the kernel's 1 s directory entries expire.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    find(m.path());
    assert!(s3.request_count(S3Operation::ListObjectsV2) >= 6, "listings are never stale by default");
}

fn jar(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn read_all_concurrently(root: &std::path::Path, jars: &[(String, Vec<u8>)], readers: usize) {
    std::thread::scope(|scope| {
        for r in 0..readers {
            scope.spawn(move || {
                for i in 0..jars.len() {
                    let (key, data) = &jars[(i + r) % jars.len()];
                    let got = std::fs::read(root.join(key)).unwrap_or_else(|e| panic!("reader {r}: {key}: {e}"));
                    assert!(got == *data, "reader {r}: {key}: wrong bytes");
                }
            });
        }
    });
}

#[test]
fn spark_jars_are_fetched_once_and_a_remount_needs_no_requests_at_all() {
    let s3 = LocalS3::start();
    let jars: Vec<(String, Vec<u8>)> = [5usize, 12, 20, 33, 50]
        .iter()
        .enumerate()
        .map(|(i, mib)| (format!("jars/lib-{i}.jar"), jar(mib << 20, i as u32 + 1)))
        .collect();
    let total: u64 = jars.iter().map(|(_, d)| d.len() as u64).sum();
    for (key, data) in &jars {
        s3.put(key, data);
    }
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("mountpoint-cache");
    let cache_arg = cache_dir.to_str().unwrap();
    let args = ["--metadata-ttl", "indefinite", "--allow-other", "--cache", cache_arg];

    let m = mount(&s3, &args);
    s3.reset_counts();
    assert_eq!(std::fs::read_dir(m.path().join("jars")).unwrap().count(), jars.len());
    read_all_concurrently(m.path(), &jars, 10);
    assert_eq!(s3.get_bytes(), total, "10 concurrent readers: every byte fetched from S3 once");
    assert!(m.unmount().success());

    // Same cache, new process: known paths and their bytes come from the node.
    let m = mount(&s3, &args);
    s3.reset_counts();
    assert_eq!(std::fs::read_dir(m.path().join("jars")).unwrap().count(), jars.len());
    read_all_concurrently(m.path(), &jars, 10);
    assert_eq!(s3.total_request_count(), 0, "after the remount's bucket check: list + read: 0 GET, 0 HEAD, 0 LIST");
    assert!(m.unmount().success());

    // With a finite TTL instead: metadata is revalidated (one HEAD per file), data is not.
    let ttl_args = ["--metadata-ttl", "60", "--cache", cache_arg];
    let m = mount(&s3, &ttl_args);
    s3.reset_counts();
    read_all_concurrently(m.path(), &jars, 1);
    assert_eq!(s3.request_count(S3Operation::GetObject), 0, "blocks validated by ETag");
    // One HEAD per file, plus the one of the `jars` directory's own lookup (HEAD ∥ LIST), which
    // the lookup abandons once the LIST shows a directory: the server may or may not see it.
    let heads = s3.request_count(S3Operation::HeadObject);
    let files = jars.len() as u64;
    assert!(heads == files || heads == files + 1, "one HEAD per file (+ maybe the directory's): {heads}");
}

#[test]
fn a_changed_object_is_never_served_from_old_blocks_and_corrupt_blocks_are_refetched() {
    let s3 = LocalS3::start();
    let one = jar(3 << 20, 1);
    s3.put("data.bin", &one);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let args = ["--metadata-ttl", "1", "--cache", cache_dir.to_str().unwrap()];
    let m = mount(&s3, &args);
    assert!(std::fs::read(m.path().join("data.bin")).unwrap() == one);
    // Block files are written in the background; unmounting waits for them.
    assert!(m.unmount().success());

    // Flip a byte in every block file on disk: each is detected, dropped and fetched again.
    let blocks = block_files(&cache_dir);
    assert!(blocks.len() >= 3, "the 3 MiB object is cached as 1 MiB blocks ({})", blocks.len());
    for b in &blocks {
        let mut bytes = std::fs::read(b).unwrap();
        let i = bytes.len() - 10;
        bytes[i] ^= 0xff;
        std::fs::write(b, bytes).unwrap();
    }
    let m = mount(&s3, &args);
    s3.reset_counts();
    assert!(std::fs::read(m.path().join("data.bin")).unwrap() == one, "corrupt blocks are never served");
    assert_eq!(s3.get_bytes(), one.len() as u64, "every corrupt block was fetched again");

    // Another client replaces the object: after the TTL, the new bytes, never old blocks.
    let two = jar(3 << 20, 2);
    s3.put("data.bin", &two);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(std::fs::read(m.path().join("data.bin")).unwrap() == two);
}

/// Block files (`<cache>/mount-s3-cache/v1/<hh>/<hash>/<index>`) of one cached object, by index.
fn block_files(cache_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut blocks = vec![];
    let mut pending = vec![cache_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                pending.push(p);
            } else if p.file_name().unwrap().to_str().unwrap().bytes().all(|b| b.is_ascii_digit()) {
                blocks.push(p);
            }
        }
    }
    blocks.sort();
    blocks
}

#[test]
fn a_damaged_chunk_in_the_middle_of_a_block_is_never_served() {
    use std::os::unix::fs::FileExt;
    let s3 = LocalS3::start();
    let object = jar(3 << 20, 3);
    s3.put("data.bin", &object);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let args = ["--cache", cache_dir.to_str().unwrap()];
    let m = mount(&s3, &args);
    assert!(std::fs::read(m.path().join("data.bin")).unwrap() == object);
    assert!(m.unmount().success());
    // Block 1 (the second MiB): one flipped byte in its chunk 7 (of 64 KiB; the data ends the file).
    let blocks = block_files(&cache_dir);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    let mut bytes = std::fs::read(&blocks[1]).unwrap();
    let data_start = bytes.len() - (1 << 20);
    let at = (7 << 16) + 500;
    bytes[data_start + at] ^= 0x01;
    std::fs::write(&blocks[1], &bytes).unwrap();

    let m = mount(&s3, &args);
    s3.reset_counts();
    let file = std::fs::File::open(m.path().join("data.bin")).unwrap();
    let mut buf = vec![0u8; 4096];
    let offset = (1 << 20) + at - 100;
    file.read_exact_at(&mut buf, offset as u64).unwrap();
    assert!(buf == object[offset..offset + 4096], "the damaged byte is never served");
    assert_eq!(s3.get_bytes(), 1 << 20, "the damaged block, and only it, was fetched again");
    drop(file);
    assert!(std::fs::read(m.path().join("data.bin")).unwrap() == object);
}

#[test]
fn the_cache_stays_under_max_cache_size_and_reads_stay_correct() {
    let s3 = LocalS3::start();
    let objects: Vec<(String, Vec<u8>)> = (0..6).map(|i| (format!("o{i}"), jar(4 << 20, i + 10))).collect();
    for (k, d) in &objects {
        s3.put(k, d);
    }
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let m = mount(&s3, &["--cache", cache_dir.to_str().unwrap(), "--max-cache-size", "8"]);
    for _ in 0..2 {
        for (k, d) in &objects {
            assert!(std::fs::read(m.path().join(k)).unwrap() == *d, "{k}");
        }
    }
    let used: u64 = walk_size(&cache_dir);
    assert!(used <= (8 << 20) + (1 << 20) + (1 << 16), "cache uses {used} bytes, limit 8 MiB (+1 block)");
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        total += if p.is_dir() { walk_size(&p) } else { std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) };
    }
    total
}
