//! Namespace transactions, without S3.

use super::*;

const TTL: Duration = Duration::from_secs(1);

fn ns(prefix: &str) -> Namespace {
    Namespace::new(prefix, SystemTime::now(), MetadataTtl::Minimal, MetadataTtl::Minimal)
}

fn file(size: u64, etag: Option<&str>) -> RemoteEntry {
    RemoteEntry {
        kind: InodeKind::File,
        size,
        mtime: SystemTime::UNIX_EPOCH,
        etag: etag.map(ETag::new),
        storage_class: None,
        archived: false,
        posix: None,
    }
}

fn dir() -> RemoteEntry {
    RemoteEntry::directory(SystemTime::now())
}

#[test]
fn unchanged_object_keeps_its_number_and_changed_gets_a_new_one() {
    let t = ns("pre/");
    let a = t.remember(ROOT_INO, "a", file(3, Some("\"1\"")), TTL).unwrap();
    assert_eq!(a.key, "pre/a");
    assert_eq!(t.remember(ROOT_INO, "a", file(3, Some("\"1\"")), TTL).unwrap().ino, a.ino);
    // A listing without ETag and with the same size and mtime is the same object.
    let again = t.remember(ROOT_INO, "a", file(3, None), TTL).unwrap();
    assert_eq!(again.ino, a.ino);
    assert_eq!(again.stat.etag, Some(ETag::new("\"1\"")), "known ETag kept");
    let b = t.remember(ROOT_INO, "a", file(3, Some("\"2\"")), TTL).unwrap();
    assert_ne!(b.ino, a.ino);
    // The old inode lives until forgotten, but its name now points at the new one.
    assert!(matches!(t.revalidated(a.ino, Some(file(3, Some("\"2\""))), TTL), Err(FsError::StaleInode { .. })));
    assert_eq!(t.get(a.ino).unwrap().ino, a.ino);
    t.forget(a.ino, 3);
    assert!(t.get(a.ino).is_err());
    assert_eq!(t.get(b.ino).unwrap().ino, b.ino);
}

#[test]
fn directory_replacing_file_is_a_new_inode_with_a_slash_key() {
    let t = ns("");
    let f = t.remember(ROOT_INO, "x", file(1, Some("e")), TTL).unwrap();
    let d = t.remember(ROOT_INO, "x", dir(), TTL).unwrap();
    assert_ne!(f.ino, d.ino);
    assert_eq!(d.key, "x/");
    let c = t.remember(d.ino, "y", file(1, None), TTL).unwrap();
    assert_eq!(c.key, "x/y");
    assert_eq!(c.parent_key(), "x/");
    assert!(matches!(t.remember(c.ino, "z", file(1, None), TTL), Err(FsError::NotADirectory(_))));
}

#[test]
fn forget_removes_only_at_zero_and_never_the_root() {
    let t = ns("");
    let a = t.remember(ROOT_INO, "a", file(1, None), TTL).unwrap();
    t.remember(ROOT_INO, "a", file(1, None), TTL).unwrap();
    t.forget(a.ino, 1);
    assert!(t.get(a.ino).is_ok());
    t.forget(a.ino, 1);
    assert!(t.get(a.ino).is_err());
    assert_eq!(t.len(), 1);
    t.forget(ROOT_INO, 10);
    assert!(t.get(ROOT_INO).is_ok());
    // After forgetting, the name maps to a fresh inode.
    let again = t.remember(ROOT_INO, "a", file(1, None), TTL).unwrap();
    assert_ne!(again.ino, a.ino);
}

#[test]
fn keys_are_derived_so_a_directory_is_kept_while_nodes_below_it_need_it() {
    let t = ns("p/");
    let d = t.remember(ROOT_INO, "d", dir(), TTL).unwrap();
    let e = t.remember(d.ino, "e", dir(), TTL).unwrap();
    let f = t.remember(e.ino, "f", file(1, None), TTL).unwrap();
    assert_eq!(f.key, "p/d/e/f");
    // The kernel forgets the directories first (possible with readdirplus references): the
    // file's key still goes through them, so they stay until it goes.
    t.forget(d.ino, 1);
    t.forget(e.ino, 1);
    assert_eq!(t.get(f.ino).unwrap().key, "p/d/e/f");
    assert_eq!(t.len(), 4);
    t.forget(f.ino, 1);
    assert_eq!(t.len(), 1, "the chain goes with its last user");
}

