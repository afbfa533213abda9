//! End to end: what the persistent cache (`--cache` with `--metadata-ttl indefinite`) may be
//! trusted with. A directory or journal planted by another user is not used, another store or
//! another identity never sees cached data, deletions and completed writes survive a remount
//! (also after kill -9), and a damaged journal line costs only itself.

mod common;

use std::path::{Path, PathBuf};

use common::mount::TestMount;
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;

/// With a size limit, so that blocks are stored however full the test machine's disk is (without
/// one, nothing is stored while less than 5% is free).
const INDEFINITE: &[&str] = &["--metadata-ttl", "indefinite", "--max-cache-size", "64"];

fn mount_with(s3: &LocalS3, env: &[(String, String)], cache: &Path, extra: &[&str]) -> TestMount {
    let mut args = vec!["--endpoint-url", &s3.endpoint, "--force-path-style", "--region", "us-east-1"];
    args.extend_from_slice(INDEFINITE);
    args.extend_from_slice(&["--cache", cache.to_str().unwrap()]);
    args.extend_from_slice(extra);
    TestMount::new(env, &s3.bucket, &args)
}

fn mount(s3: &LocalS3, cache: &Path, extra: &[&str]) -> TestMount {
    mount_with(s3, &s3.env_vars(), cache, extra)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// The metadata journal files under `cache`.
fn journals(cache: &Path) -> Vec<PathBuf> {
    let dir = cache.join("mount-s3-cache/metadata");
    std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

#[test]
fn a_cache_dir_or_journal_owned_by_another_user_is_not_trusted() {
    let s3 = LocalS3::start();
    s3.put("real.txt", b"real");
    s3.put("fake.txt", b"planted");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("mountpoint-cache");
    // The "attacker's" journal: a complete listing of the root naming fake.txt.
    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(m.path()), ["fake.txt", "real.txt"]);
    assert!(m.unmount().success());
    assert_eq!(journals(&cache).len(), 1);
    s3.delete("fake.txt");
    s3.put("new.txt", b"new");

    // Everything owned by another uid (as if nobody had created the directory first).
    chown_tree(&cache, 65534);
    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(m.path()), ["new.txt", "real.txt"], "the planted listing is not used");
    assert!(m.output().contains("is not used"), "a warning names the reason:\n{}", m.output());
    assert!(m.output().contains(&cache.display().to_string()), "and the path:\n{}", m.output());
    assert!(m.unmount().success());

    // Only the journal belongs to someone else: still not used.
    chown_tree(&cache, 0);
    std::os::unix::fs::lchown(&journals(&cache)[0], Some(65534), None).unwrap();
    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(m.path()), ["new.txt", "real.txt"]);
    assert!(m.output().contains("must be a regular file owned by uid 0"), "{}", m.output());
    assert!(m.unmount().success());
}

#[test]
fn a_journal_replaced_by_a_symlink_is_neither_read_nor_appended_to() {
    let s3 = LocalS3::start();
    s3.put("a.txt", b"a");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(m.path()), ["a.txt"]);
    assert!(m.unmount().success());
    let journal = journals(&cache).remove(0);
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::copy(&journal, tmp.path().join("saved")).unwrap();
    std::fs::remove_file(&journal).unwrap();
    std::os::unix::fs::symlink(&victim, &journal).unwrap();
    s3.put("b.txt", b"b");

    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(m.path()), ["a.txt", "b.txt"], "the journal behind the link is not loaded");
    assert_eq!(std::fs::read(m.path().join("b.txt")).unwrap(), b"b");
    assert!(m.output().contains("symbolic link"), "{}", m.output());
    assert!(m.unmount().success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n", "the file behind the link is unchanged");
    assert!(std::fs::symlink_metadata(&journal).unwrap().file_type().is_symlink());
}

