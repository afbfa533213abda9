//! [`RetryClient`]: the one retry policy for every S3 call.
//!
//! A failed call is retried when its error says so ([`ClientError::is_retryable`]: throttling,
//! 5xx, connection failures, timeouts, bodies cut short), never for 403/404/412/400. Waits are
//! exponential with full jitter (a random wait up to `base x 2^attempt`, capped), attempts are
//! `AWS_MAX_ATTEMPTS` (default 10, as Mountpoint), and no call retries past its deadline. A GET
//! whose body fails mid-stream resumes from the last byte received with a ranged GET carrying
//! `If-Match`, so the reader sees one seamless body of one object version, or an error. When a
//! call finally fails, one warning states the operation, key, attempts, S3 error code and
//! request id; the error returned is the last one, still classified, so throttling can never
//! surface as "not found".
//!
//! A call retried after a lost response may be told its own first attempt's effect: a
//! CompleteMultipartUpload that the upload no longer exists (then it is
//! [`ClientErrorKind::OutcomeUnknown`], and the upload settles it with a HEAD), a PutObject
//! with `If-None-Match: *` that the object exists (then the object's bytes are compared with the
//! body sent), an AbortMultipartUpload that there is no such upload (it is gone: success). So a
//! landed object is never reported as a failed close, nor as someone else's.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;

use crate::escape::escaped;

use super::{
    ClientError, ClientErrorKind, CopyOptions, ETag, GetObjectResponse, GetStream, ListPage, ListRequest, ObjectClient,
    ObjectMeta, PutOptions, PutResult, RenameOptions, UploadedPart,
};

/// How hard to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per call, the first included (`AWS_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Scale of the exponential backoff.
    pub base_delay: Duration,
    /// Longest single wait.
    pub max_delay: Duration,
    /// No retry starts after this long since the call began.
    pub deadline: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            deadline: Duration::from_secs(120),
        }
    }
}

impl RetryConfig {
    /// The wait before attempt `attempt + 1` (full jitter).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap =
            self.base_delay.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX)).min(self.max_delay);
        let nanos = rand::thread_rng().gen_range(0..=cap.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }
}

/// Retries and resumes calls of the wrapped client.
#[derive(Debug)]
pub struct RetryClient<C: ObjectClient> {
    inner: Arc<C>,
    config: RetryConfig,
}

impl<C: ObjectClient> RetryClient<C> {
    /// Wraps `inner`.
    pub fn new(inner: C, config: RetryConfig) -> Self {
        RetryClient { inner: Arc::new(inner), config }
    }

    /// The wrapped client.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        retry(&self.config, op, key, &mut call).await
    }

    /// [`Self::run`], also saying whether the call was retried: then an earlier attempt may
    /// have done its work and lost only its answer.
    async fn run_noting_retries<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut call: F,
    ) -> (Result<T, ClientError>, bool)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut retried = false;
        let result = self
            .run(op, key, |attempt| {
                retried |= attempt > 1;
                call()
            })
            .await;
        (result, retried)
    }
}