#[test]
fn one_writer_or_many_readers_and_open_inodes_stay() {
    let t = ns("");
    let a = t.remember(ROOT_INO, "a", file(1, Some("e")), TTL).unwrap();
    t.open_read(a.ino).unwrap();
    t.open_read(a.ino).unwrap();
    assert_eq!(t.open_write(a.ino), Err(OpenConflict::InUse));
    assert_eq!(t.ensure_closed(a.ino), Err(OpenConflict::InUse));
    t.forget(a.ino, 1);
    assert!(t.get(a.ino).is_ok(), "an open inode stays");
    t.close(a.ino, false);
    t.close(a.ino, false);
    assert!(t.get(a.ino).is_err(), "gone with its last handle");
    let b = t.create_local(ROOT_INO, "b", InodeKind::File, TTL).unwrap();
    t.open_write(b.ino).unwrap();
    assert_eq!(t.open_read(b.ino), Err(OpenConflict::BeingWritten));
    t.close(b.ino, true);
    t.open_read(b.ino).unwrap();
}

#[test]
fn a_committed_upload_makes_its_local_directories_remote() {
    let t = ns("");
    let d = t.create_local(ROOT_INO, "d", InodeKind::Directory, TTL).unwrap();
    let f = t.create_local(d.ino, "f", InodeKind::File, TTL).unwrap();
    assert!(t.local_child(ROOT_INO, "d").is_some());
    assert!(matches!(
        t.create_local(d.ino, "f", InodeKind::File, TTL),
        Err(FsError::AlreadyExists { key }) if key == "d/f"
    ));
    t.commit_upload(f.ino, ETag::new("\"x\""), 5, TTL);
    assert_eq!(t.get(d.ino).unwrap().local, None);
    assert_eq!(t.get(f.ino).unwrap().stat.size, 5);
    assert!(t.local_child(ROOT_INO, "d").is_none());
}

#[test]
fn listed_inodes_are_logged_in_one_write_and_before_anyone_else_hands_them_out() {
    use crate::fs::resume::{ResumeLog, Saved};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state");
    let t = ns("");
    t.set_resume_log(std::sync::Arc::new(ResumeLog::create(&path, &Saved::default()).unwrap()));
    let logged = || Saved::load(&path).unwrap().inodes.into_keys().collect::<Vec<_>>();

    // A readdirplus reply: nothing written until the listing writes it, then all at once.
    let a = t.remember_listed(ROOT_INO, "a", file(1, Some("\"a\"")), TTL).unwrap().ino;
    let b = t.remember_listed(ROOT_INO, "b", file(1, Some("\"b\"")), TTL).unwrap().ino;
    assert_eq!(logged(), Vec::<u64>::new());
    t.write_recorded();
    assert_eq!(logged(), [a, b]);

    // A lookup that finds an inode a listing has not written out yet writes it first.
    let c = t.remember_listed(ROOT_INO, "c", file(1, Some("\"c\"")), TTL).unwrap().ino;
    assert_eq!(t.remember(ROOT_INO, "c", file(1, Some("\"c\"")), TTL).unwrap().ino, c);
    assert_eq!(logged(), [a, b, c]);
    // So does a new reference (a local file's lookup).
    let d = t.remember_listed(ROOT_INO, "d", file(1, Some("\"d\"")), TTL).unwrap().ino;
    t.reference(d).unwrap();
    assert_eq!(logged(), [a, b, c, d]);

    // An entry that did not fit in the reply is forgotten at once: its drop follows its line.
    let e = t.remember_listed(ROOT_INO, "e", file(1, Some("\"e\"")), TTL).unwrap().ino;
    t.forget(e, 1);
    t.write_recorded();
    assert_eq!(logged(), [a, b, c, d]);
    assert!(std::fs::read_to_string(&path).unwrap().ends_with(&format!("X {e}\n")));
}
