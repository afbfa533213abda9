//! Core tests of `--posix-metadata` over the in-memory client: exact request counts.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::memory::InMemoryClient;
use crate::client::{ObjectClient, PutOptions, S3Operation, UserMetadata};
use crate::fs::namespace::{InodeKind, ROOT_INO};
use crate::fs::{FsConfig, S3Filesystem, SetAttr};

const PID: u32 = 1000;

fn fs_with(posix: bool) -> (Arc<InMemoryClient>, S3Filesystem) {
    let client = Arc::new(InMemoryClient::new("bucket"));
    let config = FsConfig { write_part_size: 1000, posix_metadata: posix, ..FsConfig::default() };
    (client.clone(), S3Filesystem::new(client, config))
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

async fn put_with(client: &InMemoryClient, key: &str, data: &'static [u8], meta: &[(&str, &str)]) {
    let metadata: UserMetadata = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    client.put_object(key, data.into(), &PutOptions { metadata, ..PutOptions::default() }).await.unwrap();
    client.reset_counts();
}

fn meta(client: &InMemoryClient, key: &str, name: &str) -> Option<String> {
    client.object_metadata(key).unwrap().get(name).cloned()
}

#[tokio::test]
async fn a_lookup_with_the_flag_adds_the_head_that_reads_the_attributes() {
    let mut counts = vec![];
    for posix in [false, true] {
        let (client, fs) = fs_with(posix);
        put_with(&client, "f", b"abc", &[("mode", "33261"), ("uid", "7"), ("mtime", "1500000000.5")]).await;
        let attr = fs.lookup(ROOT_INO, name("f")).await.unwrap().attr;
        counts.push((client.count(S3Operation::HeadObject), client.count(S3Operation::ListObjectsV2)));
        if posix {
            assert_eq!((attr.perm, attr.uid), (0o755, 7));
            assert_eq!(attr.mtime, UNIX_EPOCH + Duration::from_millis(1_500_000_000_500));
        } else {
            assert_eq!((attr.perm, attr.uid), (0o644, 0));
        }
    }
    // Without the flag one listing answers; with it, the HEAD that carries the metadata too.
    assert_eq!(counts, [(0, 1), (1, 1)]);
}

#[tokio::test]
async fn a_small_file_carries_its_attributes_in_its_one_put() {
    let (client, fs) = fs_with(true);
    let (entry, opened) = fs.create_as(ROOT_INO, name("f"), 0o640, PID, Some((5, 6))).await.unwrap();
    fs.write(opened.fh, 0, b"hello").await.unwrap();
    let t = UNIX_EPOCH + Duration::new(1_400_000_000, 7);
    let change = SetAttr { mtime: Some(t), mode: Some(0o100600), ..SetAttr::default() };
    fs.setattr(entry.attr.ino, change).await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    assert_eq!(client.count(S3Operation::PutObject), 1);
    assert_eq!(client.count(S3Operation::CopyObject), 0);
    assert_eq!(meta(&client, "f", "mode").as_deref(), Some("33152"));
    assert_eq!(meta(&client, "f", "uid").as_deref(), Some("5"));
    assert_eq!(meta(&client, "f", "gid").as_deref(), Some("6"));
    assert_eq!(meta(&client, "f", "mtime").as_deref(), Some("1400000000.000000007"));
    let attr = fs.getattr(entry.attr.ino).await.unwrap().attr;
    assert_eq!((attr.perm, attr.uid, attr.gid, attr.mtime), (0o600, 5, 6, t));
}

#[tokio::test]
async fn a_write_after_utimes_moves_the_mtime_again() {
    let (client, fs) = fs_with(true);
    let (entry, opened) = fs.create(ROOT_INO, name("f"), 0o644, PID).await.unwrap();
    let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs.setattr(entry.attr.ino, SetAttr { mtime: Some(old), ..SetAttr::default() }).await.unwrap();
    fs.write(opened.fh, 0, b"x").await.unwrap();
    let before = SystemTime::now() - Duration::from_secs(1);
    fs.flush(opened.fh, PID).await.unwrap();
    let stored = crate::fs::posix::convention::parse_time(&meta(&client, "f", "mtime").unwrap()).unwrap();
    assert!(stored > before, "{stored:?}");
}

#[tokio::test]
async fn a_multipart_upload_started_before_a_chmod_is_copied_once_with_the_new_attributes() {
    let (client, fs) = fs_with(true);
    let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    let (entry, opened) = fs.create(ROOT_INO, name("big"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, &data).await.unwrap();
    assert_eq!(client.count(S3Operation::CreateMultipartUpload), 1);
    fs.setattr(entry.attr.ino, SetAttr { mode: Some(0o700), ..SetAttr::default() }).await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    assert_eq!(client.count(S3Operation::CopyObject), 1);
    assert_eq!(meta(&client, "big", "mode").as_deref(), Some(&*(0o100700u32).to_string()));
    assert_eq!(client.object_bytes("big").unwrap(), data);
    // The inode knows the copy's ETag: reading it works.
    fs.release(opened.fh).await.unwrap();
    let fh = fs.open(entry.attr.ino, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(fs.read(fh, 0, 5000).await.unwrap(), data);
}

#[tokio::test]
async fn chmod_of_a_closed_object_is_a_head_and_a_copy_keeping_other_metadata() {
    let (client, fs) = fs_with(true);
    put_with(&client, "f", b"data", &[("color", "blue")]).await;
    let ino = fs.lookup(ROOT_INO, name("f")).await.unwrap().attr.ino;
    client.reset_counts();
    let attr = fs.setattr(ino, SetAttr { mode: Some(0o100600), uid: Some(9), ..SetAttr::default() }).await.unwrap();
    assert_eq!((attr.attr.perm, attr.attr.uid), (0o600, 9));
    assert_eq!(client.count(S3Operation::HeadObject), 1);
    assert_eq!(client.count(S3Operation::CopyObject), 1);
    assert_eq!(client.total_requests(), 2);
    assert_eq!(meta(&client, "f", "color").as_deref(), Some("blue"));
    assert_eq!(meta(&client, "f", "mode").as_deref(), Some("33152"));
    assert_eq!(client.object_bytes("f").unwrap(), &b"data"[..]);
}

#[tokio::test]
async fn chmod_of_an_object_replaced_since_its_lookup_is_estale_and_changes_nothing() {
    let (client, fs) = fs_with(true);
    put_with(&client, "f", b"old", &[]).await;
    let ino = fs.lookup(ROOT_INO, name("f")).await.unwrap().attr.ino;
    put_with(&client, "f", b"new", &[("mode", "33188")]).await;
    let err = fs.setattr(ino, SetAttr { mode: Some(0o600), ..SetAttr::default() }).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE);
    assert_eq!(client.count(S3Operation::CopyObject), 0);
    assert_eq!(meta(&client, "f", "mode").as_deref(), Some("33188"));
}

#[tokio::test]
async fn a_big_object_is_copied_onto_itself_part_by_part() {
    let (client, fs) = fs_with(true);
    put_with(&client, "f", b"0123456789", &[]).await;
    let etag = client.head_object("f").await.unwrap().etag;
    client.reset_counts();
    let metadata: UserMetadata = [("mode".to_string(), "33152".to_string())].into();
    let dest = PutOptions { metadata, ..PutOptions::default() };
    fs.copy_onto_itself_in("f", &etag, 10, dest, 4, 4).await.unwrap();
    assert_eq!(client.count(S3Operation::UploadPartCopy), 3);
    assert_eq!(client.count(S3Operation::CompleteMultipartUpload), 1);
    assert_eq!(client.object_bytes("f").unwrap(), &b"0123456789"[..]);
    assert_eq!(meta(&client, "f", "mode").as_deref(), Some("33152"));
    assert_eq!(client.pending_uploads(), 0);
}

#[tokio::test]
async fn symlinks_round_trip_and_are_refused_without_the_flag() {
    let (client, fs) = fs_with(true);
    let e = fs.symlink(ROOT_INO, name("l"), b"../t", 3, 4).await.unwrap();
    assert_eq!(e.attr.kind, InodeKind::Symlink);
    assert_eq!((e.attr.perm, e.attr.size), (0o777, 4));
    assert_eq!(client.object_bytes("l").unwrap(), &b"../t"[..]);
    assert_eq!(meta(&client, "l", "mode").as_deref(), Some("41471"));
    assert_eq!(fs.readlink(e.attr.ino).await.unwrap(), &b"../t"[..]);
    // A second mount reads it from S3, once.
    let other = S3Filesystem::new(client.clone(), FsConfig { posix_metadata: true, ..FsConfig::default() });
    let looked = other.lookup(ROOT_INO, name("l")).await.unwrap().attr;
    assert_eq!(looked.kind, InodeKind::Symlink);
    client.reset_counts();
    assert_eq!(other.readlink(looked.ino).await.unwrap(), &b"../t"[..]);
    assert_eq!(other.readlink(looked.ino).await.unwrap(), &b"../t"[..]);
    assert_eq!(client.count(S3Operation::GetObject), 1);
    let err = fs.symlink(ROOT_INO, name("l"), b"x", 0, 0).await.unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    let long = vec![b'a'; 4096];
    assert_eq!(fs.symlink(ROOT_INO, name("long"), &long, 0, 0).await.unwrap_err().errno(), libc::ENAMETOOLONG);

    let (_, plain) = fs_with(false);
    assert_eq!(plain.symlink(ROOT_INO, name("l"), b"t", 0, 0).await.unwrap_err().errno(), libc::EPERM);
}

#[tokio::test]
async fn a_hostile_symlink_object_is_eio_not_a_huge_read() {
    let (client, fs) = fs_with(true);
    let big: &'static [u8] = Box::leak(vec![b'a'; 5000].into_boxed_slice());
    put_with(&client, "big", big, &[("mode", "41471")]).await;
    put_with(&client, "nul", b"a\0b", &[("mode", "41471")]).await;
    for key in ["big", "nul"] {
        let ino = fs.lookup(ROOT_INO, name(key)).await.unwrap().attr.ino;
        assert_eq!(fs.readlink(ino).await.unwrap_err().errno(), libc::EIO, "{key}");
    }
    assert_eq!(client.count(S3Operation::GetObject), 1, "the oversized one is never fetched");
}

#[tokio::test]
async fn mkdir_writes_a_marker_and_rmdir_of_an_empty_one_deletes_it() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    let config = FsConfig { posix_metadata: true, allow_delete: true, ..FsConfig::default() };
    let fs = S3Filesystem::new(client.clone(), config);
    let d = fs.mkdir_as(ROOT_INO, name("d"), 0o750, Some((3, 4))).await.unwrap().attr;
    assert_eq!((d.kind, d.perm, d.uid, d.gid), (InodeKind::Directory, 0o750, 3, 4));
    assert_eq!(meta(&client, "d/", "mode").as_deref(), Some(&*(0o040750u32).to_string()));
    fs.create(d.ino, name("f"), 0o644, PID).await.map(|(_, o)| o).unwrap();
    assert_eq!(fs.rmdir(ROOT_INO, name("d")).await.unwrap_err().errno(), libc::ENOTEMPTY);
    fs.mkdir_as(ROOT_INO, name("e"), 0o755, None).await.unwrap();
    fs.rmdir(ROOT_INO, name("e")).await.unwrap();
    assert!(client.object_bytes("e/").is_none());
    assert_eq!(fs.lookup(ROOT_INO, name("e")).await.unwrap_err().errno(), libc::ENOENT);
}
