//! The S3 boundary: one small, object-safe trait that everything above talks to.
//!
//! A client is bound to one bucket at construction, so keys here are full S3 keys
//! (mount prefix included) and never carry a bucket name. Implementations:
//! [`aws::AwsClient`] (aws-sdk-s3, production), [`memory::InMemoryClient`] (tests, with
//! request counters), [`fault::FaultClient`] (wraps any client to inject failures, for tests),
//! [`metered::MeteredClient`] (wraps any client to count requests for metrics).
//! The same conformance suite (`tests/client_conformance.rs`) runs against the first two so the
//! mock cannot drift from a real server.
//!
//! Errors are semantic ([`ClientErrorKind`]) and carry the S3 code and request id; whether a
//! failure is worth retrying is decided here ([`ClientError::is_retryable`]), not at call sites.

pub mod aws;
pub mod cache;
pub mod fault;
pub mod memory;
pub mod metered;
pub mod retry;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::escape::escaped;

/// An object's entity tag, as S3 returns it (quotes included), compared byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Wraps an ETag string exactly as the server sent it.
    pub fn new(s: impl Into<String>) -> Self {
        ETag(s.into())
    }
    /// The ETag as sent on the wire (e.g. in `If-Match`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Metadata of one object, from HeadObject (ETag always present).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
    pub etag: ETag,
    /// `None` means STANDARD.
    pub storage_class: Option<String>,
    /// Its data is in an archive tier (GLACIER, DEEP_ARCHIVE, or an INTELLIGENT_TIERING archive
    /// access tier) and no restored copy exists: a GET fails until it is restored.
    pub archived: bool,
    /// User metadata (`x-amz-meta-*` headers), names lower-cased without the prefix. Servers
    /// send it on HeadObject only; listings never carry it.
    pub metadata: UserMetadata,
    /// `Content-Type` (HeadObject only).
    pub content_type: Option<String>,
    /// The other headers describing the body (HeadObject only).
    pub headers: ContentHeaders,
    /// The algorithm of the checksum S3 keeps for the object, when HeadObject was asked for it
    /// (checksum mode, `AwsClientConfig::head_checksums`); `None` otherwise, or if it has none.
    pub checksum: Option<ObjectChecksum>,
}

/// Standard headers describing an object's body, besides its Content-Type. A CopyObject with
/// `x-amz-metadata-directive: REPLACE` keeps only those it sends again. Untrusted values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentHeaders {
    /// `Content-Encoding`
    pub encoding: Option<String>,
    /// `Content-Language`
    pub language: Option<String>,
    /// `Content-Disposition`
    pub disposition: Option<String>,
    /// `Cache-Control`
    pub cache_control: Option<String>,
}

/// A checksum algorithm of an object (`x-amz-checksum-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectChecksum {
    Crc32,
    Crc32c,
    Crc64nvme,
    Sha1,
    Sha256,
}

/// User-defined object metadata: `x-amz-meta-NAME: VALUE` as `NAME -> VALUE`, names lower-cased.
/// Values come from the server and are untrusted.
pub type UserMetadata = BTreeMap<String, String>;

/// Whether objects of storage class `class` need a restore before they can be read.
/// GLACIER_IR is read directly.
pub fn is_archive_class(class: Option<&str>) -> bool {
    matches!(class, Some("GLACIER" | "DEEP_ARCHIVE"))
}

/// Whether an object cannot be read until restored, from HeadObject's storage class,
/// `x-amz-restore` (`ongoing-request="false", expiry-date="…"` once a copy is restored) and
/// `x-amz-archive-status` (INTELLIGENT_TIERING objects moved to an archive access tier).
pub fn is_archived(class: Option<&str>, restore: Option<&str>, archive_status: Option<&str>) -> bool {
    let restored = restore.is_some_and(|r| r.replace(' ', "").contains("ongoing-request=\"false\""));
    let archive_tier = matches!(archive_status, Some("ARCHIVE_ACCESS" | "DEEP_ARCHIVE_ACCESS"));
    (is_archive_class(class) || archive_tier) && !restored
}

/// Whether `bucket` names an S3 Express One Zone directory bucket (`base--zone-id--x-s3`) or an
/// access point of one (`…--xa-s3`): the SDK then sends its requests to the zone's endpoint,
/// signed with CreateSession sessions, and `--bucket-type` defaults to `directory`.
pub fn is_directory_bucket_name(bucket: &str) -> bool {
    bucket.ends_with("--x-s3") || bucket.ends_with("--xa-s3")
}

