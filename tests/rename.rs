//! End to end: `--allow-rename` over a server with faithful copy semantics (the in-memory
//! `MemS3`: CopyObject with `x-amz-copy-source-if-match`, conditional destinations).
//!
//! - `mv` of a file and of a directory of hundreds of objects: what other clients see.
//! - write-temp-then-rename while the file is still open: no copy at all.
//! - RENAME_NOREPLACE, replacing without `--allow-overwrite`, and the default (no flag): ENOSYS.
//! - SIGKILL in the middle of a directory rename, then a remount (with `--cache`, and with the
//!   state directory): the rename is finished, nothing is lost.
//! - With `--cache`, a renamed file is read from its source's cached blocks (no GET), never
//!   from blocks of another version.
//! - A source another client replaces while the copy is on the wire (held by the fault proxy):
//!   ESTALE, both names intact; for CopyObject and for a multipart copy (UploadPartCopy parts,
//!   made to happen on small objects with `UNSTABLE_MOUNTPOINT_COPY_PART_SIZE`).
//! - Timing lines for the closing note (`RENAME_MEASURE=1`): a 1 GiB file, a 1,000-object
//!   directory, a fully cached 256 MiB file with `--cache`.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestS3;
use common::data::pattern;
use common::express::ExpressOptions;
use common::fault_proxy::{Fault, FaultProxy, Kinds, RequestKind, When};
use common::mem_server::MemS3;
use common::mount::{TestMount, errno, mount, server_args};
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;
use nix::fcntl::RenameFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn renameat2(from: &Path, to: &Path, flags: RenameFlags) -> std::io::Result<()> {
    nix::fcntl::renameat2(None, from, None, to, flags).map_err(std::io::Error::from)
}

fn seed_dir(s3: &MemS3, dir: &str, n: usize) {
    for i in 0..n {
        s3.put(&format!("{dir}/sub{}/f{i:04}", i % 7), pattern(100 + i, i as u64));
    }
}

#[test]
fn mv_moves_files_and_directories_and_other_clients_see_only_the_new_keys() {
    let s3 = MemS3::start();
    s3.put("report.csv", pattern(300_000, 1));
    seed_dir(&s3, "photos", 300);
    let m = mount(&s3, &["--allow-rename"]);
    let root = m.path();
    s3.reset_counts();

    std::fs::rename(root.join("report.csv"), root.join("report-2024.csv")).unwrap();
    assert!(s3.get("report.csv").is_none());
    assert!(s3.get("report-2024.csv").unwrap() == pattern(300_000, 1));
    assert_eq!(std::fs::read(root.join("report-2024.csv")).unwrap(), pattern(300_000, 1));
    assert_eq!(s3.request_count(S3Operation::CopyObject), 1);

    let status = std::process::Command::new("mv").arg(root.join("photos")).arg(root.join("albums")).status().unwrap();
    assert!(status.success());
    assert!(s3.list_keys("photos/").is_empty(), "no old key left");
    assert_eq!(s3.list_keys("albums/").len(), 300);
    assert_eq!(s3.request_count(S3Operation::CopyObject), 301, "one copy per object, no fallback copy");
    assert_eq!(std::fs::read(root.join("albums/sub3/f0010")).unwrap(), pattern(110, 10));
    assert_eq!(errno(std::fs::metadata(root.join("photos"))), Some(libc::ENOENT));
    let listed = std::fs::read_dir(root.join("albums/sub0")).unwrap().count();
    assert_eq!(listed, 300usize.div_ceil(7));
    assert!(m.unmount().success());
}

#[test]
fn write_temp_then_rename_lands_at_the_new_name_with_no_copy() {
    let s3 = MemS3::start();
    let m = mount(&s3, &["--allow-rename"]);
    let root = m.path();
    let mut file = std::fs::File::create(root.join(".config.json.tmp")).unwrap();
    file.write_all(b"{\"ok\":true}").unwrap();
    std::fs::rename(root.join(".config.json.tmp"), root.join("config.json")).unwrap();
    drop(file);
    assert_eq!(std::fs::read(root.join("config.json")).unwrap(), b"{\"ok\":true}");
    assert_eq!(s3.list_keys(""), ["config.json"]);
    assert_eq!(s3.request_count(S3Operation::CopyObject), 0);
    assert_eq!(s3.request_count(S3Operation::DeleteObject), 0);
    assert!(m.unmount().success());
}

