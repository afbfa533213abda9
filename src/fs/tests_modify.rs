//! Core tests of `--allow-modify` over the in-memory client.

use std::ffi::OsStr;
use std::sync::Arc;

use super::*;
use crate::client::S3Operation;
use crate::client::memory::InMemoryClient;
use crate::fs::staging::StagingStore;

const PID: u32 = 1000;
const MIB: usize = 1024 * 1024;

struct Setup {
    client: Arc<InMemoryClient>,
    fs: S3Filesystem,
    _dir: tempfile::TempDir,
}

fn setup(objects: &[(&str, &[u8])]) -> Setup {
    let client = Arc::new(InMemoryClient::new("bucket"));
    for (key, data) in objects {
        client.insert(key, data.to_vec());
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("staging");
    std::fs::create_dir(&root).unwrap();
    let store = StagingStore::open(root.clone(), root, "bucket", None).unwrap().0;
    let config = FsConfig { allow_modify: true, allow_delete: true, ..FsConfig::default() };
    let fs = S3Filesystem::new(client.clone(), config).with_staging(Arc::new(store));
    client.reset_counts();
    Setup { client, fs, _dir: dir }
}

async fn ino(fs: &S3Filesystem, name: &str) -> u64 {
    fs.lookup(ROOT_INO, OsStr::new(name)).await.unwrap().attr.ino
}

#[tokio::test]
async fn an_append_is_uploaded_at_close_without_reading_the_object() {
    let s = setup(&[("log", b"line 1\n")]);
    let ino = ino(&s.fs, "log").await;
    let fh = s.fs.open(ino, libc::O_WRONLY | libc::O_APPEND, PID).await.unwrap().fh;
    s.fs.write(fh, 7, b"line 2\n").await.unwrap();
    assert_eq!(s.fs.getattr(ino).await.unwrap().attr.size, 14);
    assert_eq!(s.client.count(S3Operation::GetObject), 0, "nothing read while writing");
    assert_eq!(s.client.object_bytes("log").unwrap(), &b"line 1\n"[..], "others see the old object until close");
    s.fs.flush(fh, PID).await.unwrap();
    assert_eq!(s.client.object_bytes("log").unwrap(), &b"line 1\nline 2\n"[..]);
    // Under 5 MiB S3 cannot copy a part: the old bytes are fetched once, to be sent again.
    assert_eq!(s.client.count(S3Operation::GetObject), 1);
    // Still writable after the close of a dup (and after fsync).
    s.fs.write(fh, 14, b"line 3\n").await.unwrap();
    s.fs.fsync(fh).await.unwrap();
    assert_eq!(s.client.object_bytes("log").unwrap(), &b"line 1\nline 2\nline 3\n"[..]);
    s.fs.release(fh).await.unwrap();
    assert!(s.fs.staged.lock().unwrap().is_empty());
    let fh = s.fs.open(ino, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(s.fs.read(fh, 0, 100).await.unwrap(), &b"line 1\nline 2\nline 3\n"[..]);
}

#[tokio::test]
async fn writes_in_place_are_read_back_through_the_same_and_other_handles() {
    let data = vec![b'a'; 3 * MIB];
    let s = setup(&[("db", &data)]);
    let ino = ino(&s.fs, "db").await;
    let rw = s.fs.open(ino, libc::O_RDWR, PID).await.unwrap().fh;
    s.fs.write(rw, MIB as u64 + 10, b"XYZ").await.unwrap();
    assert_eq!(s.fs.read(rw, MIB as u64 + 8, 7).await.unwrap(), &b"aaXYZaa"[..]);
    let reader = s.fs.open(ino, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(s.fs.read(reader, MIB as u64 + 8, 7).await.unwrap(), &b"aaXYZaa"[..]);
    // One 1 MiB block was fetched, once.
    assert_eq!(s.client.count(S3Operation::GetObject), 1);
    s.fs.release(reader).await.unwrap();
    s.fs.flush(rw, PID).await.unwrap();
    let mut expected = data.clone();
    expected[MIB + 10..MIB + 13].copy_from_slice(b"XYZ");
    assert_eq!(s.client.object_bytes("db").unwrap(), expected);
    s.fs.release(rw).await.unwrap();
}

#[tokio::test]
async fn truncate_of_a_closed_file_is_uploaded_at_once() {
    let s = setup(&[("t", b"0123456789")]);
    let ino = ino(&s.fs, "t").await;
    let entry = s.fs.setattr(ino, SetAttr { size: Some(4), ..SetAttr::default() }).await.unwrap();
    assert_eq!(entry.attr.size, 4);
    assert_eq!(s.client.object_bytes("t").unwrap(), &b"0123"[..]);
    s.fs.setattr(ino, SetAttr { size: Some(6), ..SetAttr::default() }).await.unwrap();
    assert_eq!(s.client.object_bytes("t").unwrap(), &b"0123\0\0"[..]);
}

#[tokio::test]
async fn a_conflicting_change_fails_the_close_and_is_kept() {
    let s = setup(&[("f", b"old")]);
    let ino = ino(&s.fs, "f").await;
    let fh = s.fs.open(ino, libc::O_WRONLY, PID).await.unwrap().fh;
    s.fs.write(fh, 0, b"mine").await.unwrap();
    s.client.insert("f", b"theirs".to_vec());
    let err = s.fs.flush(fh, PID).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE);
    let FsError::ModifyConflict { kept: Some(path), .. } = &err else { panic!("{err}") };
    assert_eq!(std::fs::read(path).unwrap(), b"mine");
    assert_eq!(s.client.object_bytes("f").unwrap(), &b"theirs"[..]);
    assert_eq!(s.fs.write(fh, 4, b"x").await.unwrap_err().errno(), libc::ESTALE);
    s.fs.release(fh).await.unwrap();
}

#[tokio::test]
async fn new_files_take_writes_in_any_order_and_can_be_deleted_after_close() {
    let s = setup(&[]);
    let (entry, opened) = s.fs.create(ROOT_INO, OsStr::new("j"), 0o644, PID).await.unwrap();
    s.fs.write(opened.fh, 4, b"body").await.unwrap();
    s.fs.write(opened.fh, 0, b"head").await.unwrap();
    s.fs.fsync(opened.fh).await.unwrap();
    assert_eq!(s.client.object_bytes("j").unwrap(), &b"headbody"[..]);
    s.fs.write(opened.fh, 0, b"HEAD").await.unwrap();
    assert_eq!(s.fs.unlink(ROOT_INO, OsStr::new("j")).await.unwrap_err().errno(), libc::EPERM, "changes pending");
    s.fs.flush(opened.fh, PID).await.unwrap();
    assert_eq!(s.client.object_bytes("j").unwrap(), &b"HEADbody"[..]);
    // Deleted before the (asynchronous) release: the release must not bring it back.
    s.fs.unlink(ROOT_INO, OsStr::new("j")).await.unwrap();
    s.fs.write(opened.fh, 0, b"more").await.unwrap();
    s.fs.release(opened.fh).await.unwrap();
    assert!(s.client.object_bytes("j").is_none());
    let _ = entry;
}

#[tokio::test]
async fn without_the_flag_existing_files_are_not_modified() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("f", b"x".to_vec());
    let fs = S3Filesystem::new(client.clone(), FsConfig::default());
    let ino = ino(&fs, "f").await;
    assert_eq!(fs.open(ino, libc::O_WRONLY | libc::O_APPEND, PID).await.unwrap_err().errno(), libc::EPERM);
}

#[tokio::test]
async fn a_second_append_does_not_wait_for_the_first_release() {
    let s = setup(&[("log", b"a\n")]);
    let ino = ino(&s.fs, "log").await;
    let first = s.fs.open(ino, libc::O_WRONLY | libc::O_APPEND, PID).await.unwrap().fh;
    s.fs.write(first, 2, b"b\n").await.unwrap();
    s.fs.flush(first, PID).await.unwrap();
    // The kernel's release of `first` comes later, asynchronously.
    let second = s.fs.open(ino, libc::O_WRONLY | libc::O_APPEND, PID).await.unwrap().fh;
    s.fs.write(second, 4, b"c\n").await.unwrap();
    s.fs.flush(second, PID).await.unwrap();
    s.fs.release(first).await.unwrap();
    assert_eq!(s.client.object_bytes("log").unwrap(), &b"a\nb\nc\n"[..]);
    s.fs.release(second).await.unwrap();
    assert!(s.fs.staged.lock().unwrap().is_empty());
    // The writer claim is given back: the file opens for reading like any other.
    let fh = s.fs.open(ino, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(s.fs.read(fh, 0, 10).await.unwrap(), &b"a\nb\nc\n"[..]);
}
