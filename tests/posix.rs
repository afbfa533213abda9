//! End to end: `--posix-metadata`. Modes, owners, times and symbolic links kept in user metadata
//! in s3fs's conventions, read from objects other tools wrote, written so that ordinary tools
//! (tar, cp -a, shutil.copy2) find what they set; and, without the flag, Mountpoint's fixed
//! attributes.
//!
//! Files-only tests run on the in-process s3s-fs server (exact request counts); anything with
//! directory marker objects (`dir/`) runs on moto, since s3s-fs cannot store such keys.

mod common;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::TestS3;
use common::moto::MotoServer;
use common::mount::TestMount;
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;

fn mount_args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--endpoint-url", endpoint, "--force-path-style", "--region", "us-east-1"];
    args.extend_from_slice(extra);
    args
}

fn mount(s3: &impl TestS3, extra: &[&str]) -> TestMount {
    TestMount::new(&s3.env_vars(), s3.bucket(), &mount_args(s3.endpoint(), extra))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mtime(m: &std::fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

/// Objects as s3fs writes them (decimal `st_mode`, uid, gid, seconds[.nanoseconds]) and as rclone
/// writes an mtime, made here with the SDK.
fn seed_s3fs_objects(s3: &impl TestS3) {
    let h = s3.helper();
    h.put_with_metadata(
        "dir/script",
        b"#!/bin/sh\necho hi\n",
        &[("mode", &(0o100750u32).to_string()), ("uid", "1234"), ("gid", "5678"), ("mtime", "1600000000")],
        None,
    );
    h.put_with_metadata("dir/rclone", b"r", &[("mtime", "1354040105.5")], None);
    // s3fs's symlink: the body is the target, the mode says S_IFLNK | 0777.
    h.put_with_metadata("dir/link", b"script", &[("mode", "41471"), ("uid", "1234"), ("mtime", "1600000001")], None);
    h.put_with_metadata("dir/hostile", b"h", &[("mode", "-1"), ("uid", "4294967295"), ("mtime", "1e99")], None);
    h.put("dir/plain", b"plain");
}

#[test]
fn objects_in_s3fs_conventions_show_their_mode_owner_mtime_and_symlinks() {
    let s3 = LocalS3::start();
    seed_s3fs_objects(&s3);
    let m = mount(&s3, &["--posix-metadata", "--uid", "4000", "--gid", "4001"]);
    let dir = m.path().join("dir");

    let script = std::fs::symlink_metadata(dir.join("script")).unwrap();
    assert!(script.is_file());
    assert_eq!(script.permissions().mode() & 0o7777, 0o750);
    assert_eq!((script.uid(), script.gid()), (1234, 5678));
    assert_eq!(mtime(&script), (1_600_000_000, 0));

    let rclone = std::fs::symlink_metadata(dir.join("rclone")).unwrap();
    assert_eq!(mtime(&rclone), (1_354_040_105, 500_000_000), "rclone's fractional mtime");
    assert_eq!(rclone.permissions().mode() & 0o7777, 0o644, "no mode stored: --file-mode");
    assert_eq!((rclone.uid(), rclone.gid()), (4000, 4001), "no owner stored: --uid/--gid");

    let link = std::fs::symlink_metadata(dir.join("link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(link.len(), 6, "a symlink's size is its target's length");
    assert_eq!(std::fs::read_link(dir.join("link")).unwrap(), Path::new("script"));
    assert_eq!(std::fs::read(dir.join("link")).unwrap(), b"#!/bin/sh\necho hi\n", "followed inside the mount");

    // Unreadable values are ignored, not trusted: the mount's defaults and Last-Modified.
    let hostile = std::fs::symlink_metadata(dir.join("hostile")).unwrap();
    assert!(hostile.is_file());
    assert_eq!(hostile.permissions().mode() & 0o7777, 0o644);
    assert_eq!((hostile.uid(), hostile.gid()), (4000, 4001));
    let age = SystemTime::now().duration_since(hostile.modified().unwrap()).unwrap_or_default();
    assert!(age < Duration::from_secs(600), "Last-Modified, not 1e99: {age:?}");

    let plain = std::fs::symlink_metadata(dir.join("plain")).unwrap();
    assert_eq!(plain.permissions().mode() & 0o7777, 0o644);
    assert_eq!(std::fs::read(dir.join("plain")).unwrap(), b"plain");
}

#[test]
fn without_the_flag_metadata_is_ignored_as_mountpoint_does() {
    let s3 = LocalS3::start();
    seed_s3fs_objects(&s3);
    let m = mount(&s3, &["--uid", "4000", "--gid", "4001"]);
    let dir = m.path().join("dir");
    let script = std::fs::symlink_metadata(dir.join("script")).unwrap();
    assert_eq!(script.permissions().mode() & 0o7777, 0o644);
    assert_eq!((script.uid(), script.gid()), (4000, 4001));
    assert_ne!(mtime(&script), (1_600_000_000, 0));
    let link = std::fs::symlink_metadata(dir.join("link")).unwrap();
    assert!(link.is_file(), "a plain file holding the target");
    assert_eq!(std::fs::read(dir.join("link")).unwrap(), b"script");
    let f = dir.join("plain");
    for (what, result) in [
        ("chmod", std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))),
        ("symlink", std::os::unix::fs::symlink("plain", dir.join("new-link"))),
    ] {
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EPERM), "{what}");
    }
}