#[test]
fn noreplace_replace_and_the_default_answer_as_documented() {
    let s3 = MemS3::start();
    s3.put("a", &b"new"[..]);
    s3.put("b", &b"old"[..]);
    let plain = mount(&s3, &[]);
    assert_eq!(errno(std::fs::rename(plain.path().join("a"), plain.path().join("c"))), Some(libc::ENOSYS));
    assert!(plain.unmount().success());

    let m = mount(&s3, &["--allow-rename"]);
    let (a, b) = (m.path().join("a"), m.path().join("b"));
    assert_eq!(errno(renameat2(&a, &b, RenameFlags::RENAME_NOREPLACE)), Some(libc::EEXIST));
    assert_eq!(errno(std::fs::rename(&a, &b)), Some(libc::EPERM), "replacing needs --allow-overwrite");
    assert_eq!(errno(renameat2(&a, &b, RenameFlags::RENAME_EXCHANGE)), Some(libc::EINVAL));
    assert!(s3.get("b").unwrap() == b"old"[..]);
    assert!(m.unmount().success());

    let m = mount(&s3, &["--allow-rename", "--allow-overwrite"]);
    std::fs::rename(m.path().join("a"), m.path().join("b")).unwrap();
    assert_eq!(s3.list_keys(""), ["b"]);
    assert!(s3.get("b").unwrap() == b"new"[..]);
    assert!(m.unmount().success());
}

/// Kills the daemon while it copies a directory of 1,000 objects, then mounts again with the
/// same durable place for intents: the rename is finished and every object is under its new
/// name exactly once.
fn sigkill_mid_directory_rename(state: &[&str], env: &[(String, String)]) {
    let s3 = MemS3::start();
    seed_dir(&s3, "big", 1000);
    let mut args: Vec<String> = server_args(&s3);
    args.extend(["--allow-rename".to_string()]);
    args.extend(state.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut envs = s3.env_vars();
    envs.extend_from_slice(env);
    let mut m = TestMount::new(&envs, s3.bucket(), &args);
    let (from, to) = (m.path().join("big"), m.path().join("moved"));
    s3.reset_counts();
    let mover = std::thread::spawn(move || std::fs::rename(from, to));
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.request_count(S3Operation::CopyObject) < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    kill(Pid::from_raw(m.pid() as i32), Signal::SIGKILL).expect("signal the daemon");
    m.wait_exit(Duration::from_secs(10)).expect("the daemon died");
    assert!(mover.join().unwrap().is_err(), "the rename did not complete before the kill");
    let copied = s3.request_count(S3Operation::CopyObject);
    println!("killed after {copied} copies");
    assert!(copied < 1000, "killed mid-rename ({copied} copies)");
    drop(m);

    let m = TestMount::new(&envs, s3.bucket(), &args);
    assert!(s3.list_keys("big/").is_empty(), "sources deleted by the recovery");
    let moved = s3.list_keys("moved/");
    assert_eq!(moved.len(), 1000, "every object under its new name");
    for i in [0usize, 499, 999] {
        let key = format!("moved/sub{}/f{i:04}", i % 7);
        assert!(s3.get(&key).unwrap() == pattern(100 + i, i as u64), "{key}");
    }
    assert!(m.output().contains("finished a rename an earlier process left unfinished"), "{}", m.output());
    assert!(m.unmount().success());
}

#[test]
fn sigkill_mid_directory_rename_is_finished_at_the_next_mount_with_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    sigkill_mid_directory_rename(&["--cache", dir.to_str().unwrap()], &[]);
}

#[test]
fn sigkill_mid_directory_rename_is_finished_at_the_next_mount_with_the_state_dir() {
    let state = tempfile::tempdir().unwrap();
    sigkill_mid_directory_rename(&[], &[("XDG_STATE_HOME".to_string(), state.path().to_str().unwrap().to_string())]);
}