#[test]
fn two_stores_with_the_same_bucket_name_never_share_the_cache() {
    let a = LocalS3::start();
    let b = LocalS3::start();
    b.create_bucket(&a.bucket);
    a.put("only-a.txt", b"from store A");
    a.put("same.txt", b"A's bytes");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = b.sdk_client();
    for (key, body) in [("only-b.txt", &b"from store B"[..]), ("same.txt", b"B's other bytes")] {
        rt.block_on(client.put_object().bucket(&a.bucket).key(key).body(body.to_vec().into()).send()).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let m = mount(&a, &cache, &[]);
    assert_eq!(names(m.path()), ["only-a.txt", "same.txt"]);
    assert_eq!(std::fs::read(m.path().join("same.txt")).unwrap(), b"A's bytes");
    assert!(m.unmount().success());

    // The same bucket name at another endpoint, the same cache directory and credentials.
    let args = ["--endpoint-url", &b.endpoint, "--force-path-style", "--region", "us-east-1"];
    let mut args = args.to_vec();
    args.extend_from_slice(INDEFINITE);
    args.extend_from_slice(&["--cache", cache.to_str().unwrap()]);
    let m = TestMount::new(&b.env_vars(), &a.bucket, &args);
    assert_eq!(names(m.path()), ["only-b.txt", "same.txt"], "only B's files");
    assert_eq!(std::fs::read(m.path().join("same.txt")).unwrap(), b"B's other bytes", "B's bytes");
    assert!(b.request_count(S3Operation::GetObject) >= 1, "B's bytes came from B");
    assert!(m.unmount().success());
}

#[test]
fn an_identity_allowed_only_to_list_cannot_read_what_another_cached() {
    let s3 = LocalS3::start();
    s3.put("jars/secret.jar", vec![7u8; 300_000]);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(&m.path().join("jars")), ["secret.jar"]);
    assert_eq!(std::fs::read(m.path().join("jars/secret.jar")).unwrap(), vec![7u8; 300_000]);
    assert!(m.unmount().success());

    let m = mount_with(&s3, &s3.list_only_env_vars(), &cache, &[]);
    let err = std::fs::read(m.path().join("jars/secret.jar")).expect_err("GetObject is refused to this identity");
    assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::EACCES as i32), "AccessDenied is EACCES: {err}");
    assert_eq!(names(&m.path().join("jars")), ["secret.jar"], "listing is allowed");
    assert!(m.unmount().success());

    // The identity that read it still gets it from the cache, with no request at all.
    let m = mount(&s3, &cache, &[]);
    s3.reset_counts();
    assert_eq!(std::fs::read(m.path().join("jars/secret.jar")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(s3.total_request_count(), 0, "{:?}", s3.request_counts());
    assert!(m.unmount().success());
}

#[test]
fn a_file_deleted_through_the_mount_stays_deleted_after_a_remount() {
    let s3 = LocalS3::start();
    s3.put("keep.txt", b"keep");
    s3.put("gone.txt", b"old bytes");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let m = mount(&s3, &cache, &["--allow-delete"]);
    assert_eq!(names(m.path()), ["gone.txt", "keep.txt"]);
    assert_eq!(std::fs::read(m.path().join("gone.txt")).unwrap(), b"old bytes");
    std::fs::remove_file(m.path().join("gone.txt")).unwrap();
    assert!(m.unmount().success());
    assert_eq!(s3.get("gone.txt"), None, "S3 says 404");

    let m = mount(&s3, &cache, &["--allow-delete"]);
    s3.reset_counts();
    let err = std::fs::metadata(m.path().join("gone.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::ENOENT as i32));
    assert_eq!(names(m.path()), ["keep.txt"]);
    assert_eq!(s3.total_request_count(), 0, "known from the journal: {:?}", s3.request_counts());
    assert!(m.unmount().success());
}

#[test]
fn a_file_closed_before_a_kill_9_is_there_after_the_remount() {
    let s3 = LocalS3::start();
    s3.put("old.txt", b"old");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    // A complete listing of the root reaches the journal.
    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(m.path()), ["old.txt"]);
    assert!(m.unmount().success());

    let m = mount(&s3, &cache, &[]);
    std::fs::write(m.path().join("new.txt"), b"written, closed, then killed").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(m);

    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(m.path()), ["new.txt", "old.txt"]);
    assert_eq!(std::fs::read(m.path().join("new.txt")).unwrap(), b"written, closed, then killed");
    assert!(m.unmount().success());
}

#[test]
fn a_damaged_journal_line_costs_only_itself() {
    let s3 = LocalS3::start();
    for name in ["a", "b", "c", "d"] {
        s3.put(&format!("dir/{name}.txt"), name.as_bytes());
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("c");
    let m = mount(&s3, &cache, &[]);
    assert_eq!(names(&m.path().join("dir")), ["a.txt", "b.txt", "c.txt", "d.txt"]);
    assert!(m.unmount().success());

    // Break the line of one entry in the middle of the journal: not UTF-8 any more.
    let journal = journals(&cache).remove(0);
    let text = std::fs::read(&journal).unwrap();
    let hex_b: String = "dir/b.txt".bytes().map(|b| format!("{b:02x}")).collect();
    let at = text.windows(hex_b.len()).position(|w| w == hex_b.as_bytes()).expect("b's entry");
    let mut damaged = text.clone();
    damaged[at] = 0xff;
    let line_end = at + damaged[at..].iter().position(|&c| c == b'\n').unwrap();
    assert!(line_end + 1 < damaged.len(), "the damaged line is not the last one");
    std::fs::write(&journal, &damaged).unwrap();

    let m = mount(&s3, &cache, &[]);
    s3.reset_counts();
    for name in ["c", "d"] {
        let path = m.path().join(format!("dir/{name}.txt"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1, "{name}: a later entry still loads");
    }
    assert_eq!(s3.total_request_count(), 0, "later entries need no request: {:?}", s3.request_counts());
    assert_eq!(std::fs::read(m.path().join("dir/b.txt")).unwrap(), b"b", "the damaged entry is asked for again");
    assert_eq!(names(&m.path().join("dir")), ["a.txt", "b.txt", "c.txt", "d.txt"], "nothing vanished");
    assert!(m.output().contains("damaged lines skipped"), "{}", m.output());
    assert!(m.unmount().success());
}
