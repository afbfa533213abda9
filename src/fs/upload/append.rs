//! Incremental uploads (`--incremental-upload`, directory buckets): an [`Upload`] that sends its
//! bytes as appends instead of a multipart upload.
//!
//! Design:
//! - The upload starts at the object's end: its size and ETag as a HeadObject at open saw them
//!   (or 0 and no ETag for a new file). Writes must continue from there, in order, as for any
//!   upload (before the end: EINVAL; past it: zeros fill the gap).
//! - Bytes collect in the writer's part buffer (`--write-part-size`). Each full buffer is one
//!   PutObject with `x-amz-write-offset-bytes` = the object's size as this mount last left it and
//!   `If-Match` = its ETag then (none for the first append of a new file, at offset 0). One append
//!   is in flight per file: an append needs the ETag the previous one returned, and S3 keeps the
//!   object's bytes in the order they were appended. The writer waits while a full buffer is sent.
//! - fsync ([`Upload::sync`]) sends what is buffered and leaves the file open for more writes;
//!   close ([`Upload::complete`]) sends the rest. Each append is visible to every other reader of
//!   the bucket as soon as S3 answers it.
//! - Another writer (an append or a replacement by anyone else) moves the object's size or ETag:
//!   S3 then refuses our append (400 `InvalidWriteOffset` or 412, both
//!   [`ClientErrorKind::PreconditionFailed`]), never merges. The upload fails with
//!   [`FsError::AppendConflict`] (ESTALE), logged with the key; the bytes still buffered here are
//!   dropped and the object keeps what the other writer made of it. Every later call on the
//!   handle gets the same errno.
//! - Appends to an existing object carry no metadata, content type, storage class or encryption:
//!   the object keeps its own. The first append of a new file carries them, as a PutObject would.
//! - Checksums: an append to an existing object carries a checksum of the algorithm the object
//!   already has (HeadObject in checksum mode at open tells it), so S3 keeps one full-object
//!   checksum across appends; for an object without one, and for a new file, the client's
//!   (`--upload-checksums`). Each append's checksum is computed over its own bytes.

use bytes::Bytes;

use super::{Upload, UploadConfig, Uploaded};
use crate::client::{ClientErrorKind, ETag, ObjectChecksum, ObjectClient, PutOptions};
use crate::escape::escaped;
use crate::fs::FsError;
use crate::fs::memory::{MemoryBudget, WriterTicket};

/// Where an incremental upload stands in S3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendPoint {
    /// The object's size: the next append's write offset.
    pub size: u64,
    /// The object's ETag, the next append's `If-Match`; `None` while the object does not exist
    /// (a new file before its first append).
    pub etag: Option<ETag>,
    /// The checksum algorithm S3 keeps for the object: appends carry the same one, so S3 can
    /// go on with the object's full-object checksum. `None`: the client's own (`--upload-checksums`).
    pub checksum: Option<ObjectChecksum>,
}

/// The append side of an [`Upload`].
#[derive(Debug)]
pub(super) struct Appending {
    pub(super) at: AppendPoint,
    /// The object's size when the upload started.
    pub(super) start: u64,
    /// Appends sent so far (for logs).
    pub(super) appends: u64,
}

impl Upload {
    /// An incremental upload of `key`, continuing the object at `at`.
    pub fn appending(
        client: std::sync::Arc<dyn ObjectClient>,
        key: String,
        config: UploadConfig,
        budget: MemoryBudget,
        ticket: WriterTicket,
        at: AppendPoint,
    ) -> Self {
        let mut upload = Upload::new(client, key, config, budget, ticket);
        upload.next_offset = at.size;
        upload.appending = Some(Appending { start: at.size, at, appends: 0 });
        upload
    }

    /// Bytes written through this upload (its size less the object's size it started from).
    pub fn written(&self) -> u64 {
        self.next_offset - self.appending.as_ref().map_or(0, |a| a.start)
    }

    /// Whether this upload appends (`--incremental-upload`).
    pub fn is_append(&self) -> bool {
        self.appending.is_some()
    }

    /// fsync of an incremental upload: appends what is buffered, and the file stays open for
    /// writing. Returns the object as S3 now holds it (`None`: a new file, nothing written yet).
    pub async fn sync(&mut self) -> Result<Option<Uploaded>, FsError> {
        if let Some(failed) = self.failed {
            return Err(FsError::UploadFailed { key: self.key.clone(), failed });
        }
        let rest = self.take_buffer().freeze();
        if !rest.is_empty()
            && let Err(e) = self.send_append(rest).await
        {
            self.fail(&e).await;
            return Err(e);
        }
        Ok(self.appended())
    }

    /// Close of an incremental upload: appends the rest. A new file that got no bytes is
    /// created empty (an append of nothing at offset 0).
    pub(super) async fn finish_appends(&mut self) -> Result<Uploaded, FsError> {
        let rest = self.take_buffer().freeze();
        let created = self.appending.as_ref().is_some_and(|a| a.at.etag.is_some());
        if !rest.is_empty() || !created {
            self.send_append(rest).await?;
        }
        Ok(self.appended().expect("appended above"))
    }

    /// The object as the last append left it; `None` before the first append of a new file.
    fn appended(&self) -> Option<Uploaded> {
        let at = &self.appending.as_ref().expect("an incremental upload").at;
        at.etag.as_ref().map(|etag| Uploaded { etag: etag.clone(), size: at.size })
    }

