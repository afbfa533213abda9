//! [`ExpressStore`]: the S3 operations of the directory-bucket emulator ([`super::express`]),
//! over a [`MemStore`], and [`RenameRoute`] for RenameObject (which s3s 0.14.1 does not route).
//!
//! What differs from the general purpose store, as AWS documents directory buckets:
//! - ListObjectsV2: entries (objects and common prefixes) in no particular order: ordered by a
//!   hash of (listing seed, name), the seed new for every listing and carried in the
//!   continuation token with the last name returned, so an entry present for the whole listing
//!   is returned exactly once, on no predictable page. Delimiter `/` only; a prefix must end in
//!   `/`; `start-after` is refused; with a delimiter, multipart uploads in progress show up as
//!   common prefixes.
//! - PutObject with `x-amz-write-offset-bytes` appends: the offset must equal the object's
//!   current size (0 with no object creates it), else 400 `InvalidWriteOffset`; `If-Match` is
//!   applied first (412 for another ETag, 404 for no object). An object written with a checksum
//!   reports its full-object checksum on HeadObject in checksum mode, and an append must use the
//!   same algorithm (400 `InvalidRequest` otherwise: stricter than AWS documents, to catch a
//!   client that does not carry it).
//! - RenameObject (`PUT /key?renameObject`, source in `x-amz-rename-source`): atomic; the
//!   destination is replaced unless `If-None-Match` / `If-Match` say otherwise; source
//!   conditions `x-amz-rename-source-if-match` / `-if-none-match`; a missing source is 404
//!   NoSuchKey; 412 when a condition fails. Date conditions are NotImplemented (never ignored).
//! - CreateSession issues session keys ([`super::express::ExpressState::create_session`]).
//!   Everything else is the general purpose store's behaviour.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hyper::http::{Extensions, HeaderMap, Method, StatusCode, Uri};
use s3s::dto::*;
use s3s::route::S3Route;
use s3s::{Body, S3, S3Request, S3Response, S3Result, s3_error};

use super::express::ExpressState;
use super::express_sigv4::percent_decode;
use super::mem_rules::{receive_put, url_encode_listed};
use super::mem_store::{MemStore, RenameConditions};

const MAX_KEYS: i32 = 1000;

/// A directory bucket's operations.
#[derive(Clone)]
pub struct ExpressStore {
    pub mem: MemStore,
    pub state: Arc<ExpressState>,
}

/// Rank of a listed name in the listing with `seed`.
fn rank(seed: u64, name: &str) -> (u64, String) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, name).hash(&mut h);
    (h.finish(), name.to_string())
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Token: `x<seed hex>-<last name hex>`.
fn decode_token(token: &str) -> S3Result<(u64, String)> {
    let invalid = || s3_error!(InvalidArgument, "The continuation token provided is incorrect");
    let (seed, name) = token.strip_prefix('x').and_then(|t| t.split_once('-')).ok_or_else(invalid)?;
    let seed = u64::from_str_radix(seed, 16).map_err(|_| invalid())?;
    if name.len() % 2 != 0 {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&name[i..i + 2], 16).map_err(|_| invalid()))
        .collect::<S3Result<_>>()?;
    Ok((seed, String::from_utf8(bytes).map_err(|_| invalid())?))
}

