//! End to end: what a writer sees at close, truncate, seek and shutdown (issue 17's write-path
//! defects): a close from another thread completes the upload before it returns, truncate
//! either really changes the size or fails, a forward seek is filled with zeros, and the
//! messages a clean unmount logs.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::IntoRawFd;

use common::data::{digest, pattern};
use common::mount::{TestMount, errno, mount};
use common::s3_server::LocalS3;
use common::writer::OutsideWriter;

/// close(2) of `file` on a thread of its own (as thread pools, Go and Java do); its result.
fn close_on_another_thread(file: File) -> Result<(), i32> {
    let fd = file.into_raw_fd();
    std::thread::spawn(move || nix::unistd::close(fd).map_err(|e| e as i32)).join().unwrap()
}

#[test]
fn a_close_from_another_thread_completes_the_upload_before_it_returns() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &[]);
    let data = pattern(20 << 20, 17);
    let mut f = OpenOptions::new().write(true).create_new(true).open(m.path().join("big")).unwrap();
    f.write_all(&data).unwrap();
    close_on_another_thread(f).unwrap();
    // At this instant, no waiting: close() returned 0, so the object is in S3, whole.
    let stored = s3.get("big").expect("the object exists when close() returns");
    assert_eq!(stored.len(), data.len());
    assert_eq!(digest(&stored), digest(&data));
    assert_eq!(s3.pending_uploads(), 0);
}

#[test]
fn two_mounts_racing_with_closes_on_other_threads_one_is_told_eexist() {
    let s3 = LocalS3::start();
    let a = mount(&s3, &[]);
    let b = mount(&s3, &[]);
    let (data_a, data_b) = (pattern(9 << 20, 1), pattern(3 << 20, 2));
    let mut fa = OpenOptions::new().write(true).create_new(true).open(a.path().join("shared")).unwrap();
    let mut fb = OpenOptions::new().write(true).create_new(true).open(b.path().join("shared")).unwrap();
    fa.write_all(&data_a).unwrap();
    fb.write_all(&data_b).unwrap();
    let ra = close_on_another_thread(fa);
    let rb = close_on_another_thread(fb);
    assert!(ra.is_ok(), "first close wins: {ra:?}");
    assert_eq!(rb, Err(libc::EEXIST), "the second creator is told");
    assert_eq!(digest(&s3.get("shared").unwrap()), digest(&data_a), "the winner's bytes, whole");
    assert_eq!(s3.pending_uploads(), 0);
}

#[test]
fn sigterm_right_after_a_close_from_another_thread_keeps_the_object() {
    use common::fault_proxy::{Fault, FaultProxy, Kinds, RequestKind, When};
    let s3 = LocalS3::start();
    // A slow store: completing the upload takes 2 s, longer than shutdown waits for stray tasks.
    let proxy = FaultProxy::start(s3.addr, 1);
    let stall = vec![Fault::Stall(std::time::Duration::from_secs(2))];
    proxy.inject(Kinds::only(RequestKind::CompleteUpload), When::Always, stall);
    let args = ["--endpoint-url", &proxy.endpoint, "--force-path-style", "--region", "us-east-1"];
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
    let data = pattern(20 << 20, 5);
    let mut f = OpenOptions::new().write(true).create_new(true).open(m.path().join("kept")).unwrap();
    f.write_all(&data).unwrap();
    close_on_another_thread(f).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = m.wait_exit(std::time::Duration::from_secs(20)).expect("daemon exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", m.output());
    assert_eq!(digest(&s3.get("kept").expect("object kept")), digest(&data));
    assert_eq!(s3.pending_uploads(), 0, "no multipart upload left behind\n{}", m.output());
}

fn close(file: File) -> Result<(), i32> {
    nix::unistd::close(file.into_raw_fd()).map_err(|e| e as i32)
}

