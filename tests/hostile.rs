//! End to end on moto (which stores odd keys faithfully): keys no file system would make.
//!
//! Per Mountpoint's rules (reference 2.1): keys with a `.`, `..` or empty component are hidden
//! with a warning in the log; a key ending in `/` is a directory (a warning if it holds data);
//! a directory hides a file of the same name; names longer than 255 bytes are hidden with a
//! warning (no application could open them). Everything else is listed and readable as is:
//! `%`, `+`, `#`, `?`, spaces, unicode, newlines, backslashes. Nothing ever fails a whole
//! directory, crashes the daemon, or touches anything outside the mount.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use common::TestS3;
use common::mem_server::MemS3;
use common::moto::MotoServer;
use common::mount::{TestMount, mount};
use common::s3_server::LocalS3;
use futures::StreamExt;

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").file_name().into_string().expect("UTF-8 name"))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Puts `keys` (each holding its own name) with `concurrency` requests in flight.
fn put_many(s3: &impl TestS3, keys: Vec<String>, concurrency: usize) {
    let (client, bucket) = (s3.helper().sdk().clone(), s3.bucket().to_string());
    s3.helper().block_on(async move {
        futures::stream::iter(keys)
            .for_each_concurrent(concurrency, |key| {
                let (client, bucket) = (client.clone(), bucket.clone());
                async move {
                    let body = aws_sdk_s3::primitives::ByteStream::from(key.clone().into_bytes());
                    client.put_object().bucket(bucket).key(&key).body(body).send().await.expect("put");
                }
            })
            .await
    });
}

const SPECIAL: &[&str] = &[
    "100%.txt",
    "a+b.txt",
    "hash#tag.txt",
    "what?.txt",
    "with space.txt",
    " leading-space.txt",
    "ünïcödé-日本語-🦀.txt",
    "tab\there.txt",
    "back\\slash.txt",
    "quote\"s'.txt",
    "amp&er=sand;semi.txt",
    "star*brackets[]{}<>.txt",
    "percent-encoded-%2F-%00.txt",
    "..dots..txt",
    "...",
];

