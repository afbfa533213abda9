//! Uploading a staged file's new version whole, conditionally, reusing the old object's bytes.
//!
//! Order: a HeadObject first (a store that ignores `If-Match` still cannot make us overwrite a
//! change, short of a race within this call), then the fetches the plan needs (GETs pinned with
//! `If-Match`), then either one PutObject or a multipart upload whose copied parts are pinned to
//! the base ETag (`x-amz-copy-source-if-match`) and whose completion carries `If-Match`. Any 412
//! on the way, a HEAD showing another ETag, or a missing object is a conflict: nothing is
//! written, the multipart upload is aborted. A file staged without a base (it did not exist) is
//! created with `If-None-Match: *`.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use super::StagedFile;
use super::plan::{PartSource, UploadPlan, plan};
use crate::client::{ClientError, ClientErrorKind, ETag, ObjectClient, PutOptions, UploadedPart};
use crate::fs::FsError;
use crate::fs::settle::{Expected, settle};

/// What one commit moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The new object's ETag; `None` when the file was unchanged and nothing was uploaded.
    pub etag: Option<ETag>,
    /// Bytes sent from local disk (PutObject or UploadPart bodies).
    pub sent: u64,
    /// Bytes the server copied from the old object (UploadPartCopy).
    pub copied: u64,
    /// Bytes fetched from the old object to be sent again.
    pub fetched: u64,
}

/// Why a commit failed.
#[derive(Debug)]
pub enum CommitFailure {
    /// The object is not the version the file was staged from any more.
    Conflict,
    /// Anything else: a failed request or local I/O.
    Error(FsError),
}

fn failure(action: &'static str, key: &str, e: ClientError) -> CommitFailure {
    match e.kind {
        ClientErrorKind::PreconditionFailed => CommitFailure::Conflict,
        _ => CommitFailure::Error(FsError::client(action, key, e)),
    }
}

/// A conditional write's failure: `If-Match` on a key deleted meanwhile is a 404, a conflict too.
fn write_failure(key: &str, e: ClientError) -> CommitFailure {
    match e.kind {
        ClientErrorKind::NotFound => CommitFailure::Conflict,
        _ => failure("upload", key, e),
    }
}

/// Fetches the missing bytes of `range` from the base object, pinned to its ETag.
pub async fn fill(
    client: &dyn ObjectClient,
    file: &mut StagedFile,
    range: std::ops::Range<u64>,
) -> Result<u64, CommitFailure> {
    let Some(base) = file.base().cloned() else { return Ok(0) };
    let key = file.key().to_string();
    let mut fetched = 0;
    for get in file.fetches(range) {
        let response = client.get_object(&key, get.clone(), Some(&base.etag)).await.map_err(|e| match e.kind {
            ClientErrorKind::NotFound => CommitFailure::Conflict,
            _ => failure("read", &key, e),
        })?;
        if response.etag != base.etag {
            return Err(CommitFailure::Conflict);
        }
        let chunks: Vec<Bytes> = response.body.try_collect().await.map_err(|e| failure("read", &key, e))?;
        let mut offset = get.start;
        for chunk in chunks {
            if offset + chunk.len() as u64 > get.end {
                return Err(CommitFailure::Error(FsError::client(
                    "read",
                    &key,
                    ClientError::new(
                        ClientErrorKind::Transient,
                        "GetObject",
                        "the server sent more bytes than asked for",
                    ),
                )));
            }
            file.fill(offset, &chunk).map_err(|e| CommitFailure::Error(e.into_fs(&key)))?;
            offset += chunk.len() as u64;
        }
        if offset != get.end {
            return Err(CommitFailure::Error(FsError::client(
                "read",
                &key,
                ClientError::new(ClientErrorKind::Transient, "GetObject", "the body ended before the range did"),
            )));
        }
        fetched += get.end - get.start;
    }
    Ok(fetched)
}

