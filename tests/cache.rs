//! End to end: metadata and listing caches (and, with `--cache`, the disk block cache),
//! with S3 requests counted at the server.

mod common;

use std::process::Command;

use common::mount::TestMount;
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;

fn mount(s3: &LocalS3, extra: &[&str]) -> TestMount {
    let mut args = vec!["--endpoint-url", &s3.endpoint, "--force-path-style", "--region", "us-east-1"];
    args.extend_from_slice(extra);
    TestMount::new(&s3.env_vars(), &s3.bucket, &args)
}

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