/// One object in a listing. Some S3-compatible servers omit ETags in listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
    pub etag: Option<ETag>,
    pub storage_class: Option<String>,
}

/// A ListObjectsV2 request. `delimiter: None` means no delimiter parameter is sent at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub continuation_token: Option<String>,
    /// 1..=1000
    pub max_keys: u32,
}

/// One page of a listing, in the server's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    /// Full prefixes ending in the delimiter, e.g. `photos/2024/`.
    pub common_prefixes: Vec<String>,
    /// Present when the listing is truncated.
    pub next_continuation_token: Option<String>,
}

/// Body of a GET: chunks in order, covering exactly the requested range.
pub type GetStream = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// Result of a ranged GET: the object's identity at the time of the request, and its bytes.
pub struct GetObjectResponse {
    pub etag: ETag,
    pub object_size: u64,
    pub body: GetStream,
}

impl fmt::Debug for GetObjectResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetObjectResponse")
            .field("etag", &self.etag)
            .field("object_size", &self.object_size)
            .finish_non_exhaustive()
    }
}

/// Options applied to objects this client creates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Send `If-None-Match: *`: fail with [`ClientErrorKind::PreconditionFailed`] if the key exists.
    pub if_none_match_any: bool,
    /// Send `If-Match` (PutObject, CompleteMultipartUpload, CopyObject's destination): replace
    /// the object only while it still has this ETag. A different ETag fails with
    /// [`ClientErrorKind::PreconditionFailed`], a missing key with [`ClientErrorKind::NotFound`].
    pub if_match: Option<ETag>,
    /// User metadata to store with the object (`x-amz-meta-*`), names without the prefix.
    pub metadata: UserMetadata,
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    /// Content-Encoding, Cache-Control and the like (none unless copied from an object).
    pub headers: ContentHeaders,
    /// `AES256`, `aws:kms` or `aws:kms:dsse`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Send a CRC32C checksum with each part / object.
    pub checksum_crc32c: bool,
    /// PutObject only: append the body to the object at this offset (`x-amz-write-offset-bytes`,
    /// directory buckets). The offset must equal the object's current size (0 creates it); any
    /// other size fails with [`ClientErrorKind::PreconditionFailed`] and the S3 code
    /// `InvalidWriteOffset`, so a concurrent writer is detected, never merged.
    pub write_offset: Option<u64>,
    /// PutObject only: checksum with this algorithm instead of the client's own choice (an
    /// append carries the algorithm of the object it extends).
    pub checksum_algorithm: Option<ObjectChecksum>,
}

/// Conditions of a RenameObject (directory buckets). Each failed condition is
/// [`ClientErrorKind::PreconditionFailed`]; nothing is renamed then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenameOptions {
    /// `x-amz-rename-source-if-match`: the source must still have this ETag.
    pub source_if_match: Option<ETag>,
    /// `If-Match`: the destination must exist with this ETag (replace exactly that version).
    pub destination_if_match: Option<ETag>,
    /// `If-None-Match: *`: the destination must not exist (never replace).
    pub destination_if_none_match_any: bool,
}

/// What the server said about a newly written object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    pub etag: ETag,
}

/// Options of a CopyObject within the bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// `x-amz-copy-source-if-match`: copy only while the source still has this ETag, else
    /// [`ClientErrorKind::PreconditionFailed`] and nothing is written.
    pub source_if_match: Option<ETag>,
    /// `x-amz-metadata-directive: REPLACE`: the copy gets `dest.metadata`, `dest.content_type`
    /// and `dest.headers` instead of the source's. Required to copy an object onto itself.
    pub replace_metadata: bool,
    /// The destination: its conditions (`if_none_match_any`, `if_match`), storage class
    /// (S3 makes a copy STANDARD unless told otherwise), encryption and, with
    /// `replace_metadata`, its metadata.
    pub dest: PutOptions,
}

/// The largest object a single CopyObject (and one UploadPartCopy range) may copy: 5 GiB.
pub const MAX_COPY_OBJECT_SIZE: u64 = 5 << 30;

