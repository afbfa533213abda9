//! End to end: writing through real mounts. New objects, overwrite, delete, directories, and
//! the errno of everything S3 cannot do.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::data::pattern;
use common::mount::{TestMount, errno, mount};
use common::s3_server::LocalS3;
use common::writer::OutsideWriter;
use mount_s3::client::S3Operation;
use sha2::{Digest, Sha256};

/// The object at `key`, waiting up to 2 s: an empty file is uploaded at release, which the
/// kernel sends after close() has returned.
fn eventually_get(s3: &LocalS3, key: &str) -> Option<Vec<u8>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if let Some(data) = s3.get(key) {
            return Some(data);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn cp(from: &Path, to: &Path) {
    let out = Command::new("cp").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "cp: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn cp_of_files_of_every_size_gives_identical_objects() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &[]);
    let src = tempfile::tempdir().unwrap();
    for (name, len) in
        [("zero", 0), ("one", 1), ("five-mib", 5 << 20), ("eight-mib", 8 << 20), ("hundred-mib", 100 << 20)]
    {
        let data = pattern(len, len as u64 + 7);
        let local = src.path().join(name);
        std::fs::write(&local, &data).unwrap();
        cp(&local, &m.path().join(name));
        let stored = eventually_get(&s3, name).unwrap_or_else(|| panic!("{name} not in S3"));
        assert_eq!(Sha256::digest(&stored), Sha256::digest(&data), "{name}");
        assert_eq!(std::fs::metadata(m.path().join(name)).unwrap().len(), len as u64, "{name}");
        // Read-after-write through the mount. An empty file is uploaded at release, which the
        // kernel sends after close() returned: until then it is still "being written" (EPERM).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let read = loop {
            match std::fs::read(m.path().join(name)) {
                Err(e) if len == 0 && e.raw_os_error() == Some(libc::EPERM) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(Sha256::digest(read), Sha256::digest(&data), "{name}");
    }
    // 8 MiB exactly is one part; 100 MiB is 13 parts of 8 MiB.
    assert_eq!(s3.request_count(S3Operation::UploadPart), 1 + 13);
    assert_eq!(s3.request_count(S3Operation::PutObject), 3, "0 B, 1 B and 5 MiB are single PUTs");
}

#[test]
fn shell_redirection_and_nested_new_directories_work() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &[]);
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("echo x > '{0}/new' && mkdir -p '{0}/a/b' && echo deep > '{0}/a/b/c.txt'", m.path().display()))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(s3.get("new").unwrap(), b"x\n");
    assert_eq!(s3.get("a/b/c.txt").unwrap(), b"deep\n");
    assert_eq!(std::fs::read_to_string(m.path().join("a/b/c.txt")).unwrap(), "deep\n");
}

#[test]
fn overwrite_needs_the_flag_and_o_trunc() {
    let s3 = LocalS3::start();
    s3.put("existing", b"old contents");
    let m = mount(&s3, &[]);
    assert_eq!(errno(std::fs::write(m.path().join("existing"), b"new")), Some(libc::EPERM));
    assert_eq!(s3.get("existing").unwrap(), b"old contents");
    drop(m);

    let m = mount(&s3, &["--allow-overwrite"]);
    let no_trunc = OpenOptions::new().write(true).open(m.path().join("existing"));
    assert_eq!(errno(no_trunc), Some(libc::EPERM));
    std::fs::write(m.path().join("existing"), b"new").unwrap();
    assert_eq!(s3.get("existing").unwrap(), b"new");
    assert_eq!(std::fs::read(m.path().join("existing")).unwrap(), b"new");
}

#[test]
fn out_of_order_writes_are_einval_and_no_object_appears() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &[]);
    let f = OpenOptions::new().write(true).create_new(true).open(m.path().join("holes")).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    // Past the end is fine (zeros fill the gap); before the end is not.
    f.write_all_at(b"later", 1 << 20).unwrap();
    assert_eq!(errno(f.write_all_at(b"again", 2)), Some(libc::EINVAL));
    let closed = nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(f));
    assert_eq!(closed.err().map(|e| e as i32), Some(libc::EINVAL), "close reports the failed upload");
    assert!(s3.get("holes").is_none());
    // The kernel may keep the entry for its 100 ms TTL.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(errno(std::fs::metadata(m.path().join("holes"))), Some(libc::ENOENT));
}