async fn retry<T, F, Fut>(config: &RetryConfig, op: &'static str, key: &str, call: &mut F) -> Result<T, ClientError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call(attempt).await {
            Ok(value) => return Ok(value),
            Err(e) => {
                let delay = config.delay(attempt - 1);
                let more =
                    e.is_retryable() && attempt < config.max_attempts && start.elapsed() + delay < config.deadline;
                if !more {
                    // A 404 or 412 after a retry is an answer the caller acts on (and, after a lost
                    // response, may be the echo of our own first attempt): not worth a warning.
                    let answer = matches!(e.kind, ClientErrorKind::NotFound | ClientErrorKind::PreconditionFailed);
                    if e.is_retryable() || (attempt > 1 && !answer) {
                        tracing::warn!(
                            operation = op,
                            key,
                            attempts = attempt,
                            code = e.code.as_deref().unwrap_or("-"),
                            request_id = e.request_id.as_deref().unwrap_or("-"),
                            "S3 request failed for good: {e}"
                        );
                    }
                    return Err(e);
                }
                tracing::debug!(operation = op, key, attempt, ?delay, "retrying after: {e}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[async_trait]
impl<C: ObjectClient> ObjectClient for RetryClient<C> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        self.run("HeadObject", key, |_| self.inner.head_object(key)).await
    }

    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        let response = self.run("GetObject", key, |_| self.inner.get_object(key, range.clone(), if_match)).await?;
        let resume = Resume {
            client: self.inner.clone(),
            config: self.config.clone(),
            key: key.to_string(),
            etag: response.etag.clone(),
            next: range.start,
            end: range.end.min(response.object_size),
            resumes: 0,
        };
        let body = resumable(response.body, resume);
        Ok(GetObjectResponse { etag: response.etag, object_size: response.object_size, body })
    }

    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        self.run("ListObjectsV2", &request.prefix, |_| self.inner.list_objects(request)).await
    }

    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError> {
        let (result, retried) =
            self.run_noting_retries("PutObject", key, || self.inner.put_object(key, body.clone(), options)).await;
        match result {
            // `If-None-Match: *` (or `If-Match`) failed on a retry: maybe another writer, maybe our
            // own first attempt whose answer was lost. The object's bytes decide.
            // An append (write offset) refused on a retry likewise: our lost first attempt has
            // moved the object's end, so the offset no longer matches.
            Err(e)
                if retried
                    && (options.if_none_match_any || options.if_match.is_some() || options.write_offset.is_some())
                    && e.kind == ClientErrorKind::PreconditionFailed =>
            {
                match self.holds_at(key, options.write_offset.unwrap_or(0), &body).await {
                    Some(etag) => {
                        tracing::warn!(
                            key,
                            "a retried PutObject was refused ({e}); the object ends with exactly the bytes \
                             sent, so the first attempt, whose answer was lost, succeeded"
                        );
                        Ok(PutResult { etag })
                    }
                    None => Err(e),
                }
            }
            other => other.map_err(unanswered_write),
        }
    }

    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError> {
        self.run("CreateMultipartUpload", key, |_| self.inner.create_multipart_upload(key, options)).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        self.run("UploadPart", key, |_| self.inner.upload_part(key, upload_id, part_number, body.clone(), options))
            .await
    }

    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        let complete = || self.inner.complete_multipart_upload(key, upload_id, parts, options);
        let (result, retried) = self.run_noting_retries("CompleteMultipartUpload", key, complete).await;
        match result {
            // A retry told "no such upload" (or, for a new object, "exists") after a lost
            // response: the first attempt may have completed it. The caller, which knows the
            // parts, settles it by asking S3 what the key holds.
            Err(e) if retried && matches!(e.kind, ClientErrorKind::NotFound | ClientErrorKind::PreconditionFailed) => {
                Err(ClientError {
                    kind: ClientErrorKind::OutcomeUnknown,
                    message: format!("a retry was refused after an earlier attempt's answer was lost: {}", e.message),
                    ..e
                })
            }
            other => other.map_err(unanswered_write),
        }
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), ClientError> {
        let abort = || self.inner.abort_multipart_upload(key, upload_id);
        let (result, retried) = self.run_noting_retries("AbortMultipartUpload", key, abort).await;
        match result {
            // "No such upload" on a retry: the first attempt, whose answer was lost, aborted it.
            Err(e) if retried && e.kind == ClientErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        self.run("DeleteObject", key, |_| self.inner.delete_object(key)).await
    }

    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &CopyOptions,
    ) -> Result<PutResult, ClientError> {
        let copy = || self.inner.copy_object(source_key, dest_key, options);
        let (result, retried) = self.run_noting_retries("CopyObject", dest_key, copy).await;
        let conditional = options.dest.if_none_match_any || options.dest.if_match.is_some();
        match result {
            // A destination condition refused on a retry: maybe another writer, maybe our own first
            // attempt whose answer was lost. The caller settles it by asking S3.
            Err(e) if retried && conditional && e.kind == ClientErrorKind::PreconditionFailed => Err(ClientError {
                kind: ClientErrorKind::OutcomeUnknown,
                message: format!("a retry was refused after an earlier attempt's answer was lost: {}", e.message),
                ..e
            }),
            other => other.map_err(unanswered_write),
        }
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_key: &str,
        range: Range<u64>,
        source_if_match: Option<&ETag>,
    ) -> Result<UploadedPart, ClientError> {
        self.run("UploadPartCopy", key, |_| {
            self.inner.upload_part_copy(key, upload_id, part_number, source_key, range.clone(), source_if_match)
        })
        .await
    }

    async fn rename_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &RenameOptions,
    ) -> Result<(), ClientError> {
        let call = || self.inner.rename_object(source_key, dest_key, options);
        let (result, retried) = self.run_noting_retries("RenameObject", dest_key, call).await;
        match result {
            // The source is gone, or the destination exists, after a retry: that may be our own
            // first attempt, whose answer was lost. Only the caller can tell (HEAD both keys).
            Err(e) if retried && matches!(e.kind, ClientErrorKind::NotFound | ClientErrorKind::PreconditionFailed) => {
                Err(ClientError {
                    kind: ClientErrorKind::OutcomeUnknown,
                    message: format!("refused on a retry, maybe because an earlier attempt succeeded: {}", e.message),
                    ..e
                })
            }
            other => other.map_err(unanswered_write),
        }
    }

    async fn copied(&self, copies: &[super::PinnedCopy]) {
        self.inner.copied(copies).await
    }
}

