//! Rename through the core, over the in-memory client (exact request counts).

use std::ffi::OsStr;
use std::sync::Arc;

use super::intent::{IntentLog, Move};
use crate::client::fault::{Fault, FaultClient, When};
use crate::client::memory::InMemoryClient;
use crate::client::{ClientErrorKind, ETag, ObjectClient, S3Operation};
use crate::fs::namespace::ROOT_INO;
use crate::fs::{FsConfig, S3Filesystem};

const PID: u32 = 1000;

fn config() -> FsConfig {
    FsConfig { allow_rename: true, write_part_size: 1000, ..FsConfig::default() }
}

fn fs_over(client: Arc<dyn ObjectClient>, config: FsConfig, intents: &tempfile::TempDir) -> S3Filesystem {
    let log = IntentLog::new(intents.path().to_path_buf(), None, "bucket", "");
    S3Filesystem::new(client, config).with_rename_intents(log)
}

fn n(s: &str) -> &OsStr {
    OsStr::new(s)
}

async fn ino(fs: &S3Filesystem, parent: u64, name: &str) -> u64 {
    fs.lookup(parent, n(name)).await.unwrap().attr.ino
}

#[tokio::test]
async fn a_file_is_copied_pinned_then_deleted_and_keeps_its_inode() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("a", &b"hello"[..]);
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_over(client.clone(), config(), &dir);
    let a = ino(&fs, ROOT_INO, "a").await;
    client.reset_counts();
    fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), 0).await.unwrap();
    assert_eq!(client.keys(), ["b"]);
    assert_eq!(&client.object_bytes("b").unwrap()[..], b"hello");
    assert_eq!(client.count(S3Operation::CopyObject), 1);
    assert_eq!(client.count(S3Operation::DeleteObject), 1);
    // The kernel moves its dentry: the inode keeps its number and now reads the new key.
    let fh = fs.open(a, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(&fs.read(fh, 0, 10).await.unwrap()[..], b"hello");
    assert_eq!(fs.lookup(ROOT_INO, n("a")).await.unwrap_err().errno(), libc::ENOENT);
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "intent removed once done");
}

#[tokio::test]
async fn without_the_flag_rename_is_enosys_and_exchange_is_refused() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("a", &b"x"[..]);
    let dir = tempfile::tempdir().unwrap();
    let off = fs_over(client.clone(), FsConfig::default(), &dir);
    assert_eq!(off.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), 0).await.unwrap_err().errno(), libc::ENOSYS);
    let fs = fs_over(client.clone(), config(), &dir);
    let exchange = fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), libc::RENAME_EXCHANGE).await;
    assert_eq!(exchange.unwrap_err().errno(), libc::EINVAL);
    assert_eq!(client.keys(), ["a"]);
}

#[tokio::test]
async fn replacing_needs_allow_overwrite_and_noreplace_is_eexist() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("a", &b"new"[..]);
    client.insert("b", &b"old"[..]);
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_over(client.clone(), config(), &dir);
    assert_eq!(fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), 0).await.unwrap_err().errno(), libc::EPERM);
    let fs = fs_over(client.clone(), FsConfig { allow_overwrite: true, ..config() }, &dir);
    let noreplace = fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), libc::RENAME_NOREPLACE).await;
    assert_eq!(noreplace.unwrap_err().errno(), libc::EEXIST);
    assert_eq!(client.keys(), ["a", "b"]);
    fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), 0).await.unwrap();
    assert_eq!(client.keys(), ["b"]);
    assert_eq!(&client.object_bytes("b").unwrap()[..], b"new");
}

#[tokio::test]
async fn a_file_being_written_lands_at_its_new_name_with_no_copy() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_over(client.clone(), config(), &dir);
    let (_, opened) = fs.create(ROOT_INO, n("tmp.123"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, b"contents").await.unwrap();
    fs.rename(ROOT_INO, n("tmp.123"), ROOT_INO, n("final"), 0).await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    fs.release(opened.fh).await.unwrap();
    assert_eq!(client.keys(), ["final"]);
    assert_eq!(client.count(S3Operation::CopyObject), 0);
    assert_eq!(client.count(S3Operation::DeleteObject), 0);
    assert_eq!(fs.lookup(ROOT_INO, n("final")).await.unwrap().attr.size, 8);
    // Once its first part went out, the upload is bound to its key.
    let (_, big) = fs.create(ROOT_INO, n("big"), 0o644, PID).await.unwrap();
    fs.write(big.fh, 0, &[7u8; 2500]).await.unwrap();
    let busy = fs.rename(ROOT_INO, n("big"), ROOT_INO, n("big2"), 0).await;
    assert_eq!(busy.unwrap_err().errno(), libc::EBUSY);
}