#[test]
fn chmod_chown_and_touch_of_a_closed_object_rewrite_its_metadata_in_place() {
    let s3 = LocalS3::start();
    s3.helper().put_with_metadata("f", b"0123456789", &[("color", "blue")], Some("text/plain"));
    let m = mount(&s3, &["--posix-metadata"]);
    let f = m.path().join("f");

    s3.reset_counts();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(s3.request_count(S3Operation::CopyObject), 1, "one copy onto itself");
    assert_eq!(s3.request_count(S3Operation::PutObject), 0);
    run(Command::new("chown").arg("42:43").arg(&f));
    run(Command::new("touch").arg("-m").arg("-d").arg("@1500000000.25").arg(&f));

    let meta = s3.helper().head_metadata("f").unwrap();
    assert_eq!(meta.get("mode").map(String::as_str), Some("33152"), "0100600 in decimal: {meta:?}");
    assert_eq!(meta.get("uid").map(String::as_str), Some("42"));
    assert_eq!(meta.get("gid").map(String::as_str), Some("43"));
    assert_eq!(meta.get("mtime").map(String::as_str), Some("1500000000.250000000"));
    assert_eq!(meta.get("color").map(String::as_str), Some("blue"), "other tools' metadata is kept");
    assert_eq!(s3.get("f").unwrap(), b"0123456789", "the bytes are untouched");

    let st = std::fs::metadata(&f).unwrap();
    assert_eq!((st.permissions().mode() & 0o7777, st.uid(), st.gid()), (0o600, 42, 43));
    assert_eq!(mtime(&st), (1_500_000_000, 250_000_000));
    drop(m);
    // A new mount reads it back from S3.
    let m = mount(&s3, &["--posix-metadata"]);
    let st = std::fs::metadata(m.path().join("f")).unwrap();
    assert_eq!((st.permissions().mode() & 0o7777, st.uid(), st.gid()), (0o600, 42, 43));
    assert_eq!(mtime(&st), (1_500_000_000, 250_000_000));
    assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"0123456789");
}