#[test]
fn a_file_being_written_is_listed_and_not_readable_until_closed() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &[]);
    let path = m.path().join("growing");
    // Held by another process: a fork by a parallel test would otherwise close a copy of it.
    let mut f = OutsideWriter::create(&path).unwrap();
    f.write(1, 3000).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3000);
    let listed: Vec<_> = std::fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(listed, ["growing"]);
    let read = std::fs::read(&path).map(|d| d.len());
    assert_eq!(
        read.as_ref().err().and_then(std::io::Error::raw_os_error),
        Some(libc::EPERM),
        "read: {read:?}\n{}",
        m.output()
    );
    assert!(s3.get("growing").is_none());
    f.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![1; 3000]);
}

#[test]
fn delete_needs_allow_delete() {
    let s3 = LocalS3::start();
    s3.put("a", b"1");
    s3.put("dir/b", b"2");
    let m = mount(&s3, &[]);
    let err = std::fs::remove_file(m.path().join("a"));
    assert_eq!(errno(err), Some(libc::EPERM));
    assert!(s3.get("a").is_some());
    drop(m);
    let m = mount(&s3, &["--allow-delete"]);
    std::fs::remove_file(m.path().join("a")).unwrap();
    assert!(s3.get("a").is_none());
    assert_eq!(errno(std::fs::metadata(m.path().join("a"))), Some(libc::ENOENT));
    assert_eq!(errno(std::fs::remove_file(m.path().join("dir"))), Some(libc::EISDIR));
    assert_eq!(errno(std::fs::remove_file(m.path().join("missing"))), Some(libc::ENOENT));
}

#[test]
fn mkdir_and_rmdir_rules() {
    let s3 = LocalS3::start();
    s3.put("remote/x", b"1");
    let m = mount(&s3, &[]);
    let p = m.path();
    std::fs::create_dir(p.join("empty")).unwrap();
    assert!(std::fs::metadata(p.join("empty")).unwrap().is_dir());
    assert_eq!(errno(std::fs::create_dir(p.join("empty"))), Some(libc::EEXIST));
    assert_eq!(errno(std::fs::create_dir(p.join("remote"))), Some(libc::EEXIST));
    std::fs::remove_dir(p.join("empty")).unwrap();
    assert_eq!(errno(std::fs::metadata(p.join("empty"))), Some(libc::ENOENT));
    assert_eq!(errno(std::fs::remove_dir(p.join("remote"))), Some(libc::EPERM));
    std::fs::create_dir(p.join("busy")).unwrap();
    let f = std::fs::File::create(p.join("busy/f")).unwrap();
    assert_eq!(errno(std::fs::remove_dir(p.join("busy"))), Some(libc::ENOTEMPTY));
    drop(f);
    assert_eq!(eventually_get(&s3, "busy/f").unwrap(), b"");
    // The release that uploads the empty file records it as remote just after S3 has it: until
    // then the directory still holds a local file (ENOTEMPTY). Once it is remote: EPERM.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut rmdir = errno(std::fs::remove_dir(p.join("busy")));
    while rmdir == Some(libc::ENOTEMPTY) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        rmdir = errno(std::fs::remove_dir(p.join("busy")));
    }
    assert_eq!(rmdir, Some(libc::EPERM), "in S3 now");
    assert!(s3.list_keys("").iter().all(|k| !k.starts_with("empty")), "mkdir wrote nothing to S3");
}

