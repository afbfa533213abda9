//! [`InMemoryClient`]: a bucket in a `BTreeMap`, for fast tests of everything above the client.
//!
//! It behaves as S3 does where the file system can tell: lexicographic, paginated listings with
//! delimiters and continuation tokens; ranged GETs; If-Match and If-None-Match; multipart
//! uploads that stay invisible until completed; user metadata; server-side copies (CopyObject
//! with its metadata directive and source pinning, UploadPartCopy). It counts every request by
//! [`S3Operation`] so tests can assert request counts.
//!
//! [`InMemoryClient::directory_bucket`] behaves as an S3 Express One Zone directory bucket
//! instead: listings come back in no particular order (a new order for every listing, stable
//! across its pages), RenameObject and appends (PutObject with a write offset) work. On a general
//! purpose bucket both are refused with 501 `NotImplemented`, as S3 does.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{
    ClientError, ClientErrorKind, CopyOptions, ETag, GetObjectResponse, ListPage, ListRequest, ListedObject,
    MAX_COPY_OBJECT_SIZE, ObjectClient, ObjectMeta, PutOptions, PutResult, RenameOptions, S3Operation, UploadedPart,
    UserMetadata,
};

/// Largest chunk a GET body yields, so readers see multi-chunk streams as from a network.
const GET_CHUNK: usize = 256 * 1024;

#[derive(Clone, Debug)]
struct StoredObject {
    data: Bytes,
    etag: ETag,
    last_modified: SystemTime,
    storage_class: Option<String>,
    metadata: UserMetadata,
    content_type: Option<String>,
    headers: super::ContentHeaders,
}

#[derive(Debug, Default)]
struct PendingUpload {
    key: String,
    parts: BTreeMap<u32, (Bytes, ETag)>,
    options: PutOptions,
}

/// An in-memory bucket implementing [`ObjectClient`].
#[derive(Debug)]
pub struct InMemoryClient {
    bucket: String,
    objects: Mutex<BTreeMap<String, StoredObject>>,
    uploads: Mutex<HashMap<String, PendingUpload>>,
    counters: Mutex<HashMap<S3Operation, u64>>,
    next_id: AtomicU64,
    /// An S3 Express One Zone directory bucket (see the module notes).
    directory: bool,
}

impl InMemoryClient {
    /// An empty bucket.
    pub fn new(bucket: impl Into<String>) -> Self {
        InMemoryClient {
            bucket: bucket.into(),
            objects: Mutex::default(),
            uploads: Mutex::default(),
            counters: Mutex::default(),
            next_id: AtomicU64::new(1),
            directory: false,
        }
    }

    /// An empty directory bucket: unordered listings, RenameObject and appends.
    pub fn directory_bucket(bucket: impl Into<String>) -> Self {
        InMemoryClient { directory: true, ..Self::new(bucket) }
    }

    /// Adds or replaces an object directly (as "another client" would), with a fresh ETag.
    pub fn insert(&self, key: &str, data: impl Into<Bytes>) -> ETag {
        self.store(key, data.into(), None)
    }

    /// Adds an object with a storage class (e.g. `GLACIER`).
    pub fn insert_with_class(&self, key: &str, data: impl Into<Bytes>, class: &str) -> ETag {
        self.store(key, data.into(), Some(class.to_string()))
    }

    /// Removes an object directly, without counting a request.
    pub fn remove(&self, key: &str) {
        self.objects.lock().unwrap().remove(key);
    }

    /// The bytes of an object, without counting a request.
    pub fn object_bytes(&self, key: &str) -> Option<Bytes> {
        self.objects.lock().unwrap().get(key).map(|o| o.data.clone())
    }

    /// All keys, in order.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn pending_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }

    /// How many requests of `op` were made.
    pub fn count(&self, op: S3Operation) -> u64 {
        self.counters.lock().unwrap().get(&op).copied().unwrap_or(0)
    }

    /// Total requests of all kinds.
    pub fn total_requests(&self) -> u64 {
        self.counters.lock().unwrap().values().sum()
    }

    /// Sets every counter back to zero.
    pub fn reset_counts(&self) {
        self.counters.lock().unwrap().clear();
    }

    fn record(&self, op: S3Operation) {
        *self.counters.lock().unwrap().entry(op).or_insert(0) += 1;
    }

