//! End to end: `--incremental-upload` on the directory-bucket emulator
//! ([`MemS3::start_express`]): `>>` appends without reading the object, fsync makes bytes
//! visible while the file stays open, big writes go out as several appends, another writer
//! between our appends is ESTALE (never merged), and writes before the end are EINVAL.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::express::ExpressOptions;
use common::mem_server::MemS3;
use common::mount::{TestMount, errno};
use mount_s3::client::S3Operation;

/// Mounts the emulator's bucket with `extra` arguments (path-style by itself: an IP endpoint).
fn mount(s3: &MemS3, extra: &[&str]) -> TestMount {
    let mut args = vec!["--endpoint-url", &s3.endpoint, "--region", "us-east-1"];
    args.extend_from_slice(extra);
    TestMount::try_new(&s3.env_vars(), &s3.bucket, &args)
        .unwrap_or_else(|output| panic!("mount-s3 did not mount:\n{output}"))
}

fn counts(s3: &MemS3) -> (u64, u64, u64) {
    (
        s3.request_count(S3Operation::PutObject),
        s3.request_count(S3Operation::GetObject),
        s3.request_count(S3Operation::CreateMultipartUpload),
    )
}

#[test]
fn shell_appends_to_an_existing_object_are_appends_without_reading_it() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("logs/app.log", "one\n");
    let m = mount(&s3, &["--incremental-upload"]);
    let path = m.path().join("logs/app.log");
    std::fs::metadata(&path).unwrap();
    s3.reset_counts();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo two >> '{}' && echo three >> '{}'", path.display(), path.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", m.output());
    assert_eq!(s3.get("logs/app.log").as_deref(), Some(&b"one\ntwo\nthree\n"[..]));
    // One PutObject with a write offset per `>>`, no GET of the old bytes, no multipart upload.
    assert_eq!(counts(&s3), (2, 0, 0), "{:?}", s3.request_counts());
    assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\nthree\n");
    assert!(m.unmount().success());
}

#[test]
fn fsync_appends_what_is_written_and_the_file_stays_open_for_writing() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("journal", "head;");
    let m = mount(&s3, &["--incremental-upload"]);
    let mut file = OpenOptions::new().append(true).open(m.path().join("journal")).unwrap();
    file.write_all(b"first;").unwrap();
    assert_eq!(s3.get("journal").as_deref(), Some(&b"head;"[..]), "buffered until fsync");
    // This mount shows the file being written: its growing size, listed once.
    assert_eq!(std::fs::metadata(m.path().join("journal")).unwrap().len(), 11);
    let names: Vec<_> = std::fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["journal"]);
    file.sync_all().unwrap();
    // Another reader of the bucket sees the first part while the file is still open.
    assert_eq!(s3.get("journal").as_deref(), Some(&b"head;first;"[..]));
    file.write_all(b"second;").unwrap();
    file.sync_data().unwrap();
    assert_eq!(s3.get("journal").as_deref(), Some(&b"head;first;second;"[..]));
    file.write_all(b"last").unwrap();
    drop(file);
    assert_eq!(s3.get("journal").as_deref(), Some(&b"head;first;second;last"[..]));
    assert_eq!(s3.request_count(S3Operation::PutObject), 3, "{:?}", s3.request_counts());
    assert_eq!(std::fs::read(m.path().join("journal")).unwrap(), b"head;first;second;last");
    assert!(m.unmount().success());
}

#[test]
fn a_big_append_goes_out_as_one_append_per_write_part() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("big", vec![b'o'; 1000]);
    let m = mount(&s3, &["--incremental-upload", "--write-part-size", "65536"]);
    s3.reset_counts();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut file = OpenOptions::new().append(true).open(m.path().join("big")).unwrap();
    file.write_all(&data).unwrap();
    drop(file);
    let mut want = vec![b'o'; 1000];
    want.extend_from_slice(&data);
    assert_eq!(s3.get("big").as_deref(), Some(&want[..]));
    // 200,000 bytes in 65,536-byte appends: three full ones and the rest at close.
    assert_eq!(counts(&s3), (4, 0, 0), "{:?}", s3.request_counts());
    assert!(m.unmount().success());
}

#[test]
fn new_files_are_written_as_appends_from_offset_zero() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    let m = mount(&s3, &["--incremental-upload", "--write-part-size", "65536"]);
    s3.reset_counts();
    let data = vec![7u8; 100_000];
    let mut file = std::fs::File::create(m.path().join("new.bin")).unwrap();
    file.write_all(&data).unwrap();
    file.sync_all().unwrap();
    assert_eq!(s3.get("new.bin").map(|b| b.len()), Some(100_000), "visible at fsync");
    file.write_all(b"tail").unwrap();
    drop(file);
    let mut want = data.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(s3.get("new.bin").as_deref(), Some(&want[..]));
    assert_eq!(counts(&s3), (3, 0, 0), "{:?}", s3.request_counts());
    std::fs::File::create(m.path().join("empty")).unwrap();
    // An empty file's upload waits for the (asynchronous) release, as without the flag.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s3.get("empty").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(s3.get("empty").as_deref(), Some(&b""[..]), "an empty new file exists after release");
    assert!(m.unmount().success());
}