#[test]
fn what_s3_cannot_do_fails_with_the_documented_errno() {
    let s3 = LocalS3::start();
    s3.put("f", b"data");
    let m = mount(&s3, &["--allow-overwrite", "--allow-delete"]);
    let p = m.path();
    assert_eq!(errno(std::os::unix::fs::symlink("f", p.join("l"))), Some(libc::EPERM));
    assert_eq!(errno(std::fs::hard_link(p.join("f"), p.join("h"))), Some(libc::EPERM));
    assert_eq!(errno(std::fs::rename(p.join("f"), p.join("g"))), Some(libc::ENOSYS));
    let chmod = std::fs::set_permissions(p.join("f"), std::os::unix::fs::PermissionsExt::from_mode(0o600));
    assert_eq!(errno(chmod), Some(libc::EPERM));
    assert_eq!(
        errno(
            nix::unistd::chown(&p.join("f"), Some(nix::unistd::Uid::from_raw(1)), None).map_err(std::io::Error::from)
        ),
        Some(libc::EPERM)
    );
    let truncate = OpenOptions::new().write(true).open(p.join("f")).map(|f| f.set_len(1));
    assert_eq!(errno(truncate), Some(libc::EPERM), "O_WRONLY without O_TRUNC");
    let f = std::fs::File::create(p.join("allocated")).unwrap();
    let fallocate =
        nix::fcntl::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), nix::fcntl::FallocateFlags::empty(), 0, 10);
    assert_eq!(errno(fallocate.map_err(std::io::Error::from)), Some(libc::EOPNOTSUPP));
    drop(f);
    let mknod = nix::sys::stat::mknod(
        &p.join("fifo"),
        nix::sys::stat::SFlag::S_IFIFO,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        0,
    );
    assert_eq!(errno(mknod.map_err(std::io::Error::from)), Some(libc::EINVAL), "no special files, as Mountpoint");
    // utimes on a file being written is fine.
    let w = std::fs::File::create(p.join("touched")).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    w.set_modified(t).unwrap();
    assert_eq!(std::fs::metadata(p.join("touched")).unwrap().modified().unwrap(), t);
    drop(w);
    assert_eq!(s3.get("f").unwrap(), b"data", "nothing changed the object");
}

#[test]
fn two_mounts_creating_the_same_key_one_wins_the_other_gets_an_error() {
    let s3 = LocalS3::start();
    let a = mount(&s3, &[]);
    let b = mount(&s3, &[]);
    let data_a = pattern(9 << 20, 1);
    let data_b = pattern(3 << 20, 2);
    let mut fa = OpenOptions::new().write(true).create_new(true).open(a.path().join("shared")).unwrap();
    let mut fb = OpenOptions::new().write(true).create_new(true).open(b.path().join("shared")).unwrap();
    fa.write_all(&data_a).unwrap();
    fb.write_all(&data_b).unwrap();
    let ra = nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(fa));
    let rb = nix::unistd::close(std::os::fd::IntoRawFd::into_raw_fd(fb));
    assert!(ra.is_ok(), "first close wins: {ra:?}");
    assert_eq!(rb.err().map(|e| e as i32), Some(libc::EEXIST), "the second creator is told");
    assert_eq!(Sha256::digest(s3.get("shared").unwrap()), Sha256::digest(&data_a), "the winner's bytes, whole");
}

#[test]
fn new_objects_get_the_storage_class_encryption_and_content_type_asked_for() {
    use common::moto::MotoServer;
    let s3 = MotoServer::start();
    let args = [
        "--endpoint-url",
        &s3.endpoint,
        "--force-path-style",
        "--region",
        "us-east-1",
        "--storage-class",
        "STANDARD_IA",
        "--sse",
        "AES256",
        "--infer-content-type",
        "--write-part-size",
        "5242880",
    ];
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
    std::fs::write(m.path().join("small.json"), b"{}").unwrap();
    std::fs::write(m.path().join("large.html"), pattern(11 << 20, 3)).unwrap();
    let client = s3.sdk_client();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (key, content_type) in [("small.json", "application/json"), ("large.html", "text/html")] {
        let head = runtime.block_on(client.head_object().bucket(&s3.bucket).key(key).send()).unwrap();
        assert_eq!(head.content_type(), Some(content_type), "{key}");
        assert_eq!(head.storage_class().map(|c| c.as_str()), Some("STANDARD_IA"), "{key}");
        assert_eq!(head.server_side_encryption().map(|e| e.as_str()), Some("AES256"), "{key}");
    }
    assert_eq!(s3.get("large.html").unwrap(), pattern(11 << 20, 3));
}