    fn fresh_etag(&self) -> ETag {
        ETag::new(format!("\"mem-{:016x}\"", self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    fn store(&self, key: &str, data: Bytes, storage_class: Option<String>) -> ETag {
        let etag = self.fresh_etag();
        let object = StoredObject {
            data,
            etag: etag.clone(),
            last_modified: SystemTime::now(),
            storage_class,
            metadata: UserMetadata::new(),
            content_type: None,
            headers: super::ContentHeaders::default(),
        };
        self.objects.lock().unwrap().insert(key.to_string(), object);
        etag
    }

    fn not_found(op: S3Operation, key: &str) -> ClientError {
        ClientError {
            code: Some("NoSuchKey".into()),
            status: Some(404),
            ..ClientError::new(ClientErrorKind::NotFound, op.name(), format!("no object at key {key:?}"))
        }
    }

    fn precondition_failed(op: S3Operation, key: &str) -> ClientError {
        ClientError {
            code: Some("PreconditionFailed".into()),
            status: Some(412),
            ..ClientError::new(
                ClientErrorKind::PreconditionFailed,
                op.name(),
                format!("precondition failed for {key:?}"),
            )
        }
    }

    /// The user metadata of an object, without counting a request.
    pub fn object_metadata(&self, key: &str) -> Option<UserMetadata> {
        self.objects.lock().unwrap().get(key).map(|o| o.metadata.clone())
    }

    fn invalid_request(op: S3Operation, message: String) -> ClientError {
        ClientError {
            code: Some("InvalidRequest".into()),
            status: Some(400),
            ..ClientError::new(ClientErrorKind::Other, op.name(), message)
        }
    }

    /// A copy of the source object, unless it is missing or no longer has the pinned ETag.
    fn copy_source(&self, op: S3Operation, key: &str, if_match: Option<&ETag>) -> Result<StoredObject, ClientError> {
        let source = self.objects.lock().unwrap().get(key).cloned().ok_or_else(|| Self::not_found(op, key))?;
        if if_match.is_some_and(|e| *e != source.etag) {
            return Err(Self::precondition_failed(op, key));
        }
        Ok(source)
    }

    /// Stores `data` under `key` unless `If-None-Match: *` or `If-Match` forbids it.
    fn conditional_store(
        &self,
        op: S3Operation,
        key: &str,
        data: Bytes,
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        let mut objects = self.objects.lock().unwrap();
        if options.if_none_match_any && objects.contains_key(key) {
            return Err(Self::precondition_failed(op, key));
        }
        if let Some(expected) = &options.if_match {
            match objects.get(key) {
                None => return Err(Self::not_found(op, key)),
                Some(o) if o.etag != *expected => return Err(Self::precondition_failed(op, key)),
                Some(_) => {}
            }
        }
        let data = match options.write_offset {
            None => data,
            Some(offset) => {
                if !self.directory || op != S3Operation::PutObject {
                    return Err(not_implemented(op, "a write offset"));
                }
                let current = objects.get(key).map(|o| o.data.clone()).unwrap_or_default();
                if current.len() as u64 != offset {
                    return Err(ClientError {
                        code: Some("InvalidWriteOffset".into()),
                        status: Some(400),
                        ..ClientError::new(
                            ClientErrorKind::PreconditionFailed,
                            op.name(),
                            format!("write offset {offset} of {key:?}, which holds {} bytes", current.len()),
                        )
                    });
                }
                let mut joined = BytesMut::with_capacity(current.len() + data.len());
                joined.extend_from_slice(&current);
                joined.extend_from_slice(&data);
                joined.freeze()
            }
        };
        let etag = self.fresh_etag();
        // An append to an existing object keeps its class and metadata, as S3 does.
        let kept = options.write_offset.filter(|&o| o > 0).and_then(|_| objects.get(key));
        let object = StoredObject {
            data,
            etag: etag.clone(),
            last_modified: SystemTime::now(),
            storage_class: kept.map_or_else(|| options.storage_class.clone(), |o| o.storage_class.clone()),
            metadata: kept.map_or_else(|| options.metadata.clone(), |o| o.metadata.clone()),
            content_type: kept.map_or_else(|| options.content_type.clone(), |o| o.content_type.clone()),
            headers: kept.map_or_else(|| options.headers.clone(), |o| o.headers.clone()),
        };
        objects.insert(key.to_string(), object);
        Ok(PutResult { etag })
    }
}

#[async_trait]
impl ObjectClient for InMemoryClient {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        self.record(S3Operation::HeadObject);
        let objects = self.objects.lock().unwrap();
        let o = objects.get(key).ok_or_else(|| Self::not_found(S3Operation::HeadObject, key))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: o.data.len() as u64,
            last_modified: o.last_modified,
            etag: o.etag.clone(),
            storage_class: o.storage_class.clone(),
            archived: super::is_archive_class(o.storage_class.as_deref()),
            metadata: o.metadata.clone(),
            content_type: o.content_type.clone(),
            headers: o.headers.clone(),
            checksum: None,
        })
    }

    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        self.record(S3Operation::GetObject);
        let o = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| Self::not_found(S3Operation::GetObject, key))?;
        if if_match.is_some_and(|e| *e != o.etag) {
            return Err(Self::precondition_failed(S3Operation::GetObject, key));
        }
        let size = o.data.len() as u64;
        if range.start >= range.end || range.start >= size {
            return Err(ClientError {
                code: Some("InvalidRange".into()),
                status: Some(416),
                ..ClientError::new(
                    ClientErrorKind::InvalidRange,
                    "GetObject",
                    format!("range {range:?} of {size} bytes"),
                )
            });
        }
        let body = o.data.slice(range.start as usize..range.end.min(size) as usize);
        let chunks: Vec<Result<Bytes, ClientError>> =
            (0..body.len()).step_by(GET_CHUNK).map(|at| Ok(body.slice(at..(at + GET_CHUNK).min(body.len())))).collect();
        Ok(GetObjectResponse { etag: o.etag, object_size: size, body: Box::pin(futures::stream::iter(chunks)) })
    }

    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        self.record(S3Operation::ListObjectsV2);
        if self.directory {
            return self.list_unordered(request);
        }
        let objects = self.objects.lock().unwrap();
        let max_keys = request.max_keys.clamp(1, 1000) as usize;
        // The token is the last key or common prefix returned; everything up to it is done.
        let after = request.continuation_token.clone();
        let mut page = ListPage::default();
        let mut last: Option<String> = None;
        for (key, o) in objects.range(request.prefix.clone()..) {
            if !key.starts_with(&request.prefix) {
                break;
            }
            if after.as_deref().is_some_and(|a| key.as_str() <= a || key.starts_with(a) && a.ends_with('/')) {
                continue;
            }
            let rest = &key[request.prefix.len()..];
            let entry = match request.delimiter.as_deref().and_then(|d| rest.find(d).map(|i| i + d.len())) {
                Some(end) => {
                    let common = format!("{}{}", request.prefix, &rest[..end]);
                    if page.common_prefixes.last() == Some(&common) {
                        continue;
                    }
                    Err(common)
                }
                None => Ok(ListedObject {
                    key: key.clone(),
                    size: o.data.len() as u64,
                    last_modified: o.last_modified,
                    etag: Some(o.etag.clone()),
                    storage_class: o.storage_class.clone(),
                }),
            };
            if page.objects.len() + page.common_prefixes.len() == max_keys {
                page.next_continuation_token = last;
                return Ok(page);
            }
            match entry {
                Ok(object) => {
                    last = Some(object.key.clone());
                    page.objects.push(object);
                }
                Err(common) => {
                    last = Some(common.clone());
                    page.common_prefixes.push(common);
                }
            }
        }
        Ok(page)
    }

    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError> {
        self.record(S3Operation::PutObject);
        self.conditional_store(S3Operation::PutObject, key, body, options)
    }

    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError> {
        self.record(S3Operation::CreateMultipartUpload);
        let id = format!("upload-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let upload = PendingUpload { key: key.to_string(), parts: BTreeMap::new(), options: options.clone() };
        self.uploads.lock().unwrap().insert(id.clone(), upload);
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        self.record(S3Operation::UploadPart);
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads.get_mut(upload_id).filter(|u| u.key == key).ok_or_else(|| {
            ClientError::new(ClientErrorKind::NotFound, "UploadPart", format!("no upload {upload_id}"))
        })?;
        let etag = self.fresh_etag();
        let checksum = options.checksum_crc32c.then(|| crc32c_base64(&body));
        upload.parts.insert(part_number, (body, etag.clone()));
        Ok(UploadedPart { part_number, etag, checksum_crc32c: checksum })
    }

    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        self.record(S3Operation::CompleteMultipartUpload);
        let op = S3Operation::CompleteMultipartUpload;
        let upload = {
            let uploads = self.uploads.lock().unwrap();
            match uploads.get(upload_id) {
                Some(u) if u.key == key => {
                    PendingUpload { key: u.key.clone(), parts: u.parts.clone(), options: u.options.clone() }
                }
                _ => {
                    return Err(ClientError::new(
                        ClientErrorKind::NotFound,
                        op.name(),
                        format!("no upload {upload_id}"),
                    ));
                }
            }
        };
        let mut data = BytesMut::new();
        for part in parts {
            match upload.parts.get(&part.part_number) {
                Some((bytes, etag)) if *etag == part.etag => data.extend_from_slice(bytes),
                _ => {
                    return Err(ClientError {
                        code: Some("InvalidPart".into()),
                        status: Some(400),
                        ..ClientError::new(
                            ClientErrorKind::Other,
                            op.name(),
                            format!("part {} not uploaded", part.part_number),
                        )
                    });
                }
            }
        }
        // Metadata and storage class were fixed at creation; the conditions are Complete's own.
        let stored = PutOptions {
            if_none_match_any: options.if_none_match_any,
            if_match: options.if_match.clone(),
            ..upload.options
        };
        let result = self.conditional_store(op, key, data.freeze(), &stored)?;
        self.uploads.lock().unwrap().remove(upload_id);
        Ok(result)
    }

    async fn abort_multipart_upload(&self, _key: &str, upload_id: &str) -> Result<(), ClientError> {
        self.record(S3Operation::AbortMultipartUpload);
        match self.uploads.lock().unwrap().remove(upload_id) {
            Some(_) => Ok(()),
            // As S3: 404 NoSuchUpload for an upload that is not (or no longer) there.
            None => Err(ClientError {
                code: Some("NoSuchUpload".into()),
                status: Some(404),
                ..ClientError::new(ClientErrorKind::NotFound, "AbortMultipartUpload", format!("no upload {upload_id}"))
            }),
        }
    }

    async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        self.record(S3Operation::DeleteObject);
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &CopyOptions,
    ) -> Result<PutResult, ClientError> {
        const OP: S3Operation = S3Operation::CopyObject;
        self.record(OP);
        let source = self.copy_source(OP, source_key, options.source_if_match.as_ref())?;
        if source.data.len() as u64 > MAX_COPY_OBJECT_SIZE {
            return Err(Self::invalid_request(OP, format!("{source_key:?} is larger than 5 GiB: use UploadPartCopy")));
        }
        // As S3: copying an object onto itself must change something.
        if source_key == dest_key && !options.replace_metadata && options.dest.storage_class.is_none() {
            return Err(Self::invalid_request(OP, format!("copying {source_key:?} onto itself changes nothing")));
        }
        let mut dest = options.dest.clone();
        if !options.replace_metadata {
            dest.metadata = source.metadata;
            dest.content_type = source.content_type;
            dest.headers = source.headers;
        }
        self.conditional_store(OP, dest_key, source.data, &dest)
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
        const OP: S3Operation = S3Operation::UploadPartCopy;
        self.record(OP);
        let source = self.copy_source(OP, source_key, source_if_match)?;
        let size = source.data.len() as u64;
        if range.is_empty() || range.end > size || range.end - range.start > MAX_COPY_OBJECT_SIZE {
            return Err(ClientError {
                code: Some("InvalidRange".into()),
                status: Some(416),
                ..ClientError::new(ClientErrorKind::InvalidRange, OP.name(), format!("range {range:?} of {size} bytes"))
            });
        }
        let body = source.data.slice(range.start as usize..range.end as usize);
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| ClientError::new(ClientErrorKind::NotFound, OP.name(), format!("no upload {upload_id}")))?;
        let etag = self.fresh_etag();
        let checksum = upload.options.checksum_crc32c.then(|| crc32c_base64(&body));
        upload.parts.insert(part_number, (body, etag.clone()));
        Ok(UploadedPart { part_number, etag, checksum_crc32c: checksum })
    }

    async fn rename_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &RenameOptions,
    ) -> Result<(), ClientError> {
        let op = S3Operation::RenameObject;
        self.record(op);
        if !self.directory {
            return Err(not_implemented(op, "RenameObject"));
        }
        let mut objects = self.objects.lock().unwrap();
        let source = objects.get(source_key).ok_or_else(|| Self::not_found(op, source_key))?;
        if options.source_if_match.as_ref().is_some_and(|e| *e != source.etag) {
            return Err(Self::precondition_failed(op, source_key));
        }
        let dest = objects.get(dest_key);
        let dest_refused = match (&options.destination_if_match, dest) {
            (Some(wanted), Some(d)) => *wanted != d.etag,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if dest_refused || (options.destination_if_none_match_any && dest.is_some()) {
            return Err(Self::precondition_failed(op, dest_key));
        }
        if source_key != dest_key {
            let object = objects.remove(source_key).expect("checked above");
            objects.insert(dest_key.to_string(), object);
        }
        Ok(())
    }
}

