//! End to end: the daemon killed, stopped or cut off from S3 while applications use the mount.
//!
//! - SIGKILL during an upload: no partial object, a stale mount that `umount` clears, and the
//!   mount point usable again.
//! - SIGTERM with files open: closes in progress finish, uploads still open are aborted (no
//!   object, no multipart upload left), the log says which, and the daemon exits 0.
//! - The endpoint disappearing and coming back (5 s; 30 s with `MOUNT_S3_SOAK=1`): reads fail
//!   with EIO or succeed meanwhile, never with wrong bytes or ENOENT, and work again after,
//!   without a remount.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::data::{digest, pattern};
use common::fault_proxy::{Fault, FaultProxy, Kinds, Outage, RequestKind, When};
use common::mount::{TestMount, endpoint_args, errno, force_unmount, is_mounted, wait_for};
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn signal(m: &TestMount, sig: Signal) {
    kill(Pid::from_raw(m.pid() as i32), sig).expect("signal the daemon");
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        force_unmount(self.0);
    }
}

#[test]
fn sigkill_during_an_upload_leaves_no_object_and_a_stale_mount_that_umount_clears() {
    let s3 = LocalS3::start();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(&mnt);
    let mut m = TestMount::try_new_at(&s3.env_vars(), &s3.bucket, &mnt, &endpoint_args(&s3.endpoint)).unwrap();
    let mut dd = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", mnt.join("big.bin").display()))
        .args(["bs=1M", "count=512"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "two parts to reach S3", || s3.request_count(S3Operation::UploadPart) >= 2);
    signal(&m, Signal::SIGKILL);
    m.wait_exit(Duration::from_secs(10)).expect("the daemon died");
    let dd_status = dd.wait().unwrap();
    let mut dd_err = String::new();
    dd.stderr.take().unwrap().read_to_string(&mut dd_err).unwrap();
    assert!(!dd_status.success(), "dd was told its writes failed");
    println!("sigkill: dd: {}", dd_err.trim().lines().next().unwrap_or_default());

    assert!(s3.get("big.bin").is_none(), "no partial object");
    assert!(s3.list_keys("").is_empty());
    // Nobody can abort an upload of a killed process: it stays until a lifecycle rule ends it.
    assert_eq!(s3.pending_uploads(), 1);

    assert!(is_mounted(&mnt), "a killed daemon leaves its mount");
    assert_eq!(errno(std::fs::metadata(mnt.join("anything"))), Some(libc::ENOTCONN));
    let status = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(status.success() && !is_mounted(&mnt), "umount clears the stale mount");
    drop(m);

    s3.put("after.txt", b"back");
    let m = TestMount::try_new_at(&s3.env_vars(), &s3.bucket, &mnt, &endpoint_args(&s3.endpoint)).unwrap();
    assert_eq!(std::fs::read(mnt.join("after.txt")).unwrap(), b"back", "the mount point is usable again");
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn sigterm_finishes_closes_in_progress_aborts_open_uploads_and_says_which() {
    let s3 = LocalS3::start();
    s3.put("read.bin", pattern(4 << 20, 1));
    let proxy = FaultProxy::start(s3.addr, 1);
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&proxy.endpoint));
    let part = 8 << 20;

    // Open for writing, two parts out, never closed.
    let mut open = OpenOptions::new().write(true).create_new(true).open(m.path().join("open.bin")).unwrap();
    open.write_all(&pattern(2 * part + 100, 2)).unwrap();
    wait_for(Duration::from_secs(30), "the open file's parts", || s3.request_count(S3Operation::UploadPart) >= 2);
    // Open for reading, partly read.
    let mut reader = std::fs::File::open(m.path().join("read.bin")).unwrap();
    reader.read_exact(&mut [0; 1 << 20]).unwrap();
    // Being closed when the signal comes: its CompleteMultipartUpload is held up for 3 s.
    proxy.inject(Kinds::only(RequestKind::CompleteUpload), When::Nth(1), vec![Fault::Stall(Duration::from_secs(3))]);
    let closing_data = pattern(part + 5, 3);
    let closing_path = m.path().join("closing.bin");
    let closing = std::thread::spawn({
        let data = closing_data.clone();
        move || {
            let mut f = OpenOptions::new().write(true).create_new(true).open(closing_path)?;
            f.write_all(&data)?;
            let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
            nix::unistd::close(fd).map_err(std::io::Error::from)
        }
    });
    wait_for(Duration::from_secs(30), "the close to be under way", || {
        proxy.stats().requests_of(RequestKind::CompleteUpload) >= 1
    });

    signal(&m, Signal::SIGTERM);
    let status = m.wait_exit(Duration::from_secs(30)).expect("the daemon exits after SIGTERM");
    let log = m.output();
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(!is_mounted(m.path()), "unmounted");
    let closed = closing.join().unwrap();
    // The worker answers the close that waited for the upload before it exits (and before the
    // supervisor's forced unmount could abort it).
    assert!(closed.is_ok(), "close: {closed:?}\n{log}");
    assert!(open.write_all(b"more").and_then(|()| open.sync_all()).is_err(), "the aborted file's writer is told");
    // The reader may still be served from the page cache; past it, reads fail.
    let read_after = reader.read(&mut [0; 1024]).map(|_| ());
    println!("sigterm: close of closing.bin: {closed:?}; a read after the signal: {read_after:?}");

    let line = |needle: &str, key: &str| log.lines().any(|l| l.contains(needle) && l.contains(key));
    assert!(line("upload aborted at shutdown", "open.bin"), "the log names the aborted upload:\n{log}");
    assert!(line("upload completed before shutdown", "closing.bin"), "and the completed one:\n{log}");
    assert!(s3.get("open.bin").is_none(), "no object for the aborted upload");
    assert!(digest(&s3.get("closing.bin").expect("the closed file is in S3")) == digest(&closing_data));
    assert_eq!(s3.pending_uploads(), 0, "no multipart upload left");
    for l in log.lines().filter(|l| l.contains("shutdown")) {
        println!("sigterm: {l}");
    }
}

