//! [`Upload`]: one new object, streamed to S3 while the application writes it.
//!
//! Writes must arrive in order from offset 0. Bytes collect in a buffer of `part_size`; each
//! full buffer goes out as an UploadPart task while the writer continues, with at most
//! `max_parts_in_flight` parts in the air (the writer waits for the oldest beyond that, so a
//! writer holds at most `(max_parts_in_flight + 1) x part_size` bytes). The multipart upload is
//! created only when the first part is full: an object smaller than one part is one PutObject.
//! Memory comes from the shared [`MemoryBudget`]: the buffer is the writer's *ticket*, one part
//! reserved when the file was opened ([`MemoryBudget::admit_writer`]); a full buffer goes out with
//! a shared reservation of its own if the budget has room, and otherwise with the ticket, and
//! the writer then waits for that part to reach S3 before it buffers more. So a writer never
//! waits on memory others hold, and writers never take the budget past its limit.
//! Completing sends the rest, waits for every part, checks each part's CRC32C as S3
//! acknowledged it against the one computed here, and completes the upload (with
//! `If-None-Match: *` for new objects, so a concurrent writer's object is never clobbered).
//! Any failure aborts the multipart upload, so no parts are left behind, and the upload stays
//! failed: no object appears.

mod append;

pub use append::AppendPoint;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::client::{ClientError, ClientErrorKind, ETag, ObjectClient, PutOptions, UploadedPart, UserMetadata};
use crate::escape::escaped;
use crate::fs::FsError;
use crate::fs::error::Failed;
use crate::fs::memory::{MemoryBudget, Promise, Reservation, WriterTicket};
use crate::fs::part_buffer::PartBuffer;
use crate::fs::resume::ResumeLog;
use crate::fs::settle::{Expected, settle};

/// S3's limit on parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

/// How an upload is cut and sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadConfig {
    /// Bytes per part (`--write-part-size`).
    pub part_size: u64,
    /// Parts uploading at once per file.
    pub max_parts_in_flight: usize,
    /// Checksums, storage class, SSE, content type, and `If-None-Match: *` for new objects.
    pub options: PutOptions,
}

/// `part_size` as a buffer length.
fn config_part_size(config: &UploadConfig) -> usize {
    usize::try_from(config.part_size).unwrap_or(usize::MAX)
}

/// The largest object `part_size` allows.
pub fn max_object_size(part_size: u64) -> u64 {
    part_size.saturating_mul(MAX_PARTS)
}

/// A completed upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub etag: ETag,
    pub size: u64,
}

/// What an UploadPart task ends with: the part, and the writer's ticket if the part carried it.
type PartOutcome = (Result<UploadedPart, ClientError>, Option<Reservation>);

struct Multipart {
    upload_id: String,
    next_part: u32,
    in_flight: VecDeque<JoinHandle<PartOutcome>>,
    done: Vec<UploadedPart>,
    /// The writer's ticket, back from the part it went out with.
    returned: Option<Reservation>,
}

/// One object being written. Not shareable: the caller serialises access (writes are ordered).
pub struct Upload {
    client: Arc<dyn ObjectClient>,
    key: String,
    config: UploadConfig,
    next_offset: u64,
    buffer: PartBuffer,
    budget: MemoryBudget,
    /// The writer's own part of memory, backing `buffer`; `None` while it goes out with a part.
    ticket: Option<Reservation>,
    _promise: Promise,
    multipart: Option<Multipart>,
    /// Where multipart uploads are recorded, so a restarted worker can abort what a dead one
    /// left open ([`crate::fs::resume`]).
    record: Option<Arc<ResumeLog>>,
    /// The user metadata a multipart upload was created with (it cannot change after that).
    created_with: Option<UserMetadata>,
    /// Set once anything failed; every later call returns the same errno.
    failed: Option<Failed>,
    /// `--incremental-upload`: bytes go out as appends ([`append`]), not as a multipart upload.
    appending: Option<append::Appending>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("key", &self.key).field("size", &self.next_offset).finish_non_exhaustive()
    }
}

impl Upload {
    /// A new upload of `key`; nothing is sent until a part is full or the upload completes.
    /// `ticket` is the writer's part of `budget`, admitted with [`MemoryBudget::admit_writer`].
    pub fn new(
        client: Arc<dyn ObjectClient>,
        key: String,
        config: UploadConfig,
        budget: MemoryBudget,
        ticket: WriterTicket,
    ) -> Self {
        let buffer = PartBuffer::new(config_part_size(&config));
        Upload {
            client,
            key,
            config,
            next_offset: 0,
            buffer,
            budget,
            ticket: Some(ticket.reservation),
            _promise: ticket.promise,
            multipart: None,
            record: None,
            created_with: None,
            failed: None,
            appending: None,
        }
    }