impl InMemoryClient {
    /// A directory bucket's listing: entries (objects and common prefixes) ordered by a hash of
    /// (listing seed, name), so every listing has its own order. The token carries the seed and
    /// the last name returned, so an entry present for the whole listing is returned exactly once
    /// even when others come and go between pages.
    fn list_unordered(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        use std::hash::{Hash, Hasher};
        let rank = |seed: u64, name: &str| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, name).hash(&mut h);
            (h.finish(), name.to_string())
        };
        let invalid = || {
            ClientError::new(ClientErrorKind::Other, "ListObjectsV2", "The continuation token provided is incorrect")
        };
        let (seed, after) = match &request.continuation_token {
            None => (rand::random::<u64>(), None),
            Some(token) => {
                let (seed, last) = token.split_once('/').ok_or_else(invalid)?;
                let seed = u64::from_str_radix(seed, 16).map_err(|_| invalid())?;
                (seed, Some(rank(seed, last)))
            }
        };
        let objects = self.objects.lock().unwrap();
        let mut entries: BTreeMap<(u64, String), Option<ListedObject>> = BTreeMap::new();
        for (key, o) in objects.range(request.prefix.clone()..) {
            if !key.starts_with(&request.prefix) {
                break;
            }
            let rest = &key[request.prefix.len()..];
            let (name, object) = match request.delimiter.as_deref().and_then(|d| rest.find(d).map(|i| i + d.len())) {
                Some(end) => (format!("{}{}", request.prefix, &rest[..end]), None),
                None => {
                    let object = ListedObject {
                        key: key.clone(),
                        size: o.data.len() as u64,
                        last_modified: o.last_modified,
                        etag: Some(o.etag.clone()),
                        storage_class: o.storage_class.clone(),
                    };
                    (key.clone(), Some(object))
                }
            };
            let rank = rank(seed, &name);
            if after.as_ref().is_none_or(|a| rank > *a) {
                entries.insert(rank, object);
            }
        }
        let max_keys = request.max_keys.clamp(1, 1000) as usize;
        let mut page = ListPage::default();
        let truncated = entries.len() > max_keys;
        for ((_, name), object) in entries.into_iter().take(max_keys) {
            match object {
                Some(object) => page.objects.push(object),
                None => page.common_prefixes.push(name.clone()),
            }
            if truncated {
                page.next_continuation_token = Some(format!("{seed:x}/{name}"));
            }
        }
        Ok(page)
    }
}

/// 501 NotImplemented, as a general purpose bucket answers RenameObject or a write offset.
fn not_implemented(op: S3Operation, what: &str) -> ClientError {
    ClientError {
        code: Some("NotImplemented".into()),
        status: Some(501),
        ..ClientError::new(ClientErrorKind::Other, op.name(), format!("{what} is not supported by this bucket"))
    }
}

/// Base64 of the big-endian CRC32C, as S3's `x-amz-checksum-crc32c`.
pub fn crc32c_base64(data: &[u8]) -> String {
    aws_smithy_types::base64::encode(crc32c::crc32c(data).to_be_bytes())
}