#[test]
fn the_endpoint_disappearing_and_coming_back_needs_no_remount() {
    let soak = std::env::var("MOUNT_S3_SOAK").is_ok_and(|v| v == "1");
    let phases: &[(Outage, u64)] =
        if soak { &[(Outage::Refuse, 15), (Outage::Drop, 15)] } else { &[(Outage::Refuse, 3), (Outage::Drop, 2)] };
    let s3 = LocalS3::start();
    let files: Vec<Vec<u8>> = (0..200).map(|i| pattern(64 << 10, 100 + i as u64)).collect();
    for (i, data) in files.iter().enumerate() {
        s3.put(&format!("f{i:03}"), data);
    }
    let proxy = FaultProxy::start(s3.addr, 1);
    let mut env = s3.env_vars();
    env.push(("AWS_MAX_ATTEMPTS".into(), "4".into()));
    let m = TestMount::new(&env, &s3.bucket, &endpoint_args(&proxy.endpoint));
    let pid = m.pid();
    let check = |i: usize| -> Result<(), i32> {
        match std::fs::read(m.path().join(format!("f{i:03}"))) {
            Ok(data) => {
                assert!(data == files[i], "WRONG DATA in f{i:03}");
                Ok(())
            }
            Err(e) => Err(e.raw_os_error().unwrap_or(0)),
        }
    };
    assert_eq!(check(0), Ok(()));

    let (mut ok, mut failed, mut next) = (0, 0, 1);
    let started = Instant::now();
    for (outage, secs) in phases {
        proxy.set_outage(*outage);
        let until = Instant::now() + Duration::from_secs(*secs);
        while Instant::now() < until && next < 150 {
            match check(next) {
                Ok(()) => ok += 1,
                Err(e) => {
                    assert_eq!(e, libc::EIO, "f{next:03} during {outage:?}: errno {e}, not EIO");
                    failed += 1;
                }
            }
            next += 1;
        }
    }
    proxy.set_outage(Outage::Up);
    let outage = started.elapsed();
    let recovery = Instant::now();
    for i in 150..200 {
        assert_eq!(check(i), Ok(()), "f{i:03} after the endpoint came back");
    }
    std::fs::write(m.path().join("written-after"), b"new").unwrap();
    assert_eq!(s3.get("written-after").unwrap(), b"new");
    assert_eq!(std::fs::read_dir(m.path()).unwrap().count(), 201);
    assert_eq!(m.pid(), pid, "the same daemon, no remount");
    let stats = proxy.stats();
    println!(
        "outage: {outage:.1?} down: {ok} reads succeeded, {failed} failed with EIO; recovered in {:.1?}; proxy: {stats}",
        recovery.elapsed()
    );
    assert!(failed > 0, "some reads met the outage");
    assert!(stats.dropped_connections > 0);
}

/// S3 stops answering (every HEAD and LIST stalled for 5 minutes, far beyond the ~2 minute retry
/// deadline): a `stat` of a name the mount has not cached hangs, and SIGKILL or Ctrl-C (SIGINT,
/// whose default action is fatal) still ends it within seconds, because the daemon sees the
/// signal pending on the caller and answers EINTR. The mount keeps working once S3 answers.
#[test]
fn a_process_waiting_on_a_stalled_s3_can_be_killed() {
    let s3 = LocalS3::start();
    s3.put("there.txt", b"here");
    let proxy = FaultProxy::start(s3.addr, 1);
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &endpoint_args(&proxy.endpoint));
    proxy.inject(Kinds::HEAD | Kinds::LIST, When::Always, vec![Fault::Stall(Duration::from_secs(300))]);

    for (i, sig) in [Signal::SIGKILL, Signal::SIGINT].into_iter().enumerate() {
        let stalled_before = proxy.stats().faults_named("Stall");
        let mut child = Command::new("stat")
            .arg(m.path().join(format!("not-cached-{i}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(10), "the stat to reach S3", || {
            proxy.stats().faults_named("Stall") > stalled_before
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(child.try_wait().unwrap().is_none(), "stat is waiting on S3");
        let signalled = Instant::now();
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        let deadline = signalled + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("stat still alive 10 s after {sig:?}\n{}", m.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        println!("stat reaped {:?} after {sig:?}", signalled.elapsed());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(sig as i32), "{status:?}");
    }

    proxy.clear();
    assert_eq!(std::fs::read(m.path().join("there.txt")).unwrap(), b"here");
    assert_eq!(m.unmount().code(), Some(0));
}
