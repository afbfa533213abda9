//! [`MemStore`]: the S3 operations of [`super::mem_server::MemS3`], on objects held in memory.
//!
//! Objects are `Bytes`; a GET answers with a slice of them (no copy, whatever the range), so the
//! server's cost per byte is the kernel's socket copy and little else. Uploaded bodies are copied
//! once, when they are received (and once more when a multipart upload is completed).
//!
//! What it implements, with S3's answers (checksum and token rules in [`super::mem_rules`]): HeadObject, GetObject (`Range`, `If-Match` -> 412,
//! `If-None-Match` -> 304), ListObjectsV2 (prefix, delimiter, start-after, continuation tokens,
//! max-keys, ETags in listings), PutObject and CompleteMultipartUpload (`If-None-Match: *` -> 412,
//! `If-Match` -> 412, or 404 for a missing key), user metadata and Content-Type (stored, returned by
//! HEAD/GET), Create/UploadPart/Abort multipart (non-last parts of at least 5 MiB, part ETags
//! checked), DeleteObject, CopyObject and UploadPartCopy (in `mem_copy`: source pinned by
//! `x-amz-copy-source-if-match`, destination conditions, metadata directive, 5 GiB limit),
//! HeadBucket, CreateBucket. Checksums a request announces (header,
//! `x-amz-sdk-checksum-algorithm` or `x-amz-trailer`) and `Content-MD5` are verified (BadDigest)
//! and echoed. `encoding-type=url` listings percent-encode keys and prefixes as S3 does.
//! Anything else is NotImplemented, never silently ignored: `If-Match` on DeleteObject,
//! `If-None-Match: ETAG` on writes, `partNumber` GETs.
//!
//! ETags are opaque: 32 hex digits from a counter (plus `-N` for N parts), unique per write and
//! never an MD5 of the content, so an overwrite with identical bytes still changes the ETag.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use s3s::dto::*;
use s3s::{Body, S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::mem_rules::{Claims, ListToken, algorithm_of, checksum_of, receive, receive_put, url_encode_listed};

#[path = "mem_copy.rs"]
mod copy;

/// S3's smallest part, except for the last one.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
const MAX_KEYS: i32 = 1000;

/// One stored object version.
#[derive(Clone)]
struct Stored {
    data: Bytes,
    /// Without quotes.
    etag: String,
    last_modified: SystemTime,
    /// `x-amz-meta-*`, names lower-cased.
    metadata: Metadata,
    content_type: Option<String>,
    /// The algorithm of the checksum the object was written with (lowercase name), if any.
    checksum_algorithm: Option<&'static str>,
}

impl Stored {
    fn new(data: Bytes, etag: String) -> Stored {
        Stored {
            data,
            etag,
            last_modified: SystemTime::now(),
            metadata: Metadata::new(),
            content_type: None,
            checksum_algorithm: None,
        }
    }
}

/// What a write may require of the key's current version.
#[derive(Default)]
struct WriteConditions<'a> {
    if_none_match: Option<&'a ETagCondition>,
    if_match: Option<&'a ETagCondition>,
}

struct Part {
    data: Bytes,
    etag: String,
    checksums: Checksum,
}

struct Upload {
    bucket: String,
    key: String,
    parts: BTreeMap<i32, Part>,
    metadata: Metadata,
    content_type: Option<String>,
    checksum_algorithm: Option<ChecksumAlgorithm>,
}

type Bucket = BTreeMap<String, Stored>;

/// The ETag conditions of a RenameObject.
#[derive(Clone, Debug, Default)]
pub struct RenameConditions {
    pub source_if_match: Option<ETagCondition>,
    pub source_if_none_match: Option<ETagCondition>,
    pub dest_if_match: Option<ETagCondition>,
    pub dest_if_none_match: Option<ETagCondition>,
}

/// Buckets of in-memory objects, served through s3s. A clone is another handle to the same store.
#[derive(Clone, Default)]
pub struct MemStore {
    buckets: Arc<RwLock<HashMap<String, Bucket>>>,
    uploads: Arc<Mutex<HashMap<String, Upload>>>,
    next_id: Arc<AtomicU64>,
}

impl MemStore {
    /// A store with one empty bucket.
    pub fn new(bucket: &str) -> MemStore {
        let store = MemStore::default();
        store.buckets.write().unwrap().insert(bucket.to_string(), Bucket::new());
        store
    }

