//! End to end on moto (which, unlike s3s-fs, stores `x` beside `x/y` and keys ending in `/`):
//! the key-to-path rules of Mountpoint's semantics (hidden keys, shadowing, markers).

mod common;

use std::path::Path;
use std::time::Duration;

use common::moto::MotoServer;
use common::mount::mount;

fn names(dir: &Path) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.file_type().unwrap().is_dir())
        })
        .collect();
    v.sort();
    v
}

fn entries(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, d)| (n.to_string(), *d)).collect()
}

#[test]
fn directories_shadow_files_markers_are_directories_and_bad_keys_are_hidden() {
    let s3 = MotoServer::start();
    for (key, data) in [
        ("x", &b"the file x"[..]),
        ("x/y", b"y"),
        ("marker/", b""),
        ("marker-with-data/", b"not empty"),
        ("w//z", b"hidden: empty component"),
        ("plain.txt", b"plain"),
        ("d/ok", b"ok"),
        ("d//bad", b"hidden"),
    ] {
        s3.put(key, data);
    }
    let m = mount(&s3, &[]);
    assert_eq!(
        names(m.path()),
        entries(&[
            ("d", true),
            ("marker", true),
            ("marker-with-data", true),
            ("plain.txt", false),
            ("w", true),
            ("x", true)
        ])
    );
    assert!(std::fs::metadata(m.path().join("x")).unwrap().is_dir(), "directory x wins over file x");
    assert_eq!(std::fs::read(m.path().join("x/y")).unwrap(), b"y");
    assert_eq!(names(&m.path().join("marker")), entries(&[]));
    assert_eq!(names(&m.path().join("marker-with-data")), entries(&[]));
    assert_eq!(names(&m.path().join("w")), entries(&[]), "w//z is hidden");
    assert_eq!(names(&m.path().join("d")), entries(&[("ok", false)]), "d//bad is hidden");
    // Names that cannot be keys are EINVAL, not ENOENT.
    let long = "n".repeat(256);
    assert_eq!(std::fs::metadata(m.path().join(long)).unwrap_err().raw_os_error(), Some(libc::ENAMETOOLONG));

    // Deleting x/y reveals the file x once the kernel's 1 s directory cache expires.
    s3.delete("x/y");
    std::thread::sleep(Duration::from_millis(1100));
    let x = std::fs::metadata(m.path().join("x")).unwrap();
    assert!(x.is_file());
    assert_eq!(std::fs::read(m.path().join("x")).unwrap(), b"the file x");
}

#[test]
fn remote_changes_show_up_after_the_kernel_ttl() {
    let s3 = MotoServer::start();
    s3.put("a.txt", b"one");
    let m = mount(&s3, &[]);
    assert_eq!(std::fs::read(m.path().join("a.txt")).unwrap(), b"one");
    s3.put("b.txt", b"new");
    s3.put("a.txt", b"two!");
    // No negative caching: a new object is visible at once.
    assert_eq!(std::fs::read(m.path().join("b.txt")).unwrap(), b"new");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(std::fs::read(m.path().join("a.txt")).unwrap(), b"two!");
    s3.delete("a.txt");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(std::fs::metadata(m.path().join("a.txt")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
}