#[test]
fn odd_keys_are_listed_or_hidden_by_the_rules_and_never_break_a_directory() {
    let s3 = MotoServer::start();
    let long_name = "n".repeat(256);
    let at_limit = "m".repeat(255);
    // A path over 1,000 characters in five directories (S3 keys stop at 1,024 bytes).
    let long_path =
        format!("{}/leaf.txt", (0..5).map(|i| format!("{i}{}", "d".repeat(199))).collect::<Vec<_>>().join("/"));
    let mut keys: Vec<(String, Vec<u8>)> = vec![
        (".".into(), b"dot".to_vec()),
        ("..".into(), b"dotdot".to_vec()),
        ("../escape.txt".into(), b"escape".to_vec()),
        ("../../etc/passwd-like".into(), b"escape".to_vec()),
        ("a/./b".into(), b"dot component".to_vec()),
        ("a/../b".into(), b"dotdot component".to_vec()),
        ("a/c//d".into(), b"empty component".to_vec()),
        ("/leading-slash".into(), b"empty first component".to_vec()),
        ("marker-with-data/".into(), b"data in a directory marker".to_vec()),
        ("marker-with-data/inside".into(), b"inside".to_vec()),
        ("x".into(), b"file x".to_vec()),
        ("x/y".into(), b"file y".to_vec()),
        (long_name.clone(), b"too long".to_vec()),
        (at_limit.clone(), b"at the limit".to_vec()),
        (format!("dir-{long_name}/z"), b"too long a directory".to_vec()),
        (long_path.clone(), b"deep".to_vec()),
    ];
    keys.extend(SPECIAL.iter().map(|n| (format!("special/{n}"), n.as_bytes().to_vec())));
    for (key, data) in &keys {
        s3.put(key, data);
    }

    let m = mount(&s3, &[]);
    let root = m.path();
    let deep = long_path.split('/').next().unwrap();
    assert_eq!(
        listing(root),
        set(&["a", "marker-with-data", "special", "x", &at_limit, deep]),
        "., .., ../*, /leading-slash and names over 255 bytes are hidden"
    );
    assert!(listing(&root.join("a")).iter().eq(["c"].iter()), "a/./b and a/../b are hidden");
    assert!(listing(&root.join("a/c")).is_empty(), "a/c//d is hidden");
    assert_eq!(listing(&root.join("marker-with-data")), set(&["inside"]));
    assert!(std::fs::metadata(root.join("x")).unwrap().is_dir(), "the directory x hides the file x");
    assert_eq!(std::fs::read(root.join("x/y")).unwrap(), b"file y");
    assert_eq!(std::fs::read(root.join(&at_limit)).unwrap(), b"at the limit");
    let too_long = std::fs::metadata(root.join(&long_name)).unwrap_err();
    assert_eq!(too_long.raw_os_error(), Some(libc::ENAMETOOLONG));
    assert_eq!(std::fs::read(root.join(&long_path)).unwrap(), b"deep", "a {}-character path", long_path.len());

    // Special characters: listed and read back as they are, and written through the mount.
    assert_eq!(listing(&root.join("special")), SPECIAL.iter().map(|s| s.to_string()).collect());
    for name in SPECIAL {
        assert_eq!(std::fs::read(root.join("special").join(name)).unwrap(), name.as_bytes(), "{name:?}");
        let written = format!("written {name}");
        std::fs::write(root.join(&written), name.as_bytes()).unwrap_or_else(|e| panic!("write {written:?}: {e}"));
        assert_eq!(s3.get(&written).as_deref(), Some(name.as_bytes()), "{written:?} in S3");
    }

    // Nothing outside the mount was touched, and the daemon is fine.
    let parent = root.parent().unwrap();
    assert_eq!(listing(parent), set(&["mnt"]), "nothing appeared beside the mount point");
    assert!(!Path::new("/etc/passwd-like").exists());
    let log = m.output();
    let long_prefix = format!("prefix=dir-{long_name}/");
    let long_key = format!("key={long_name}");
    let hidden = ["key=.", "key=..", "prefix=../", "prefix=/", "prefix=a/./", "prefix=a/../", "prefix=a/c//"];
    for field in hidden.iter().copied().chain([long_key.as_str(), long_prefix.as_str()]) {
        let warned = log.lines().any(|l| l.contains(" hidden: ") && l.ends_with(&format!(" {field}")));
        assert!(warned, "a warning names the hidden {field}:\n{log}");
    }
    let marker = log.lines().any(|l| l.contains("directory marker holds data") && l.contains("key=marker-with-data/"));
    assert!(marker, "a warning names the marker with data:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    std::fs::write(root.join("still-alive"), b"yes").unwrap();
    assert_eq!(m.unmount().code(), Some(0), "the daemon exits cleanly");
}

#[test]
fn ten_thousand_keys_in_one_directory_and_control_characters_in_names() {
    // On s3s-fs: moto takes ~30 s to store 10,000 keys, and refuses a newline in a key.
    let s3 = LocalS3::start();
    let started = Instant::now();
    let mut keys: Vec<String> = (0..10_000).map(|i| format!("many/k{i:05}")).collect();
    keys.extend(["many/new\nline", "many/tab\tand\\backslash", "many/carriage\rreturn"].map(String::from));
    put_many(&s3, keys.clone(), 32);
    println!("hostile: {} keys put in {:.1?}", keys.len(), started.elapsed());
    let m = mount(&s3, &[]);
    let started = Instant::now();
    let listed = listing(&m.path().join("many"));
    let took = started.elapsed();
    println!(
        "hostile: ls of {} entries in {took:.1?}, {} LIST requests",
        listed.len(),
        s3.request_count_by_name("ListObjectsV2")
    );
    let expected: BTreeSet<String> = keys.iter().map(|k| k["many/".len()..].to_string()).collect();
    assert_eq!(listed, expected);
    for key in &keys[9_998..] {
        assert_eq!(std::fs::read(m.path().join(key)).unwrap(), key.as_bytes(), "{key:?}");
    }
    std::fs::write(m.path().join("many/written\nhere"), b"nl").unwrap();
    assert_eq!(s3.get("many/written\nhere").unwrap(), b"nl");
}

/// Keys XML 1.0 cannot carry: listed with `encoding-type=url`, so a `\x01` name is an ordinary
/// file and a NUL name is hidden with a warning; neither fails its directory, and such a key as
/// the bucket's very first key does not fail the mount (its probe lists it). On moto: s3s-fs
/// keys are file names (no NUL), and its continuation token is the page's last key, raw, which
/// no XML parser accepts when that key holds `\x01` (the conformance suite covers s3s-fs).
#[test]
fn control_character_keys_never_fail_a_directory_or_the_mount() {
    let s3 = MotoServer::start();
    for (key, data) in [("\x01first", &b"first"[..]), ("ctl/bad\x01name", b"bad"), ("ctl/nul\0name", b"nul")] {
        s3.put(key, data);
    }
    s3.put("ctl/ok.txt", b"ok");
    let m = mount(&s3, &[]);
    let root = m.path();
    assert_eq!(listing(root), set(&["\x01first", "ctl"]));
    assert_eq!(listing(&root.join("ctl")), set(&["bad\x01name", "ok.txt"]), "the NUL key is hidden");
    assert_eq!(std::fs::read(root.join("ctl/ok.txt")).unwrap(), b"ok");
    assert_eq!(std::fs::read(root.join("ctl/bad\x01name")).unwrap(), b"bad");
    assert_eq!(std::fs::read(root.join("\x01first")).unwrap(), b"first");
    let log = m.output();
    let warned = log.lines().any(|l| l.contains(" hidden: ") && l.ends_with(" key=ctl/nul\\x00name"));
    assert!(warned, "the NUL key is hidden with a warning that names it, escaped:\n{log}");
}

/// A key holding a newline and terminal escapes is listed, read and, when it cannot be a name,
/// hidden with a warning, and the daemon's log file (at debug, so every S3 failure is logged
/// too) holds it escaped: no line the key forged, no raw ESC byte.
#[test]
fn keys_cannot_forge_log_lines_or_drive_a_terminal() {
    let s3 = MemS3::start();
    let forged = "log/evil\n2030-01-01T00:00:00.000000Z ERROR mount_s3: forged line";
    let ansi = "log/\x1b[31mred\x1b[0m";
    let hidden = format!("log/\x1b[2J\nFORGED-HIDDEN {}", "x".repeat(300));
    for key in [forged, ansi, &hidden] {
        s3.put(key, key.as_bytes().to_vec());
    }
    let logs = tempfile::tempdir().unwrap();
    let args = ["--endpoint-url", s3.endpoint(), "--force-path-style", "--region", "us-east-1", "--debug"];
    let log_dir = logs.path().to_str().unwrap();
    let m = TestMount::new(&s3.env_vars(), s3.bucket(), &[&args[..], &["--log-directory", log_dir]].concat());
    let dir = m.path().join("log");
    assert_eq!(listing(&dir), set(&[&forged["log/".len()..], &ansi["log/".len()..]]));
    for key in [forged, ansi] {
        assert_eq!(std::fs::read(m.path().join(key)).unwrap(), key.as_bytes(), "{key:?}");
    }
    let missing = std::fs::metadata(dir.join("gone\n2030-01-01T00:00:00.000000Z ERROR missing\x1b[1m"));
    assert_eq!(missing.unwrap_err().raw_os_error(), Some(libc::ENOENT));
    assert_eq!(m.unmount().code(), Some(0));

    let mut log = Vec::new();
    for entry in std::fs::read_dir(logs.path()).unwrap() {
        log.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let log = String::from_utf8_lossy(&log);
    assert!(!log.contains('\x1b'), "a raw ESC reached the log:\n{log}");
    for line in log.lines() {
        assert!(line.starts_with("20") && !line.starts_with("2030-"), "a line the daemon did not write: {line:?}");
    }
    let warned = log.lines().any(|l| l.contains(" hidden: ") && l.contains("key=log/\\x1b[2J\\nFORGED-HIDDEN xxx"));
    assert!(warned, "the hidden key is named, escaped:\n{log}");
}