/// A part accepted by UploadPart, as CompleteMultipartUpload needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedPart {
    /// 1..=10000
    pub part_number: u32,
    pub etag: ETag,
    /// Base64 CRC32C the server acknowledged, when checksums are on.
    pub checksum_crc32c: Option<String>,
}

/// The S3 operations the file system uses. Object-safe: use as `Arc<dyn ObjectClient>`.
#[async_trait]
pub trait ObjectClient: Send + Sync + fmt::Debug + 'static {
    /// The bucket this client talks to.
    fn bucket(&self) -> &str;

    /// HeadObject. A missing key is [`ClientErrorKind::NotFound`].
    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError>;

    /// Ranged GetObject of `range` (end exclusive, non-empty). With `if_match`, a changed object
    /// fails with [`ClientErrorKind::PreconditionFailed`] instead of returning other bytes.
    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError>;

    /// One ListObjectsV2 page.
    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError>;

    /// PutObject of a whole body.
    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError>;

    /// CreateMultipartUpload; returns the upload id.
    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError>;

    /// UploadPart. With `options.checksum_crc32c`, the client computes the part's checksum (the
    /// only pass over its bytes for it), sends it, and fails with an error if the server
    /// acknowledges another one.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError>;

    /// CompleteMultipartUpload with the parts in order.
    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError>;

    /// AbortMultipartUpload.
    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), ClientError>;

    /// DeleteObject. Deleting a missing key succeeds (as S3 does).
    async fn delete_object(&self, key: &str) -> Result<(), ClientError>;

    /// CopyObject within the bucket (at most [`MAX_COPY_OBJECT_SIZE`] bytes; larger objects are
    /// copied with [`ObjectClient::upload_part_copy`]).
    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &CopyOptions,
    ) -> Result<PutResult, ClientError>;

    /// UploadPartCopy: part `part_number` of upload `upload_id` (for `key`) becomes the bytes
    /// `range` (end exclusive, non-empty) of `source_key`, copied by the server. With
    /// `source_if_match`, a changed source fails with [`ClientErrorKind::PreconditionFailed`].
    #[allow(clippy::too_many_arguments)]
    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_key: &str,
        range: Range<u64>,
        source_if_match: Option<&ETag>,
    ) -> Result<UploadedPart, ClientError>;

    /// RenameObject within the bucket (S3 Express One Zone directory buckets): atomically moves
    /// `source_key` to `dest_key`, replacing the destination unless `options` forbid it. A
    /// missing source is [`ClientErrorKind::NotFound`]; a bucket without RenameObject answers
    /// 501 `NotImplemented` ([`ClientErrorKind::Other`], see [`ClientError::is_not_implemented`]).
    async fn rename_object(&self, source_key: &str, dest_key: &str, options: &RenameOptions)
    -> Result<(), ClientError>;

    /// Told after server-side copies pinned to their sources' ETags: each destination's bytes
    /// are provably its source's. A caching layer reuses what it holds of the sources for the
    /// destinations; the others (default) do nothing. Never fails: it is only an optimisation.
    async fn copied(&self, copies: &[PinnedCopy]) {
        let _ = copies;
    }
}

/// A server-side copy pinned to its source's version (`x-amz-copy-source-if-match` on the
/// CopyObject, or on every UploadPartCopy of a multipart copy covering the whole source):
/// `dest_key` at `dest_etag` holds the `size` bytes `source_key` had at `source_etag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedCopy {
    pub source_key: String,
    pub source_etag: ETag,
    pub dest_key: String,
    pub dest_etag: ETag,
    pub size: u64,
}

/// What kind of failure a client call met; decides retries and the errno the user sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientErrorKind {
    /// NoSuchKey / 404 on an object.
    NotFound,
    /// NoSuchBucket.
    NoSuchBucket,
    /// 412: If-Match / If-None-Match failed.
    PreconditionFailed,
    /// 403 AccessDenied, signature and credential problems.
    AccessDenied,
    /// The request was sent to the wrong region (301/400 with a region hint).
    WrongRegion,
    /// 503 SlowDown, 429 and other throttling.
    Throttled,
    /// 5xx, connection failures, timeouts, bodies cut short: worth retrying.
    Transient,
    /// 416 or a range the object does not have.
    InvalidRange,
    /// Anything else the server rejected (400s): not worth retrying.
    Other,
    /// A write (PutObject, CompleteMultipartUpload) whose effect is unknown: the server answered
    /// 2xx with a body that could not be read, or a retry was refused in a way that an earlier
    /// attempt, whose answer was lost, would explain. Not retried: the caller settles it by
    /// asking S3 what the key holds.
    OutcomeUnknown,
}

