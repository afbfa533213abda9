//! End to end: what a writer sees at close, truncate, seek and shutdown (issue 17's write-path
//! defects): a close from another thread completes the upload before it returns, truncate
//! either really changes the size or fails, a forward seek is filled with zeros, and the
//! messages a clean unmount logs.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::IntoRawFd;

use common::data::{digest, pattern};
use common::mount::TestMount;
use common::s3_server::LocalS3;

fn mount(s3: &LocalS3, extra: &[&str]) -> TestMount {
    let mut args = vec!["--endpoint-url", &s3.endpoint, "--force-path-style", "--region", "us-east-1"];
    args.extend_from_slice(extra);
    TestMount::new(&s3.env_vars(), &s3.bucket, &args)
}

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
    let s3 = LocalS3::start();
    let mut m = mount(&s3, &[]);
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