/// A chmod copies the object onto itself with REPLACE, which drops every header describing the
/// body that is not sent again: its Content-Type, Content-Encoding, Content-Language,
/// Content-Disposition and Cache-Control stay as they were.
#[test]
fn chmod_keeps_the_content_type_and_the_other_body_headers() {
    let s3 = LocalS3::start();
    let headers = [
        ("content-type", "text/html; charset=utf-8"),
        ("content-encoding", "gzip"),
        ("content-language", "fr"),
        ("content-disposition", "attachment; filename=\"page.html\""),
        ("cache-control", "max-age=3600"),
    ];
    s3.helper().put_with_headers("page", b"<html>", &headers);
    let want: std::collections::BTreeMap<String, String> =
        headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    assert_eq!(s3.helper().head_headers("page"), want, "the server keeps them");
    let m = mount(&s3, &["--posix-metadata"]);
    std::fs::set_permissions(m.path().join("page"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(s3.helper().head_metadata("page").unwrap().get("mode").map(String::as_str), Some("33152"));
    assert_eq!(s3.helper().head_headers("page"), want);
    assert_eq!(s3.get("page").unwrap(), b"<html>");
}

#[test]
fn new_files_and_symlinks_are_written_in_s3fs_conventions() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &["--posix-metadata"]);
    let f = m.path().join("new");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(&f).unwrap();
        std::io::Write::write_all(&mut file, b"data").unwrap();
    }
    let meta = s3.helper().head_metadata("new").expect("uploaded at close");
    assert_eq!(meta.get("mode").map(String::as_str), Some(&*(0o100640u32).to_string()), "{meta:?}");
    assert_eq!(meta.get("uid").map(String::as_str), Some("0"), "created by root");
    assert!(meta.contains_key("mtime"), "{meta:?}");

    std::os::unix::fs::symlink("new", m.path().join("ln")).unwrap();
    assert_eq!(s3.get("ln").unwrap(), b"new", "the body is the target");
    let meta = s3.helper().head_metadata("ln").unwrap();
    assert_eq!(meta.get("mode").map(String::as_str), Some("41471"), "S_IFLNK | 0777: {meta:?}");
    assert_eq!(std::fs::read_link(m.path().join("ln")).unwrap(), Path::new("new"));
    assert_eq!(std::fs::read(m.path().join("ln")).unwrap(), b"data");
    let err = std::os::unix::fs::symlink("other", m.path().join("ln")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    let err = std::fs::hard_link(&f, m.path().join("hard")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "hard links stay refused");
}

#[test]
fn cp_a_and_shutil_copy2_keep_mode_owner_and_mtime() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &["--posix-metadata"]);
    let src = tempfile::tempdir().unwrap();
    let a = src.path().join("a.bin");
    std::fs::write(&a, common::data::pattern(100_000, 3)).unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o751)).unwrap();
    run(Command::new("chown").arg("1001:1002").arg(&a));
    run(Command::new("touch").arg("-m").arg("-d").arg("@1400000000.123456789").arg(&a));

    run(Command::new("cp").arg("-a").arg(&a).arg(m.path().join("cp-a")));
    run(Command::new("python3")
        .arg("-c")
        .arg("import shutil,sys; shutil.copy2(sys.argv[1], sys.argv[2])")
        .arg(&a)
        .arg(m.path().join("copy2")));
    let want = std::fs::metadata(&a).unwrap();
    for name in ["cp-a", "copy2"] {
        let got = std::fs::metadata(m.path().join(name)).unwrap();
        assert_eq!(got.permissions().mode() & 0o7777, 0o751, "{name}");
        assert_eq!(mtime(&got), mtime(&want), "{name}");
        assert_eq!(std::fs::read(m.path().join(name)).unwrap(), std::fs::read(&a).unwrap(), "{name}");
    }
    let got = std::fs::metadata(m.path().join("cp-a")).unwrap();
    assert_eq!((got.uid(), got.gid()), (1001, 1002), "cp -a keeps the owner (run as root)");
}