    /// Stores `data` at `key` directly (no request); returns the ETag with its quotes.
    pub fn insert(&self, bucket: &str, key: &str, data: Bytes) -> String {
        let etag = self.new_etag(None);
        let object = Stored::new(data, etag.clone());
        let mut buckets = self.buckets.write().unwrap();
        buckets.get_mut(bucket).expect("bucket exists").insert(key.to_string(), object);
        format!("\"{etag}\"")
    }

    /// [`Self::insert`] of an object written with a checksum of `algorithm` (a lowercase name:
    /// `crc32`, `crc32c`, `crc64nvme`, `sha1`, `sha256`).
    pub fn insert_with_checksum(&self, bucket: &str, key: &str, data: Bytes, algorithm: &'static str) -> String {
        let etag = self.new_etag(None);
        let object = Stored { checksum_algorithm: Some(algorithm), ..Stored::new(data, etag.clone()) };
        let mut buckets = self.buckets.write().unwrap();
        buckets.get_mut(bucket).expect("bucket exists").insert(key.to_string(), object);
        format!("\"{etag}\"")
    }

    /// The algorithm of the checksum `key` was written with, if any.
    pub fn checksum_algorithm(&self, bucket: &str, key: &str) -> Option<&'static str> {
        self.buckets.read().unwrap().get(bucket)?.get(key)?.checksum_algorithm
    }

    /// The bytes at `key`, if any (a cheap clone of the stored `Bytes`).
    pub fn data(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.buckets.read().unwrap().get(bucket)?.get(key).map(|o| o.data.clone())
    }

    /// The user metadata at `key`, if the key exists.
    pub fn metadata(&self, bucket: &str, key: &str) -> Option<Metadata> {
        self.buckets.read().unwrap().get(bucket)?.get(key).map(|o| o.metadata.clone())
    }

    /// Stores `data` with user `metadata` at `key` directly (no request), as another tool
    /// (s3fs, rclone) would have written it; returns the ETag with its quotes.
    pub fn insert_with_metadata(&self, bucket: &str, key: &str, data: Bytes, metadata: Metadata) -> String {
        let etag = self.new_etag(None);
        let object = Stored { metadata, ..Stored::new(data, etag.clone()) };
        let mut buckets = self.buckets.write().unwrap();
        buckets.get_mut(bucket).expect("bucket exists").insert(key.to_string(), object);
        format!("\"{etag}\"")
    }

    /// Removes `key` directly.
    pub fn remove(&self, bucket: &str, key: &str) {
        if let Some(b) = self.buckets.write().unwrap().get_mut(bucket) {
            b.remove(key);
        }
    }

    /// Every key under `prefix`, in order.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let buckets = self.buckets.read().unwrap();
        let Some(b) = buckets.get(bucket) else { return vec![] };
        b.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Adds an empty bucket; false if it exists.
    pub fn add_bucket(&self, bucket: &str) -> bool {
        let mut buckets = self.buckets.write().unwrap();
        if buckets.contains_key(bucket) {
            return false;
        }
        buckets.insert(bucket.to_string(), Bucket::new());
        true
    }

    /// Bytes held by objects and unfinished uploads (slices of one buffer count once each).
    pub fn stored_bytes(&self) -> u64 {
        let objects: usize = self.buckets.read().unwrap().values().flat_map(|b| b.values()).map(|o| o.data.len()).sum();
        let parts: usize =
            self.uploads.lock().unwrap().values().flat_map(|u| u.parts.values()).map(|p| p.data.len()).sum();
        (objects + parts) as u64
    }

    /// Appends `data` to `key` if it holds exactly `offset` bytes (no object: `offset` must be 0),
    /// atomically; returns the new ETag (no quotes) and size. Any other size is S3's
    /// `InvalidWriteOffset`.
    /// `if_match` (as S3 applies it to any PutObject) is checked before the offset, atomically
    /// with the append: a missing object is 404, another ETag 412.
    pub fn append(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        data: Bytes,
        if_match: Option<&ETagCondition>,
        algorithm: Option<&'static str>,
    ) -> S3Result<(String, u64)> {
        let etag = self.new_etag(None);
        let mut buckets = self.buckets.write().unwrap();
        let b = buckets.get_mut(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        match (if_match, b.get(key)) {
            (None, _) | (Some(ETagCondition::Any), Some(_)) => {}
            (Some(_), None) => return Err(s3_error!(NoSuchKey)),
            (Some(ETagCondition::ETag(e)), Some(current)) if e.value() == current.etag => {}
            (Some(ETagCondition::ETag(_)), Some(_)) => {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        // An object written with a checksum keeps one full-object checksum: appends must use its
        // algorithm. Stricter than AWS documents it (not verified against S3): a mount that did
        // not carry the algorithm fails here instead of silently changing it.
        if let Some(kept) = b.get(key).and_then(|o| o.checksum_algorithm)
            && algorithm != Some(kept)
        {
            let mut e = S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!("the object has a {kept} checksum; an append must send the same algorithm, not {algorithm:?}"),
            );
            e.set_status_code(hyper::StatusCode::BAD_REQUEST);
            return Err(e);
        }
        let current = b.get(key).map(|o| o.data.clone()).unwrap_or_default();
        if current.len() as u64 != offset {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("InvalidWriteOffset".into()),
                format!("The write offset {offset} does not match the object size {}", current.len()),
            );
            e.set_status_code(hyper::StatusCode::BAD_REQUEST);
            return Err(e);
        }
        let mut all = BytesMut::with_capacity(current.len() + data.len());
        all.extend_from_slice(&current);
        all.extend_from_slice(&data);
        let size = all.len() as u64;
        // An append keeps the object's metadata and content type.
        let (metadata, content_type, kept) =
            b.get(key).map(|o| (o.metadata.clone(), o.content_type.clone(), o.checksum_algorithm)).unwrap_or_default();
        let object = Stored {
            metadata,
            content_type,
            checksum_algorithm: kept.or(algorithm),
            ..Stored::new(all.freeze(), etag.clone())
        };
        b.insert(key.to_string(), object);
        Ok((etag, size))
    }

    /// Moves `source` to `dest` atomically if the conditions hold (RenameObject: the object keeps
    /// its ETag and bytes).
    pub fn rename(&self, bucket: &str, source: &str, dest: &str, conditions: &RenameConditions) -> S3Result<()> {
        let mut buckets = self.buckets.write().unwrap();
        let b = buckets.get_mut(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        let failed = || s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold");
        let object = b.get(source).ok_or_else(|| s3_error!(NoSuchKey, "The source object does not exist"))?;
        let matches = |c: &ETagCondition, o: &Stored| match c {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => e.value() == o.etag,
        };
        if conditions.source_if_match.as_ref().is_some_and(|c| !matches(c, object))
            || conditions.source_if_none_match.as_ref().is_some_and(|c| matches(c, object))
        {
            return Err(failed());
        }
        let existing = b.get(dest);
        let dest_match_fails = match (&conditions.dest_if_match, existing) {
            (Some(c), Some(o)) => !matches(c, o),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let dest_none_match_fails = match (&conditions.dest_if_none_match, existing) {
            (Some(c), Some(o)) => matches(c, o),
            _ => false,
        };
        if dest_match_fails || dest_none_match_fails {
            return Err(failed());
        }
        if source != dest {
            let object = b.remove(source).expect("checked above");
            b.insert(dest.to_string(), object);
        }
        Ok(())
    }

    /// (key, size, ETag without quotes, last modified) of every object under `prefix`.
    pub fn listing(&self, bucket: &str, prefix: &str) -> S3Result<Vec<(String, u64, String, SystemTime)>> {
        let buckets = self.buckets.read().unwrap();
        let b = buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        Ok(b.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| (k.clone(), o.data.len() as u64, o.etag.clone(), o.last_modified))
            .collect())
    }

    /// Keys of multipart uploads in progress in `bucket` under `prefix`.
    pub fn upload_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let uploads = self.uploads.lock().unwrap();
        uploads.values().filter(|u| u.bucket == bucket && u.key.starts_with(prefix)).map(|u| u.key.clone()).collect()
    }

    /// A fresh opaque ETag (no quotes): a bijective scramble of a counter, so never repeated.
    fn new_etag(&self, parts: Option<usize>) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) as u128 + 1;
        let hex = format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        match parts {
            Some(parts) => format!("{hex}-{parts}"),
            None => hex,
        }
    }

    fn object(&self, bucket: &str, key: &str) -> S3Result<Stored> {
        let buckets = self.buckets.read().unwrap();
        let b = buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        b.get(key).cloned().ok_or_else(|| s3_error!(NoSuchKey))
    }

    /// Stores an object, honouring `If-None-Match: *` and `If-Match` atomically with the write.
    fn store(&self, bucket: &str, key: &str, object: Stored, conditions: WriteConditions<'_>) -> S3Result<()> {
        let mut buckets = self.buckets.write().unwrap();
        let b = buckets.get_mut(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        let failed = || s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold");
        match conditions.if_none_match {
            None => {}
            Some(ETagCondition::Any) if b.contains_key(key) => return Err(failed()),
            Some(ETagCondition::Any) => {}
            Some(ETagCondition::ETag(_)) => return Err(s3_error!(NotImplemented, "If-None-Match other than *")),
        }
        match (conditions.if_match, b.get(key)) {
            (None, _) => {}
            // As S3: If-Match on a key that does not exist is 404, not 412.
            (Some(_), None) => return Err(s3_error!(NoSuchKey)),
            (Some(ETagCondition::Any), Some(_)) => {}
            (Some(ETagCondition::ETag(e)), Some(current)) if e.value() == current.etag => {}
            (Some(ETagCondition::ETag(_)), Some(_)) => return Err(failed()),
        }
        b.insert(key.to_string(), object);
        Ok(())
    }

    /// NoSuchBucket unless `bucket` exists.
    pub fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        match self.buckets.read().unwrap().contains_key(bucket) {
            true => Ok(()),
            false => Err(s3_error!(NoSuchBucket)),
        }
    }
}

