//! End to end: how many S3 requests everyday commands cost with default flags (issue 15).
//! Counted by the in-memory server, which lists ETags as S3 does; exact, never timed.
//!
//! The floor under Mountpoint's consistency model (`--metadata-ttl minimal`): every lookup the
//! kernel sends asks S3 (no positive or negative caching beyond the kernel's own TTL), and a
//! lookup must rule out a directory of the same name, which only a listing can; a read needs a
//! GET. So reading a small file costs at most one listing and one GET (no listing when the
//! kernel still holds the entry readdirplus gave it), and writing a new small file costs the
//! listings of the kernel's lookups (`cp`: one for its `stat`, one for the `open`) and one
//! PutObject.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::data::pattern;
use common::mem_server::MemS3;
use common::mount::mount;

fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

fn count(counts: &HashMap<String, u64>, op: &str) -> u64 {
    counts.get(op).copied().unwrap_or(0)
}

#[test]
fn cat_of_every_small_file_in_a_directory_costs_at_most_two_requests_a_file() {
    const FILES: u64 = 40;
    let s3 = MemS3::start();
    let mut expected = HashMap::new();
    for i in 0..FILES {
        let data = pattern(64 << 10, i);
        s3.put(&format!("d/f{i:03}"), data.clone());
        expected.insert(format!("f{i:03}"), data);
    }
    let m = mount(&s3, &[]);
    let out = tempfile::tempdir().unwrap();
    s3.reset_counts();
    sh(&format!(
        r#"for f in "{}"/d/*; do cat "$f" > "{}/$(basename "$f")"; done"#,
        m.path().display(),
        out.path().display()
    ));
    for (name, data) in &expected {
        assert_eq!(&std::fs::read(out.path().join(name)).unwrap(), data, "{name}");
    }
    let counts = s3.request_counts();
    assert_eq!(count(&counts, "GetObject"), FILES, "{counts:?}");
    assert_eq!(count(&counts, "HeadObject"), 0, "{counts:?}");
    // The lookup of d and the readdir's one page, then at most one listing per file.
    assert!(count(&counts, "ListObjectsV2") <= 2 + FILES, "{counts:?}");
    assert_eq!(s3.total_request_count(), count(&counts, "GetObject") + count(&counts, "ListObjectsV2"), "{counts:?}");
}

#[test]
fn cp_of_a_new_small_file_costs_the_kernels_two_lookups_and_one_put() {
    const FILES: u64 = 20;
    let s3 = MemS3::start();
    let m = mount(&s3, &[]);
    let src = tempfile::tempdir().unwrap();
    let local = src.path().join("small");
    std::fs::write(&local, pattern(64 << 10, 9)).unwrap();
    s3.reset_counts();
    sh(&format!(r#"for i in $(seq 1 {FILES}); do cp "{}" "{}/new$i"; done"#, local.display(), m.path().display()));
    let counts = s3.request_counts();
    for i in 1..=FILES {
        assert_eq!(s3.get(&format!("new{i}")).unwrap(), pattern(64 << 10, 9), "new{i}");
    }
    assert_eq!(count(&counts, "PutObject"), FILES, "a small file is one PutObject, no multipart upload: {counts:?}");
    assert_eq!(count(&counts, "HeadObject"), 0, "{counts:?}");
    assert_eq!(count(&counts, "CreateMultipartUpload"), 0, "{counts:?}");
    assert!(count(&counts, "ListObjectsV2") <= 2 * FILES, "{counts:?}");
    assert_eq!(s3.total_request_count(), count(&counts, "PutObject") + count(&counts, "ListObjectsV2"), "{counts:?}");
}