#[test]
fn truncate_while_writing_changes_the_size_or_fails() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &["--write-part-size", "5242880"]);
    // Nothing sent yet: the size really changes, both ways.
    let mut f = File::create_new(m.path().join("shrunk")).unwrap();
    f.write_all(b"0123456789").unwrap();
    f.set_len(5).unwrap();
    assert_eq!(std::fs::metadata(m.path().join("shrunk")).unwrap().len(), 5);
    f.write_all(b"ab").unwrap();
    close(f).unwrap_or_else(|e| panic!("close: errno {e}\n{}", m.output()));
    // The file position was 10: the write after the truncate lands at 10, past a zero-filled gap.
    assert_eq!(s3.get("shrunk").unwrap(), b"01234\0\0\0\0\0ab");

    let f = File::create_new(m.path().join("grown")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"abc", 0).unwrap();
    f.set_len(3).unwrap();
    f.set_len(8).unwrap();
    close(f).unwrap();
    assert_eq!(s3.get("grown").unwrap(), b"abc\0\0\0\0\0");

    // A part (5 MiB) already went to S3: shrinking into it fails, and the upload goes on.
    let data = pattern(12 << 20, 9);
    let mut f = File::create_new(m.path().join("sent")).unwrap();
    f.write_all(&data).unwrap();
    assert_eq!(errno(f.set_len(10)), Some(libc::EPERM));
    assert_eq!(std::fs::metadata(m.path().join("sent")).unwrap().len(), data.len() as u64);
    close(f).unwrap_or_else(|e| panic!("close: errno {e}\n{}", m.output()));
    assert_eq!(digest(&s3.get("sent").unwrap()), digest(&data));
}

#[test]
fn cp_sparse_always_of_a_file_with_holes_gives_the_same_bytes() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &[]);
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("sparse");
    let f = File::create(&path).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&pattern(100_000, 1), 0).unwrap();
    f.write_all_at(&pattern(300_000, 2), 12 << 20).unwrap();
    f.write_all_at(&pattern(5_000, 3), 30 << 20).unwrap();
    // Ends in a hole: cp extends the copy with ftruncate.
    f.set_len(40 << 20).unwrap();
    drop(f);
    let out = std::process::Command::new("cp").arg("--sparse=always").arg(&path).arg(m.path()).output().unwrap();
    assert!(out.status.success(), "cp: {}\n{}", String::from_utf8_lossy(&out.stderr), m.output());
    let want = std::fs::read(&path).unwrap();
    assert_eq!(digest(&s3.get("sparse").expect("object")), digest(&want));
    assert_eq!(s3.pending_uploads(), 0);
}

#[test]
fn after_an_out_of_order_write_every_write_is_einval_and_no_object_appears() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &[]);
    let f = File::create_new(m.path().join("backwards")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"0123456789", 0).unwrap();
    assert_eq!(errno(f.write_all_at(b"x", 3)), Some(libc::EINVAL));
    assert_eq!(errno(f.write_all_at(b"y", 10)), Some(libc::EINVAL), "a later write, even in order");
    assert_eq!(errno(f.write_all_at(b"z", 11)), Some(libc::EINVAL));
    assert_eq!(close(f), Err(libc::EINVAL));
    assert!(s3.get("backwards").is_none());
    let log = m.output();
    assert!(!log.contains("was already uploaded"), "no false message:\n{log}");
    assert!(log.contains("nothing was written to S3"), "{log}");
}

#[test]
fn new_objects_are_binary_octet_stream_unless_inferred() {
    let s3 = LocalS3::start();
    let plain = mount(&s3, &["--write-part-size", "5242880"]);
    std::fs::write(plain.path().join("small.json"), b"{}").unwrap();
    std::fs::write(plain.path().join("large.bin"), pattern(6 << 20, 4)).unwrap();
    drop(plain);
    let inferring = mount(&s3, &["--infer-content-type"]);
    std::fs::write(inferring.path().join("typed.json"), b"{}").unwrap();
    std::fs::write(inferring.path().join("untyped.zzqq"), b"?").unwrap();
    let client = s3.sdk_client();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (key, want) in [
        ("small.json", "binary/octet-stream"),
        ("large.bin", "binary/octet-stream"),
        ("typed.json", "application/json"),
        ("untyped.zzqq", "binary/octet-stream"),
    ] {
        let head = runtime.block_on(client.head_object().bucket(&s3.bucket).key(key).send()).unwrap();
        assert_eq!(head.content_type(), Some(want), "{key}");
    }
}

/// Peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn thirty_two_writers_stay_within_the_memory_target() {
    use common::TestS3;
    use common::mem_server::MemS3;
    const WRITERS: usize = 32;
    const SIZE: usize = 64 << 20;
    use common::fault_proxy::{Fault, FaultProxy, Kinds, RequestKind, When};
    let s3 = MemS3::start();
    // A slow store (each part takes 4 s, as on a loaded server): parts pile up in flight,
    // which is what the budget must bound.
    let proxy = FaultProxy::start(s3.addr, 1);
    proxy.inject(
        Kinds::only(RequestKind::UploadPart),
        When::Always,
        vec![Fault::Stall(std::time::Duration::from_secs(4))],
    );
    let endpoint = proxy.endpoint.clone();
    let args = ["--endpoint-url", &endpoint, "--force-path-style", "--region", "us-east-1", "--memory-target", "512"];
    let m = TestMount::new(&s3.env_vars(), s3.bucket(), &args);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let path = m.path().join(format!("w{w}"));
            std::thread::spawn(move || {
                let chunk = pattern(1 << 20, w as u64);
                let mut f = File::create_new(path).unwrap();
                for _ in 0..SIZE / chunk.len() {
                    f.write_all(&chunk).unwrap();
                }
                close(f)
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap().unwrap_or_else(|e| panic!("close: errno {e}\n{}", m.output()));
    }
    let peak = peak_rss(m.pid());
    eprintln!("peak RSS of the daemon with {WRITERS} writers of {} MiB: {} MiB", SIZE >> 20, peak >> 20);
    for w in 0..WRITERS {
        assert_eq!(s3.get(&format!("w{w}")).map(|b| b.len()), Some(SIZE), "w{w}");
    }
    // The target bounds the whole process: the budget (512 - 128 = 384 MiB) bounds every data
    // buffer, and 128 MiB is kept back for everything else (code, runtime, SDK, FUSE requests).
    // Before writers drew on the budget, this run peaked at ~540 MiB (each writer could take a
    // part past the limit, and freed part buffers stayed in malloc's heaps).
    assert!(peak < 512 << 20, "peak RSS {} MiB over --memory-target 512", peak >> 20);
}

#[test]
fn writers_beyond_the_memory_budget_get_enomem_until_one_closes() {
    let s3 = LocalS3::start();
    // A 384 MiB budget holds three 128 MiB part buffers.
    let m = mount(&s3, &["--memory-target", "512", "--write-part-size", "134217728"]);
    let open: Vec<File> = (0..3).map(|i| File::create_new(m.path().join(format!("f{i}"))).unwrap()).collect();
    assert_eq!(errno(File::create_new(m.path().join("f3"))), Some(libc::ENOMEM));
    // The worker's log reaches us through the supervisor's pipe: give the line a moment to arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !m.output().contains("close some, or raise --memory-target") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(m.output().contains("close some, or raise --memory-target"), "{}", m.output());
    for (i, mut f) in open.into_iter().enumerate() {
        f.write_all(b"data").unwrap();
        close(f).unwrap();
        assert_eq!(s3.get(&format!("f{i}")).unwrap(), b"data");
    }
    std::fs::write(m.path().join("f3"), b"now").unwrap();
    assert_eq!(s3.get("f3").unwrap(), b"now");
}

#[test]
fn deleting_a_file_being_written_says_so_and_a_clean_umount_logs_no_warning() {
    let s3 = LocalS3::start();
    let mut m = mount(&s3, &["--allow-delete"]);
    // Held by another process: a fork by a parallel test would otherwise close a copy of it.
    let mut f = OutsideWriter::create(&m.path().join("busy")).unwrap();
    f.write(b'x', 1).unwrap();
    assert_eq!(errno(std::fs::remove_file(m.path().join("busy"))), Some(libc::EPERM));
    f.close().unwrap();
    std::fs::remove_file(m.path().join("busy")).unwrap();
    assert!(s3.get("busy").is_none());
    let status = std::process::Command::new("umount").arg(m.path()).status().unwrap();
    assert!(status.success());
    let exit = m.wait_exit(std::time::Duration::from_secs(10)).expect("daemon exits after umount");
    assert!(exit.success());
    let log = m.output();
    assert!(log.contains("cannot delete \"busy\" while it is being written"), "{log}");
    assert!(!log.contains("can be read once it is closed"), "no message about reading:\n{log}");
    assert!(log.contains("file system unmounted, shutting down"), "{log}");
    let after_unmount = &log[log.find("file system unmounted").unwrap()..];
    for bad in [" WARN ", " ERROR ", "Failed to umount"] {
        assert!(!after_unmount.contains(bad), "a clean umount logs {bad:?}:\n{after_unmount}");
    }
}

#[test]
fn touch_then_overwrite_at_once_never_fails_on_timing() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &["--allow-overwrite"]);
    let path = m.path().join("f");
    for i in 0..50 {
        // `touch f`: created (or truncated) and closed with nothing written, so its upload is
        // left to the kernel's asynchronous release...
        drop(OpenOptions::new().write(true).create(true).truncate(true).open(&path).unwrap());
        // ...which the next open must not race with: it completes that upload first.
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("iteration {i}: reopen: {e}\n{}", m.output()));
        f.write_all(format!("content {i}").as_bytes()).unwrap();
        assert_eq!(close(f), Ok(()), "iteration {i}");
    }
    assert_eq!(s3.get("f").unwrap(), b"content 49");
    assert_eq!(s3.pending_uploads(), 0);
}
