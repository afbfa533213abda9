//! End to end: the supervisor keeps the mount while the worker serving it dies or is replaced.
//!
//! - A SIGKILLed worker is replaced: the mount stays, the supervisor (the pid the user has)
//!   stays, `ls` and new opens work, the log says why the worker was restarted, and `umount`
//!   still ends everything with exit 0.
//! - SIGUSR1 replaces the worker with the binary on disk (upgrade in place), also while 8
//!   readers read: none of them loses a read or gets a wrong byte.
//! - A crash loop (workers dying again and again) gives up: the mount is unmounted, exit 1.
//! - After a restart the kernel's view stays valid: a reader in the middle of a large
//!   sequential read finishes with the right bytes (256 MiB; 1 GiB with `MOUNT_S3_SOAK=1`), and
//!   the longest read it saw is printed (the stall); inode numbers, open read handles and
//!   directory handles keep working; a file being written fails with EIO and its multipart
//!   upload is aborted, no object appears. A file renamed (`--allow-rename`) keeps its inode
//!   number across a restart under its new name.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::data::{digest, pattern};
use mount_s3::client::S3Operation;

use common::mount::{TestMount, endpoint_args, is_mounted, wait_for};
use common::s3_server::LocalS3;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The supervisor's children: its worker, if one runs.
fn workers(supervisor: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The one worker of `supervisor`, once it runs (and is not `not`).
fn worker_other_than(supervisor: u32, not: Option<u32>) -> u32 {
    let mut found = 0;
    wait_for(Duration::from_secs(20), "a worker", || {
        found = workers(supervisor).into_iter().find(|w| Some(*w) != not).unwrap_or(0);
        found != 0
    });
    found
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).expect("signal");
}

/// Waits until `log` contains `needle` `times` times.
fn wait_for_log(m: &TestMount, needle: &str, times: usize) {
    wait_for(Duration::from_secs(30), needle, || m.output().matches(needle).count() >= times);
}

fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_killed_worker_is_replaced_without_unmounting() {
    let s3 = LocalS3::start();
    s3.put("before.txt", b"before");
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    assert_eq!(std::fs::read(m.path().join("before.txt")).unwrap(), b"before");
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);

    signal(first, Signal::SIGKILL);
    wait_for_log(&m, "killed by SIGKILL", 1);
    s3.put("after.txt", b"after");
    assert_eq!(ls(m.path()), ["after.txt", "before.txt"], "ls works after the restart");
    assert_eq!(std::fs::read(m.path().join("after.txt")).unwrap(), b"after", "a new open works");
    let second = worker_other_than(supervisor, Some(first));
    assert!(is_mounted(m.path()));
    assert!(m.wait_exit(Duration::from_millis(10)).is_none(), "the supervisor lives on");
    let log = m.output();
    assert!(log.contains("restarting it (restart 1)"), "{log}");
    assert!(log.contains(&format!("worker {second} serves")), "the new worker says it serves:\n{log}");

    let status = m.unmount();
    assert_eq!(status.code(), Some(0), "umount still ends everything");
    assert!(workers(supervisor).is_empty());
}

#[test]
fn sigusr1_replaces_the_worker_with_the_binary_on_disk() {
    let s3 = LocalS3::start();
    s3.put("a.txt", b"a");
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);
    signal(supervisor, Signal::SIGUSR1);
    let second = worker_other_than(supervisor, Some(first));
    wait_for_log(&m, &format!("worker {second} serves"), 1);
    let log = m.output();
    assert!(log.contains(&format!("upgrade: replacing worker {first}")), "{log}");
    assert!(!log.contains("restarting it"), "an upgrade is not a crash:\n{log}");
    assert_eq!(ls(m.path()), ["a.txt"]);
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn a_crash_loop_gives_up_and_unmounts() {
    let s3 = LocalS3::start();
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    let supervisor = m.pid();
    let mut last = None;
    for _ in 0..6 {
        let worker = worker_other_than(supervisor, last);
        signal(worker, Signal::SIGKILL);
        last = Some(worker);
    }
    let status = m.wait_exit(Duration::from_secs(30)).expect("the supervisor gives up");
    assert_eq!(status.code(), Some(1));
    let log = m.output();
    assert!(log.contains("died 6 times within 60s"), "{log}");
    assert!(log.contains("giving up, unmounting"), "{log}");
    assert!(!is_mounted(m.path()), "a crash loop ends in a clean unmount");
    assert!(Command::new("ls").arg(m.path()).status().unwrap().success(), "the mount point is a plain directory again");
}

/// Reads `path` in 1 MiB requests to the end; returns its digest, the byte count, and the
/// longest single read (what a reader sees of a restart). `progress` counts bytes as they come.
fn read_all(path: &Path, progress: &AtomicU64) -> ([u8; 32], u64, Duration) {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (mut hasher, mut total, mut longest) = (Sha256::new(), 0u64, Duration::ZERO);
    loop {
        let started = Instant::now();
        let n = file.read(&mut buf).unwrap_or_else(|e| panic!("read at {total}: {e}"));
        longest = longest.max(started.elapsed());
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.store(total, Ordering::Relaxed);
    }
    (hasher.finalize().into(), total, longest)
}

