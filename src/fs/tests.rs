//! Core tests over the in-memory client: no kernel, exact request counts.

use std::ffi::OsStr;
use std::sync::Arc;

use super::*;
use crate::client::S3Operation;
use crate::client::memory::InMemoryClient;

/// The process id the tests open files as.
const PID: u32 = 4242;

fn fs_with(keys: &[(&str, &[u8])], prefix: &str) -> (Arc<InMemoryClient>, S3Filesystem) {
    let client = Arc::new(InMemoryClient::new("bucket"));
    for (k, v) in keys {
        client.insert(k, v.to_vec());
    }
    let config = FsConfig { prefix: prefix.to_string(), uid: 7, gid: 8, ..FsConfig::default() };
    let fs = S3Filesystem::new(client.clone(), config);
    (client, fs)
}

async fn lookup_path(fs: &S3Filesystem, path: &str) -> Result<Entry, FsError> {
    let mut ino = ROOT_INO;
    let mut entry = None;
    for part in path.split('/') {
        let e = fs.lookup(ino, OsStr::new(part)).await?;
        ino = e.attr.ino;
        entry = Some(e);
    }
    Ok(entry.expect("non-empty path"))
}

async fn read_all(fs: &S3Filesystem, ino: u64) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY, PID).await.unwrap().fh;
    let mut out = vec![];
    loop {
        let b = fs.read(fh, out.len() as u64, 128 * 1024).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    fs.release(fh).await.unwrap();
    out
}

async fn list(fs: &S3Filesystem, ino: u64, batch: usize) -> Vec<(String, InodeKind)> {
    let fh = fs.opendir(ino).await.unwrap();
    let mut out = vec![];
    let mut offset = 0;
    loop {
        let mut got = vec![];
        fs.readdirplus(fh, offset, |e| {
            if got.len() == batch {
                return true;
            }
            got.push((e.name.to_string(), e.entry.attr.kind, e.next_offset));
            false
        })
        .await
        .unwrap();
        let Some(last) = got.last() else { break };
        offset = last.2;
        out.extend(got.into_iter().map(|(n, k, _)| (n, k)));
    }
    fs.releasedir(fh).unwrap();
    out
}

#[tokio::test]
async fn lookup_stat_and_read_with_prefix() {
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let (client, fs) = fs_with(&[("pre/dir/big.bin", &data), ("pre/empty", b""), ("other/x", b"no")], "pre/");
    let dir = lookup_path(&fs, "dir").await.unwrap();
    assert_eq!(dir.attr.kind, InodeKind::Directory);
    assert_eq!((dir.attr.perm, dir.attr.nlink, dir.attr.uid, dir.attr.gid), (0o755, 2, 7, 8));
    let big = lookup_path(&fs, "dir/big.bin").await.unwrap();
    assert_eq!((big.attr.size, big.attr.perm, big.attr.blocks), (5_000_000, 0o644, 5_000_000u64.div_ceil(512)));
    assert_eq!(big.ttl, Duration::from_millis(100));
    assert_eq!(dir.ttl, Duration::from_secs(1));

    client.reset_counts();
    assert_eq!(read_all(&fs, big.attr.ino).await, data);
    // Opened right after the lookup: no revalidation. Two GETs: the prefetcher's 1.125 MiB first
    // request, then one ranged GET for the rest (up to the first 8 MiB part boundary, past EOF).
    assert_eq!(client.count(S3Operation::GetObject), 2);
    assert_eq!(client.total_requests(), 2);

    let empty = lookup_path(&fs, "empty").await.unwrap();
    assert_eq!(read_all(&fs, empty.attr.ino).await, b"");
    assert!(matches!(lookup_path(&fs, "other").await, Err(FsError::NotFound { .. })));
}