    /// Sends `data` as one append at the object's end as last seen here.
    pub(super) async fn send_append(&mut self, data: Bytes) -> Result<(), FsError> {
        let appending = self.appending.as_ref().expect("an incremental upload");
        let at = appending.at.clone();
        let options = match &at.etag {
            // The first append creates the object: everything a new object carries.
            None => PutOptions { write_offset: Some(0), if_none_match_any: false, ..self.config.options.clone() },
            // Later ones add bytes to it: the object keeps its own metadata and class.
            Some(etag) => PutOptions {
                write_offset: Some(at.size),
                if_match: Some(etag.clone()),
                checksum_crc32c: self.config.options.checksum_crc32c,
                checksum_algorithm: at.checksum,
                ..PutOptions::default()
            },
        };
        let len = data.len() as u64;
        match self.client.put_object(&self.key, data, &options).await {
            Ok(put) => {
                let appending = self.appending.as_mut().expect("an incremental upload");
                appending.at = AppendPoint { size: at.size + len, etag: Some(put.etag), checksum: at.checksum };
                appending.appends += 1;
                tracing::debug!(key = %escaped(&self.key), offset = at.size, len, "appended");
                Ok(())
            }
            Err(e) if e.kind == ClientErrorKind::PreconditionFailed => {
                let dropped = self.next_offset - at.size;
                tracing::warn!(
                    key = %escaped(&self.key),
                    offset = at.size,
                    dropped,
                    "append refused: another writer changed the object since this mount last appended to it \
                     ({e}); the bytes not yet appended are dropped, the object is left as the other writer made it"
                );
                Err(FsError::AppendConflict { key: self.key.clone(), offset: at.size, dropped })
            }
            Err(e) => Err(FsError::client("append", self.key.clone(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::client::S3Operation;
    use crate::client::memory::InMemoryClient;

    /// An incremental upload of `key` from its current end (as an open does), or from 0.
    async fn appending(c: &Arc<InMemoryClient>, key: &str, part: u64) -> Upload {
        let at = match c.head_object(key).await {
            Ok(meta) => AppendPoint { size: meta.size, etag: Some(meta.etag), checksum: None },
            Err(_) => AppendPoint { size: 0, etag: None, checksum: None },
        };
        appending_at(c, key, part, at)
    }

    fn appending_at(c: &Arc<InMemoryClient>, key: &str, part: u64, at: AppendPoint) -> Upload {
        let budget = MemoryBudget::new(1 << 30);
        let ticket = budget.try_admit(part).unwrap();
        let config = UploadConfig { part_size: part, max_parts_in_flight: 2, options: PutOptions::default() };
        Upload::appending(c.clone(), key.into(), config, budget, ticket, at)
    }

    #[tokio::test]
    async fn full_parts_and_syncs_are_appends_and_the_upload_goes_on() {
        let c = Arc::new(InMemoryClient::directory_bucket("d--use1-az4--x-s3"));
        c.insert("log", "base;");
        let mut u = appending(&c, "log", 4).await;
        assert_eq!(u.size(), 5);
        u.write(5, b"abcdefghij").await.unwrap();
        assert_eq!(c.object_bytes("log").unwrap().to_vec(), b"base;abcdefgh".to_vec(), "two full parts appended");
        let synced = u.sync().await.unwrap().unwrap();
        assert_eq!((c.object_bytes("log").unwrap().to_vec(), synced.size), (b"base;abcdefghij".to_vec(), 15));
        assert_eq!(u.sync().await.unwrap().unwrap(), synced, "nothing buffered: no request");
        u.write(15, b"!").await.unwrap();
        let done = u.complete().await.unwrap();
        assert_eq!((c.object_bytes("log").unwrap().to_vec(), done.size), (b"base;abcdefghij!".to_vec(), 16));
        assert_eq!(c.count(S3Operation::PutObject), 4);
        assert_eq!(c.count(S3Operation::GetObject) + c.count(S3Operation::CreateMultipartUpload), 0);
        assert_eq!(u.written(), 11);
    }

    #[tokio::test]
    async fn another_writer_is_estale_and_nothing_is_merged() {
        let c = Arc::new(InMemoryClient::directory_bucket("d--use1-az4--x-s3"));
        c.insert("log", "base;");
        let mut u = appending(&c, "log", 100).await;
        u.write(5, b"ours;").await.unwrap();
        u.sync().await.unwrap();
        c.insert("log", "replaced by someone else");
        u.write(10, b"lost").await.unwrap();
        let err = u.sync().await.unwrap_err();
        assert_eq!(err.errno(), libc::ESTALE);
        assert!(matches!(err, FsError::AppendConflict { offset: 10, dropped: 4, .. }), "{err}");
        assert_eq!(u.write(14, b"x").await.unwrap_err().errno(), libc::ESTALE, "stays failed");
        assert_eq!(u.complete().await.unwrap_err().errno(), libc::ESTALE);
        assert_eq!(c.object_bytes("log").unwrap().to_vec(), b"replaced by someone else".to_vec());
    }

    #[tokio::test]
    async fn a_new_file_is_created_at_offset_zero_even_empty() {
        let c = Arc::new(InMemoryClient::directory_bucket("d--use1-az4--x-s3"));
        let mut u = appending(&c, "new", 100).await;
        assert_eq!(u.sync().await.unwrap(), None, "nothing to append yet");
        assert!(c.object_bytes("new").is_none());
        u.complete().await.unwrap();
        assert_eq!(c.object_bytes("new").unwrap().to_vec(), b"".to_vec());
        c.insert("taken", "x");
        let mut u = appending_at(&c, "taken", 100, AppendPoint { size: 0, etag: None, checksum: None });
        u.write(0, b"mine").await.unwrap();
        assert_eq!(u.complete().await.unwrap_err().errno(), libc::ESTALE, "created meanwhile by another");
        assert_eq!(c.object_bytes("taken").unwrap().to_vec(), b"x".to_vec());
    }
}