/// Uploads `file` as its key's new version if it changed, conditional on the base; see the
/// module notes. `options` carry the storage class, encryption and checksums; the conditions
/// are set here. On success the file's base becomes the new object.
pub async fn commit(
    client: &Arc<dyn ObjectClient>,
    file: &mut StagedFile,
    options: &PutOptions,
    part_size: u64,
) -> Result<Committed, CommitFailure> {
    let key = file.key().to_string();
    let size = file.size();
    let plan = plan(size, &file.clean(), file.unchanged(), part_size);
    if plan == UploadPlan::Unchanged {
        return Ok(Committed::default());
    }
    let mut options = options.clone();
    match file.base() {
        Some(base) => {
            match client.head_object(&key).await {
                Ok(meta) if meta.etag == base.etag => {}
                Ok(_) => return Err(CommitFailure::Conflict),
                Err(e) if e.kind == ClientErrorKind::NotFound => return Err(CommitFailure::Conflict),
                Err(e) => return Err(failure("check", &key, e)),
            }
            options.if_match = Some(base.etag.clone());
            options.if_none_match_any = false;
        }
        None => options.if_none_match_any = true,
    }
    let mut done = Committed::default();
    for range in plan.sent(size) {
        done.fetched += fill(client.as_ref(), file, range).await?;
    }
    let read = |file: &StagedFile, r: &std::ops::Range<u64>| {
        file.read(r.start, r.end - r.start).map(Bytes::from).map_err(|e| CommitFailure::Error(e.into_fs(&key)))
    };
    let parts = match plan {
        UploadPlan::Unchanged => unreachable!("returned above"),
        UploadPlan::Single => {
            let body = read(file, &(0..size))?;
            done.sent = size;
            let expected = Expected::put(&body);
            let etag = match client.put_object(&key, body, &options).await {
                Ok(put) => put.etag,
                Err(e) if e.kind == ClientErrorKind::OutcomeUnknown => {
                    settle(client.as_ref(), &key, &expected, &e).await.map_err(CommitFailure::Error)?
                }
                Err(e) => return Err(write_failure(&key, e)),
            };
            file.uploaded(etag.clone());
            done.etag = Some(etag);
            return Ok(done);
        }
        UploadPlan::Multipart(parts) => parts,
    };
    let create = PutOptions { if_match: None, if_none_match_any: false, ..options.clone() };
    let upload_id = client.create_multipart_upload(&key, &create).await.map_err(|e| failure("upload", &key, e))?;
    let uploaded = upload_parts(client.as_ref(), file, &upload_id, &parts, &options, &mut done).await;
    let result = match uploaded {
        Ok(list) => match client.complete_multipart_upload(&key, &upload_id, &list, &options).await {
            Ok(put) => Ok(put.etag),
            Err(e) if e.kind == ClientErrorKind::OutcomeUnknown => {
                let expected = Expected::multipart(size, &list);
                return settle(client.as_ref(), &key, &expected, &e)
                    .await
                    .map(|etag| {
                        file.uploaded(etag.clone());
                        done.etag = Some(etag);
                        done
                    })
                    .map_err(CommitFailure::Error);
            }
            Err(e) => Err(write_failure(&key, e)),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(etag) => {
            file.uploaded(etag.clone());
            done.etag = Some(etag);
            Ok(done)
        }
        Err(e) => {
            if let Err(abort) = client.abort_multipart_upload(&key, &upload_id).await {
                tracing::debug!(key = %crate::escape::escaped(&key), "aborting the multipart upload failed: {abort}");
            }
            Err(e)
        }
    }
}

/// Parts uploaded at once: a sent part is read into memory (one `--write-part-size` each).
const PARTS_IN_FLIGHT: usize = 4;

async fn upload_parts(
    client: &dyn ObjectClient,
    file: &StagedFile,
    upload_id: &str,
    parts: &[PartSource],
    options: &PutOptions,
    done: &mut Committed,
) -> Result<Vec<UploadedPart>, CommitFailure> {
    use futures::StreamExt;
    let key = file.key();
    let base = file.base().map(|b| b.etag.clone());
    let base = base.as_ref();
    for part in parts {
        let r = part.range();
        match part {
            PartSource::Copy(_) => done.copied += r.end - r.start,
            PartSource::Send(_) => done.sent += r.end - r.start,
        }
    }
    // Boxed and collected: the compiler cannot prove a lazy stream of these borrowing futures
    // `Send` for every lifetime.
    let uploads: Vec<futures::future::BoxFuture<'_, Result<UploadedPart, CommitFailure>>> = parts
        .iter()
        .enumerate()
        .map(|(i, part)| -> futures::future::BoxFuture<'_, Result<UploadedPart, CommitFailure>> {
            Box::pin(async move {
                let number = i as u32 + 1;
                let uploaded = match part {
                    PartSource::Copy(range) => {
                        client.upload_part_copy(key, upload_id, number, key, range.clone(), base).await
                    }
                    PartSource::Send(range) => {
                        let body = file
                            .read(range.start, range.end - range.start)
                            .map(Bytes::from)
                            .map_err(|e| CommitFailure::Error(e.into_fs(key)))?;
                        client.upload_part(key, upload_id, number, body, options).await
                    }
                };
                uploaded.map_err(|e| failure("upload", key, e))
            })
        })
        .collect();
    futures::stream::iter(uploads).buffered(PARTS_IN_FLIGHT).try_collect().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::S3Operation;
    use crate::client::memory::InMemoryClient;
    use crate::fs::staging::{Base, StagingStore};

    const MIB: u64 = 1024 * 1024;

    fn setup(size: u64) -> (tempfile::TempDir, StagingStore, Arc<InMemoryClient>, Vec<u8>, ETag) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("staging");
        std::fs::create_dir_all(&root).unwrap();
        let store = StagingStore::open(root.clone(), root, "b", None).unwrap().0;
        let client = Arc::new(InMemoryClient::new("b"));
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let etag = client.insert("k", data.clone());
        client.reset_counts();
        (tmp, store, client, data, etag)
    }

    fn options() -> PutOptions {
        PutOptions { checksum_crc32c: true, ..PutOptions::default() }
    }

    #[tokio::test]
    async fn an_append_to_a_large_object_sends_only_the_new_bytes() {
        let (_tmp, store, client, mut data, etag) = setup(64 * MIB);
        let mut file = store.stage("k", Some(Base { etag, size: 64 * MIB })).unwrap();
        let tail = vec![7u8; MIB as usize];
        file.write(64 * MIB, &tail).unwrap();
        let dyn_client: Arc<dyn ObjectClient> = client.clone();
        let done = commit(&dyn_client, &mut file, &options(), 8 * MIB).await.unwrap();
        assert_eq!((done.sent, done.copied, done.fetched), (MIB, 64 * MIB, 0));
        data.extend_from_slice(&tail);
        assert_eq!(client.object_bytes("k").unwrap(), data);
        assert_eq!(client.count(S3Operation::GetObject), 0);
        assert_eq!(client.count(S3Operation::UploadPartCopy), 1);
        assert_eq!(client.count(S3Operation::UploadPart), 1);
        // Unchanged since: nothing more to send; the new object is the base now.
        assert_eq!(file.base().unwrap().etag, done.etag.clone().unwrap());
        let again = commit(&dyn_client, &mut file, &options(), 8 * MIB).await.unwrap();
        assert_eq!(again, Committed::default());
    }

    #[tokio::test]
    async fn a_write_in_the_middle_fetches_and_sends_one_part_around_it() {
        let (_tmp, store, client, mut data, etag) = setup(20 * MIB);
        let mut file = store.stage("k", Some(Base { etag, size: 20 * MIB })).unwrap();
        file.write(10 * MIB, b"hello").unwrap();
        let dyn_client: Arc<dyn ObjectClient> = client.clone();
        let done = commit(&dyn_client, &mut file, &options(), 8 * MIB).await.unwrap();
        data[10 * MIB as usize..10 * MIB as usize + 5].copy_from_slice(b"hello");
        assert_eq!(client.object_bytes("k").unwrap(), data);
        assert_eq!((done.sent, done.copied), (5 * MIB, 15 * MIB));
        assert_eq!(done.fetched, 5 * MIB - 5, "all but the written bytes");
    }

    #[tokio::test]
    async fn a_changed_object_is_never_overwritten() {
        let (_tmp, store, client, _data, etag) = setup(MIB);
        let mut file = store.stage("k", Some(Base { etag, size: MIB })).unwrap();
        file.write(0, b"mine").unwrap();
        client.insert("k", &b"theirs"[..]);
        let dyn_client: Arc<dyn ObjectClient> = client.clone();
        assert!(matches!(commit(&dyn_client, &mut file, &options(), 8 * MIB).await, Err(CommitFailure::Conflict)));
        assert_eq!(client.object_bytes("k").unwrap(), &b"theirs"[..]);
        client.remove("k");
        assert!(matches!(commit(&dyn_client, &mut file, &options(), 8 * MIB).await, Err(CommitFailure::Conflict)));
        assert!(client.object_bytes("k").is_none());
    }

    #[tokio::test]
    async fn a_new_file_is_created_only_if_absent() {
        let (_tmp, store, client, _data, _etag) = setup(0);
        let mut file = store.stage("new", None).unwrap();
        file.write(10, b"x").unwrap();
        file.write(0, b"y").unwrap();
        let dyn_client: Arc<dyn ObjectClient> = client.clone();
        commit(&dyn_client, &mut file, &options(), 8 * MIB).await.unwrap();
        assert_eq!(client.object_bytes("new").unwrap(), &b"y\0\0\0\0\0\0\0\0\0x"[..]);
        let mut other = store.stage("new", None).unwrap();
        other.write(0, b"z").unwrap();
        assert!(matches!(commit(&dyn_client, &mut other, &options(), 8 * MIB).await, Err(CommitFailure::Conflict)));
    }
}
