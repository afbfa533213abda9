//! Server-side copies: CopyObject (one request, up to 5 GiB) and UploadPartCopy (a range of an
//! object becomes a part of a multipart upload, for larger objects and for re-using unchanged
//! bytes of an object being replaced).
//!
//! The source is named by `bucket/key`, percent-encoded ([`super::copy_source`]), and can be
//! pinned to the ETag the caller saw (`x-amz-copy-source-if-match`), so a source replaced by
//! another client fails the copy (412) instead of copying other bytes.

use std::collections::HashMap;
use std::ops::Range;

use aws_sdk_s3::types::{MetadataDirective, ServerSideEncryption, StorageClass};

use super::{AwsClient, copy_source, crc64, etag};
use crate::client::{ClientError, ClientErrorKind, CopyOptions, ETag, PutResult, UploadedPart, UserMetadata};

/// The SDK's form of user metadata; `None` when there is none, so no empty map is sent.
pub(super) fn sdk_metadata(metadata: &UserMetadata) -> Option<HashMap<String, String>> {
    (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The SDK's user metadata as ours, names lower-cased (HTTP header names are case-insensitive).
pub(super) fn from_sdk_metadata(metadata: Option<&HashMap<String, String>>) -> UserMetadata {
    metadata.into_iter().flatten().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
}

/// `bytes=FIRST-LAST` (inclusive), as `x-amz-copy-source-range` wants it.
fn copy_range(range: &Range<u64>) -> String {
    format!("bytes={}-{}", range.start, range.end - 1)
}

impl AwsClient {
    pub(super) async fn copy(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &CopyOptions,
    ) -> Result<PutResult, ClientError> {
        const OP: &str = "CopyObject";
        let dest = &options.dest;
        let (metadata, content_type, headers) = if options.replace_metadata {
            (sdk_metadata(&dest.metadata), dest.content_type.clone(), dest.headers.clone())
        } else {
            (None, None, Default::default())
        };
        let out = self
            .slow
            .copy_object()
            .bucket(&self.config.bucket)
            .key(dest_key)
            .copy_source(copy_source(&self.config.bucket, source_key))
            .set_copy_source_if_match(options.source_if_match.as_ref().map(|e| e.as_str().to_string()))
            .set_if_none_match(dest.if_none_match_any.then(|| "*".to_string()))
            .set_if_match(dest.if_match.as_ref().map(|e| e.as_str().to_string()))
            .set_metadata_directive(options.replace_metadata.then_some(MetadataDirective::Replace))
            .set_metadata(metadata)
            .set_content_type(content_type)
            .set_content_encoding(headers.encoding)
            .set_content_language(headers.language)
            .set_content_disposition(headers.disposition)
            .set_cache_control(headers.cache_control)
            .set_storage_class(dest.storage_class.as_deref().map(StorageClass::from))
            .set_server_side_encryption(dest.sse.as_deref().map(ServerSideEncryption::from))
            .set_ssekms_key_id(dest.sse_kms_key_id.clone())
            .set_checksum_algorithm(self.algorithm(dest))
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .set_expected_source_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        let etag = out.copy_object_result().and_then(|r| r.e_tag());
        Ok(PutResult { etag: self::etag(OP, etag)? })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_key: &str,
        range: Range<u64>,
        source_if_match: Option<&ETag>,
    ) -> Result<UploadedPart, ClientError> {
        const OP: &str = "UploadPartCopy";
        if range.is_empty() {
            return Err(ClientError::new(ClientErrorKind::InvalidRange, OP, format!("empty range {range:?}")));
        }
        let number = i32::try_from(part_number)
            .map_err(|_| ClientError::new(ClientErrorKind::Other, OP, format!("part number {part_number}")))?;
        let out = self
            .slow
            .upload_part_copy()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(copy_source(&self.config.bucket, source_key))
            .copy_source_range(copy_range(&range))
            .set_copy_source_if_match(source_if_match.map(|e| e.as_str().to_string()))
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .set_expected_source_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        let result = out.copy_part_result();
        // A full-object CRC64NVME is combined from the parts' CRCs: a copied part's CRC can only
        // come from the server, which computed it while copying. Without one, Complete refuses
        // (it names the part) rather than sending a wrong checksum.
        if self.config.checksum_crc64nvme
            && let Some(crc) = result.and_then(|r| r.checksum_crc64_nvme()).and_then(crc64::from_base64)
        {
            self.part_crcs.record(upload_id, part_number, crc, range.end - range.start);
        }
        Ok(UploadedPart {
            part_number,
            etag: etag(OP, result.and_then(|r| r.e_tag()))?,
            checksum_crc32c: result.and_then(|r| r.checksum_crc32_c()).map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_are_inclusive() {
        assert_eq!(copy_range(&(0..1)), "bytes=0-0");
        assert_eq!(copy_range(&(5..(5 << 20))), "bytes=5-5242879");
    }

    #[test]
    fn metadata_round_trips_lower_cased() {
        let sent: UserMetadata = [("mode".to_string(), "33188".to_string())].into();
        let map = sdk_metadata(&sent).unwrap();
        let mut upper = HashMap::new();
        upper.insert("Mode".to_string(), map["mode"].clone());
        assert_eq!(from_sdk_metadata(Some(&upper)), sent);
        assert_eq!(sdk_metadata(&UserMetadata::new()), None);
    }
}