#[tokio::test]
async fn directories_shadow_files_and_markers_make_directories() {
    let (_c, fs) = fs_with(&[("a", b"file"), ("a/b", b"x"), ("m/", b""), ("f", b"1")], "");
    assert_eq!(lookup_path(&fs, "a").await.unwrap().attr.kind, InodeKind::Directory);
    assert_eq!(lookup_path(&fs, "m").await.unwrap().attr.kind, InodeKind::Directory);
    assert_eq!(lookup_path(&fs, "f").await.unwrap().attr.kind, InodeKind::File);
    let names = list(&fs, ROOT_INO, 100).await;
    assert_eq!(
        names,
        [
            (".", InodeKind::Directory),
            ("..", InodeKind::Directory),
            ("a", InodeKind::Directory),
            ("f", InodeKind::File),
            ("m", InodeKind::Directory)
        ]
        .map(|(n, k)| (n.to_string(), k))
    );
    assert_eq!(list(&fs, lookup_path(&fs, "m").await.unwrap().attr.ino, 100).await.len(), 2, "marker dir is empty");
}

#[tokio::test]
async fn invalid_names_are_einval_and_lookup_under_a_file_is_enotdir() {
    let (_c, fs) = fs_with(&[("f", b"1")], "");
    for bad in [".", "..", ""] {
        assert_eq!(fs.lookup(ROOT_INO, OsStr::new(bad)).await.unwrap_err().errno(), libc::EINVAL, "{bad:?}");
    }
    let f = lookup_path(&fs, "f").await.unwrap();
    assert_eq!(fs.lookup(f.attr.ino, OsStr::new("x")).await.unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(fs.opendir(f.attr.ino).await.unwrap_err().errno(), libc::ENOTDIR);
}

#[tokio::test]
async fn readdir_paginates_streams_and_counts_references() {
    let keys: Vec<String> = (0..2500).map(|i| format!("d/f{i:05}")).collect();
    let pairs: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), b"x".as_slice())).collect();
    let (client, fs) = fs_with(&pairs, "");
    let d = lookup_path(&fs, "d").await.unwrap().attr.ino;
    client.reset_counts();
    let names = list(&fs, d, 97).await;
    assert_eq!(names.len(), 2502);
    let expected: Vec<String> = (0..2500).map(|i| format!("f{i:05}")).collect();
    assert_eq!(names[2..].iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), expected);
    assert_eq!(client.count(S3Operation::ListObjectsV2), 3, "1000 keys a page");
    assert_eq!(client.count(S3Operation::HeadObject), 0, "readdirplus needs no HEAD");
    // One kernel reference per entry sent; forgetting them empties the table.
    assert_eq!(fs.inode_count(), 2 + 2500);
    let entry = lookup_path(&fs, "d/f00000").await.unwrap();
    fs.forget(entry.attr.ino, 2);
    for i in 1..2500 {
        let e = fs.lookup(d, OsStr::new(&format!("f{i:05}"))).await.unwrap();
        fs.forget(e.attr.ino, 2);
    }
    assert_eq!(fs.inode_count(), 2);
}

#[tokio::test]
async fn a_changed_object_gets_a_new_inode_and_the_old_handle_is_stale() {
    let (client, fs) = fs_with(&[("k", b"version one")], "");
    let one = lookup_path(&fs, "k").await.unwrap();
    let fh = fs.open(one.attr.ino, libc::O_RDONLY, PID).await.unwrap().fh;
    client.insert("k", "version two!");
    assert_eq!(fs.read(fh, 0, 100).await.unwrap_err().errno(), libc::ESTALE);
    let two = lookup_path(&fs, "k").await.unwrap();
    assert_ne!(two.attr.ino, one.attr.ino);
    assert_eq!(read_all(&fs, two.attr.ino).await, b"version two!");
    // Opening the old inode after its name moved on: ESTALE, so the kernel looks up again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(fs.open(one.attr.ino, libc::O_RDONLY, PID).await.unwrap_err().errno(), libc::ESTALE);
}

#[tokio::test]
async fn getattr_revalidates_after_the_ttl() {
    let (client, fs) = fs_with(&[("k", b"abc")], "");
    let e = lookup_path(&fs, "k").await.unwrap();
    client.reset_counts();
    assert_eq!(fs.getattr(e.attr.ino).await.unwrap().attr.size, 3);
    assert_eq!(client.total_requests(), 0, "fresh within the TTL");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(fs.getattr(e.attr.ino).await.unwrap().attr.size, 3);
    assert_eq!(client.total_requests(), 1, "one listing revalidates a file");
    client.remove("k");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(fs.getattr(e.attr.ino).await.unwrap_err().errno(), libc::ESTALE);
}