#[test]
fn a_reader_mid_read_when_the_worker_is_killed_gets_every_byte() {
    let size: usize = if std::env::var_os("MOUNT_S3_SOAK").is_some() { 1 << 30 } else { 256 << 20 };
    let s3 = LocalS3::start();
    let data = pattern(size, 16);
    let expected = digest(&data);
    s3.put("big.bin", &data);
    drop(data);
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let (path, progress) = (m.path().join("big.bin"), progress.clone());
        std::thread::spawn(move || read_all(&path, &progress))
    };
    wait_for(Duration::from_secs(120), "a quarter of the file", || progress.load(Ordering::Relaxed) >= size as u64 / 4);
    signal(first, Signal::SIGKILL);
    let at = progress.load(Ordering::Relaxed);
    let (got, total, longest) = reader.join().expect("the reader finishes");
    assert_eq!(total, size as u64);
    assert!(got == expected, "the reader got the right bytes");
    assert!(at < size as u64, "the worker died mid-read (at {at} of {size})");
    println!("restart during a sequential read: killed at {} MiB; longest read: {longest:?}", at >> 20);
    let output = m.output();
    if let Some(line) = output.lines().find(|l| l.contains("it took")) {
        println!("{line}");
    }
    assert!(m.output().contains("reads=1"), "the read handle was taken over:\n{}", m.output());
    assert!(m.wait_exit(Duration::from_millis(10)).is_none());
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn inodes_open_files_and_directory_handles_survive_a_restart() {
    let s3 = LocalS3::start();
    let a = pattern(3 << 20, 1);
    s3.put("dir/a.bin", &a);
    s3.put("dir/b.txt", b"b");
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    let supervisor = m.pid();
    let dir = m.path().join("dir");
    let ino = std::fs::metadata(dir.join("a.bin")).unwrap().ino();
    let dir_ino = std::fs::metadata(&dir).unwrap().ino();
    let mut open = File::open(dir.join("a.bin")).unwrap();
    let mut head = vec![0u8; 1000];
    open.read_exact(&mut head).unwrap();
    // A directory handle opened before the restart and read after it.
    // (std opens the directory here, and reads it only when iterated.)
    let listing = std::fs::read_dir(&dir).unwrap();

    let first = worker_other_than(supervisor, None);
    signal(first, Signal::SIGKILL);
    wait_for_log(&m, "killed by SIGKILL", 1);
    worker_other_than(supervisor, Some(first));

    assert_eq!(std::fs::metadata(dir.join("a.bin")).unwrap().ino(), ino, "the same inode number");
    assert_eq!(std::fs::metadata(&dir).unwrap().ino(), dir_ino);
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).expect("the open handle reads on");
    head.extend(rest);
    assert!(head == a, "the open handle read the right bytes");
    open.seek(SeekFrom::Start(5)).unwrap();
    let mut five = [0u8; 5];
    open.read_exact(&mut five).unwrap();
    assert_eq!(five, a[5..10]);
    let mut names: Vec<String> = listing.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["a.bin", "b.txt"], "the directory handle lists after the restart");
    assert_eq!(ls(&dir), ["a.bin", "b.txt"]);
    assert_eq!(std::fs::read(dir.join("b.txt")).unwrap(), b"b", "a new open works");
    drop(open);
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn a_file_being_written_fails_with_eio_and_no_object_appears() {
    let s3 = LocalS3::start();
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    let supervisor = m.pid();
    let mut file = File::create(m.path().join("partial.bin")).unwrap();
    let chunk = pattern(1 << 20, 3);
    let mut written = 0;
    while s3.request_count(S3Operation::UploadPart) < 1 {
        file.write_all(&chunk).unwrap();
        written += 1;
        assert!(written < 512, "no part was uploaded");
    }
    assert_eq!(s3.pending_uploads(), 1);
    let first = worker_other_than(supervisor, None);
    signal(first, Signal::SIGKILL);
    wait_for_log(&m, "killed by SIGKILL", 1);
    let err = file.write_all(&chunk).expect_err("the next write fails");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let closed = nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(file));
    assert_eq!(closed, Err(nix::errno::Errno::EIO), "close fails too");
    wait_for(Duration::from_secs(20), "the multipart upload to be aborted", || s3.pending_uploads() == 0);
    assert!(s3.get("partial.bin").is_none(), "never a partial object");
    assert!(s3.list_keys("").is_empty());
    assert!(m.output().contains("aborted the upload of"), "{}", m.output());
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn an_upgrade_while_8_readers_read_loses_no_read() {
    const READERS: usize = 8;
    const SIZE: usize = 48 << 20;
    let s3 = LocalS3::start();
    let mut expected = Vec::new();
    for i in 0..READERS {
        let data = pattern(SIZE, 100 + i as u64);
        expected.push(digest(&data));
        s3.put(&format!("r{i}.bin"), &data);
    }
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);
    let progress: Vec<Arc<AtomicU64>> = (0..READERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (path, progress) = (m.path().join(format!("r{i}.bin")), progress[i].clone());
            std::thread::spawn(move || read_all(&path, &progress))
        })
        .collect();
    wait_for(Duration::from_secs(120), "every reader to be under way", || {
        progress.iter().all(|p| p.load(Ordering::Relaxed) >= 4 << 20)
    });
    signal(supervisor, Signal::SIGUSR1);
    let mid: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    let results: Vec<_> = readers.into_iter().map(|r| r.join().expect("no reader failed")).collect();
    for (i, (got, total, longest)) in results.iter().enumerate() {
        assert_eq!(*total, SIZE as u64, "reader {i}");
        assert!(*got == expected[i], "reader {i} got the right bytes");
        println!("upgrade: reader {i} at {} MiB when it began; longest read {longest:?}", mid[i] >> 20);
    }
    assert!(mid.iter().any(|at| *at < SIZE as u64), "the upgrade happened mid-read");
    let second = worker_other_than(supervisor, Some(first));
    assert!(m.output().contains(&format!("worker {second} serves")), "{}", m.output());
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn a_renamed_file_keeps_its_inode_number_across_a_restart() {
    let s3 = common::mem_server::MemS3::start();
    s3.put("dir/a.txt", &b"a"[..]);
    let m = common::mount::mount(&s3, &["--allow-rename"]);
    let (from, to) = (m.path().join("dir/a.txt"), m.path().join("b.txt"));
    let ino = std::fs::metadata(&from).unwrap().ino();
    std::fs::rename(&from, &to).unwrap();
    assert_eq!(std::fs::metadata(&to).unwrap().ino(), ino);
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);
    signal(first, Signal::SIGKILL);
    wait_for_log(&m, "killed by SIGKILL", 1);
    worker_other_than(supervisor, Some(first));
    assert_eq!(std::fs::metadata(&to).unwrap().ino(), ino, "the renamed inode under its new name");
    assert_eq!(std::fs::read(&to).unwrap(), b"a");
    assert!(std::fs::metadata(&from).is_err(), "the old name stays gone");
    assert_eq!(m.unmount().code(), Some(0));
}