/// `ls` sends the same requests with and without the flag (one ListObjectsV2). `ls -l` needs
/// each entry's stored mode, which listings do not carry: with the flag, one HeadObject per file
/// more (the lookup's ListObjectsV2 is spared: the listing just said "an object"), and it shows
/// the stored modes; without it, Mountpoint's single listing and fixed modes.
#[test]
fn ls_and_ls_l_request_counts_with_and_without_the_flag() {
    let s3 = LocalS3::start();
    for i in 0..40 {
        s3.helper().put_with_metadata(&format!("d/f{i:02}"), b"x", &[("mode", "33261"), ("mtime", "1600000000")], None);
    }
    for (flags, mode, heads) in [(&[][..], "-rw-r--r--", 0), (&["--posix-metadata"][..], "-rwxr-xr-x", 40)] {
        let m = mount(&s3, flags);
        // The directory's own lookup first: its HeadObject, abandoned once the listing says
        // "directory", may or may not reach the server.
        std::fs::metadata(m.path().join("d")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s3.reset_counts();
        let out = run(Command::new("ls").arg(m.path().join("d")));
        assert_eq!(out.lines().count(), 40, "{out}");
        let ls: Vec<_> = s3.request_counts().into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(ls, vec![("ListObjectsV2".to_string(), 1)], "ls {flags:?}");

        s3.reset_counts();
        let out = run(Command::new("ls").arg("-l").arg(m.path().join("d")));
        let lines: Vec<_> = out.lines().filter(|l| l.contains(" f")).collect();
        assert_eq!(lines.len(), 40, "{out}");
        assert!(lines.iter().all(|l| l.starts_with(mode)), "ls -l {flags:?} shows {mode}:\n{out}");
        assert_eq!(s3.request_count(S3Operation::ListObjectsV2), 1, "ls -l {flags:?}");
        assert_eq!(s3.request_count(S3Operation::HeadObject), heads, "ls -l {flags:?}");
        assert_eq!(s3.total_request_count(), 1 + heads, "ls -l {flags:?}: {:?}", s3.request_counts());
        drop(m);
    }
}

/// A symlink (and a file's stored mode) known only from a listing is never shown as the listing
/// would have it: `ls -l` right after the listing shows the symlink and its target, and an
/// immediate lstat and readlink agree, every time (before, for up to 100 ms after each
/// readdir, the kernel held it as a regular file with default attributes).
#[test]
fn a_listed_symlink_is_a_symlink_right_after_the_listing() {
    let s3 = LocalS3::start();
    seed_s3fs_objects(&s3);
    let m = mount(&s3, &["--posix-metadata"]);
    let dir = m.path().join("dir");
    for round in 0..20 {
        let out = run(Command::new("ls").arg("-l").arg(&dir));
        let line = |name: &str| {
            let named = |l: &&str| {
                let l = l.split(" -> ").next().unwrap_or_default();
                l.ends_with(&format!(" {name}"))
            };
            out.lines().find(named).unwrap_or("").to_string()
        };
        assert!(line("link").starts_with('l') && line("link").ends_with("link -> script"), "round {round}:\n{out}");
        assert!(line("script").starts_with("-rwxr-x---"), "round {round}:\n{out}");
        // A listing alone (getdents, no stat), then lstat and readlink at once.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 5);
        let st = std::fs::symlink_metadata(dir.join("link")).unwrap();
        assert!(st.file_type().is_symlink(), "round {round}: {st:?}");
        assert_eq!(std::fs::read_link(dir.join("link")).unwrap(), Path::new("script"), "round {round}");
        assert_eq!(std::fs::symlink_metadata(dir.join("script")).unwrap().permissions().mode() & 0o7777, 0o750);
    }
    // Made by another client while this mount knows the name as a file: shown as a symlink at
    // the next look, even right after a listing.
    s3.helper().put("dir/later", b"plain");
    assert!(std::fs::symlink_metadata(dir.join("later")).unwrap().is_file());
    s3.helper().put_with_metadata("dir/later", b"script", &[("mode", "41471")], None);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 6);
    assert!(std::fs::symlink_metadata(dir.join("later")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_link(dir.join("later")).unwrap(), Path::new("script"));
}

/// A tree with every kind of entry tar records: modes, owners, past mtimes, nested directories
/// with their own modes, relative and absolute symlinks, an empty file.
fn make_tree(root: &Path) {
    let d = root.join("tree");
    std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
    for (name, mode, len) in [("a.txt", 0o644, 10), ("run.sh", 0o755, 300), ("secret", 0o600, 1), ("empty", 0o640, 0)] {
        let p = d.join(name);
        std::fs::write(&p, common::data::pattern(len, len as u64)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(d.join("sub/deeper/big"), common::data::pattern(3 << 20, 9)).unwrap();
    std::os::unix::fs::symlink("../a.txt", d.join("sub/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", d.join("abs-link")).unwrap();
    run(Command::new("chown").arg("-h").arg("1234:5678").arg(d.join("secret")).arg(d.join("sub/rel-link")));
    std::fs::set_permissions(d.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(d.join("sub/deeper"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Past mtimes, deepest first, so setting a file's time does not move its directory's.
    let mut paths = vec![];
    for entry in ["sub/deeper/big", "sub/rel-link", "a.txt", "run.sh", "secret", "empty", "abs-link"] {
        paths.push(d.join(entry));
    }
    for p in &paths {
        run(Command::new("touch").arg("-h").arg("-m").arg("-d").arg("@1500000000").arg(p));
    }
    for p in [d.join("sub/deeper"), d.join("sub"), d.clone()] {
        run(Command::new("touch").arg("-m").arg("-d").arg("@1400000000").arg(&p));
    }
}

#[test]
fn tar_x_then_tar_d_finds_no_difference_also_after_a_remount() {
    let s3 = MotoServer::start();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let archive = src.path().join("tree.tar");
    run(Command::new("tar").arg("-cf").arg(&archive).arg("-C").arg(src.path()).arg("tree"));

    // tar replaces a placeholder file by each symlink whose target leaves the tree: --allow-delete.
    let m = mount(&s3, &["--posix-metadata", "--allow-delete"]);
    run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(m.path()));
    let diff = run(Command::new("tar").arg("-df").arg(&archive).arg("-C").arg(m.path()));
    assert_eq!(diff, "", "tar -d right after tar -x");
    drop(m);

    let m = mount(&s3, &["--posix-metadata"]);
    let diff = run(Command::new("tar").arg("-df").arg(&archive).arg("-C").arg(m.path()));
    assert_eq!(diff, "", "tar -d after a remount");
    let sub = std::fs::metadata(m.path().join("tree/sub")).unwrap();
    assert_eq!(sub.permissions().mode() & 0o7777, 0o750, "a directory's mode, from its marker object");
    assert_eq!(mtime(&sub).0, 1_400_000_000, "and its mtime");
    let marker = s3.helper().head_metadata("tree/sub/").expect("s3fs-style marker object");
    assert_eq!(marker.get("mode").map(String::as_str), Some(&*(0o040750u32).to_string()));
}

/// The closing note's numbers: requests and time of `tar -x` of 1,000 small files, with and
/// without the flag. Prints them; asserts only what a user would check (the files are there).
/// `cargo test --test posix tar_x_of_1000_files -- --ignored --nocapture`
#[test]
#[ignore]
fn tar_x_of_1000_files_with_and_without_the_flag() {
    let src = tempfile::tempdir().unwrap();
    let d = src.path().join("many");
    std::fs::create_dir(&d).unwrap();
    for i in 0..1000 {
        let p = d.join(format!("f{i:04}"));
        std::fs::write(&p, common::data::pattern(1000 + i, i as u64)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    // Names only (no "./" entry): the mount's root has no object to keep attributes on.
    let list = src.path().join("list");
    std::fs::write(&list, (0..1000).map(|i| format!("f{i:04}\n")).collect::<String>()).unwrap();
    let archive = src.path().join("many.tar");
    run(Command::new("tar").arg("-cf").arg(&archive).arg("-C").arg(&d).arg("-T").arg(&list));
    for flags in [&[][..], &["--posix-metadata"][..]] {
        let s3 = LocalS3::start();
        let m = mount(&s3, flags);
        s3.reset_counts();
        let started = std::time::Instant::now();
        let out = Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(m.path()).output().unwrap();
        let took = started.elapsed();
        let errors = String::from_utf8_lossy(&out.stderr).lines().count();
        let mut counts: Vec<_> = s3.request_counts().into_iter().filter(|(_, n)| *n > 0).collect();
        counts.sort();
        println!(
            "tar -x of 1000 files {flags:?}: {took:?}, exit {}, {errors} error lines, requests {counts:?}",
            out.status
        );
        assert_eq!(std::fs::read_dir(m.path()).unwrap().count(), 1000);
    }
}

/// s3fs (where installed: `apt-get install s3fs`) reads what we write: modes, owners, mtimes,
/// directory modes from markers, and symlinks.
#[test]
fn s3fs_reads_our_attributes_and_symlinks() {
    if Command::new("s3fs").arg("--version").output().is_err() {
        eprintln!("s3fs is not installed: skipped");
        return;
    }
    let s3 = MotoServer::start();
    let m = mount(&s3, &["--posix-metadata"]);
    let f = m.path().join("f");
    std::fs::write(&f, b"hello").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o751)).unwrap();
    run(Command::new("chown").arg("1234:5678").arg(&f));
    run(Command::new("touch").arg("-m").arg("-d").arg("@1500000000.25").arg(&f));
    std::fs::DirBuilder::new().mode(0o750).create(m.path().join("d")).unwrap();
    std::os::unix::fs::symlink("../f", m.path().join("d/l")).unwrap();
    drop(m);

    let dir = tempfile::tempdir().unwrap();
    let (mnt, passwd) = (dir.path().join("mnt"), dir.path().join("passwd"));
    std::fs::create_dir(&mnt).unwrap();
    let creds = s3.credentials();
    std::fs::write(&passwd, format!("{}:{}\n", creds.access_key_id(), creds.secret_access_key())).unwrap();
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut s3fs = Command::new("s3fs");
    s3fs.arg(s3.bucket()).arg(&mnt).arg("-o").arg(format!("url={}", s3.endpoint()));
    for option in ["use_path_request_style", "endpoint=us-east-1", "sigv4"] {
        s3fs.arg("-o").arg(option);
    }
    s3fs.arg("-o").arg(format!("passwd_file={}", passwd.display()));
    for var in common::UNSET_ENV_VARS {
        s3fs.env_remove(var);
    }
    s3fs.env("AWS_EC2_METADATA_DISABLED", "true");
    run(&mut s3fs);
    let _guard = common::mount::UnmountGuard(mnt.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !common::mount::is_mounted(&mnt) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }

    let st = std::fs::symlink_metadata(mnt.join("f")).unwrap();
    assert_eq!(st.permissions().mode() & 0o7777, 0o751);
    assert_eq!((st.uid(), st.gid()), (1234, 5678));
    assert_eq!(mtime(&st), (1_500_000_000, 250_000_000));
    let d = std::fs::symlink_metadata(mnt.join("d")).unwrap();
    assert!(d.is_dir());
    assert_eq!(d.permissions().mode() & 0o7777, 0o750);
    let l = std::fs::symlink_metadata(mnt.join("d/l")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(std::fs::read_link(mnt.join("d/l")).unwrap(), Path::new("../f"));
    assert_eq!(std::fs::read(mnt.join("d/l")).unwrap(), b"hello");
}

/// `--metadata-ttl` applies to the attributes, and with `indefinite` and a cache the journal
/// carries them to the next mount: a stat there costs no request and shows the stored mode.
#[test]
fn the_metadata_journal_carries_the_attributes_to_the_next_mount() {
    let s3 = LocalS3::start();
    s3.helper().put_with_metadata("d/f", b"x", &[("mode", "33216"), ("uid", "77"), ("mtime", "1600000000")], None);
    s3.helper().put_with_metadata("d/l", b"f", &[("mode", "41471")], None);
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().join("c");
    let args = ["--posix-metadata", "--metadata-ttl", "indefinite", "--cache", cache_arg.to_str().unwrap()];
    let check = |m: &TestMount| {
        let st = std::fs::symlink_metadata(m.path().join("d/f")).unwrap();
        assert_eq!((st.permissions().mode() & 0o7777, st.uid()), (0o700, 77));
        assert_eq!(mtime(&st), (1_600_000_000, 0));
        assert!(std::fs::symlink_metadata(m.path().join("d/l")).unwrap().file_type().is_symlink());
    };
    let m = mount(&s3, &args);
    check(&m);
    s3.reset_counts();
    check(&m);
    assert_eq!(s3.total_request_count(), 0, "within the TTL: no request");
    assert!(m.unmount().success());

    let m = mount(&s3, &args);
    s3.reset_counts();
    check(&m);
    assert_eq!(s3.total_request_count(), 0, "after a remount: from the journal");
}

/// rsync -a writes a temporary file, sets its mode, owner and times, and renames it: a second
/// rsync then finds every entry up to date and sends nothing. The empty file of the tree is
/// the hard one: its upload starts at the release of its descriptor, racing rsync's utimes.
#[test]
fn rsync_a_twice_sends_no_data_the_second_time() {
    let s3 = MotoServer::start();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let flags = ["--posix-metadata", "--allow-rename", "--allow-delete", "--allow-overwrite"];
    let m = mount(&s3, &flags);
    let rsync = |m: &TestMount| {
        run(Command::new("rsync")
            .arg("-a")
            .arg("--itemize-changes")
            .arg("--stats")
            .arg(format!("{}/", src.path().join("tree").display()))
            .arg(m.path().join("tree")))
    };
    let first = rsync(&m);
    assert!(first.contains(">f+++++++++ a.txt"), "{first}");
    std::thread::sleep(Duration::from_secs(1));
    for second in [rsync(&m), {
        drop(m);
        rsync(&mount(&s3, &flags))
    }] {
        assert!(second.contains("Literal data: 0 bytes"), "{second}");
        let changed: Vec<&str> = second.lines().filter(|l| l.starts_with('>') || l.starts_with('c')).collect();
        assert_eq!(changed, Vec::<&str>::new(), "{second}");
    }
}

/// git clone into the mount (lock files renamed into place, read-only objects, a config
/// rewritten), then git fsck and a clean git status.
#[test]
fn git_clone_into_the_mount_then_fsck_and_a_clean_status() {
    let s3 = MotoServer::start();
    let src = tempfile::tempdir().unwrap();
    let repo = src.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |dir: &Path, args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", src.path()))
    };
    git(&repo, &["init", "-q"]);
    make_tree(&repo);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let m = mount(&s3, &["--posix-metadata", "--allow-rename", "--allow-delete", "--allow-overwrite"]);
    git(
        src.path(),
        &["clone", "-q", "--no-hardlinks", repo.to_str().unwrap(), m.path().join("clone").to_str().unwrap()],
    );
    let clone = m.path().join("clone");
    git(&clone, &["fsck", "--full", "--strict"]);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "", "a clean working tree");
    // Right after git status listed the tree: a symlink known from a listing is one at once.
    assert_eq!(std::fs::read_link(clone.join("tree/sub/rel-link")).unwrap(), Path::new("../a.txt"));
}

/// A directory known only from a listing shows its marker's mode in `ls -l` right after the
/// listing too (it was shown with `--dir-mode` for up to the directory TTL).
#[test]
fn a_listed_directory_shows_its_marker_mode_right_after_the_listing() {
    let s3 = MotoServer::start();
    s3.helper().put_with_metadata("top/sub/", b"", &[("mode", &(0o040750u32).to_string()), ("uid", "77")], None);
    s3.helper().put("top/sub/x", b"x");
    let m = mount(&s3, &["--posix-metadata"]);
    for round in 0..5 {
        let out = run(Command::new("ls").arg("-l").arg(m.path().join("top")));
        let line = out.lines().find(|l| l.ends_with(" sub")).unwrap_or_default();
        assert!(line.starts_with("drwxr-x--- ") && line.contains(" 77 "), "round {round}:\n{out}");
    }
}

/// With `--allow-modify` files are staged: a new one belongs to its creator with the mode it was
/// created with, as without staging, and a modified one keeps its mode and owner and gets the
/// time of its last write.
#[test]
fn staged_files_carry_their_creator_mode_and_the_time_of_their_last_write() {
    let s3 = LocalS3::start();
    let m = mount(&s3, &["--posix-metadata", "--allow-modify", "--uid", "4000", "--gid", "4001"]);
    let f = m.path().join("new");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(&f).unwrap();
        std::io::Write::write_all(&mut file, b"data").unwrap();
    }
    let meta = s3.helper().head_metadata("new").expect("uploaded at close");
    assert_eq!(meta.get("mode").map(String::as_str), Some(&*(0o100640u32).to_string()), "{meta:?}");
    assert_eq!(meta.get("uid").map(String::as_str), Some("0"), "created by root, not --uid: {meta:?}");
    assert_eq!(meta.get("gid").map(String::as_str), Some("0"), "{meta:?}");
    assert!(meta.contains_key("mtime"), "{meta:?}");

    run(Command::new("chown").arg("42:43").arg(&f));
    run(Command::new("touch").arg("-m").arg("-d").arg("@1500000000").arg(&f));
    let before = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    {
        let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"A", 1).unwrap();
    }
    assert_eq!(s3.get("new").unwrap(), b"dAta");
    let meta = s3.helper().head_metadata("new").unwrap();
    assert_eq!(meta.get("mode").map(String::as_str), Some(&*(0o100640u32).to_string()), "{meta:?}");
    assert_eq!((meta.get("uid").map(String::as_str), meta.get("gid").map(String::as_str)), (Some("42"), Some("43")));
    let stored: f64 = meta.get("mtime").unwrap().parse().unwrap();
    assert!(stored as i64 >= before, "the time of the write, not 1500000000: {meta:?}");
    let st = std::fs::metadata(&f).unwrap();
    assert_eq!((st.permissions().mode() & 0o7777, st.uid(), st.gid()), (0o640, 42, 43));
    assert!(st.mtime() >= before);
}