#[test]
fn another_writer_between_our_appends_is_estale_and_never_merged() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("shared.log", "base;");
    let m = mount(&s3, &["--incremental-upload"]);
    let mut file = OpenOptions::new().append(true).open(m.path().join("shared.log")).unwrap();
    file.write_all(b"ours1;").unwrap();
    file.sync_all().unwrap();
    s3.append("shared.log", "theirs;");
    file.write_all(b"ours2;").unwrap();
    assert_eq!(errno(file.sync_all()), Some(libc::ESTALE));
    assert_eq!(errno(file.write_all(b"more")), Some(libc::ESTALE), "the handle stays failed");
    drop(file);
    assert_eq!(s3.get("shared.log").as_deref(), Some(&b"base;ours1;theirs;"[..]), "the other writer's bytes intact");
    // The worker's log reaches the test through the supervisor's pipe, after the errno.
    let logged = |o: &str| o.contains("append refused") && o.contains("shared.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !logged(&m.output()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(logged(&m.output()), "{}", m.output());
    // A new open appends after the other writer's bytes.
    let mut file = OpenOptions::new().append(true).open(m.path().join("shared.log")).unwrap();
    file.write_all(b"ours3").unwrap();
    drop(file);
    assert_eq!(s3.get("shared.log").as_deref(), Some(&b"base;ours1;theirs;ours3"[..]));
    assert!(m.unmount().success());
}

#[test]
fn a_replaced_object_fails_the_close_with_estale() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("r", "0123");
    let m = mount(&s3, &["--incremental-upload"]);
    let mut file = OpenOptions::new().append(true).open(m.path().join("r")).unwrap();
    file.write_all(b"ours").unwrap();
    // Same size as we expect to append at, other bytes: only If-Match tells.
    s3.put("r", "abcd");
    file.write_all(b"!").unwrap();
    let closed = nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(file));
    assert_eq!(closed, Err(nix::errno::Errno::ESTALE));
    assert_eq!(s3.get("r").as_deref(), Some(&b"abcd"[..]));
    assert!(m.unmount().success());
}

#[test]
fn appends_carry_the_checksum_algorithm_of_the_object() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    // The emulator refuses an append whose algorithm differs from the object's.
    for algorithm in ["crc32", "crc32c", "crc64nvme"] {
        s3.put_with_checksum(algorithm, "base;", algorithm);
    }
    let m = mount(&s3, &["--incremental-upload", "--write-part-size", "65536"]);
    for algorithm in ["crc32", "crc32c", "crc64nvme"] {
        let data = vec![b'x'; 100_000];
        let mut file = OpenOptions::new().append(true).open(m.path().join(algorithm)).unwrap();
        file.write_all(&data).unwrap();
        drop(file);
        let mut want = b"base;".to_vec();
        want.extend_from_slice(&data);
        assert_eq!(s3.get(algorithm).as_deref(), Some(&want[..]), "{algorithm}");
    }
    assert!(m.unmount().success());
}

#[test]
fn writes_before_the_end_are_einval() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("f", "0123456789");
    let m = mount(&s3, &["--incremental-upload"]);
    let file = OpenOptions::new().write(true).open(m.path().join("f")).unwrap();
    assert_eq!(errno(file.write_at(b"x", 3)), Some(libc::EINVAL));
    drop(file);
    assert_eq!(s3.get("f").as_deref(), Some(&b"0123456789"[..]), "unchanged");
    // At the end, an O_WRONLY open without O_APPEND appends too.
    let file = OpenOptions::new().write(true).open(m.path().join("f")).unwrap();
    file.write_at(b"AB", 10).unwrap();
    drop(file);
    assert_eq!(s3.get("f").as_deref(), Some(&b"0123456789AB"[..]));
    assert!(m.unmount().success());
}

#[test]
fn without_the_flag_existing_objects_still_refuse_appends() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("f", "x");
    let m = mount(&s3, &[]);
    assert_eq!(errno(OpenOptions::new().append(true).open(m.path().join("f"))), Some(libc::EPERM));
    assert_eq!(s3.get("f").as_deref(), Some(&b"x"[..]));
    assert!(m.unmount().success());
}

#[test]
fn with_allow_modify_appends_append_and_other_changes_stage() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("f", "0123456789");
    let m = mount(&s3, &["--incremental-upload", "--allow-modify"]);
    s3.reset_counts();
    let mut file = OpenOptions::new().append(true).open(m.path().join("f")).unwrap();
    file.write_all(b"AB").unwrap();
    drop(file);
    assert_eq!(s3.get("f").as_deref(), Some(&b"0123456789AB"[..]));
    assert_eq!(counts(&s3), (1, 0, 0), "one append: {:?}", s3.request_counts());
    // A write in the middle goes through --allow-modify's staging.
    let file = OpenOptions::new().write(true).open(m.path().join("f")).unwrap();
    file.write_at(b"xy", 2).unwrap();
    drop(file);
    assert_eq!(s3.get("f").as_deref(), Some(&b"01xy456789AB"[..]));
    assert!(m.unmount().success());
}

#[test]
fn on_a_general_purpose_bucket_the_flag_mounts_with_a_warning_and_changes_nothing() {
    let s3 = MemS3::start();
    s3.put("f", "x");
    let m = mount(&s3, &["--incremental-upload"]);
    assert_eq!(errno(OpenOptions::new().append(true).open(m.path().join("f"))), Some(libc::EPERM));
    std::fs::write(m.path().join("new"), b"fresh").unwrap();
    assert_eq!(s3.get("new").as_deref(), Some(&b"fresh"[..]), "new files are uploaded as usual");
    assert_eq!(s3.get("f").as_deref(), Some(&b"x"[..]));
    let log = m.output();
    assert!(log.contains("--incremental-upload has no effect on"), "{log}");
    assert!(m.unmount().success());
}
