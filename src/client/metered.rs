//! [`MeteredClient`]: wraps any [`ObjectClient`] and reports every call to the [`Metrics`]
//! registry: one request per call, its latency, bytes, and the error code of failures.
//!
//! What it sees is what the client trait sees: retries made below it are invisible (a call that
//! succeeded on its third SDK attempt counts once, S3 billed three). So `run` puts it directly
//! around the AWS client, whose SDK makes one attempt per call, and under the
//! [`super::retry::RetryClient`]: every attempt is then one call here, and the counts equal the
//! server's (the tests check them against a server's own counts). A call is counted when it
//! starts, so a call its caller abandons in flight still counts (it has no latency). GET latency
//! is time to the response headers; bytes in are counted as the body streams, bytes out when S3
//! accepts a PUT or part.
//!
//! Every failed request is logged here once at DEBUG with its S3 request id, so `--debug` gives
//! the id to quote to AWS support even for failures the file system absorbs (a HEAD 404 during
//! a lookup) or reports later (the user-facing failure is logged by the FUSE adapter).

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::escape::escaped;
use futures::StreamExt;
use tracing::debug;

use super::{
    ClientError, CopyOptions, ETag, GetObjectResponse, ListPage, ListRequest, ObjectClient, ObjectMeta, PutOptions,
    PutResult, RenameOptions, S3Operation, UploadedPart,
};

/// Where a [`MeteredClient`] reports: the metrics registry implements it (`crate::metrics`),
/// so the client layer does not depend on the metrics layer.
pub trait RequestSink: Send + Sync + std::fmt::Debug {
    /// A request of `op` is about to be sent.
    fn s3_request_sent(&self, op: S3Operation);
    /// A request of `op` was answered after `elapsed`, with `error` if it failed.
    fn s3_request_answered(&self, op: S3Operation, elapsed: std::time::Duration, error: Option<&ClientError>);
    /// A GET body failed after its headers arrived.
    fn s3_body_error(&self, error: &ClientError);
    /// Body bytes received.
    fn add_bytes_in(&self, n: u64);
    /// Body bytes sent.
    fn add_bytes_out(&self, n: u64);
}

/// A shared sink is a sink (so `&Arc<Metrics>` can be passed where a sink is asked for).
impl<T: RequestSink + ?Sized> RequestSink for Arc<T> {
    fn s3_request_sent(&self, op: S3Operation) {
        (**self).s3_request_sent(op);
    }
    fn s3_request_answered(&self, op: S3Operation, elapsed: std::time::Duration, error: Option<&ClientError>) {
        (**self).s3_request_answered(op, elapsed, error);
    }
    fn s3_body_error(&self, error: &ClientError) {
        (**self).s3_body_error(error);
    }
    fn add_bytes_in(&self, n: u64) {
        (**self).add_bytes_in(n);
    }
    fn add_bytes_out(&self, n: u64) {
        (**self).add_bytes_out(n);
    }
}

/// A client that counts what it passes to `inner`.
#[derive(Debug)]
pub struct MeteredClient<C: ObjectClient> {
    inner: C,
    metrics: Arc<dyn RequestSink>,
}

impl<C: ObjectClient> MeteredClient<C> {
    /// Wraps `inner`, reporting to `metrics`.
    pub fn new(inner: C, metrics: Arc<dyn RequestSink>) -> Self {
        MeteredClient { inner, metrics }
    }