#[tokio::test]
async fn writes_and_bad_handles_get_the_documented_errno() {
    let (_c, fs) = fs_with(&[("k", b"abc")], "");
    let e = lookup_path(&fs, "k").await.unwrap();
    assert_eq!(fs.open(e.attr.ino, libc::O_WRONLY, PID).await.unwrap_err().errno(), libc::EPERM);
    assert_eq!(fs.open(e.attr.ino, libc::O_RDWR | libc::O_TRUNC, PID).await.unwrap_err().errno(), libc::EPERM);
    assert_eq!(fs.open(e.attr.ino, libc::O_RDONLY | libc::O_SYNC, PID).await.unwrap_err().errno(), libc::EINVAL);
    assert!(fs.open(e.attr.ino, libc::O_RDWR, PID).await.is_ok(), "O_RDWR on an existing file is a read handle");
    assert_eq!(fs.open(ROOT_INO, libc::O_RDONLY, PID).await.unwrap_err().errno(), libc::EISDIR);
    assert_eq!(fs.read(999, 0, 1).await.unwrap_err().errno(), libc::EBADF);
    let chmod = SetAttr { mode: Some(0o600), ..SetAttr::default() };
    assert_eq!(fs.setattr(e.attr.ino, chmod).await.unwrap_err().errno(), libc::EPERM);
    assert_eq!(fs.unlink(ROOT_INO, OsStr::new("k")).await.unwrap_err().errno(), libc::EPERM, "no --allow-delete");
    assert_eq!(fs.refuse("symlink").errno(), libc::EPERM);
    assert_eq!(fs.refuse("rename").errno(), libc::ENOSYS);
}

fn cached_fs(client: &Arc<InMemoryClient>, ttl: MetadataTtl) -> S3Filesystem {
    let config = FsConfig { metadata_ttl: ttl, negative_metadata_ttl: ttl, ..FsConfig::default() };
    S3Filesystem::new(client.clone(), config)
}

#[tokio::test]
async fn with_a_ttl_lookups_and_listings_are_served_from_the_cache() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    for i in 0..30 {
        client.insert(&format!("d{}/f{i}", i % 3), "x");
    }
    let fs = cached_fs(&client, MetadataTtl::Duration(Duration::from_secs(60)));
    let entry = lookup_path(&fs, "d0/f0").await.unwrap();
    assert_eq!(entry.ttl, Duration::from_secs(60), "the kernel may cache for the TTL too");
    client.reset_counts();
    lookup_path(&fs, "d0/f0").await.unwrap();
    assert_eq!(client.total_requests(), 0, "positive entries cached");
    assert!(lookup_path(&fs, "d0/missing").await.is_err());
    assert!(lookup_path(&fs, "d0/missing").await.is_err());
    assert_eq!(client.total_requests(), 1, "negative entries cached");

    // A complete listing answers readdir and every lookup in the directory.
    for d in ["d1", "d2"] {
        let ino = lookup_path(&fs, d).await.unwrap().attr.ino;
        assert_eq!(list(&fs, ino, 4).await.len(), 12);
    }
    client.reset_counts();
    for d in ["d1", "d2"] {
        let ino = lookup_path(&fs, d).await.unwrap().attr.ino;
        assert_eq!(list(&fs, ino, 4).await.len(), 12);
        for i in 0..30 {
            let _ = fs.lookup(ino, OsStr::new(&format!("f{i}"))).await;
        }
    }
    assert_eq!(client.total_requests(), 0, "second find: no requests at all");
}

#[tokio::test]
async fn a_412_under_a_ttl_drops_the_cached_entry_and_listing_so_a_reopen_sees_the_new_object() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("d/f", "old");
    let fs = cached_fs(&client, MetadataTtl::Indefinite);
    let dir = lookup_path(&fs, "d").await.unwrap().attr.ino;
    assert_eq!(list(&fs, dir, 10).await.len(), 3, "., .. and f: a complete listing, now cached");
    let old = lookup_path(&fs, "d/f").await.unwrap().attr.ino;
    client.insert("d/f", "new and longer");
    let fh = fs.open(old, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(fs.read(fh, 0, 100).await.unwrap_err().errno(), libc::ESTALE, "this handle stays stale");
    fs.release(fh).await.unwrap();
    // The kernel's reopen of the same inode: revalidated, found replaced (it retries the walk).
    assert_eq!(fs.open(old, libc::O_RDONLY, PID).await.unwrap_err().errno(), libc::ESTALE);
    let new = lookup_path(&fs, "d/f").await.unwrap();
    assert_ne!(new.attr.ino, old);
    assert_eq!(new.attr.size, 14);
    assert_eq!(read_all(&fs, new.attr.ino).await, b"new and longer");
}