/// The closing note's numbers (`RENAME_MEASURE=1`, debug build is fine): time and requests of a
/// 1 GiB file rename (on the s3s-fs server, which really copies the bytes on disk; MemS3 shares
/// them) and a 1,000-object directory rename (MemS3). Prints; asserts only correctness.
#[test]
fn measure_rename_costs() {
    if std::env::var_os("RENAME_MEASURE").is_none() {
        return;
    }
    fn timed(what: &str, counts: impl Fn() -> Vec<(String, u64)>, rename: impl FnOnce()) {
        let started = Instant::now();
        rename();
        let took = started.elapsed();
        let mut counts: Vec<_> = counts().into_iter().filter(|(_, n)| *n > 0).collect();
        counts.sort();
        println!("rename {what}: {took:?}, requests {counts:?}");
    }
    let disk = LocalS3::start();
    disk.put("big.bin", pattern(1 << 30, 7));
    let m = mount(&disk, &["--allow-rename"]);
    std::fs::metadata(m.path().join("big.bin")).unwrap();
    disk.reset_counts();
    timed(
        "1 GiB file (s3s-fs)",
        || disk.request_counts().into_iter().collect(),
        || std::fs::rename(m.path().join("big.bin"), m.path().join("big-renamed.bin")).unwrap(),
    );
    assert!(disk.get("big.bin").is_none());
    assert!(m.unmount().success());
    drop(disk);

    let s3 = MemS3::start();
    seed_dir(&s3, "dir", 1000);
    let m = mount(&s3, &["--allow-rename"]);
    std::fs::metadata(m.path().join("dir")).unwrap();
    s3.reset_counts();
    timed(
        "1,000-object directory (MemS3)",
        || s3.request_counts().into_iter().collect(),
        || std::fs::rename(m.path().join("dir"), m.path().join("dir-renamed")).unwrap(),
    );
    assert_eq!(s3.list_keys("dir-renamed/").len(), 1000);
    assert!(m.unmount().success());

    // With --cache: a 256 MiB file read once, renamed in a new mount (its 256 blocks are
    // rewritten under the new name during the rename), then read again.
    let s3 = MemS3::start();
    s3.put("cached.bin", pattern(256 << 20, 11));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let args = ["--allow-rename", "--cache", dir.to_str().unwrap()];
    let m = mount(&s3, &args);
    std::fs::read(m.path().join("cached.bin")).unwrap();
    assert!(m.unmount().success());
    let m = mount(&s3, &args);
    std::fs::metadata(m.path().join("cached.bin")).unwrap();
    s3.reset_counts();
    timed(
        "256 MiB file, fully cached (MemS3, --cache)",
        || s3.request_counts().into_iter().collect(),
        || std::fs::rename(m.path().join("cached.bin"), m.path().join("cached-2.bin")).unwrap(),
    );
    let started = Instant::now();
    assert!(std::fs::read(m.path().join("cached-2.bin")).unwrap() == pattern(256 << 20, 11));
    println!(
        "read of the renamed 256 MiB file: {:?}, GETs {}",
        started.elapsed(),
        s3.request_count(S3Operation::GetObject)
    );
    assert!(m.unmount().success());
}

/// On a directory bucket (the S3 Express emulator) a file rename is one RenameObject, allowed
/// without `--allow-rename` as Mountpoint allows it there; directories still need the flag.
#[test]
fn directory_buckets_rename_files_atomically_with_rename_object() {
    let s3 = MemS3::start_express(ExpressOptions::default());
    s3.put("logs/today.log", pattern(70_000, 3));
    s3.put("logs/other.log", &b"other"[..]);
    let m = mount(&s3, &[]);
    let logs = m.path().join("logs");
    s3.reset_counts();
    std::fs::rename(logs.join("today.log"), logs.join("2026-12-07.log")).unwrap();
    assert_eq!(s3.request_count_by_name("RenameObject"), 1);
    assert_eq!(s3.request_count_by_name("CopyObject") + s3.request_count_by_name("DeleteObject"), 0);
    assert!(s3.get("logs/today.log").is_none());
    assert!(s3.get("logs/2026-12-07.log").unwrap() == pattern(70_000, 3));
    assert_eq!(std::fs::read(logs.join("2026-12-07.log")).unwrap(), pattern(70_000, 3));
    let (a, b) = (logs.join("2026-12-07.log"), logs.join("other.log"));
    assert_eq!(errno(renameat2(&a, &b, RenameFlags::RENAME_NOREPLACE)), Some(libc::EEXIST));
    assert_eq!(errno(std::fs::rename(&a, &b)), Some(libc::EPERM), "replacing needs --allow-overwrite");
    assert_eq!(errno(std::fs::rename(&logs, m.path().join("old-logs"))), Some(libc::ENOSYS));
    // A file written here and renamed while open lands at its new name: no RenameObject at all.
    let mut file = std::fs::File::create(logs.join(".tmp")).unwrap();
    file.write_all(b"new").unwrap();
    std::fs::rename(logs.join(".tmp"), logs.join("new.log")).unwrap();
    drop(file);
    assert!(s3.get("logs/new.log").unwrap() == b"new"[..]);
    assert_eq!(s3.request_count_by_name("RenameObject"), 1);
    assert!(m.unmount().success());
}