#[async_trait::async_trait]
impl S3 for ExpressStore {
    async fn create_session(&self, req: S3Request<CreateSessionInput>) -> S3Result<S3Response<CreateSessionOutput>> {
        self.mem.bucket_exists(&req.input.bucket)?;
        let access_key = req.credentials.as_ref().map(|c| c.access_key.clone()).unwrap_or_default();
        let read_only = req.headers.get("x-amz-create-session-mode").is_some_and(|m| m == "ReadOnly");
        let (key, secret, token, expires) = self.state.create_session(&access_key, read_only)?;
        Ok(S3Response::new(CreateSessionOutput {
            credentials: SessionCredentials {
                access_key_id: key,
                expiration: expires.into(),
                secret_access_key: secret,
                session_token: token,
            },
            ..CreateSessionOutput::default()
        }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.mem.head_bucket(req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.mem.head_object(req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.mem.get_object(req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let encode = match input.encoding_type.as_ref().map(|e| e.as_str()) {
            None => false,
            Some("url") => true,
            Some(_) => return Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request")),
        };
        let enc = |s: String| if encode { url_encode_listed(&s) } else { s };
        if input.start_after.is_some() {
            return Err(s3_error!(InvalidArgument, "StartAfter is not supported for directory buckets"));
        }
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        if delimiter.as_deref().is_some_and(|d| d != "/") {
            return Err(s3_error!(InvalidArgument, "Directory buckets support only '/' as a delimiter"));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            return Err(s3_error!(InvalidArgument, "Directory buckets support only prefixes that end in '/'"));
        }
        let max_keys = input.max_keys.unwrap_or(MAX_KEYS);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must be at least 0"));
        }
        let max_keys = max_keys.min(MAX_KEYS) as usize;
        let (seed, after) = match input.continuation_token.as_deref() {
            Some(token) => {
                let (seed, last) = decode_token(token)?;
                (seed, Some(rank(seed, &last)))
            }
            None => (self.state.list_seed.unwrap_or_else(rand::random), None),
        };
        let group = |key: &str| {
            delimiter
                .as_deref()
                .and_then(|d| key[prefix.len()..].find(d).map(|i| key[..prefix.len() + i + 1].to_string()))
        };
        // rank -> Some(object) or None for a common prefix.
        let mut entries: BTreeMap<(u64, String), Option<Object>> = BTreeMap::new();
        for (key, size, etag, modified) in self.mem.listing(&input.bucket, &prefix)? {
            let (name, object) = match group(&key) {
                Some(common) => (common, None),
                None => {
                    let object = Object {
                        key: Some(enc(key.clone())),
                        size: Some(size as i64),
                        e_tag: Some(ETag::Strong(etag)),
                        last_modified: Some(modified.into()),
                        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::EXPRESS_ONEZONE)),
                        ..Object::default()
                    };
                    (key, Some(object))
                }
            };
            entries.insert(rank(seed, &name), object);
        }
        if delimiter.is_some() {
            for key in self.mem.upload_keys(&input.bucket, &prefix) {
                if let Some(common) = group(&key) {
                    entries.entry(rank(seed, &common)).or_insert(None);
                }
            }
        }
        let remaining: Vec<_> = entries.into_iter().filter(|(r, _)| after.as_ref().is_none_or(|a| r > a)).collect();
        let truncated = remaining.len() > max_keys;
        let mut contents = Vec::new();
        let mut common_prefixes = Vec::new();
        let mut last = None;
        for ((_, name), object) in remaining.into_iter().take(max_keys) {
            match object {
                Some(object) => contents.push(object),
                None => common_prefixes.push(CommonPrefix { prefix: Some(enc(name.clone())) }),
            }
            last = Some(name);
        }
        let next_continuation_token = if truncated { last.map(|l| format!("x{seed:x}-{}", hex(&l))) } else { None };
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix.map(enc),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max_keys as i32),
            key_count: Some((contents.len() + common_prefixes.len()) as i32),
            continuation_token: input.continuation_token,
            encoding_type: input.encoding_type,
            is_truncated: Some(truncated),
            next_continuation_token,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            ..ListObjectsV2Output::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let Some(offset) = req.input.write_offset_bytes else {
            return self.mem.put_object(req).await;
        };
        let mut input = req.input;
        // If-Match applies to appends as to any PutObject (Mountpoint relies on it to detect
        // another writer); If-None-Match on an append is not something we emulate.
        if input.if_none_match.is_some() {
            return Err(s3_error!(NotImplemented, "If-None-Match on an append"));
        }
        let offset = u64::try_from(offset).map_err(|_| s3_error!(InvalidArgument, "negative write offset"))?;
        let (data, sums) = receive_put(&mut input, &req.headers, req.trailing_headers).await?;
        let (etag, size) = self.mem.append(
            &input.bucket,
            &input.key,
            offset,
            data,
            input.if_match.as_ref(),
            super::mem_rules::algorithm_of(&sums),
        )?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            size: Some(size as i64),
            checksum_crc32c: sums.checksum_crc32c,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..PutObjectOutput::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.mem.delete_object(req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.mem.copy_object(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.mem.upload_part_copy(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.mem.create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.mem.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.mem.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.mem.abort_multipart_upload(req).await
    }
}

/// RenameObject: `PUT /bucket/key?renameObject` (path style; the emulator's endpoint is an IP).
pub struct RenameRoute(pub ExpressStore);

fn has_rename_query(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|p| p == "renameObject" || p.starts_with("renameObject=")))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn condition(headers: &HeaderMap, name: &str) -> S3Result<Option<ETagCondition>> {
    header(headers, name)
        .map(|v| ETagCondition::parse_http_header(v.as_bytes()))
        .transpose()
        .map_err(|_| s3_error!(InvalidArgument, "malformed {name}"))
}

#[async_trait::async_trait]
impl S3Route for RenameRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _headers: &HeaderMap, _extensions: &mut Extensions) -> bool {
        method == Method::PUT && has_rename_query(uri)
    }

    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        let key = req.credentials.as_ref().map(|c| c.access_key.clone());
        self.0.state.authorize("RenameObject", key.as_deref(), &req.headers, true)
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        let path = String::from_utf8(percent_decode(req.uri.path())).map_err(|_| s3_error!(InvalidURI))?;
        let (bucket, dest) = path.trim_start_matches('/').split_once('/').ok_or_else(|| s3_error!(InvalidURI))?;
        let source = header(&req.headers, "x-amz-rename-source")
            .ok_or_else(|| s3_error!(InvalidArgument, "x-amz-rename-source is required"))?;
        let source = String::from_utf8(percent_decode(source)).map_err(|_| s3_error!(InvalidArgument))?;
        let (source_bucket, source_key) = source
            .trim_start_matches('/')
            .split_once('/')
            .ok_or_else(|| s3_error!(InvalidArgument, "rename source"))?;
        if source_bucket != bucket {
            return Err(s3_error!(InvalidArgument, "RenameObject works within one bucket"));
        }
        for dated in [
            "if-modified-since",
            "if-unmodified-since",
            "x-amz-rename-source-if-modified-since",
            "x-amz-rename-source-if-unmodified-since",
        ] {
            if req.headers.contains_key(dated) {
                return Err(s3_error!(NotImplemented, "the emulator does not implement {dated}"));
            }
        }
        let conditions = RenameConditions {
            source_if_match: condition(&req.headers, "x-amz-rename-source-if-match")?,
            source_if_none_match: condition(&req.headers, "x-amz-rename-source-if-none-match")?,
            dest_if_match: condition(&req.headers, "if-match")?,
            dest_if_none_match: condition(&req.headers, "if-none-match")?,
        };
        self.0.mem.rename(bucket, source_key, dest, &conditions)?;
        Ok(S3Response::with_status(Body::empty(), StatusCode::OK))
    }
}

/// RenameObject on a general purpose bucket: 501 NotImplemented, as AWS answers, rather than
/// s3s's routing of `PUT ?renameObject` as a PutObject with an empty body (which would replace
/// the destination with an empty object).
pub struct NoRenameRoute;

#[async_trait::async_trait]
impl S3Route for NoRenameRoute {
    fn is_match(&self, method: &Method, uri: &Uri, _headers: &HeaderMap, _extensions: &mut Extensions) -> bool {
        method == Method::PUT && has_rename_query(uri)
    }

    async fn call(&self, _req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        Err(s3_error!(NotImplemented, "RenameObject is only supported by directory buckets"))
    }
}