#[tokio::test]
async fn minimal_ttl_always_asks_s3() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("a", "x");
    let fs = cached_fs(&client, MetadataTtl::Minimal);
    lookup_path(&fs, "a").await.unwrap();
    lookup_path(&fs, "a").await.unwrap();
    assert_eq!(client.count(S3Operation::ListObjectsV2), 2, "one listing per lookup");
    list(&fs, ROOT_INO, 10).await;
    list(&fs, ROOT_INO, 10).await;
    assert_eq!(client.count(S3Operation::ListObjectsV2), 2 + 2);
    assert_eq!(client.count(S3Operation::HeadObject), 0);
}

#[tokio::test]
async fn local_changes_update_cached_listings_at_once() {
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("old", "x");
    let config = FsConfig {
        metadata_ttl: MetadataTtl::Indefinite,
        negative_metadata_ttl: MetadataTtl::Indefinite,
        allow_delete: true,
        ..FsConfig::default()
    };
    let fs = S3Filesystem::new(client.clone(), config);
    assert_eq!(list(&fs, ROOT_INO, 10).await.len(), 3);
    assert!(lookup_path(&fs, "new").await.is_err(), "cached as absent");
    let (_, opened) = fs.create(ROOT_INO, OsStr::new("new"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, b"hello").await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    fs.release(opened.fh).await.unwrap();
    fs.unlink(ROOT_INO, OsStr::new("old")).await.unwrap();
    client.reset_counts();
    let names: Vec<String> = list(&fs, ROOT_INO, 10).await.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [".", "..", "new"]);
    assert_eq!(lookup_path(&fs, "new").await.unwrap().attr.size, 5);
    assert!(lookup_path(&fs, "old").await.is_err());
    assert_eq!(client.total_requests(), 0);
}

#[tokio::test]
async fn indefinite_metadata_survives_a_restart_through_the_journal() {
    use crate::fs::namespace::metacache::journal::{Journal, path_for};
    let client = Arc::new(InMemoryClient::new("bucket"));
    client.insert("jars/a.jar", vec![1u8; 3000]);
    client.insert("jars/b.jar", vec![2u8; 10]);
    let dir = tempfile::tempdir().unwrap();
    let path = path_for(dir.path(), "bucket", "");
    {
        let (journal, loaded) = Journal::open(&path, &path).unwrap();
        let fs = cached_fs(&client, MetadataTtl::Indefinite).with_journal(journal, loaded);
        let jars = lookup_path(&fs, "jars").await.unwrap().attr.ino;
        assert_eq!(list(&fs, jars, 10).await.len(), 4);
        assert_eq!(read_all(&fs, lookup_path(&fs, "jars/a.jar").await.unwrap().attr.ino).await.len(), 3000);
        fs.flush_metadata();
    }
    client.reset_counts();
    let (journal, loaded) = Journal::open(&path, &path).unwrap();
    let fs = cached_fs(&client, MetadataTtl::Indefinite).with_journal(journal, loaded);
    let jars = lookup_path(&fs, "jars").await.unwrap().attr.ino;
    assert_eq!(list(&fs, jars, 10).await.len(), 4);
    let b = lookup_path(&fs, "jars/b.jar").await.unwrap();
    assert_eq!(b.attr.size, 10);
    assert_eq!(client.total_requests(), 0, "known paths need no HEAD or LIST after a restart");
    assert_eq!(read_all(&fs, b.attr.ino).await, vec![2u8; 10]);
    assert_eq!(client.count(S3Operation::GetObject), 1, "only the data (the block cache removes this one)");
    assert_eq!(client.count(S3Operation::HeadObject), 0);
}