/// `If-Match` / `If-None-Match` of a GET or HEAD against the current version.
fn check_read_conditions(
    object: &Stored,
    if_match: Option<&ETagCondition>,
    if_none: Option<&ETagCondition>,
) -> S3Result<()> {
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == object.etag,
    };
    if if_match.is_some_and(|c| !matches(c)) {
        return Err(s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold"));
    }
    if if_none.is_some_and(matches) {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

/// User metadata as S3 keeps it: header names are case-insensitive, S3 returns them lower-cased.
fn lower_cased(metadata: Option<Metadata>) -> Metadata {
    metadata.into_iter().flatten().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

fn etag(value: &str) -> Option<ETag> {
    Some(ETag::Strong(value.to_string()))
}

fn length(len: usize) -> Option<i64> {
    Some(len as i64)
}

#[async_trait::async_trait]
impl S3 for MemStore {
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        if !self.add_bucket(&req.input.bucket) {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() || input.range.is_some() {
            return Err(s3_error!(NotImplemented, "HEAD with partNumber or Range"));
        }
        let object = self.object(&input.bucket, &input.key)?;
        check_read_conditions(&object, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        // Checksum mode: the object's full-object checksum, of the algorithm it was written with.
        let wants_checksum = input.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let sums = match object.checksum_algorithm.filter(|_| wants_checksum) {
            Some(algorithm) => checksum_of(algorithm, &object.data),
            None => Checksum::default(),
        };
        Ok(S3Response::new(HeadObjectOutput {
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_type: object
                .checksum_algorithm
                .filter(|_| wants_checksum)
                .map(|_| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
            accept_ranges: Some("bytes".into()),
            content_length: length(object.data.len()),
            e_tag: etag(&object.etag),
            last_modified: Some(object.last_modified.into()),
            metadata: Some(object.metadata.clone()).filter(|m| !m.is_empty()),
            content_type: object.content_type.clone(),
            ..HeadObjectOutput::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GET with partNumber"));
        }
        let object = self.object(&input.bucket, &input.key)?;
        check_read_conditions(&object, input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let size = object.data.len() as u64;
        let (range, content_range) = match input.range {
            Some(r) => {
                let range = r.check(size)?;
                let header = format!("bytes {}-{}/{size}", range.start, range.end - 1);
                (range, Some(header))
            }
            None => (0..size, None),
        };
        let body = object.data.slice(range.start as usize..range.end as usize);
        Ok(S3Response::new(GetObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: length(body.len()),
            content_range,
            e_tag: etag(&object.etag),
            last_modified: Some(object.last_modified.into()),
            metadata: Some(object.metadata.clone()).filter(|m| !m.is_empty()),
            content_type: object.content_type.clone(),
            body: Some(StreamingBlob::from(Body::from(body))),
            ..GetObjectOutput::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let encode = match input.encoding_type.as_ref().map(|e| e.as_str()) {
            None => false,
            Some("url") => true,
            Some(_) => return Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request")),
        };
        let enc = |s: String| if encode { url_encode_listed(&s) } else { s };
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must be at least 0"));
        }
        let max_keys = max_keys.min(MAX_KEYS) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let resume = input.continuation_token.as_deref().map(ListToken::decode).transpose()?;

        let mut lower = Bound::Included(prefix.clone());
        let afters = [input.start_after.clone(), resume.as_ref().map(|t| t.after().to_string())];
        for after in afters.into_iter().flatten() {
            let tighter = match &lower {
                Bound::Included(l) => after >= *l,
                Bound::Excluded(l) => after > *l,
                Bound::Unbounded => true,
            };
            if tighter {
                lower = Bound::Excluded(after);
            }
        }
        let skip = match &resume {
            Some(ListToken::Prefix(p)) => Some(p.as_str()),
            _ => None,
        };

        let buckets = self.buckets.read().unwrap();
        let bucket = buckets.get(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        let mut contents = Vec::new();
        let mut common_prefixes: Vec<String> = Vec::new();
        let mut last: Option<ListToken> = None;
        let mut truncated = false;
        for (key, object) in bucket.range::<String, _>((lower, Bound::Unbounded)) {
            if !key.starts_with(&prefix) {
                break;
            }
            if skip.is_some_and(|s| key.starts_with(s)) {
                continue;
            }
            let group = delimiter.as_deref().and_then(|d| {
                let rest = &key[prefix.len()..];
                rest.find(d).map(|i| key[..prefix.len() + i + d.len()].to_string())
            });
            if let (Some(g), Some(ListToken::Prefix(p))) = (&group, &last)
                && g == p
            {
                continue;
            }
            if contents.len() + common_prefixes.len() == max_keys {
                truncated = true;
                break;
            }
            match group {
                Some(g) => {
                    common_prefixes.push(g.clone());
                    last = Some(ListToken::Prefix(g));
                }
                None => {
                    contents.push(Object {
                        key: Some(enc(key.clone())),
                        size: length(object.data.len()),
                        e_tag: etag(&object.etag),
                        last_modified: Some(object.last_modified.into()),
                        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                        ..Object::default()
                    });
                    last = Some(ListToken::Key(key.clone()));
                }
            }
        }
        let key_count = (contents.len() + common_prefixes.len()) as i32;
        let next_continuation_token = if truncated { last.map(|l| l.encode()) } else { None };
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix.map(enc),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(enc),
            encoding_type: input.encoding_type,
            is_truncated: Some(truncated),
            next_continuation_token,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
            ..ListObjectsV2Output::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let mut input = req.input;
        if input.write_offset_bytes.is_some() {
            return Err(s3_error!(NotImplemented, "write offset on PutObject"));
        }
        self.bucket_exists(&input.bucket)?;
        let (data, sums) = receive_put(&mut input, &req.headers, req.trailing_headers).await?;
        let size = length(data.len());
        let tag = self.new_etag(None);
        let object = Stored {
            metadata: lower_cased(input.metadata),
            content_type: input.content_type,
            checksum_algorithm: algorithm_of(&sums),
            ..Stored::new(data, tag.clone())
        };
        let conditions =
            WriteConditions { if_none_match: input.if_none_match.as_ref(), if_match: input.if_match.as_ref() };
        self.store(&input.bucket, &input.key, object, conditions)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: etag(&tag),
            size,
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            ..PutObjectOutput::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        if input.if_match.is_some() {
            return Err(s3_error!(NotImplemented, "If-Match on DeleteObject"));
        }
        let mut buckets = self.buckets.write().unwrap();
        let bucket = buckets.get_mut(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        bucket.remove(&input.key);
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.copy(req.input, &req.headers)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.part_copy(req.input)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let id = self.new_etag(None);
        let upload = Upload {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            parts: BTreeMap::new(),
            metadata: lower_cased(input.metadata),
            content_type: input.content_type,
            checksum_algorithm: input.checksum_algorithm.clone(),
        };
        self.uploads.lock().unwrap().insert(id.clone(), upload);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: input.checksum_algorithm,
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be between 1 and 10000"));
        }
        self.upload_exists(&input.upload_id, &input.bucket, &input.key)?;
        let claims = Claims {
            checksums: Checksum {
                checksum_crc32: input.checksum_crc32.clone(),
                checksum_crc32c: input.checksum_crc32c.clone(),
                checksum_crc64nvme: input.checksum_crc64nvme.clone(),
                checksum_sha1: input.checksum_sha1.clone(),
                checksum_sha256: input.checksum_sha256.clone(),
                ..Checksum::default()
            },
            algorithm: input.checksum_algorithm.as_ref(),
            content_md5: input.content_md5.as_deref(),
            headers: &req.headers,
            trailers: req.trailing_headers,
        };
        let (data, sums) = receive(input.body, claims).await?;
        let tag = self.new_etag(None);
        let mut uploads = self.uploads.lock().unwrap();
        // Aborted while the body was arriving?
        let upload = uploads.get_mut(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        upload.parts.insert(input.part_number, Part { data, etag: tag.clone(), checksums: sums.clone() });
        Ok(S3Response::new(UploadPartOutput {
            e_tag: etag(&tag),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            ..UploadPartOutput::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let requested = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts"));
        }
        let (data, parts, metadata, content_type) = {
            let uploads = self.uploads.lock().unwrap();
            let upload = self.upload_in(&uploads, &input.upload_id, &input.bucket, &input.key)?;
            let (data, parts) = assemble(upload, &requested)?;
            (data, parts, upload.metadata.clone(), upload.content_type.clone())
        };
        let tag = self.new_etag(Some(parts));
        let object = Stored { metadata, content_type, ..Stored::new(data, tag.clone()) };
        // A failed precondition leaves the upload open, as S3 does.
        let conditions =
            WriteConditions { if_none_match: input.if_none_match.as_ref(), if_match: input.if_match.as_ref() };
        self.store(&input.bucket, &input.key, object, conditions)?;
        self.uploads.lock().unwrap().remove(&input.upload_id);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: etag(&tag),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let mut uploads = self.uploads.lock().unwrap();
        self.upload_in(&uploads, &input.upload_id, &input.bucket, &input.key)?;
        uploads.remove(&input.upload_id);
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

impl MemStore {
    fn upload_exists(&self, id: &str, bucket: &str, key: &str) -> S3Result<()> {
        let uploads = self.uploads.lock().unwrap();
        self.upload_in(&uploads, id, bucket, key).map(|_| ())
    }

    fn upload_in<'a>(
        &self,
        uploads: &'a HashMap<String, Upload>,
        id: &str,
        bucket: &str,
        key: &str,
    ) -> S3Result<&'a Upload> {
        match uploads.get(id) {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(s3_error!(NoSuchUpload)),
        }
    }
}

/// The object a CompleteMultipartUpload asks for, checked as S3 checks it: part numbers
/// ascending, each part uploaded with that ETag (and CRC32C, when given), every part but the
/// last at least [`MIN_PART_SIZE`]. Returns the bytes and the number of parts.
fn assemble(upload: &Upload, requested: &[CompletedPart]) -> S3Result<(Bytes, usize)> {
    let mut chosen = Vec::with_capacity(requested.len());
    let mut previous = 0;
    for part in requested {
        let number = part.part_number.ok_or_else(|| s3_error!(InvalidPart, "part without a number"))?;
        if number <= previous {
            return Err(s3_error!(InvalidPartOrder));
        }
        previous = number;
        let stored = upload.parts.get(&number).ok_or_else(|| s3_error!(InvalidPart, "part {number} not uploaded"))?;
        if part.e_tag.as_ref().is_none_or(|e| e.value() != stored.etag) {
            return Err(s3_error!(InvalidPart, "part {number}: ETag does not match"));
        }
        if let Some(crc) = &part.checksum_crc32c
            && stored.checksums.checksum_crc32c.as_ref() != Some(crc)
        {
            return Err(s3_error!(InvalidPart, "part {number}: CRC32C does not match"));
        }
        chosen.push(stored);
    }
    let (last, rest) = chosen.split_last().expect("at least one part");
    if rest.iter().any(|p| p.data.len() < MIN_PART_SIZE) {
        return Err(s3_error!(EntityTooSmall));
    }
    let data = if rest.is_empty() {
        last.data.clone()
    } else {
        let mut all = BytesMut::with_capacity(chosen.iter().map(|p| p.data.len()).sum());
        chosen.iter().for_each(|p| all.extend_from_slice(&p.data));
        all.freeze()
    };
    Ok((data, chosen.len()))
}