    /// Records the multipart upload (when one is created, and when it ends) in `log`.
    pub fn recorded_in(mut self, log: Option<Arc<ResumeLog>>) -> Self {
        self.record = log;
        self
    }

    fn record_ended(&self, upload_id: &str) {
        if let Some(log) = &self.record {
            log.upload_ended(upload_id);
        }
    }

    /// Sets the user metadata the object will carry, if it is not fixed yet; returns what it
    /// will carry: `metadata`, or what the multipart upload was created with.
    pub fn set_metadata(&mut self, metadata: UserMetadata) -> &UserMetadata {
        self.config.options.metadata = metadata;
        self.created_with.as_ref().unwrap_or(&self.config.options.metadata)
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.next_offset
    }

    /// The key being written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Points the upload at `key` instead (the file was renamed while being written), so the
    /// object lands at its new name with no copy; `replace` allows an existing object there.
    /// Possible only until the first part went out (a multipart upload is bound to its key):
    /// returns false after that.
    pub fn retarget(&mut self, key: String, replace: bool) -> bool {
        if self.multipart.is_some() || self.appending.as_ref().is_some_and(|a| a.at.etag.is_some()) {
            return false;
        }
        self.key = key;
        if replace {
            self.config.options.if_none_match_any = false;
        }
        true
    }

