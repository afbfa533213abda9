//! End to end: modifying existing files with `--allow-modify` through real mounts, against the
//! in-memory server (faithful UploadPartCopy, `x-amz-copy-source-if-match` and `If-Match`).

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestS3;
use common::data::pattern;
use common::mem_server::MemS3;
use common::mount::{TestMount, force_unmount};

const MIB: usize = 1024 * 1024;

fn mount(s3: &MemS3, extra: &[&str]) -> TestMount {
    let mut args = vec!["--endpoint-url", &s3.endpoint, "--force-path-style", "--region", "us-east-1"];
    args.extend_from_slice(extra);
    TestMount::new(&s3.env_vars(), s3.bucket(), &args)
}

fn sh(script: &str) -> std::process::Output {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The value of `name=` in the last `staging:` metrics line of the mount's output.
fn staging_metric(output: &str, name: &str) -> u64 {
    let line =
        output.lines().rev().find(|l| l.contains("staging: ")).unwrap_or_else(|| panic!("no staging line:\n{output}"));
    let start = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("{name} not in {line}")) + name.len() + 2;
    line[start..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn shell_appends_change_the_object_and_nothing_else_without_the_flag() {
    let s3 = MemS3::start();
    s3.put("log.txt", &b"one\n"[..]);
    {
        let m = mount(&s3, &[]);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("echo two >> {}", m.path().join("log.txt").display()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "appending needs --allow-modify");
    }
    let m = mount(&s3, &["--allow-modify"]);
    let log = m.path().join("log.txt");
    sh(&format!("echo two >> {0} && echo three >> {0}", log.display()));
    assert_eq!(s3.get("log.txt").unwrap(), &b"one\ntwo\nthree\n"[..]);
    assert_eq!(std::fs::read(&log).unwrap(), b"one\ntwo\nthree\n");
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn a_1mib_append_to_a_64mib_object_sends_about_1mib() {
    let s3 = MemS3::start();
    let data = pattern(64 * MIB, 1);
    s3.put("big.bin", data.clone());
    let m = mount(&s3, &["--allow-modify", "--log-metrics"]);
    let tail = pattern(MIB, 2);
    s3.reset_counts();
    let started = Instant::now();
    let mut f = OpenOptions::new().append(true).open(m.path().join("big.bin")).unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    let elapsed = started.elapsed();
    let mut expected = data;
    expected.extend_from_slice(&tail);
    assert!(s3.get("big.bin").unwrap() == expected, "the object is the old bytes and the appended ones");
    assert_eq!(s3.request_count_by_name("GetObject"), 0, "nothing downloaded");
    assert_eq!(s3.request_count_by_name("UploadPartCopy"), 1);
    assert_eq!(s3.request_count_by_name("UploadPart"), 1);
    // What was sent, from the mount's own metrics (logged every 5 s with --log-metrics).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !m.output().contains("staging: ") {
        assert!(Instant::now() < deadline, "no staging metrics:\n{}", m.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = m.output();
    let (sent, copied) = (staging_metric(&output, "sent"), staging_metric(&output, "copied"));
    println!("64 MiB + 1 MiB append: close took {elapsed:?}; sent {sent} bytes, copied {copied} server-side");
    assert_eq!(sent, MIB as u64, "only the appended bytes are sent");
    assert_eq!(copied, 64 * MIB as u64);
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn random_writes_in_place_and_truncate_shorter_and_longer() {
    let s3 = MemS3::start();
    let data = pattern(12 * MIB + 5, 3);
    s3.put("data.bin", data.clone());
    s3.put("t.txt", &b"0123456789"[..]);
    let m = mount(&s3, &["--allow-modify"]);
    let path = m.path().join("data.bin");
    let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut expected = data.clone();
    for (offset, seed) in [(3 * MIB + 7, 4u64), (100, 5), (11 * MIB, 6)] {
        let bytes = pattern(5000, seed);
        f.write_all_at(&bytes, offset as u64).unwrap();
        expected[offset..offset + 5000].copy_from_slice(&bytes);
    }
    let mut back = vec![0u8; 6000];
    f.read_exact_at(&mut back, 3 * MIB as u64).unwrap();
    assert!(back == expected[3 * MIB..3 * MIB + 6000], "reads see the writes before close");
    drop(f);
    assert!(s3.get("data.bin").unwrap() == expected);

    let t = m.path().join("t.txt");
    sh(&format!("truncate -s 4 {}", t.display()));
    assert_eq!(s3.get("t.txt").unwrap(), &b"0123"[..]);
    sh(&format!("truncate -s 6 {}", t.display()));
    assert_eq!(s3.get("t.txt").unwrap(), &b"0123\0\0"[..]);
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 6);
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn fsync_uploads_and_the_file_stays_writable() {
    let s3 = MemS3::start();
    s3.put("f", &b"start"[..]);
    let m = mount(&s3, &["--allow-modify"]);
    let mut f =
        OpenOptions::new().append(true).open(m.path().join("f")).unwrap_or_else(|e| panic!("{e}\n{}", m.output()));
    f.write_all(b" one").unwrap();
    f.sync_all().unwrap();
    assert_eq!(s3.get("f").unwrap(), &b"start one"[..]);
    f.write_all(b" two").unwrap();
    f.sync_all().unwrap();
    assert_eq!(s3.get("f").unwrap(), &b"start one two"[..]);
    f.write_all(b" three").unwrap();
    drop(f);
    assert_eq!(s3.get("f").unwrap(), &b"start one two three"[..]);
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn a_conflicting_remote_write_fails_the_close_and_keeps_the_local_copy() {
    let s3 = MemS3::start();
    s3.put("shared.txt", &b"v1"[..]);
    let cache = tempfile::tempdir().unwrap();
    let m = mount(&s3, &["--allow-modify", "--cache", cache.path().to_str().unwrap()]);
    let f = OpenOptions::new().write(true).open(m.path().join("shared.txt")).unwrap();
    f.write_all_at(b"mine", 0).unwrap();
    s3.put("shared.txt", &b"theirs"[..]);
    let closed = nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(f));
    assert_eq!(closed, Err(nix::errno::Errno::ESTALE), "close reports the conflict");
    assert_eq!(s3.get("shared.txt").unwrap(), &b"theirs"[..], "the other writer's change stays");
    // The warning reaches the output collector through a pipe: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !m.output().contains("The local copy is kept at") {
        assert!(Instant::now() < deadline, "no conflict warning:\n{}", m.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = m.output();
    let kept_line = output.lines().find(|l| l.contains("The local copy is kept at")).unwrap();
    let kept = kept_line.rsplit("kept at ").next().unwrap().trim();
    assert_eq!(std::fs::read(kept).unwrap(), b"mine");
    assert!(kept.starts_with(cache.path().to_str().unwrap()), "{kept}");
    assert_eq!(m.unmount().code(), Some(0));
    let staging = cache.path().join("mount-s3-cache/staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("s-"))
        .flat_map(|session| std::fs::read_dir(session.path()).unwrap().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".record"))
        .map(|f| f.path())
        .collect();
    assert!(left.is_empty(), "a clean unmount leaves no staged file behind: {left:?}");
}

#[test]
fn sigkill_with_unsaved_changes_leaves_the_previous_object_whole() {
    let s3 = MemS3::start();
    let data = pattern(6 * MIB, 7);
    s3.put("precious.bin", data.clone());
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap().to_string();
    let mut m = mount(&s3, &["--allow-modify", "--cache", &cache_arg]);
    let mnt = m.path().to_path_buf();
    let f = OpenOptions::new().write(true).open(mnt.join("precious.bin")).unwrap();
    f.write_all_at(&pattern(2 * MIB, 8), MIB as u64).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    m.wait_exit(Duration::from_secs(10)).expect("the daemon died");
    drop(f);
    force_unmount(&mnt);
    assert!(s3.get("precious.bin").unwrap() == data, "the previous object is whole");
    drop(m);
    let m = mount(&s3, &["--allow-modify", "--cache", &cache_arg]);
    let output = m.output();
    assert!(output.contains("unsaved changes to precious.bin"), "the discarded file is logged:\n{output}");
    let staging = cache.path().join("mount-s3-cache/staging");
    let sessions = std::fs::read_dir(&staging)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("s-"))
        .count();
    assert_eq!(sessions, 1, "only the live mount's session is left");
    assert!(std::fs::read(m.path().join("precious.bin")).unwrap() == data);
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn sqlite_creates_inserts_and_updates_a_database_that_checks_out_after_a_remount() {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        eprintln!("sqlite3 not installed; skipped");
        return;
    }
    let s3 = MemS3::start();
    let m = mount(&s3, &["--allow-modify", "--allow-delete"]);
    let db = m.path().join("app.db");
    let sql = |script: &str| {
        let out = Command::new("sqlite3").arg(&db).arg(script).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let started = Instant::now();
    sql("create table t (id integer primary key, v text);");
    for i in 0..20 {
        sql(&format!("insert into t (v) values ('{}');", "x".repeat(100 + i)));
    }
    sql("update t set v = 'updated' where id % 2 = 0;");
    sql("begin; insert into t (v) select v from t; insert into t (v) select v from t; commit;");
    let elapsed = started.elapsed();
    println!("sqlite workload (23 transactions): {elapsed:?}, requests {:?}", s3.request_counts());
    assert!(s3.get("app.db-journal").is_none(), "the journal is deleted");
    assert_eq!(m.unmount().code(), Some(0));
    let m = mount(&s3, &["--allow-modify", "--allow-delete"]);
    let db = m.path().join("app.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("pragma integrity_check; select count(*), sum(v = 'updated') from t;")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ok\n80|40\n");
    assert_eq!(m.unmount().code(), Some(0));
}