/// A write that failed for good with a network failure or a server error (no readable answer,
/// or a 5xx that S3 may send after acting, as CompleteMultipartUpload can): S3 may have taken it.
fn unanswered_write(e: ClientError) -> ClientError {
    if e.kind != ClientErrorKind::Transient {
        return e;
    }
    ClientError {
        kind: ClientErrorKind::OutcomeUnknown,
        message: format!("no answer could be read: {}", e.message),
        ..e
    }
}

impl<C: ObjectClient> RetryClient<C> {
    /// The object's ETag if `key` ends at `offset` with exactly `expected` (`offset` 0: holds
    /// exactly `expected`). The check's own calls are retried: the fault that lost the answer
    /// may well hit them too.
    async fn holds_at(&self, key: &str, offset: u64, expected: &Bytes) -> Option<ETag> {
        let meta = self.head_object(key).await.ok()?;
        if meta.size != offset + expected.len() as u64 {
            return None;
        }
        if expected.is_empty() {
            return Some(meta.etag);
        }
        let response = self.get_object(key, offset..meta.size, Some(&meta.etag)).await.ok()?;
        let mut body = response.body;
        let mut at = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.ok()?;
            if expected.get(at..at + chunk.len())? != chunk {
                return None;
            }
            at += chunk.len();
        }
        (at == expected.len()).then_some(response.etag)
    }
}

struct Resume<C: ObjectClient> {
    client: Arc<C>,
    config: RetryConfig,
    key: String,
    etag: ETag,
    /// Offset of the next byte the caller expects.
    next: u64,
    end: u64,
    resumes: u32,
}