/// A failed client call, with everything an operator needs to understand it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
// Code, request id and message come from the server: escaped, so they cannot forge log lines.
#[error("{operation} failed: {kind:?}{}{}{}: {}",
    code.as_deref().map(|c| format!(" ({})", escaped(c))).unwrap_or_default(),
    status.map(|s| format!(" HTTP {s}")).unwrap_or_default(),
    request_id.as_deref().map(|r| format!(" request id {}", escaped(r))).unwrap_or_default(),
    escaped(message))]
pub struct ClientError {
    pub kind: ClientErrorKind,
    /// The S3 operation, e.g. `GetObject`.
    pub operation: &'static str,
    /// The S3 error code, e.g. `NoSuchBucket`, when the server sent one.
    pub code: Option<String>,
    pub status: Option<u16>,
    pub request_id: Option<String>,
    pub message: String,
}

impl ClientError {
    /// An error with no server details (used by the in-memory client and for local failures).
    pub fn new(kind: ClientErrorKind, operation: &'static str, message: impl Into<String>) -> Self {
        ClientError { kind, operation, code: None, status: None, request_id: None, message: message.into() }
    }

    /// The server does not offer this operation (501 `NotImplemented`): e.g. RenameObject or a
    /// write offset on a general purpose bucket.
    pub fn is_not_implemented(&self) -> bool {
        self.code.as_deref() == Some("NotImplemented") || self.status == Some(501)
    }

    /// Throttling, 5xx and network failures are retryable; 4xx answers are final.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ClientErrorKind::Throttled | ClientErrorKind::Transient)
    }
}

/// The S3 request types, for counters and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum S3Operation {
    HeadObject,
    GetObject,
    ListObjectsV2,
    PutObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    DeleteObject,
    CopyObject,
    UploadPartCopy,
    RenameObject,
}

impl S3Operation {
    /// Every operation, for iterating over counters.
    pub const ALL: [S3Operation; 12] = [
        S3Operation::HeadObject,
        S3Operation::GetObject,
        S3Operation::ListObjectsV2,
        S3Operation::PutObject,
        S3Operation::CreateMultipartUpload,
        S3Operation::UploadPart,
        S3Operation::CompleteMultipartUpload,
        S3Operation::AbortMultipartUpload,
        S3Operation::DeleteObject,
        S3Operation::CopyObject,
        S3Operation::UploadPartCopy,
        S3Operation::RenameObject,
    ];

    /// The S3 API name, e.g. `GetObject`.
    pub fn name(self) -> &'static str {
        match self {
            S3Operation::HeadObject => "HeadObject",
            S3Operation::GetObject => "GetObject",
            S3Operation::ListObjectsV2 => "ListObjectsV2",
            S3Operation::PutObject => "PutObject",
            S3Operation::CreateMultipartUpload => "CreateMultipartUpload",
            S3Operation::UploadPart => "UploadPart",
            S3Operation::CompleteMultipartUpload => "CompleteMultipartUpload",
            S3Operation::AbortMultipartUpload => "AbortMultipartUpload",
            S3Operation::DeleteObject => "DeleteObject",
            S3Operation::CopyObject => "CopyObject",
            S3Operation::UploadPartCopy => "UploadPartCopy",
            S3Operation::RenameObject => "RenameObject",
        }
    }
}

#[cfg(test)]
mod archive_tests {
    use super::*;

    #[test]
    fn archived_until_restored() {
        assert!(is_archived(Some("GLACIER"), None, None));
        assert!(is_archived(Some("DEEP_ARCHIVE"), Some("ongoing-request=\"true\""), None));
        assert!(!is_archived(
            Some("GLACIER"),
            Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""),
            None
        ));
        assert!(!is_archived(Some("GLACIER_IR"), None, None));
        assert!(!is_archived(None, None, None));
        assert!(is_archived(Some("INTELLIGENT_TIERING"), None, Some("ARCHIVE_ACCESS")));
        assert!(!is_archived(
            Some("INTELLIGENT_TIERING"),
            Some("ongoing-request=\"false\""),
            Some("DEEP_ARCHIVE_ACCESS")
        ));
    }
}
