//! Writes whose answer cannot be read: a CompleteMultipartUpload answered 200 with a body the SDK
//! rejects, answers lost on the network. S3 is asked what it holds, and close() says the truth.

mod common;

use common::data::pattern;
use common::fault_proxy::{Fault, FaultProxy, Kinds, RequestKind, When};
use common::mount::TestMount;
use common::s3_server::LocalS3;

fn mount(s3: &LocalS3, proxy: &FaultProxy, extra_env: &[(&str, &str)]) -> TestMount {
    let mut env = s3.env_vars();
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let args = ["--endpoint-url", &proxy.endpoint, "--force-path-style", "--region", "us-east-1", "--allow-overwrite"];
    TestMount::new(&env, &s3.bucket, &args)
}

/// Writes `data` to `name` and returns what close() returned.
fn write_and_close(m: &TestMount, name: &str, data: &[u8]) -> Result<(), i32> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path().join(name))
        .map_err(|e| e.raw_os_error().unwrap_or(0))?;
    std::io::Write::write_all(&mut f, data).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(f)).map_err(|e| e as i32)
}

#[test]
fn a_complete_answered_200_with_an_unreadable_body_is_settled_by_asking_s3() {
    let s3 = LocalS3::start();
    let proxy = FaultProxy::start(s3.addr, 1);
    let m = mount(&s3, &proxy, &[]);
    let data = pattern(9 << 20, 7);
    proxy.inject(Kinds::only(RequestKind::CompleteUpload), When::Nth(1), vec![Fault::UnreadableOk]);
    assert_eq!(write_and_close(&m, "unreadable", &data), Ok(()), "{}", m.output());
    assert_eq!(proxy.stats().faults_named("UnreadableOk"), 1);
    assert!(s3.get("unreadable").is_some_and(|got| got == data), "the object in S3 is ours");
    assert_eq!(s3.pending_uploads(), 0);
    let log = m.output();
    assert!(log.contains("S3 holds an object of our size and ETag, so the upload succeeded"), "{log}");
    assert!(!log.contains("nothing was written to S3"), "{log}");
    // And the file reads back through the mount.
    assert!(std::fs::read(m.path().join("unreadable")).unwrap() == data);
}

#[test]
fn lost_answers_to_every_attempt_are_settled_by_asking_s3() {
    let s3 = LocalS3::start();
    let proxy = FaultProxy::start(s3.addr, 2);
    let m = mount(&s3, &proxy, &[("AWS_MAX_ATTEMPTS", "3")]);
    // Every answer lost, the retries' too: the object landed at the first attempt.
    for (kind, name, size) in
        [(RequestKind::CompleteUpload, "lost-complete", 9 << 20), (RequestKind::Put, "lost-put", 1 << 20)]
    {
        proxy.clear();
        proxy.inject(Kinds::only(kind), When::Always, vec![Fault::DropResponse]);
        let data = pattern(size, size as u64);
        assert_eq!(write_and_close(&m, name, &data), Ok(()), "{name}: {}", m.output());
        assert!(s3.get(name).is_some_and(|got| got == data), "{name} in S3");
        assert!(proxy.stats().faults_named("DropResponse") >= 1);
    }
    // An overwrite whose PutObject answers are all lost: the new object is there, close says so.
    proxy.clear();
    proxy.inject(Kinds::only(RequestKind::Put), When::Always, vec![Fault::DropResponse]);
    let data = pattern(1000, 99);
    assert_eq!(write_and_close(&m, "lost-put", &data), Ok(()), "{}", m.output());
    assert_eq!(s3.get("lost-put").unwrap(), data);
    assert_eq!(s3.pending_uploads(), 0);
    assert!(!m.output().contains("nothing was written to S3"), "{}", m.output());
}

#[test]
fn a_write_that_did_not_land_is_eio_with_the_truth() {
    let s3 = LocalS3::start();
    let proxy = FaultProxy::start(s3.addr, 3);
    let m = mount(&s3, &proxy, &[("AWS_MAX_ATTEMPTS", "2")]);
    // The server never sees the PutObject: every attempt is reset before it is forwarded.
    proxy.inject(Kinds::only(RequestKind::Put), When::Always, vec![Fault::Reset]);
    assert_eq!(write_and_close(&m, "never", b"bytes"), Err(libc::EIO));
    assert!(s3.get("never").is_none());
    let log = m.output();
    assert!(log.contains("S3 has no object at the key, so the upload did not land"), "{log}");
}