    /// Writes `data` at `offset`: at the current end of the file, or past it, in which case the
    /// gap is filled with zeros first (a forward seek, as `cp --sparse` makes over holes).
    /// Writing before the end fails the upload: bytes already sent cannot be changed.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), FsError> {
        if let Some(failed) = self.failed {
            return Err(FsError::UploadFailed { key: self.key.clone(), failed });
        }
        if offset < self.next_offset {
            let e = FsError::OutOfOrderWrite { key: self.key.clone(), offset, expected: self.next_offset };
            self.fail(&e).await;
            return Err(e);
        }
        self.check_size(offset + data.len() as u64).await?;
        self.fill_zeros(offset).await?;
        self.append(data).await
    }

    /// Sets the size to `size`: longer by zeros, or shorter while the bytes to drop are still
    /// buffered here. Bytes already sent to S3 cannot be dropped: then [`FsError::CannotTruncate`],
    /// and the upload goes on unchanged.
    pub async fn truncate(&mut self, size: u64) -> Result<(), FsError> {
        if let Some(failed) = self.failed {
            return Err(FsError::UploadFailed { key: self.key.clone(), failed });
        }
        if size >= self.next_offset {
            self.check_size(size).await?;
            return self.fill_zeros(size).await;
        }
        let sent = self.next_offset - self.buffer.len() as u64;
        if size < sent {
            return Err(FsError::CannotTruncate { key: self.key.clone(), size, sent });
        }
        self.buffer.truncate((size - sent) as usize);
        self.next_offset = size;
        Ok(())
    }

    /// Fails the upload (EFBIG) if it would grow past what 10,000 parts hold.
    async fn check_size(&mut self, end: u64) -> Result<(), FsError> {
        let limit = max_object_size(self.config.part_size);
        if end > limit {
            let e = FsError::TooLarge { key: self.key.clone(), limit };
            self.fail(&e).await;
            return Err(e);
        }
        Ok(())
    }

    /// Appends zeros up to `end`. They stream through parts like any data: no size limit but
    /// the object's, and memory stays one part per buffer.
    async fn fill_zeros(&mut self, end: u64) -> Result<(), FsError> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while self.next_offset < end {
            let n = (end - self.next_offset).min(ZEROS.len() as u64) as usize;
            self.append(&ZEROS[..n]).await?;
        }
        Ok(())
    }

    /// Appends `data` at the end, sending each part as it fills.
    async fn append(&mut self, data: &[u8]) -> Result<(), FsError> {
        let part_size = self.config.part_size as usize;
        let mut rest = data;
        while !rest.is_empty() {
            if self.buffer.is_empty() {
                self.ticket_home().await?;
            }
            let take = (part_size - self.buffer.len()).min(rest.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.next_offset += take as u64;
            if self.buffer.len() == part_size {
                let part = self.take_buffer().freeze();
                let sent =
                    if self.appending.is_some() { self.send_append(part).await } else { self.send_part(part).await };
                if let Err(e) = sent {
                    self.fail(&e).await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Sends what is buffered and makes the object visible in S3.
    pub async fn complete(&mut self) -> Result<Uploaded, FsError> {
        if let Some(failed) = self.failed {
            return Err(FsError::UploadFailed { key: self.key.clone(), failed });
        }
        let result = self.finish().await;
        if let Err(e) = &result {
            self.fail(e).await;
        }
        result
    }

    /// Gives up: aborts the multipart upload, if one was started. No object appears.
    pub async fn abort(&mut self) {
        if self.failed.is_none() {
            self.failed = Some(Failed { errno: libc::EIO, unknown: false });
        }
        if let Some(mpu) = self.multipart.take() {
            for task in mpu.in_flight {
                task.abort();
            }
            match self.client.abort_multipart_upload(&self.key, &mpu.upload_id).await {
                Ok(()) => {}
                // Gone already (completed, or aborted by someone): no parts are left behind.
                Err(e) if e.kind == ClientErrorKind::NotFound => {
                    tracing::debug!(key = %escaped(&self.key), upload_id = %escaped(&mpu.upload_id), "multipart upload to abort no longer exists: {e}");
                }
                Err(e) => {
                    tracing::warn!(key = %escaped(&self.key), upload_id = %escaped(&mpu.upload_id), "could not abort multipart upload: {e}");
                }
            }
            self.record_ended(&mpu.upload_id);
        }
    }

    async fn fail(&mut self, e: &FsError) {
        let failed = Failed::from(e);
        self.abort().await;
        self.failed = Some(failed);
        drop(self.take_buffer());
    }

    /// The buffer's bytes, leaving an empty buffer.
    fn take_buffer(&mut self) -> PartBuffer {
        std::mem::replace(&mut self.buffer, PartBuffer::new(config_part_size(&self.config)))
    }

    /// Waits until the ticket is back from the part it went out with (if it did), so the
    /// buffer can fill again. Waits only for this writer's own parts.
    async fn ticket_home(&mut self) -> Result<(), FsError> {
        while self.ticket.is_none() {
            let Some(mpu) = self.multipart.as_mut() else { break };
            if let Some(ticket) = mpu.returned.take() {
                self.ticket = Some(ticket);
                break;
            }
            if mpu.in_flight.is_empty() {
                break;
            }
            let keep = mpu.in_flight.len() - 1;
            if let Err(e) = Self::drain(mpu, keep).await {
                let e = self.upload_error(e);
                self.fail(&e).await;
                return Err(e);
            }
        }
        if self.ticket.is_none() {
            // Lost with a part whose task died (the upload failed then): take shared memory.
            self.ticket = Some(self.budget.consumer(self.config.part_size).reserve(self.config.part_size).await);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<Uploaded, FsError> {
        if self.appending.is_some() {
            return self.finish_appends().await;
        }
        let size = self.next_offset;
        let rest = self.take_buffer().freeze();
        if self.multipart.is_none() {
            let put = self.client.put_object(&self.key, rest.clone(), &self.config.options).await;
            let etag = match put {
                Ok(put) => put.etag,
                Err(e) if e.kind == ClientErrorKind::OutcomeUnknown => {
                    settle(self.client.as_ref(), &self.key, &Expected::put(&rest), &e).await?
                }
                Err(e) => return Err(self.upload_error(e)),
            };
            return Ok(Uploaded { etag, size });
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let mut mpu = self.multipart.take().expect("checked above");
        let waited = Self::drain(&mut mpu, 0).await;
        let upload_id = mpu.upload_id.clone();
        self.multipart = Some(mpu);
        waited.map_err(|e| self.upload_error(e))?;
        let mpu = self.multipart.as_ref().expect("just put back");
        let expected = Expected::multipart(size, &mpu.done);
        let completed =
            self.client.complete_multipart_upload(&self.key, &upload_id, &mpu.done, &self.config.options).await;
        let etag = match completed {
            Ok(put) => put.etag,
            // S3 may have completed it: ask. If not ours, the failure path aborts the upload.
            Err(e) if e.kind == ClientErrorKind::OutcomeUnknown => {
                settle(self.client.as_ref(), &self.key, &expected, &e).await?
            }
            Err(e) => {
                // A refusal. Abort now: "no such upload" then means the upload is gone, which a
                // completion (whose answer was lost or misread) explains as well as anything.
                self.multipart = None;
                let aborted = self.client.abort_multipart_upload(&self.key, &upload_id).await;
                self.record_ended(&upload_id);
                match aborted {
                    Ok(()) => return Err(self.upload_error(e)),
                    Err(gone) if gone.kind == ClientErrorKind::NotFound => {
                        settle(self.client.as_ref(), &self.key, &expected, &e).await?
                    }
                    Err(abort) => {
                        tracing::warn!(key = %escaped(&self.key), upload_id = %escaped(&upload_id), "could not abort multipart upload: {abort}");
                        return Err(self.upload_error(e));
                    }
                }
            }
        };
        self.multipart = None;
        self.record_ended(&upload_id);
        Ok(Uploaded { etag, size })
    }

    /// Sends `part` (the buffer's bytes) as the next part, with shared memory if the budget has
    /// room, else with the ticket.
    async fn send_part(&mut self, part: Bytes) -> Result<(), FsError> {
        if self.multipart.is_none() {
            let created = self.client.create_multipart_upload(&self.key, &self.config.options).await;
            let upload_id = created.map_err(|e| self.upload_error(e))?;
            if let Some(log) = &self.record {
                log.upload_created(&self.key, &upload_id);
            }
            self.created_with = Some(self.config.options.metadata.clone());
            self.multipart =
                Some(Multipart { upload_id, next_part: 1, in_flight: VecDeque::new(), done: vec![], returned: None });
        }
        let max_in_flight = self.config.max_parts_in_flight.max(1);
        let mut mpu = self.multipart.take().expect("created above");
        let waited = Self::drain(&mut mpu, max_in_flight - 1).await;
        if let Err(e) = waited {
            self.multipart = Some(mpu);
            return Err(self.upload_error(e));
        }
        let (shared, ticket) = match self.budget.try_reserve(self.config.part_size) {
            Some(shared) => (Some(shared), None),
            None => (None, self.ticket.take()),
        };
        let (client, key, options) = (self.client.clone(), self.key.clone(), self.config.options.clone());
        let (upload_id, number) = (mpu.upload_id.clone(), mpu.next_part);
        mpu.next_part += 1;
        mpu.in_flight.push_back(tokio::spawn(async move {
            // The client computes the part's checksum (one pass over its bytes) and fails the
            // part if the server acknowledges another one (`ObjectClient::upload_part`).
            let uploaded = client.upload_part(&key, &upload_id, number, part, &options).await;
            // The part's bytes are S3's now (or the upload failed): give shared memory back at
            // once; the ticket goes back to the writer.
            drop(shared);
            (uploaded, ticket)
        }));
        self.multipart = Some(mpu);
        Ok(())
    }

    /// Waits until at most `keep` parts are in flight.
    async fn drain(mpu: &mut Multipart, keep: usize) -> Result<(), ClientError> {
        while mpu.in_flight.len() > keep {
            let task = mpu.in_flight.pop_front().expect("non-empty");
            let (part, ticket) = task.await.map_err(|e| {
                ClientError::new(ClientErrorKind::Transient, "UploadPart", format!("upload task failed: {e}"))
            })?;
            if ticket.is_some() {
                mpu.returned = ticket;
            }
            mpu.done.push(part?);
        }
        Ok(())
    }

    fn upload_error(&self, e: ClientError) -> FsError {
        if e.kind == ClientErrorKind::PreconditionFailed {
            FsError::AlreadyExists { key: self.key.clone() }
        } else {
            FsError::client("upload", self.key.clone(), e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::S3Operation;
    use crate::client::memory::InMemoryClient;
    use crate::fs::memory::MemoryBudget;

    fn upload(c: &Arc<InMemoryClient>, key: &str, part: u64) -> Upload {
        let budget = MemoryBudget::new(1 << 30);
        let ticket = budget.try_admit(part).unwrap();
        Upload::new(c.clone(), key.into(), config(part), budget, ticket)
    }

    fn config(part: u64) -> UploadConfig {
        UploadConfig {
            part_size: part,
            max_parts_in_flight: 2,
            options: PutOptions { if_none_match_any: true, checksum_crc32c: true, ..PutOptions::default() },
        }
    }

    async fn write_all(u: &mut Upload, data: &[u8], chunk: usize) {
        for (i, c) in data.chunks(chunk).enumerate() {
            u.write((i * chunk) as u64, c).await.unwrap();
        }
    }

    #[tokio::test]
    async fn small_objects_are_one_put_large_ones_a_multipart_upload() {
        let c = Arc::new(InMemoryClient::new("b"));
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        for (len, puts, parts) in [(0usize, 1, 0), (999, 1, 0), (1000, 0, 1), (1001, 0, 2), (100_000, 0, 100)] {
            c.reset_counts();
            let key = format!("k{len}");
            let mut u = upload(&c, &key, 1000);
            write_all(&mut u, &data[..len], 333).await;
            let done = u.complete().await.unwrap();
            assert_eq!(done.size, len as u64);
            assert_eq!(c.object_bytes(&key).unwrap(), &data[..len], "{len}");
            assert_eq!(c.count(S3Operation::PutObject), puts, "{len}");
            assert_eq!(c.count(S3Operation::UploadPart), parts, "{len}");
            assert_eq!(c.count(S3Operation::CompleteMultipartUpload), u64::from(parts > 0));
        }
        assert_eq!(c.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn forward_seeks_are_zeros_and_truncate_works_on_buffered_bytes_only() {
        let c = Arc::new(InMemoryClient::new("b"));
        let mut u = upload(&c, "k", 10);
        u.write(0, b"abc").await.unwrap();
        u.write(25, b"xy").await.unwrap();
        assert_eq!(u.size(), 27);
        // Parts 0-9 and 10-19 are sent; 20..27 is buffered.
        assert_eq!(u.truncate(12).await.unwrap_err().errno(), libc::EPERM, "sent bytes stay");
        u.truncate(21).await.unwrap();
        u.truncate(30).await.unwrap();
        u.write(30, b"!").await.unwrap();
        u.complete().await.unwrap();
        let mut want = b"abc".to_vec();
        want.resize(25, 0);
        want.extend_from_slice(b"xy");
        want.truncate(21);
        want.resize(30, 0);
        want.push(b'!');
        assert_eq!(c.object_bytes("k").unwrap(), want);
    }

    #[tokio::test]
    async fn out_of_order_writes_fail_abort_and_stay_failed() {
        let c = Arc::new(InMemoryClient::new("b"));
        let mut u = upload(&c, "k", 10);
        u.write(0, &[1; 25]).await.unwrap();
        assert_eq!(c.pending_uploads(), 1);
        assert_eq!(u.write(20, &[1]).await.unwrap_err().errno(), libc::EINVAL);
        assert_eq!(c.pending_uploads(), 0, "aborted");
        assert_eq!(u.write(25, &[1]).await.unwrap_err().errno(), libc::EINVAL, "same errno later");
        assert_eq!(u.complete().await.unwrap_err().errno(), libc::EINVAL);
        assert!(c.object_bytes("k").is_none(), "no object appears");
    }

    #[tokio::test]
    async fn objects_over_ten_thousand_parts_are_efbig() {
        let c = Arc::new(InMemoryClient::new("b"));
        let mut u = upload(&c, "k", 1);
        write_all(&mut u, &[7; 10_000], 1000).await;
        assert_eq!(u.write(10_000, &[1]).await.unwrap_err().errno(), libc::EFBIG);
        assert_eq!(c.pending_uploads(), 0);
        assert!(c.object_bytes("k").is_none());
    }

    #[tokio::test]
    async fn an_existing_key_is_eexist_for_a_new_object() {
        let c = Arc::new(InMemoryClient::new("b"));
        c.insert("taken", "theirs");
        for len in [5usize, 25] {
            let mut u = upload(&c, "taken", 10);
            write_all(&mut u, &vec![1; len], 10).await;
            assert_eq!(u.complete().await.unwrap_err().errno(), libc::EEXIST, "{len}");
            assert_eq!(c.object_bytes("taken").unwrap(), "theirs");
        }
        assert_eq!(c.pending_uploads(), 0);
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;
    use crate::client::memory::InMemoryClient;
    use crate::fs::memory::MemoryBudget;

    #[tokio::test]
    async fn writers_never_take_the_budget_past_its_limit() {
        let c = Arc::new(InMemoryClient::new("b"));
        let part = 1000u64;
        // Room for the four tickets and one more part: most parts go out with their ticket.
        let budget = MemoryBudget::new(5 * part);
        let mut tasks = vec![];
        for w in 0..4 {
            let (c, budget) = (c.clone(), budget.clone());
            let ticket = budget.try_admit(part).unwrap();
            tasks.push(tokio::spawn(async move {
                let config = UploadConfig { part_size: part, max_parts_in_flight: 4, options: PutOptions::default() };
                let mut u = Upload::new(c, format!("w{w}"), config, budget, ticket);
                for i in 0..20u64 {
                    u.write(i * 500, &[w as u8; 500]).await.unwrap();
                }
                u.complete().await.unwrap()
            }));
        }
        assert!(budget.try_admit(part).is_some(), "one more part fits");
        assert!(budget.try_admit(2 * part).is_none(), "promises never exceed the budget");
        for t in tasks {
            assert_eq!(t.await.unwrap().size, 10_000);
        }
        assert!(budget.peak() <= 5 * part, "peak {} over the budget", budget.peak());
        assert_eq!((budget.reserved(), budget.promised()), (0, 0), "everything given back");
        for w in 0..4u8 {
            assert_eq!(c.object_bytes(&format!("w{w}")).unwrap(), vec![w; 10_000]);
        }
    }
}