/// `body`, resumed from the last byte received whenever it fails in a retryable way.
fn resumable<C: ObjectClient>(body: GetStream, resume: Resume<C>) -> GetStream {
    let stream = futures::stream::unfold((body, resume, false), |(mut body, mut r, done)| async move {
        if done {
            return None;
        }
        loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    r.next += chunk.len() as u64;
                    return Some((Ok(chunk), (body, r, false)));
                }
                None => return None,
                Some(Err(e)) if e.is_retryable() && r.next < r.end && r.resumes + 1 < r.config.max_attempts => {
                    r.resumes += 1;
                    tracing::debug!(key = %escaped(&r.key), offset = r.next, resume = r.resumes, "GET body failed, resuming: {e}");
                    tokio::time::sleep(r.config.delay(r.resumes - 1)).await;
                    let (client, key, etag, range) = (r.client.clone(), r.key.clone(), r.etag.clone(), r.next..r.end);
                    let mut call = |_| {
                        let (client, key, etag, range) = (client.clone(), key.clone(), etag.clone(), range.clone());
                        async move { client.get_object(&key, range, Some(&etag)).await }
                    };
                    match retry(&r.config, "GetObject", &r.key, &mut call).await {
                        Ok(again) if again.etag == r.etag => body = again.body,
                        Ok(_) => {
                            let e = ClientError::new(
                                ClientErrorKind::PreconditionFailed,
                                "GetObject",
                                "object changed while resuming",
                            );
                            return Some((Err(e), (body, r, true)));
                        }
                        Err(e) => return Some((Err(e), (body, r, true))),
                    }
                }
                Some(Err(e)) => {
                    if e.is_retryable() {
                        tracing::warn!(key = %escaped(&r.key), offset = r.next, resumes = r.resumes, "GET body failed for good: {e}");
                    }
                    return Some((Err(e), (body, r, true)));
                }
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::S3Operation;
    use crate::client::fault::{Fault, FaultClient, When};
    use crate::client::memory::InMemoryClient;

    fn fast() -> RetryConfig {
        RetryConfig {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..RetryConfig::default()
        }
    }

    fn client() -> RetryClient<FaultClient<InMemoryClient>> {
        RetryClient::new(FaultClient::new(InMemoryClient::new("b"), 3), fast())
    }

    async fn body(r: GetObjectResponse) -> Result<Vec<u8>, ClientError> {
        let mut out = vec![];
        let mut s = r.body;
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn throttling_is_retried_and_not_found_is_not() {
        let c = client();
        c.inner().inner().insert("k", "v");
        c.inner().fail_nth(S3Operation::HeadObject, 1, ClientErrorKind::Throttled);
        c.inner().fail_nth(S3Operation::HeadObject, 2, ClientErrorKind::Transient);
        assert_eq!(c.head_object("k").await.unwrap().size, 1);
        assert_eq!(c.inner().calls(S3Operation::HeadObject), 3);
        let missing = c.head_object("nope").await.unwrap_err();
        assert_eq!(missing.kind, ClientErrorKind::NotFound);
        assert_eq!(c.inner().calls(S3Operation::HeadObject), 4, "404 is final");
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_last_error_keeps_its_kind() {
        let c = client();
        c.inner().inject(S3Operation::ListObjectsV2, When::Always, Fault::Fail(ClientErrorKind::Throttled));
        let request = ListRequest { max_keys: 10, ..ListRequest::default() };
        let e = c.list_objects(&request).await.unwrap_err();
        assert_eq!(e.kind, ClientErrorKind::Throttled, "never turned into not found");
        assert_eq!(c.inner().calls(S3Operation::ListObjectsV2), 10);
    }

    #[tokio::test]
    async fn a_body_cut_short_resumes_from_the_last_byte() {
        let c = client();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let etag = c.inner().inner().insert("k", data.clone());
        c.inner().cut_get_body(When::Nth(1), 700_000);
        c.inner().cut_get_body(When::Nth(2), 100_000);
        let r = c.get_object("k", 10..2_900_000, Some(&etag)).await.unwrap();
        assert_eq!(body(r).await.unwrap(), &data[10..2_900_000]);
        assert_eq!(c.inner().calls(S3Operation::GetObject), 3);
    }

    fn new_object() -> PutOptions {
        PutOptions { if_none_match_any: true, ..PutOptions::default() }
    }

    #[tokio::test]
    async fn a_put_whose_answer_was_lost_is_not_reported_as_someone_elses_object() {
        let c = client();
        let lost = Fault::LoseResponse(ClientErrorKind::Transient);
        for (key, body) in [("small", Bytes::from_static(b"our bytes")), ("empty", Bytes::new())] {
            c.inner().inject(S3Operation::PutObject, When::Nth(1), lost.clone());
            // The check itself meets faults too.
            c.inner().fail_nth(S3Operation::HeadObject, 1, ClientErrorKind::Transient);
            c.inner().fail_nth(S3Operation::GetObject, 1, ClientErrorKind::Throttled);
            let put = c.put_object(key, body.clone(), &new_object()).await.expect("the first attempt landed");
            assert_eq!(c.inner().inner().object_bytes(key).unwrap(), body);
            assert_eq!(put.etag, c.inner().inner().head_object(key).await.unwrap().etag);
        }
        assert_eq!(c.inner().calls(S3Operation::PutObject), 4, "each retried once, answered 412");
    }

    #[tokio::test]
    async fn a_complete_whose_answer_was_lost_is_an_unknown_outcome_not_a_failure() {
        let c = client();
        let options = PutOptions::default();
        let id = c.create_multipart_upload("k", &options).await.unwrap();
        let part = c.upload_part("k", &id, 1, Bytes::from_static(b"part"), &options).await.unwrap();
        let lost = Fault::LoseResponse(ClientErrorKind::Transient);
        c.inner().inject(S3Operation::CompleteMultipartUpload, When::Nth(1), lost);
        let e = c.complete_multipart_upload("k", &id, &[part], &options).await.unwrap_err();
        // The retry was told "no such upload": the upload (which knows its parts) settles it.
        assert_eq!(e.kind, ClientErrorKind::OutcomeUnknown, "{e}");
        assert_eq!(c.inner().inner().object_bytes("k").unwrap(), "part");
        assert_eq!(c.inner().calls(S3Operation::CompleteMultipartUpload), 2);
    }

    #[tokio::test]
    async fn an_append_whose_answer_was_lost_is_not_reported_as_a_conflict() {
        let c = RetryClient::new(FaultClient::new(InMemoryClient::directory_bucket("b--use1-az4--x-s3"), 3), fast());
        c.inner().inner().insert("log", "head,");
        let at = |offset| PutOptions { write_offset: Some(offset), ..PutOptions::default() };
        c.inner().inject(S3Operation::PutObject, When::Nth(1), Fault::LoseResponse(ClientErrorKind::Transient));
        c.put_object("log", Bytes::from_static(b"tail"), &at(5)).await.expect("the first attempt landed");
        assert_eq!(c.inner().inner().object_bytes("log").unwrap(), "head,tail");
        assert_eq!(c.inner().calls(S3Operation::PutObject), 2, "retried once, answered InvalidWriteOffset");
        // Another writer's append at the same offset is a conflict, retried or not.
        c.inner().inner().insert("log", "head,theirs");
        c.inner().fail_nth(S3Operation::PutObject, 3, ClientErrorKind::Throttled);
        let e = c.put_object("log", Bytes::from_static(b"tail"), &at(5)).await.unwrap_err();
        assert_eq!((e.kind, e.code.as_deref()), (ClientErrorKind::PreconditionFailed, Some("InvalidWriteOffset")));
        assert_eq!(c.inner().inner().object_bytes("log").unwrap(), "head,theirs");
    }

    #[tokio::test]
    async fn a_rename_whose_answer_was_lost_is_an_unknown_outcome() {
        let c = RetryClient::new(FaultClient::new(InMemoryClient::directory_bucket("b--use1-az4--x-s3"), 3), fast());
        c.inner().inner().insert("src", "bytes");
        c.inner().inject(S3Operation::RenameObject, When::Nth(1), Fault::LoseResponse(ClientErrorKind::Transient));
        let e = c.rename_object("src", "dst", &RenameOptions::default()).await.unwrap_err();
        assert_eq!(e.kind, ClientErrorKind::OutcomeUnknown, "{e}");
        assert_eq!(c.inner().inner().object_bytes("dst").unwrap(), "bytes");
        // Without a retry, a missing source is simply not found.
        let e = c.rename_object("src", "dst", &RenameOptions::default()).await.unwrap_err();
        assert_eq!(e.kind, ClientErrorKind::NotFound, "{e}");
    }

    #[tokio::test]
    async fn a_put_retried_into_another_writers_object_still_fails() {
        let c = client();
        for theirs in ["their bytes", "our bytez", "our bytes!"] {
            c.inner().inner().insert("k", theirs);
            c.inner().fail_nth(S3Operation::PutObject, 1, ClientErrorKind::Throttled);
            let e = c.put_object("k", Bytes::from_static(b"our bytes"), &new_object()).await.unwrap_err();
            assert_eq!(e.kind, ClientErrorKind::PreconditionFailed, "{theirs}");
            assert_eq!(c.inner().inner().object_bytes("k").unwrap(), theirs);
        }
        // Without a retry, a 412 is the answer: no check.
        let gets = c.inner().calls(S3Operation::GetObject);
        let e = c.put_object("k", Bytes::from_static(b"our bytes"), &new_object()).await.unwrap_err();
        assert_eq!(e.kind, ClientErrorKind::PreconditionFailed);
        assert_eq!(c.inner().calls(S3Operation::GetObject), gets);
    }

    #[tokio::test]
    async fn an_abort_whose_answer_was_lost_succeeds_on_the_retry() {
        let c = client();
        let id = c.create_multipart_upload("k", &PutOptions::default()).await.unwrap();
        c.inner().inject(
            S3Operation::AbortMultipartUpload,
            When::Nth(1),
            Fault::LoseResponse(ClientErrorKind::Transient),
        );
        c.abort_multipart_upload("k", &id).await.expect("aborted by the first attempt");
        assert_eq!(c.inner().inner().pending_uploads(), 0);
        assert_eq!(
            c.abort_multipart_upload("k", &id).await.unwrap_err().kind,
            ClientErrorKind::NotFound,
            "not retried"
        );
    }

    #[tokio::test]
    async fn a_resume_that_finds_a_new_version_fails_instead_of_mixing() {
        let c = client();
        let etag = c.inner().inner().insert("k", vec![1u8; 1_000_000]);
        c.inner().cut_get_body(When::Nth(1), 300_000);
        let r = c.get_object("k", 0..1_000_000, Some(&etag)).await.unwrap();
        c.inner().inner().insert("k", vec![2u8; 1_000_000]);
        let e = body(r).await.unwrap_err();
        assert_eq!(e.kind, ClientErrorKind::PreconditionFailed);
    }
}
