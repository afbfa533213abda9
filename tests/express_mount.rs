//! End to end: real mounts of an S3 Express One Zone directory bucket, served by the
//! directory-bucket emulator ([`MemS3::start_express`]): sessions, `--bucket-type`, and
//! directory listings that arrive in no particular order.

mod common;

use std::time::{Duration, Instant};

use common::express::ExpressOptions;
use common::mem_server::MemS3;
use common::mount::TestMount;
use mount_s3::client::S3Operation;

/// Mounts the emulator's bucket. No `--force-path-style`: the endpoint is an IP address, which
/// the SDK addresses path-style by itself, as it does for any directory bucket behind one.
fn try_mount(s3: &MemS3, extra: &[&str]) -> Result<TestMount, String> {
    let mut args = vec!["--endpoint-url", &s3.endpoint, "--region", "us-east-1"];
    args.extend_from_slice(extra);
    TestMount::try_new(&s3.env_vars(), &s3.bucket, &args)
}

fn mount(s3: &MemS3, extra: &[&str]) -> TestMount {
    try_mount(s3, extra).unwrap_or_else(|output| panic!("mount-s3 did not mount:\n{output}"))
}

fn sorted_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn a_directory_bucket_mounts_and_one_session_serves_the_whole_mount() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("top.txt", "top bytes");
    s3.put("dir/a.txt", "a bytes");
    s3.put("dir/sub/b.txt", "b bytes");
    let m = mount(&s3, &["--allow-delete"]);
    assert_eq!(sorted_names(m.path()), ["dir", "top.txt"]);
    assert_eq!(sorted_names(&m.path().join("dir")), ["a.txt", "sub"]);
    assert_eq!(std::fs::read(m.path().join("dir/sub/b.txt")).unwrap(), b"b bytes");
    std::fs::write(m.path().join("dir/new.txt"), b"written through a session").unwrap();
    assert_eq!(s3.get("dir/new.txt").as_deref(), Some(&b"written through a session"[..]));
    std::fs::remove_file(m.path().join("top.txt")).unwrap();
    assert_eq!(s3.get("top.txt"), None);
    assert!(m.unmount().success());
    assert_eq!(s3.request_count_by_name("CreateSession"), 1, "{:?}", s3.request_counts());
    assert!(s3.request_count(S3Operation::PutObject) >= 1);
    assert_eq!(s3.express().expired_refusals(), 0);
}

#[test]
fn bucket_type_is_accepted_either_way() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("k", "v");
    for kind in ["directory", "general-purpose"] {
        let m = mount(&s3, &["--bucket-type", kind]);
        assert_eq!(std::fs::read(m.path().join("k")).unwrap(), b"v", "--bucket-type {kind}");
        assert!(m.unmount().success());
    }
}

#[test]
fn a_refused_create_session_fails_the_mount_naming_the_permission() {
    let s3 = MemS3::start_express(ExpressOptions { deny_create_session: true, ..ExpressOptions::default() });
    let output = match try_mount(&s3, &[]) {
        Ok(m) => panic!("mounted without a session:\n{}", m.output()),
        Err(output) => output,
    };
    assert!(output.contains("s3express:CreateSession"), "{output}");
    assert!(output.contains(&s3.bucket), "{output}");
    assert!(output.contains("S3 Express One Zone session"), "{output}");
    assert_eq!(s3.request_count(S3Operation::ListObjectsV2), 0, "nothing but CreateSession was sent");
}

#[test]
fn sessions_are_renewed_while_mounted() {
    // The SDK's identity cache renews a session 5 to 10 s before its end (a 10 s buffer, less
    // up to 5 s of random jitter): a 14 s session serves 4 to 9 s of requests, so 12 s of reads
    // need at least two sessions, and far fewer than one per read.
    let s3 = MemS3::start_express(ExpressOptions { session_lifetime: Duration::from_secs(14), ..Default::default() });
    s3.put("file", "bytes");
    let m = mount(&s3, &[]);
    let until = Instant::now() + Duration::from_secs(12);
    let mut reads = 0;
    while Instant::now() < until {
        assert_eq!(std::fs::read(m.path().join("file")).unwrap(), b"bytes", "read {reads}");
        reads += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(m.unmount().success());
    let sessions = s3.request_count_by_name("CreateSession");
    assert!(sessions >= 2, "{sessions} sessions for {reads} reads over 12 s: {:?}", s3.request_counts());
    assert!(sessions <= reads / 4, "{sessions} sessions for {reads} reads: renewed far too often");
    assert_eq!(s3.express().expired_refusals(), 0, "an expired session was used");
}

#[test]
fn readdir_of_shuffled_pages_lists_each_name_once_and_directories_over_files() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    let mut expected: Vec<String> = (0..2500).map(|i| format!("f{i:04}")).collect();
    for name in &expected {
        s3.put(&format!("big/{name}"), "x");
    }
    // `x` beside `x/`: only the directory shows, and it is a directory.
    for key in ["big/x", "big/x/inner", "big/y/", "big/dot/./hidden", "big/a//b"] {
        s3.put(key, "x");
    }
    expected.extend(["a", "dot", "x", "y"].map(String::from));
    expected.sort();
    for ttl in [None, Some("60")] {
        let extra: Vec<&str> = ttl.map(|t| vec!["--metadata-ttl", t]).unwrap_or_default();
        let m = mount(&s3, &extra);
        let big = m.path().join("big");
        // Twice: the second listing may come from the listing cache (with --metadata-ttl).
        for round in 0..2 {
            let mut names = vec![];
            for entry in std::fs::read_dir(&big).unwrap() {
                let entry = entry.unwrap();
                names.push(entry.file_name().into_string().unwrap());
                if entry.file_name() == "x" {
                    assert!(entry.file_type().unwrap().is_dir(), "x is listed as a file");
                }
            }
            names.sort();
            assert_eq!(names.len(), expected.len(), "round {round}, ttl {ttl:?}: a name listed twice or lost");
            assert_eq!(names, expected, "round {round}, ttl {ttl:?}");
        }
        assert!(std::fs::metadata(big.join("x")).unwrap().is_dir());
        assert!(m.unmount().success());
    }
}