    /// The wrapped client.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

/// Runs one S3 call of `op` on `key`, counting it in `metrics` and logging a failure (with its
/// request id) at DEBUG. Also for calls outside the trait, such as the bucket probe at mount.
pub async fn metered<T>(
    metrics: &dyn RequestSink,
    op: S3Operation,
    key: &str,
    call: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    metrics.s3_request_sent(op);
    let started = Instant::now();
    let result = call.await;
    let error = result.as_ref().err();
    metrics.s3_request_answered(op, started.elapsed(), error);
    if let Some(e) = error {
        log_failure(op, key, e);
    }
    result
}

fn log_failure(op: S3Operation, key: &str, e: &ClientError) {
    debug!(
        operation = op.name(),
        key,
        status = e.status.unwrap_or_default(),
        code = e.code.as_deref().unwrap_or("-"),
        request_id = e.request_id.as_deref().unwrap_or("-"),
        "S3 request failed: {}",
        escaped(&e.message)
    );
}

#[async_trait]
impl<C: ObjectClient> ObjectClient for MeteredClient<C> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        metered(&self.metrics, S3Operation::HeadObject, key, self.inner.head_object(key)).await
    }

    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        let call = self.inner.get_object(key, range, if_match);
        let mut response = metered(&self.metrics, S3Operation::GetObject, key, call).await?;
        let (metrics, key) = (self.metrics.clone(), key.to_owned());
        response.body = Box::pin(response.body.inspect(move |chunk| match chunk {
            Ok(bytes) => metrics.add_bytes_in(bytes.len() as u64),
            Err(e) => {
                metrics.s3_body_error(e);
                log_failure(S3Operation::GetObject, &key, e);
            }
        }));
        Ok(response)
    }

    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        metered(&self.metrics, S3Operation::ListObjectsV2, &request.prefix, self.inner.list_objects(request)).await
    }

    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError> {
        let size = body.len() as u64;
        let result =
            metered(&self.metrics, S3Operation::PutObject, key, self.inner.put_object(key, body, options)).await;
        if result.is_ok() {
            self.metrics.add_bytes_out(size);
        }
        result
    }

    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError> {
        let call = self.inner.create_multipart_upload(key, options);
        metered(&self.metrics, S3Operation::CreateMultipartUpload, key, call).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        let size = body.len() as u64;
        let call = self.inner.upload_part(key, upload_id, part_number, body, options);
        let result = metered(&self.metrics, S3Operation::UploadPart, key, call).await;
        if result.is_ok() {
            self.metrics.add_bytes_out(size);
        }
        result
    }

    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        let call = self.inner.complete_multipart_upload(key, upload_id, parts, options);
        metered(&self.metrics, S3Operation::CompleteMultipartUpload, key, call).await
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), ClientError> {
        let call = self.inner.abort_multipart_upload(key, upload_id);
        metered(&self.metrics, S3Operation::AbortMultipartUpload, key, call).await
    }

    async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        metered(&self.metrics, S3Operation::DeleteObject, key, self.inner.delete_object(key)).await
    }

    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &CopyOptions,
    ) -> Result<PutResult, ClientError> {
        let call = self.inner.copy_object(source_key, dest_key, options);
        metered(&self.metrics, S3Operation::CopyObject, dest_key, call).await
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
        let call = self.inner.upload_part_copy(key, upload_id, part_number, source_key, range, source_if_match);
        metered(&self.metrics, S3Operation::UploadPartCopy, key, call).await
    }

    async fn rename_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &RenameOptions,
    ) -> Result<(), ClientError> {
        let call = self.inner.rename_object(source_key, dest_key, options);
        metered(&self.metrics, S3Operation::RenameObject, dest_key, call).await
    }

    async fn copied(&self, copies: &[super::PinnedCopy]) {
        self.inner.copied(copies).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientErrorKind;
    use crate::client::fault::FaultClient;
    use crate::client::memory::InMemoryClient;
    // The registry is the sink in production; the test reads its counters back.
    use crate::metrics::Metrics;

    fn client() -> (MeteredClient<FaultClient<InMemoryClient>>, Arc<Metrics>) {
        let inner = FaultClient::new(InMemoryClient::new("b"), 7);
        inner.inner().insert("k", vec![7u8; 100_000]);
        let metrics = Arc::new(Metrics::default());
        (MeteredClient::new(inner, metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn counts_every_call_its_bytes_and_its_errors() {
        let (c, metrics) = client();
        c.head_object("k").await.unwrap();
        assert!(c.head_object("missing").await.is_err());
        let mut body = c.get_object("k", 0..60_000, None).await.unwrap().body;
        while body.next().await.is_some() {}
        c.list_objects(&ListRequest { max_keys: 10, ..ListRequest::default() }).await.unwrap();
        c.put_object("new", Bytes::from_static(b"12345"), &PutOptions::default()).await.unwrap();
        let id = c.create_multipart_upload("big", &PutOptions::default()).await.unwrap();
        let part = c.upload_part("big", &id, 1, Bytes::from(vec![1u8; 1000]), &PutOptions::default()).await.unwrap();
        c.complete_multipart_upload("big", &id, &[part], &PutOptions::default()).await.unwrap();
        c.delete_object("new").await.unwrap();
        c.inner().fail_nth(S3Operation::CopyObject, 1, ClientErrorKind::Throttled);
        assert!(c.copy_object("k", "k2", &Default::default()).await.is_err());

        let s = metrics.snapshot();
        for op in S3Operation::ALL {
            assert_eq!(s.s3_op(op).requests, c.inner().calls(op), "{op:?}");
        }
        assert_eq!(s.s3_op(S3Operation::HeadObject).errors, 1);
        assert_eq!(s.s3_op(S3Operation::CopyObject).billable(), 0, "a 503 is not billed");
        assert_eq!((s.bytes_in, s.bytes_out), (60_000, 1_005));
        assert_eq!(s.errors_by_code.get("NoSuchKey"), Some(&1));
        assert_eq!(s.errors_by_code.get("Throttled"), Some(&1));
    }

    #[tokio::test]
    async fn a_call_abandoned_in_flight_is_still_counted() {
        let (c, metrics) = client();
        c.inner().delay(S3Operation::HeadObject, std::time::Duration::from_secs(60));
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(10), c.head_object("k")).await;
        assert!(abandoned.is_err(), "dropped while in flight");
        let head = metrics.snapshot().s3_op(S3Operation::HeadObject).clone();
        assert_eq!((head.requests, head.errors, head.latency.count), (1, 0, 0));
    }

    #[tokio::test]
    async fn counts_a_body_cut_short_as_an_error() {
        let (c, metrics) = client();
        c.inner().cut_get_body(crate::client::fault::When::Nth(1), 1000);
        let mut body = c.get_object("k", 0..50_000, None).await.unwrap().body;
        while body.next().await.is_some() {}
        let s = metrics.snapshot();
        assert_eq!(s.s3_op(S3Operation::GetObject).requests, 1);
        assert_eq!(s.bytes_in, 1000);
        assert_eq!(s.errors_by_code.get("Transient"), Some(&1));
    }
}
