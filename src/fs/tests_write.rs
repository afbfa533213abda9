//! Core tests of the write side over the in-memory client.

use std::ffi::OsStr;
use std::sync::Arc;

use super::*;
use crate::client::S3Operation;
use crate::client::memory::InMemoryClient;

const PID: u32 = 1000;
const OTHER_PID: u32 = 2000;

fn fs_with(config: FsConfig) -> (Arc<InMemoryClient>, S3Filesystem) {
    let client = Arc::new(InMemoryClient::new("bucket"));
    let fs = S3Filesystem::new(client.clone(), FsConfig { write_part_size: 1000, ..config });
    (client, fs)
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

async fn names(fs: &S3Filesystem, ino: u64) -> Vec<(String, u64)> {
    let fh = fs.opendir(ino).await.unwrap();
    let mut out = vec![];
    fs.readdirplus(fh, 0, |e| {
        out.push((e.name.to_string(), e.entry.attr.size));
        false
    })
    .await
    .unwrap();
    fs.releasedir(fh).unwrap();
    out.into_iter().skip(2).collect()
}

#[tokio::test]
async fn a_new_file_is_listed_while_written_and_uploaded_at_close() {
    let (client, fs) = fs_with(FsConfig::default());
    let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let (entry, opened) = fs.create(ROOT_INO, name("new.bin"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, &data[..1500]).await.unwrap();
    // Visible, growing, not readable yet; not in S3 yet either.
    assert_eq!(names(&fs, ROOT_INO).await, [("new.bin".to_string(), 1500)]);
    assert_eq!(fs.getattr(entry.attr.ino).await.unwrap().attr.size, 1500);
    assert_eq!(fs.lookup(ROOT_INO, name("new.bin")).await.unwrap().attr.ino, entry.attr.ino);
    assert_eq!(fs.open(entry.attr.ino, libc::O_RDONLY, PID).await.unwrap_err().errno(), libc::EPERM);
    assert!(client.object_bytes("new.bin").is_none());
    fs.write(opened.fh, 1500, &data[1500..]).await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    assert_eq!(client.object_bytes("new.bin").unwrap(), data);
    assert_eq!(client.count(S3Operation::UploadPart), 3);
    // After close: readable, read-after-write consistent.
    fs.release(opened.fh).await.unwrap();
    let fh = fs.open(entry.attr.ino, libc::O_RDONLY, PID).await.unwrap().fh;
    assert_eq!(fs.read(fh, 0, 5000).await.unwrap(), data);
    // Writes after the upload completed fail.
    assert_eq!(fs.write(opened.fh, 2500, b"x").await.unwrap_err().errno(), libc::EBADF);
}

#[tokio::test]
async fn empty_files_and_closes_from_other_processes_upload_at_release() {
    let (client, fs) = fs_with(FsConfig::default());
    let (_, opened) = fs.create(ROOT_INO, name("empty"), 0o644, PID).await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    assert!(client.object_bytes("empty").is_none(), "deferred: nothing written yet");
    fs.release(opened.fh).await.unwrap();
    assert_eq!(client.object_bytes("empty").unwrap(), "");

    let (_, opened) = fs.create(ROOT_INO, name("forked"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, b"abc").await.unwrap();
    fs.flush(opened.fh, OTHER_PID).await.unwrap();
    assert!(client.object_bytes("forked").is_none(), "a child's close does not complete it");
    fs.release(opened.fh).await.unwrap();
    assert_eq!(client.object_bytes("forked").unwrap(), "abc");
}

#[tokio::test]
async fn out_of_order_writes_are_einval_and_leave_nothing() {
    let (client, fs) = fs_with(FsConfig::default());
    let (entry, opened) = fs.create(ROOT_INO, name("f"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, &[1; 1500]).await.unwrap();
    assert_eq!(fs.write(opened.fh, 1000, b"x").await.unwrap_err().errno(), libc::EINVAL);
    assert_eq!(fs.write(opened.fh, 1500, b"y").await.unwrap_err().errno(), libc::EINVAL, "every later write");
    assert_eq!(fs.flush(opened.fh, PID).await.unwrap_err().errno(), libc::EINVAL);
    fs.release(opened.fh).await.unwrap();
    assert!(client.object_bytes("f").is_none());
    assert_eq!(client.pending_uploads(), 0);
    assert_eq!(fs.lookup(ROOT_INO, name("f")).await.unwrap_err().errno(), libc::ENOENT);
    assert!(names(&fs, ROOT_INO).await.is_empty());
    let _ = entry;
}

#[tokio::test]
async fn existing_objects_need_allow_overwrite_and_o_trunc() {
    let (client, fs) = fs_with(FsConfig::default());
    client.insert("k", "old");
    let ino = fs.lookup(ROOT_INO, name("k")).await.unwrap().attr.ino;
    let err = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, PID).await.unwrap_err();
    assert_eq!(err.errno(), libc::EPERM);
    assert!(err.to_string().contains("--allow-overwrite"), "{err}");
    assert_eq!(fs.create(ROOT_INO, name("k"), 0o644, PID).await.unwrap_err().errno(), libc::EEXIST);
    assert_eq!(client.object_bytes("k").unwrap(), "old");

    let (client, fs) = fs_with(FsConfig { allow_overwrite: true, ..FsConfig::default() });
    client.insert("k", "old");
    let ino = fs.lookup(ROOT_INO, name("k")).await.unwrap().attr.ino;
    assert_eq!(fs.open(ino, libc::O_WRONLY, PID).await.unwrap_err().errno(), libc::EPERM, "needs O_TRUNC");
    let fh = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, PID).await.unwrap().fh;
    fs.write(fh, 0, b"new!").await.unwrap();
    fs.flush(fh, PID).await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(client.object_bytes("k").unwrap(), "new!");
}

#[tokio::test]
async fn a_concurrent_creator_wins_and_nothing_is_clobbered() {
    let (client, fs) = fs_with(FsConfig::default());
    for len in [10usize, 2500] {
        let key = format!("race{len}");
        let (_, opened) = fs.create(ROOT_INO, name(&key), 0o644, PID).await.unwrap();
        fs.write(opened.fh, 0, &vec![7; len]).await.unwrap();
        client.insert(&key, "the other writer");
        assert_eq!(fs.flush(opened.fh, PID).await.unwrap_err().errno(), libc::EEXIST, "{len}");
        fs.release(opened.fh).await.unwrap();
        assert_eq!(client.object_bytes(&key).unwrap(), "the other writer");
    }
    assert_eq!(client.pending_uploads(), 0);
}

#[tokio::test]
async fn unlink_needs_allow_delete_and_deletes() {
    let (client, fs) = fs_with(FsConfig { allow_delete: true, ..FsConfig::default() });
    client.insert("a", "1");
    client.insert("d/x", "2");
    fs.unlink(ROOT_INO, name("a")).await.unwrap();
    assert!(client.object_bytes("a").is_none());
    assert_eq!(fs.unlink(ROOT_INO, name("a")).await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(fs.unlink(ROOT_INO, name("d")).await.unwrap_err().errno(), libc::EISDIR);
    let (_, opened) = fs.create(ROOT_INO, name("w"), 0o644, PID).await.unwrap();
    assert_eq!(fs.unlink(ROOT_INO, name("w")).await.unwrap_err().errno(), libc::EPERM, "being written");
    fs.release(opened.fh).await.unwrap();
}

#[tokio::test]
async fn mkdir_is_local_until_a_file_is_written_in_it() {
    let (client, fs) = fs_with(FsConfig::default());
    client.insert("remote/x", "1");
    let d = fs.mkdir(ROOT_INO, name("local")).await.unwrap().attr.ino;
    assert_eq!(fs.mkdir(ROOT_INO, name("local")).await.unwrap_err().errno(), libc::EEXIST);
    assert_eq!(fs.mkdir(ROOT_INO, name("remote")).await.unwrap_err().errno(), libc::EEXIST);
    let mut listed: Vec<String> = names(&fs, ROOT_INO).await.into_iter().map(|(n, _)| n).collect();
    listed.sort();
    assert_eq!(listed, ["local", "remote"], "local directories are listed (after the remote entries)");
    assert_eq!(
        client.total_requests() - client.count(S3Operation::HeadObject) - client.count(S3Operation::ListObjectsV2),
        0
    );
    // Empty local directories can be removed; S3 never knew them.
    fs.rmdir(ROOT_INO, name("local")).await.unwrap();
    assert_eq!(fs.lookup(ROOT_INO, name("local")).await.unwrap_err().errno(), libc::ENOENT);

    let d2 = fs.mkdir(ROOT_INO, name("d2")).await.unwrap().attr.ino;
    let (_, opened) = fs.create(d2, name("f"), 0o644, PID).await.unwrap();
    assert_eq!(fs.rmdir(ROOT_INO, name("d2")).await.unwrap_err().errno(), libc::ENOTEMPTY);
    fs.write(opened.fh, 0, b"data").await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    fs.release(opened.fh).await.unwrap();
    assert_eq!(client.object_bytes("d2/f").unwrap(), "data");
    assert_eq!(fs.rmdir(ROOT_INO, name("d2")).await.unwrap_err().errno(), libc::EPERM, "now in S3");
    assert_eq!(fs.rmdir(ROOT_INO, name("remote")).await.unwrap_err().errno(), libc::EPERM);
    assert_eq!(fs.rmdir(ROOT_INO, name("nope")).await.unwrap_err().errno(), libc::ENOENT);
    let _ = d;
}

#[tokio::test]
async fn setattr_changes_times_of_files_being_written_only() {
    let (client, fs) = fs_with(FsConfig::default());
    client.insert("remote", "r");
    let (entry, opened) = fs.create(ROOT_INO, name("new"), 0o644, PID).await.unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let set = SetAttr { mtime: Some(t), ..SetAttr::default() };
    assert_eq!(fs.setattr(entry.attr.ino, set.clone()).await.unwrap().attr.mtime, t);
    let chmod = SetAttr { mode: Some(0o600), ..SetAttr::default() };
    assert!(fs.setattr(entry.attr.ino, chmod.clone()).await.is_ok(), "ignored while writing");
    fs.release(opened.fh).await.unwrap();
    let remote = fs.lookup(ROOT_INO, name("remote")).await.unwrap().attr.ino;
    assert_eq!(fs.setattr(remote, set).await.unwrap_err().errno(), libc::EPERM);
    assert_eq!(fs.setattr(remote, chmod).await.unwrap_err().errno(), libc::EPERM);
}

#[tokio::test]
async fn fsync_completes_the_upload_and_ends_writing() {
    let (client, fs) = fs_with(FsConfig::default());
    let (_, opened) = fs.create(ROOT_INO, name("synced"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, b"durable").await.unwrap();
    fs.fsync(opened.fh).await.unwrap();
    assert_eq!(client.object_bytes("synced").unwrap(), "durable");
    assert_eq!(fs.write(opened.fh, 7, b"more").await.unwrap_err().errno(), libc::EIO);
    fs.flush(opened.fh, PID).await.unwrap();
    fs.release(opened.fh).await.unwrap();
    assert_eq!(client.object_bytes("synced").unwrap(), "durable");
    assert_eq!(client.count(S3Operation::PutObject), 1, "completed once");
}

#[tokio::test]
async fn a_failed_upload_fails_close_with_eio_and_leaves_no_object_and_no_parts() {
    use crate::client::ClientErrorKind;
    use crate::client::fault::{Fault, FaultClient, When};
    let cases: [(&str, S3Operation, When); 3] = [
        ("a part fails for good", S3Operation::UploadPart, When::Nth(2)),
        ("complete fails", S3Operation::CompleteMultipartUpload, When::Always),
        ("the single PUT fails", S3Operation::PutObject, When::Always),
    ];
    for (what, op, when) in cases {
        let faults = Arc::new(FaultClient::new(InMemoryClient::new("bucket"), 7));
        faults.inject(op, when, Fault::Fail(ClientErrorKind::Transient));
        let fs = S3Filesystem::new(faults.clone(), FsConfig { write_part_size: 1000, ..FsConfig::default() });
        let len = if op == S3Operation::PutObject { 500 } else { 3500 };
        let (_, opened) = fs.create(ROOT_INO, name("f"), 0o644, PID).await.unwrap();
        let mut result = Ok(0);
        for (i, chunk) in vec![9u8; len].chunks(250).enumerate() {
            result = fs.write(opened.fh, (i * 250) as u64, chunk).await;
            if result.is_err() {
                break;
            }
        }
        let closed = match result {
            Ok(_) => fs.flush(opened.fh, PID).await,
            Err(e) => Err(e),
        };
        assert_eq!(closed.unwrap_err().errno(), libc::EIO, "{what}");
        fs.release(opened.fh).await.unwrap();
        assert!(faults.inner().object_bytes("f").is_none(), "{what}: no object");
        assert_eq!(faults.inner().pending_uploads(), 0, "{what}: no multipart upload left");
        assert!(faults.injected(op) >= 1, "{what}: the fault fired");
        assert_eq!(fs.memory_budget().reserved(), 0, "{what}: memory given back");
    }
}

#[tokio::test]
async fn a_closed_file_can_be_read_before_its_release_arrives() {
    let (_client, fs) = fs_with(FsConfig::default());
    let (entry, opened) = fs.create(ROOT_INO, name("f"), 0o644, PID).await.unwrap();
    fs.write(opened.fh, 0, b"ready").await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    // The kernel sends RELEASE after close() returned; a reader may come first.
    let reader = fs.open(entry.attr.ino, libc::O_RDONLY, OTHER_PID).await.unwrap().fh;
    assert_eq!(fs.read(reader, 0, 100).await.unwrap(), "ready".as_bytes());
    fs.release(opened.fh).await.unwrap();
    fs.release(reader).await.unwrap();
    let again = fs.open(entry.attr.ino, libc::O_RDONLY, PID).await.unwrap().fh;
    fs.release(again).await.unwrap();
}

#[tokio::test]
async fn shutdown_aborts_open_uploads_and_reports_completed_ones() {
    let (client, fs) = fs_with(FsConfig::default());
    client.insert("readme", "r");
    let (_, open) = fs.create(ROOT_INO, name("open.bin"), 0o644, PID).await.unwrap();
    fs.write(open.fh, 0, &[7; 2500]).await.unwrap();
    assert_eq!(client.pending_uploads(), 1, "two parts are out");
    let (_, closed) = fs.create(ROOT_INO, name("closed.bin"), 0o644, PID).await.unwrap();
    fs.write(closed.fh, 0, &[8; 1500]).await.unwrap();
    fs.flush(closed.fh, PID).await.unwrap();
    let readme = fs.lookup(ROOT_INO, name("readme")).await.unwrap().attr.ino;
    fs.open(readme, libc::O_RDONLY, PID).await.unwrap();

    let report = fs.shutdown().await;
    assert_eq!(report.aborted, ["open.bin"]);
    assert_eq!(report.completed, ["closed.bin"]);
    assert_eq!(report.readers, 1);
    assert_eq!(client.pending_uploads(), 0, "the multipart upload was aborted");
    assert!(client.object_bytes("open.bin").is_none());
    assert_eq!(client.object_bytes("closed.bin").unwrap(), vec![8; 1500]);
    assert_eq!(fs.write(open.fh, 2500, b"x").await.unwrap_err().errno(), libc::EIO);
    assert_eq!(fs.flush(open.fh, PID).await.unwrap_err().errno(), libc::EIO);
    assert_eq!(fs.shutdown().await, ShutdownReport::default(), "only the first call acts");
}

#[tokio::test]
async fn an_open_completes_an_upload_its_close_deferred_and_invalidates_that_handle() {
    let (client, fs) = fs_with(FsConfig { allow_overwrite: true, ..FsConfig::default() });
    let (entry, first) = fs.create(ROOT_INO, name("t"), 0o644, PID).await.unwrap();
    // `touch`: nothing written, so close leaves the upload to release, which has not come yet.
    fs.flush(first.fh, PID).await.unwrap();
    assert!(client.object_bytes("t").is_none());
    let second = fs.open(entry.attr.ino, libc::O_WRONLY | libc::O_TRUNC, PID).await.unwrap();
    assert_eq!(client.object_bytes("t").unwrap(), "", "the empty object was uploaded first");
    assert_eq!(fs.write(first.fh, 0, b"old").await.unwrap_err().errno(), libc::EBADF);
    fs.write(second.fh, 0, b"new").await.unwrap();
    fs.flush(second.fh, PID).await.unwrap();
    fs.release(first.fh).await.unwrap();
    fs.release(second.fh).await.unwrap();
    assert_eq!(client.object_bytes("t").unwrap(), "new");
}

#[tokio::test]
async fn unlink_right_after_closing_an_empty_file_completes_it_first_then_deletes_it() {
    // tar replaces its placeholder files this way (symlinks whose target leaves the tree).
    let (client, fs) = fs_with(FsConfig { allow_delete: true, ..FsConfig::default() });
    let (_, opened) = fs.create(ROOT_INO, name("empty"), 0o644, PID).await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    fs.unlink(ROOT_INO, name("empty")).await.unwrap();
    assert!(client.object_bytes("empty").is_none());
    assert_eq!(client.count(S3Operation::DeleteObject), 1);
    fs.release(opened.fh).await.unwrap();
    assert!(client.object_bytes("empty").is_none(), "the release uploads nothing more");
}

#[tokio::test]
async fn a_create_right_after_a_lookup_that_found_nothing_asks_s3_nothing_more() {
    let (client, fs) = fs_with(FsConfig::default());
    assert_eq!(fs.lookup(ROOT_INO, name("new")).await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(client.total_requests(), 1, "one listing");
    let (_, opened) = fs.create(ROOT_INO, name("new"), 0o644, PID).await.unwrap();
    assert_eq!(client.total_requests(), 1, "the lookup's answer is fresh: no second existence check");
    fs.write(opened.fh, 0, b"x").await.unwrap();
    fs.flush(opened.fh, PID).await.unwrap();
    assert_eq!(client.count(S3Operation::PutObject), 1);
    assert_eq!(client.total_requests(), 2, "a small new file: one listing and one PutObject");
    // Without a fresh lookup (or once it is older than the file TTL), create asks S3 itself.
    client.reset_counts();
    assert!(fs.lookup(ROOT_INO, name("other")).await.is_err());
    tokio::time::sleep(FsConfig::default().file_kernel_ttl + std::time::Duration::from_millis(50)).await;
    client.insert("other", "made by another client");
    assert_eq!(fs.create(ROOT_INO, name("other"), 0o644, PID).await.unwrap_err().errno(), libc::EEXIST);
    assert_eq!(client.total_requests(), 2);
}