/// Mounts `s3` through `proxy` with `env` added to the daemon's environment.
fn mount_via(s3: &MemS3, proxy: &FaultProxy, env: &[(&str, &str)], args: &[&str]) -> TestMount {
    let mut envs = s3.env_vars();
    envs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut all = vec!["--endpoint-url", &proxy.endpoint, "--force-path-style", "--region", "us-east-1"];
    all.extend_from_slice(args);
    TestMount::new(&envs, s3.bucket(), &all)
}

/// Mounts `s3` with `env` added to the daemon's environment.
fn mount_env(s3: &MemS3, env: &[(&str, &str)], extra: &[&str]) -> TestMount {
    let mut envs = s3.env_vars();
    envs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut args = server_args(s3);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestMount::new(&envs, s3.bucket(), &args)
}

/// Prints the requests `s3` received since its counts were reset (the numbers in the report).
fn print_requests(s3: &MemS3, what: &str) {
    let mut counts: Vec<_> = s3.request_counts().into_iter().filter(|(_, n)| *n > 0).collect();
    counts.sort();
    println!("{what}: {counts:?}");
}

/// Multipart copies from 5 MiB on, in 5 MiB parts (instead of beyond 5 GiB in 512 MiB parts).
const SMALL_COPY_PARTS: (&str, &str) = ("UNSTABLE_MOUNTPOINT_COPY_PART_SIZE", "5242880");

/// Runs `rename` on another thread; each time `proxy` has stalled one more request (a copy),
/// another client replaces `key` with the next of `writes`; returns the rename's result.
fn rename_while_another_client_writes(
    s3: &MemS3,
    proxy: &FaultProxy,
    key: &str,
    writes: &[Vec<u8>],
    rename: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<()> {
    let stalls = || proxy.stats().faults_named("Stall");
    let before = stalls();
    let mover = std::thread::spawn(rename);
    for (i, bytes) in (1..).zip(writes) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while stalls() < before + i && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stalls(), before + i, "copy {i} reached the proxy");
        s3.put(key, bytes.clone());
    }
    mover.join().unwrap()
}

/// With `--cache`, a renamed file is read from the blocks its source left in the cache: no GET.
/// Blocks are reused only for the version the copy was pinned to (a source another client
/// replaced is fetched again), and a later overwrite of the destination is seen, not masked.
#[test]
fn a_renamed_file_is_read_from_its_sources_cached_blocks_and_never_from_stale_ones() {
    let s3 = MemS3::start();
    let (one, stale) = (pattern((3 << 20) + 12_345, 1), pattern(2 << 20, 2));
    s3.put("one.bin", one.clone());
    s3.put("stale.bin", stale);
    seed_dir(&s3, "dir", 20);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let args = ["--allow-rename", "--metadata-ttl", "1", "--cache", dir.to_str().unwrap()];
    let m = mount(&s3, &args);
    assert!(std::fs::read(m.path().join("one.bin")).unwrap() == one);
    std::fs::read(m.path().join("stale.bin")).unwrap();
    for i in 0..20 {
        std::fs::read(m.path().join(format!("dir/sub{}/f{i:04}", i % 7))).unwrap();
    }
    // Unmounting waits for the block writes.
    assert!(m.unmount().success());

    // A new mount (same cache): the kernel holds no page of these files, the daemon serves all.
    let m = mount(&s3, &args);
    let root = m.path();
    s3.reset_counts();
    std::fs::rename(root.join("one.bin"), root.join("two.bin")).unwrap();
    assert!(std::fs::read(root.join("two.bin")).unwrap() == one);
    print_requests(&s3, "rename + read of a cached 3 MiB file");
    assert_eq!(s3.request_count(S3Operation::GetObject), 0, "every block came from the source's cached blocks");
    assert_eq!(s3.request_count(S3Operation::CopyObject), 1);
    assert_eq!(s3.request_count(S3Operation::DeleteObject), 1);

    // A directory: every object's blocks follow.
    s3.reset_counts();
    std::fs::rename(root.join("dir"), root.join("dir-2")).unwrap();
    for i in 0..20 {
        let read = std::fs::read(root.join(format!("dir-2/sub{}/f{i:04}", i % 7))).unwrap();
        assert!(read == pattern(100 + i, i as u64));
    }
    print_requests(&s3, "rename + read of a directory of 20 cached objects");
    assert_eq!(s3.request_count(S3Operation::GetObject), 0, "every object's blocks followed");
    assert_eq!(s3.request_count(S3Operation::CopyObject), 20);

    // Another client replaced stale.bin after it was cached: the copy is of the new version,
    // whose bytes are fetched, never the old blocks.
    let fresh = pattern(2 << 20, 3);
    s3.put("stale.bin", fresh.clone());
    std::thread::sleep(Duration::from_millis(1200));
    s3.reset_counts();
    std::fs::rename(root.join("stale.bin"), root.join("moved.bin")).unwrap();
    assert!(std::fs::read(root.join("moved.bin")).unwrap() == fresh, "the new version, not cached blocks");
    print_requests(&s3, "rename + read of a file whose cached blocks are of an older version");
    assert!(s3.request_count(S3Operation::GetObject) > 0);

    // Another client overwrites the renamed file: after the TTL, its bytes, not the reused blocks.
    let three = pattern((3 << 20) + 12_345, 4);
    s3.put("two.bin", three.clone());
    std::thread::sleep(Duration::from_millis(1200));
    assert!(std::fs::read(root.join("two.bin")).unwrap() == three, "the overwrite is not masked");
    assert!(m.unmount().success());
}

