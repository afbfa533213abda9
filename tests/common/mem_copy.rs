//! Server-side copies of [`super::MemStore`], with S3's rules: CopyObject (at most 5 GiB; the
//! source pinned by `x-amz-copy-source-if-match`; the destination's `If-Match` /
//! `If-None-Match: *`; `x-amz-metadata-directive` COPY keeps the source's metadata and content
//! type, REPLACE takes the request's; copying an object onto itself must REPLACE) and
//! UploadPartCopy (`x-amz-copy-source-range: bytes=FIRST-LAST`, inclusive and inside the source;
//! the part's checksum computed in the upload's algorithm, as S3 returns it).

use std::time::SystemTime;

use hyper::http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{S3Response, S3Result, s3_error};

use super::{MemStore, Part, Stored, WriteConditions, etag, lower_cased};

/// S3's limit on one CopyObject, and on one UploadPartCopy range.
const MAX_COPY: u64 = 5 << 30;

fn source_of(copy_source: &CopySource) -> S3Result<(&str, &str)> {
    match copy_source {
        CopySource::Bucket { bucket, key, version_id: None } => Ok((bucket, key)),
        _ => Err(s3_error!(NotImplemented, "copy source other than bucket/key")),
    }
}

/// `x-amz-copy-source-if-match` against the source's current ETag.
fn check_source(source: &Stored, if_match: Option<&ETagCondition>) -> S3Result<()> {
    match if_match {
        Some(ETagCondition::ETag(e)) if e.value() != source.etag => {
            Err(s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold"))
        }
        _ => Ok(()),
    }
}

/// An `If-Match`/`If-None-Match` header as a condition: `*` or one quoted ETag.
fn condition(headers: &HeaderMap, name: &str) -> Option<ETagCondition> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    Some(match value {
        "*" => ETagCondition::Any,
        tag => ETagCondition::ETag(ETag::Strong(tag.trim_matches('"').to_string())),
    })
}

/// `bytes=FIRST-LAST` as a half-open range inside an object of `size` bytes.
fn copy_range(header: Option<&str>, size: u64) -> S3Result<std::ops::Range<u64>> {
    let Some(header) = header else { return Ok(0..size) };
    let parsed = header.strip_prefix("bytes=").and_then(|r| r.split_once('-')).and_then(|(a, b)| {
        let (first, last) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
        (first <= last).then_some(first..last + 1)
    });
    match parsed {
        Some(r) if r.end <= size => Ok(r),
        Some(_) => Err(s3_error!(InvalidRange, "The requested range is not satisfiable")),
        None => {
            Err(s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last"))
        }
    }
}

impl MemStore {
    /// CopyObject. s3s 0.14 does not parse the destination's `If-Match`/`If-None-Match` for
    /// CopyObject (S3 added them later), so they are read from the request's headers.
    pub(super) fn copy(&self, input: CopyObjectInput, headers: &HeaderMap) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key) = source_of(&input.copy_source)?;
        if input.copy_source_if_none_match.is_some() {
            return Err(s3_error!(NotImplemented, "x-amz-copy-source-if-none-match"));
        }
        let source = self.object(bucket, key)?;
        check_source(&source, input.copy_source_if_match.as_ref())?;
        if source.data.len() as u64 > MAX_COPY {
            return Err(s3_error!(
                InvalidRequest,
                "The specified copy source is larger than the maximum allowable size"
            ));
        }
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if bucket == input.bucket && key == input.key && !replace && input.storage_class.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing \
                 the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let tag = self.new_etag(None);
        let now = SystemTime::now();
        let (metadata, content_type) = match replace {
            true => (lower_cased(input.metadata), input.content_type),
            false => (source.metadata, source.content_type),
        };
        // A copy keeps the source's checksum algorithm, as S3 does unless asked for another.
        let object = Stored {
            data: source.data,
            etag: tag.clone(),
            last_modified: now,
            metadata,
            content_type,
            checksum_algorithm: source.checksum_algorithm,
        };
        let (if_none_match, if_match) = (condition(headers, "if-none-match"), condition(headers, "if-match"));
        let conditions = WriteConditions { if_none_match: if_none_match.as_ref(), if_match: if_match.as_ref() };
        self.store(&input.bucket, &input.key, object, conditions)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: etag(&tag),
                last_modified: Some(now.into()),
                ..CopyObjectResult::default()
            }),
            ..CopyObjectOutput::default()
        }))
    }

    pub(super) fn part_copy(&self, input: UploadPartCopyInput) -> S3Result<S3Response<UploadPartCopyOutput>> {
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part number must be between 1 and 10000"));
        }
        let (bucket, key) = source_of(&input.copy_source)?;
        if input.copy_source_if_none_match.is_some() {
            return Err(s3_error!(NotImplemented, "x-amz-copy-source-if-none-match"));
        }
        self.upload_exists(&input.upload_id, &input.bucket, &input.key)?;
        let source = self.object(bucket, key)?;
        check_source(&source, input.copy_source_if_match.as_ref())?;
        let range = copy_range(input.copy_source_range.as_deref(), source.data.len() as u64)?;
        if range.end - range.start > MAX_COPY {
            return Err(s3_error!(InvalidRequest, "a copied part may be at most 5 GiB"));
        }
        let data = source.data.slice(range.start as usize..range.end as usize);
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads.get_mut(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        let mut hasher = ChecksumHasher::default();
        match upload.checksum_algorithm.as_ref().map(|a| a.as_str()) {
            Some(ChecksumAlgorithm::CRC32C) => hasher.crc32c = Some(Default::default()),
            Some(ChecksumAlgorithm::CRC64NVME) => hasher.crc64nvme = Some(Default::default()),
            _ => {}
        }
        hasher.update(&data);
        let sums = hasher.finalize();
        let tag = self.new_etag(None);
        let now = SystemTime::now();
        upload.parts.insert(input.part_number, Part { data, etag: tag.clone(), checksums: sums.clone() });
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: etag(&tag),
                last_modified: Some(now.into()),
                checksum_crc32c: sums.checksum_crc32c,
                checksum_crc64nvme: sums.checksum_crc64nvme,
                ..CopyPartResult::default()
            }),
            ..UploadPartCopyOutput::default()
        }))
    }
}