/// A memory cgroup (v1, the one this machine's memory controller is in) under the test's own,
/// removed when dropped.
struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    fn new(limit: u64) -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))?;
        let dir = Path::new("/sys/fs/cgroup/memory")
            .join(path.trim_start_matches('/'))
            .join(format!("mount-s3-oom-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let group = MemoryCgroup(dir);
        std::fs::write(group.0.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
        // No swap to escape to: the limit is what the OOM killer enforces.
        let _ = std::fs::write(group.0.join("memory.memsw.limit_in_bytes"), limit.to_string());
        Some(group)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("move the worker into the cgroup");
    }

    fn oom_kills(&self) -> u64 {
        let control = std::fs::read_to_string(self.0.join("memory.oom_control")).unwrap_or_default();
        control.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone (the killed worker).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The OOM killer, not a test's kill: the worker is put in a memory cgroup far smaller than a
/// sequential read's prefetch needs, so the kernel kills it mid-read. The supervisor (outside
/// the cgroup) starts a new worker, and the reader finishes with the right bytes.
#[test]
fn a_worker_killed_by_its_memory_cgroup_is_replaced_and_the_reader_carries_on() {
    let Some(cgroup) = MemoryCgroup::new(48 << 20) else {
        eprintln!("no writable memory cgroup here; skipped");
        return;
    };
    let size: usize = 128 << 20;
    let s3 = LocalS3::start();
    let data = pattern(size, 23);
    let expected = digest(&data);
    s3.put("big.bin", &data);
    drop(data);
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&s3.endpoint));
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);
    cgroup.add(first);
    let progress = AtomicU64::new(0);
    let (got, total, longest) = read_all(&m.path().join("big.bin"), &progress);
    assert_eq!(total, size as u64);
    assert!(got == expected, "the reader got the right bytes");
    assert!(cgroup.oom_kills() >= 1, "the kernel's OOM killer killed the worker");
    let second = worker_other_than(supervisor, Some(first));
    assert!(second != first);
    let log = m.output();
    assert!(log.contains("killed by SIGKILL"), "the restart names the cause:\n{log}");
    println!("OOM kill during a sequential read: longest read {longest:?}");
    assert!(m.wait_exit(Duration::from_millis(10)).is_none(), "the supervisor lives on");
    assert_eq!(m.unmount().code(), Some(0));
}