/// A source another client replaces while the rename's CopyObject is on the wire (held by the
/// fault proxy after the mount's HeadObject): the copy is pinned to the ETag the mount saw, so
/// S3 refuses it (412) and the daemon answers ESTALE. The kernel retries a rename that got
/// ESTALE once, from a fresh lookup: a single change makes the rename move the other client's
/// version (as if it had written first). If the source changes again during the retry, the
/// rename fails with ESTALE: nothing deleted, the other client's bytes at the source, the
/// target absent or as it was.
#[test]
fn a_source_replaced_during_the_rename_is_never_lost_and_a_second_change_fails_it_with_estale() {
    let s3 = MemS3::start();
    s3.put("a", pattern(100_000, 1));
    s3.put("b", &b"old"[..]);
    let proxy = FaultProxy::start(s3.addr, 1);
    let m = mount_via(&s3, &proxy, &[], &["--allow-rename", "--allow-overwrite"]);
    let root = m.path().to_path_buf();
    let stall = || vec![Fault::Stall(Duration::from_millis(1500))];

    // One change: the first copy gets 412, the kernel's retry moves the new version.
    s3.reset_counts();
    proxy.inject(Kinds::PUT, When::First(1), stall());
    let theirs = pattern(50_000, 2);
    let (from, to) = (root.join("a"), root.join("c"));
    let moved = rename_while_another_client_writes(&s3, &proxy, "a", std::slice::from_ref(&theirs), move || {
        std::fs::rename(from, to)
    });
    moved.unwrap();
    print_requests(&s3, "rename with one concurrent change of the source");
    assert!(s3.get("c").unwrap() == theirs, "the other client's version was moved");
    assert!(s3.get("a").is_none());
    assert_eq!(s3.request_count(S3Operation::CopyObject), 2, "one refused copy, one retried");
    assert_eq!(s3.request_count(S3Operation::DeleteObject), 1);

    // Two changes (the retry's copy is refused too): ESTALE, both names as they were.
    for (target, before) in [("d", None), ("b", Some(&b"old"[..]))] {
        s3.put("a", pattern(100_000, 3));
        s3.reset_counts();
        proxy.clear();
        proxy.inject(Kinds::PUT, When::First(2), stall());
        let writes = [pattern(50_000, 4), pattern(60_000, 5)];
        let (from, to) = (root.join("a"), root.join(target));
        let renamed = rename_while_another_client_writes(&s3, &proxy, "a", &writes, move || std::fs::rename(from, to));
        print_requests(&s3, &format!("rename to {target} with two concurrent changes"));
        assert_eq!(errno(renamed), Some(libc::ESTALE), "to {target}");
        assert!(s3.get("a").unwrap() == writes[1], "the other client's last bytes are at the source");
        assert_eq!(s3.get(target).as_deref(), before, "the target is as it was");
        assert_eq!(s3.request_count(S3Operation::CopyObject), 2);
        assert_eq!(s3.request_count(S3Operation::DeleteObject), 0, "nothing deleted");
    }
    assert!(m.output().contains("changed in S3 during the rename"), "{}", m.output());
    assert!(m.unmount().success());
}

