//! End to end: real mounts of a local S3 server, read through the kernel.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::data::pattern;
use common::mount::{TestMount, mount, server_args};
use common::s3_server::LocalS3;
use sha2::{Digest, Sha256};

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn sha_file(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_vec()
}

#[test]
fn every_object_reads_back_identical() {
    let s3 = LocalS3::start();
    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one-byte", vec![42]),
        ("nested/deeper/five-mib.bin", pattern(5 << 20, 1)),
        ("nested/hundred-mib.bin", pattern(100 << 20, 2)),
        ("with space/file name.txt", b"spaces are fine\n".to_vec()),
        ("unicodé/日本語 ファイル.txt", "こんにちは\n".as_bytes().to_vec()),
        ("nested/small.txt", b"small\n".to_vec()),
    ];
    for (key, data) in &objects {
        s3.put(key, data);
    }
    let m = mount(&s3, &[]);
    for (key, data) in &objects {
        let path = m.path().join(key);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("stat {key}: {e}"));
        assert_eq!(meta.len(), data.len() as u64, "size of {key}");
        assert_eq!(sha_file(&path), sha(data), "bytes of {key}");
    }
    // Reading with `cat` and `dd` too, as users do.
    let out = std::process::Command::new("cat").arg(m.path().join("nested/small.txt")).output().unwrap();
    assert_eq!(out.stdout, b"small\n");
    let out = std::process::Command::new("dd")
        .arg(format!("if={}", m.path().join("nested/hundred-mib.bin").display()))
        .args(["of=/dev/null", "bs=1M"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("104857600 bytes"));
    assert!(m.unmount().success());
}

#[test]
fn random_reads_return_the_right_bytes() {
    let s3 = LocalS3::start();
    let data = pattern(9 << 20, 3);
    s3.put("r.bin", &data);
    let m = mount(&s3, &[]);
    let mut f = std::fs::File::open(m.path().join("r.bin")).unwrap();
    let mut rng = 0x1234_5678u64;
    for _ in 0..200 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (rng >> 16) as usize % data.len();
        let len = ((rng >> 40) as usize % 300_000).min(data.len() - off);
        f.seek(SeekFrom::Start(off as u64)).unwrap();
        let mut buf = vec![0; len];
        f.read_exact(&mut buf).unwrap();
        assert!(buf == data[off..off + len], "bytes at {off}+{len}");
    }
}

#[test]
fn ls_shows_all_2500_entries_in_order() {
    let s3 = LocalS3::start();
    let names: Vec<String> = (0..2500).map(|i| format!("file-{i:05}.txt")).collect();
    for n in &names {
        s3.put(&format!("big-dir/{n}"), b"x");
    }
    let m = mount(&s3, &[]);
    let out = std::process::Command::new("ls").arg(m.path().join("big-dir")).output().unwrap();
    assert!(out.status.success());
    let listed: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(listed, names);
    // readdir through std as well, and stat of every entry from the listing.
    let mut seen: Vec<String> = std::fs::read_dir(m.path().join("big-dir"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert_eq!(e.metadata().unwrap().len(), 1);
            e.file_name().into_string().unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, names);
}

#[test]
fn stat_shows_configured_owner_modes_and_sizes() {
    let s3 = LocalS3::start();
    s3.put("d/f", b"12345");
    let m = mount(&s3, &["--uid", "1234", "--gid", "2345", "--file-mode", "0600", "--dir-mode", "0750"]);
    let f = std::fs::metadata(m.path().join("d/f")).unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777, f.size(), f.nlink()), (1234, 2345, 0o600, 5, 1));
    assert_eq!(f.blksize(), 4096);
    assert!(f.is_file());
    let d = std::fs::metadata(m.path().join("d")).unwrap();
    assert!(d.is_dir());
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777, d.nlink()), (1234, 2345, 0o750, 2));
    let missing = std::fs::metadata(m.path().join("nope")).unwrap_err();
    assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
    let vfs = nix::sys::statvfs::statvfs(m.path()).unwrap();
    assert_eq!(vfs.name_max(), 255);
    assert!(vfs.blocks_available() > 1 << 40);
}

#[test]
fn prefix_and_s3_uri_mount_only_their_subtree() {
    let s3 = LocalS3::start();
    s3.put("team-a/data/x.txt", b"a");
    s3.put("team-b/y.txt", b"b");
    let m = mount(&s3, &["--prefix", "team-a/"]);
    let names: Vec<_> = std::fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [OsStr::new("data")]);
    assert_eq!(std::fs::read(m.path().join("data/x.txt")).unwrap(), b"a");
    drop(m);

    let uri = format!("s3://{}/team-b/", s3.bucket);
    let args = server_args(&s3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = TestMount::new(&s3.env_vars(), &uri, &args);
    assert_eq!(std::fs::read(m.path().join("y.txt")).unwrap(), b"b");
    assert!(m.output().contains(&format!("prefix team-b/ of bucket {} is mounted at", s3.bucket)), "{}", m.output());
}

#[test]
fn a_replaced_object_is_estale_for_open_handles_and_new_for_new_opens() {
    let s3 = LocalS3::start();
    s3.put("v.txt", b"version one, a bit longer");
    let m = mount(&s3, &[]);
    let path = m.path().join("v.txt");
    let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path).unwrap();
    let mut buf = [0u8; 4096];
    let n = f.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"version one, a bit longer");
    s3.put("v.txt", b"version two");
    f.seek(SeekFrom::Start(0)).unwrap();
    // Seeking back to 0 re-reads through the handle's window or restarts the GET; either the
    // old bytes (already fetched) or ESTALE, never the new ones.
    match f.read(&mut buf) {
        Ok(n) => assert_eq!(&buf[..n], b"version one, a bit longer"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE)),
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(std::fs::read(&path).unwrap(), b"version two");
}

use std::os::unix::fs::OpenOptionsExt;

#[test]
fn writes_are_refused_with_the_documented_errno() {
    let s3 = LocalS3::start();
    s3.put("f", b"data");
    let m = mount(&s3, &[]);
    let err = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(err(std::fs::write(m.path().join("f"), b"x")), Some(libc::EPERM));
    assert_eq!(err(std::fs::remove_file(m.path().join("f"))), Some(libc::EPERM));
    assert_eq!(err(std::os::unix::fs::symlink("f", m.path().join("l"))), Some(libc::EPERM));
    assert_eq!(err(std::fs::rename(m.path().join("f"), m.path().join("g"))), Some(libc::ENOSYS));
    assert_eq!(
        err(std::fs::set_permissions(m.path().join("f"), std::os::unix::fs::PermissionsExt::from_mode(0o777))),
        Some(libc::EPERM)
    );
    assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"data", "object unchanged");
    drop(m);

    let m = mount(&s3, &["--read-only"]);
    assert_eq!(err(std::fs::write(m.path().join("new"), b"x")), Some(libc::EROFS));
    assert_eq!(err(std::fs::create_dir(m.path().join("d"))), Some(libc::EROFS));
    assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"data");
}