#[tokio::test]
async fn a_directory_moves_every_object_up_to_the_limit_and_exdev_beyond() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    for i in 0..30 {
        client.insert(&format!("d/sub/f{i}"), vec![i as u8; 10]);
    }
    client.insert("d/top", &b"t"[..]);
    let dir = tempfile::tempdir().unwrap();
    let small = fs_over(client.clone(), FsConfig { rename_dir_limit: 30, ..config() }, &dir);
    assert_eq!(small.rename(ROOT_INO, n("d"), ROOT_INO, n("e"), 0).await.unwrap_err().errno(), libc::EXDEV);
    assert_eq!(client.count(S3Operation::CopyObject), 0, "nothing copied before the limit is known");
    let fs = fs_over(client.clone(), config(), &dir);
    let d = ino(&fs, ROOT_INO, "d").await;
    let sub = ino(&fs, d, "sub").await;
    fs.rename(ROOT_INO, n("d"), ROOT_INO, n("e"), 0).await.unwrap();
    let keys = client.keys();
    assert_eq!(keys.len(), 31);
    assert!(keys.iter().all(|k| k.starts_with("e/")), "{keys:?}");
    assert_eq!(client.count(S3Operation::CopyObject), 31);
    // Inodes below follow (their keys are derived).
    let f = ino(&fs, sub, "f3").await;
    let fh = fs.open(f, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(&fs.read(fh, 0, 100).await.unwrap()[..], &[3u8; 10]);
    let into_itself = fs.rename(ROOT_INO, n("e"), sub, n("x"), 0).await;
    assert_eq!(into_itself.unwrap_err().errno(), libc::EINVAL);
}

#[tokio::test]
async fn a_changed_source_fails_the_rename_and_leaves_both_names_as_they_were() {
    let faulty = Arc::new(FaultClient::new(InMemoryClient::new("bucket"), 1));
    let client = faulty.inner();
    for i in 0..5 {
        client.insert(&format!("d/f{i}"), vec![i as u8; 10]);
    }
    // The third copy finds its source changed (412), as if another client replaced it.
    faulty.inject(S3Operation::CopyObject, When::Nth(3), Fault::Fail(ClientErrorKind::PreconditionFailed));
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_over(faulty.clone(), config(), &dir);
    let err = fs.rename(ROOT_INO, n("d"), ROOT_INO, n("e"), 0).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE);
    let keys = client.keys();
    assert_eq!(keys, ["d/f0", "d/f1", "d/f2", "d/f3", "d/f4"], "copies undone, sources intact");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn the_next_mount_finishes_an_interrupted_rename() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    // The daemon died after copying d/a (and deleting it) and copying d/b, before deleting d/b
    // and before copying d/c.
    let etag = |key: &str, data: &'static [u8]| -> ETag { client.insert(key, data) };
    let a = etag("e/a", b"a");
    let b = etag("d/b", b"b");
    client.insert("e/b", &b"b"[..]);
    let c = etag("d/c", b"c");
    let replaced = etag("d/r", b"replaced later");
    let dir = tempfile::tempdir().unwrap();
    let log = IntentLog::new(dir.path().to_path_buf(), None, "bucket", "");
    let mv = |from: &str, to: &str, etag: &ETag| Move { from: from.into(), to: to.into(), etag: etag.clone() };
    log.record(&[mv("d/a", "e/a", &a), mv("d/b", "e/b", &b), mv("d/c", "e/c", &c), mv("d/r", "e/r", &replaced)])
        .unwrap();
    client.insert("d/r", &b"another client's version"[..]);
    let fs = fs_over(client.clone(), config(), &dir);
    fs.recover_renames().await;
    assert_eq!(client.keys(), ["d/r", "e/a", "e/b", "e/c"]);
    assert_eq!(&client.object_bytes("d/r").unwrap()[..], b"another client's version", "replaced source left");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "intent done");
}

#[tokio::test]
async fn directory_buckets_rename_files_with_rename_object_without_the_flag() {
    let client = Arc::new(InMemoryClient::directory_bucket("b--use1-az4--x-s3"));
    client.insert("a", &b"hello"[..]);
    client.insert("taken", &b"x"[..]);
    client.insert("d/f", &b"f"[..]);
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_over(client.clone(), FsConfig::default(), &dir);
    let a = ino(&fs, ROOT_INO, "a").await;
    client.reset_counts();
    fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), 0).await.unwrap();
    assert_eq!(client.count(S3Operation::RenameObject), 1);
    assert_eq!(client.count(S3Operation::CopyObject) + client.count(S3Operation::DeleteObject), 0);
    let fh = fs.open(a, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(&fs.read(fh, 0, 10).await.unwrap()[..], b"hello");
    let busy = fs.rename(ROOT_INO, n("b"), ROOT_INO, n("c"), 0).await;
    assert_eq!(busy.unwrap_err().errno(), libc::EBUSY, "open for reading");
    fs.release(fh).await.unwrap();
    let noreplace = fs.rename(ROOT_INO, n("b"), ROOT_INO, n("taken"), libc::RENAME_NOREPLACE).await;
    assert_eq!(noreplace.unwrap_err().errno(), libc::EEXIST);
    let replace = fs.rename(ROOT_INO, n("b"), ROOT_INO, n("taken"), 0).await;
    assert_eq!(replace.unwrap_err().errno(), libc::EPERM, "replacing needs --allow-overwrite");
    let directory = fs.rename(ROOT_INO, n("d"), ROOT_INO, n("e"), 0).await;
    assert_eq!(directory.unwrap_err().errno(), libc::ENOSYS, "directories need --allow-rename");
    let fs = fs_over(client.clone(), FsConfig { allow_overwrite: true, ..FsConfig::default() }, &dir);
    fs.rename(ROOT_INO, n("b"), ROOT_INO, n("taken"), 0).await.unwrap();
    assert_eq!(client.keys(), ["d/f", "taken"]);
    assert_eq!(&client.object_bytes("taken").unwrap()[..], b"hello");
}