/// Past the (test-lowered) single-copy limit a rename is a multipart copy: one
/// CreateMultipartUpload, one UploadPartCopy per part (in parallel), one Complete, one Delete;
/// the bytes are the source's and, with `--cache`, its cached blocks serve the new name.
#[test]
fn a_large_file_is_renamed_with_upload_part_copy_parts_and_its_cached_blocks_follow() {
    let s3 = MemS3::start();
    let data = pattern(20 << 20, 7);
    s3.put("big.bin", data.clone());
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let args = ["--allow-rename", "--cache", dir.to_str().unwrap()];
    let m = mount_env(&s3, &[SMALL_COPY_PARTS], &args);
    assert!(std::fs::read(m.path().join("big.bin")).unwrap() == data);
    assert!(m.unmount().success());

    let m = mount_env(&s3, &[SMALL_COPY_PARTS], &args);
    s3.reset_counts();
    std::fs::rename(m.path().join("big.bin"), m.path().join("big-2.bin")).unwrap();
    print_requests(&s3, "multipart rename of 20 MiB in 5 MiB parts");
    assert_eq!(s3.request_count(S3Operation::UploadPartCopy), 4);
    assert_eq!(s3.request_count(S3Operation::CreateMultipartUpload), 1);
    assert_eq!(s3.request_count(S3Operation::CompleteMultipartUpload), 1);
    assert_eq!(s3.request_count(S3Operation::DeleteObject), 1);
    assert_eq!(s3.request_count(S3Operation::CopyObject), 0);
    assert!(s3.get("big.bin").is_none());
    assert!(s3.get("big-2.bin").unwrap() == data);
    assert!(std::fs::read(m.path().join("big-2.bin")).unwrap() == data);
    assert_eq!(s3.request_count(S3Operation::GetObject), 0, "read from the source's cached blocks");
    assert!(s3.upload_keys("").is_empty());
    assert!(m.unmount().success());
}

/// A source replaced by another client while one UploadPartCopy part is held on the wire, in
/// the first attempt and in the kernel's retry: that part gets 412, each multipart upload is
/// aborted (none left pending), the rename fails with ESTALE, the source holds the other
/// client's bytes and the destination never appears. The fourth part of each attempt goes out
/// while the third is held: the parts are copied in parallel.
#[test]
fn a_source_replaced_during_a_multipart_copy_aborts_it_and_leaves_both_intact() {
    let s3 = MemS3::start();
    s3.put("big.bin", pattern(20 << 20, 8));
    let proxy = FaultProxy::start(s3.addr, 2);
    let m = mount_via(&s3, &proxy, &[SMALL_COPY_PARTS], &["--allow-rename"]);
    std::fs::metadata(m.path().join("big.bin")).unwrap();
    s3.reset_counts();
    let stall = || vec![Fault::Stall(Duration::from_millis(1500))];
    // The third part request of each attempt (4 parts each) is held.
    proxy.inject(Kinds::only(RequestKind::UploadPart), When::Nth(3), stall());
    proxy.inject(Kinds::only(RequestKind::UploadPart), When::Nth(7), stall());
    let (from, to) = (m.path().join("big.bin"), m.path().join("big-2.bin"));
    let writes = [pattern(20 << 20, 9), pattern(20 << 20, 10)];
    let renamed =
        rename_while_another_client_writes(&s3, &proxy, "big.bin", &writes, move || std::fs::rename(from, to));
    print_requests(&s3, "multipart rename with two concurrent changes");
    assert_eq!(errno(renamed), Some(libc::ESTALE));
    assert!(s3.get("big.bin").unwrap() == writes[1], "the other client's bytes are at the source");
    assert!(s3.get("big-2.bin").is_none(), "no destination");
    assert!(s3.upload_keys("").is_empty(), "the multipart copies were aborted");
    let parts = proxy.stats().requests_of(RequestKind::UploadPart);
    assert_eq!(parts, 8, "4 parts per attempt, the 4th sent while the 3rd was held");
    assert_eq!(s3.request_count(S3Operation::CreateMultipartUpload), 2);
    assert_eq!(s3.request_count(S3Operation::AbortMultipartUpload), 2);
    assert_eq!(s3.request_count(S3Operation::CompleteMultipartUpload), 0);
    assert_eq!(s3.request_count(S3Operation::DeleteObject), 0, "nothing deleted");
    assert!(m.unmount().success());
}
