//! Requests of the shared cache (`--cache-xz`) on its bucket: whole small objects with their user
//! metadata (`x-amz-meta-*`), conditional creation (`If-None-Match: *`) and deletion.
//!
//! These are not part of [`ObjectClient`](crate::client::ObjectClient): the file system never
//! needs them on the mounted bucket, and the cache must see an object's metadata with its bytes in
//! one GET. A body is read up to a bound so a foreign or damaged object cannot make the reader
//! allocate more than one block.

use std::collections::HashMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::{Bytes, BytesMut};

use super::AwsClient;
use crate::client::{ClientError, ClientErrorKind};

/// An object of the cache bucket: its bytes and its user metadata (names lower-case, without the
/// `x-amz-meta-` prefix).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredObject {
    pub data: Bytes,
    pub metadata: HashMap<String, String>,
}

/// How a PUT to the cache bucket is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorePut {
    /// User metadata, sent as `x-amz-meta-<name>`.
    pub metadata: HashMap<String, String>,
    /// Send `x-amz-checksum-crc32c` (the store then rejects a body that does not match it).
    pub crc32c: Option<u32>,
    /// `If-None-Match: *`: create only; an existing key answers [`ClientErrorKind::PreconditionFailed`].
    pub create_only: bool,
    /// `--sse` and `--sse-kms-key-id`, applied to cache objects as to uploads.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
}

impl AwsClient {
    /// GetObject of a whole object with its metadata; `None` if there is no such key. An object
    /// longer than `max_len` is an error (its body is not read further).
    pub async fn get_stored(&self, key: &str, max_len: u64) -> Result<Option<StoredObject>, ClientError> {
        const OP: &str = "GetObject";
        let out = match self
            .fast
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let e = self.error(OP, e);
                return if e.kind == ClientErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        };
        let too_long = |n: u64| ClientError::new(ClientErrorKind::Other, OP, format!("{key:?}: over {n} bytes"));
        if out.content_length().is_some_and(|l| l < 0 || l as u64 > max_len) {
            return Err(too_long(max_len));
        }
        let metadata = out.metadata().cloned().unwrap_or_default();
        let mut body = out.body;
        let mut data = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ClientError::new(
                    ClientErrorKind::Transient,
                    OP,
                    aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
                )
            })?;
            if (data.len() + chunk.len()) as u64 > max_len {
                return Err(too_long(max_len));
            }
            data.extend_from_slice(&chunk);
        }
        let metadata = metadata.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        Ok(Some(StoredObject { data: data.freeze(), metadata }))
    }

    /// PutObject of a small object with metadata (see [`StorePut`]).
    pub async fn put_stored(&self, key: &str, body: Bytes, put: &StorePut) -> Result<(), ClientError> {
        const OP: &str = "PutObject";
        let checksum = put.crc32c.map(|c| aws_smithy_types::base64::encode(c.to_be_bytes()));
        let length = i64::try_from(body.len()).unwrap_or(i64::MAX);
        self.slow
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_length(length)
            .body(ByteStream::from(body))
            .set_metadata((!put.metadata.is_empty()).then(|| put.metadata.clone()))
            .set_if_none_match(put.create_only.then(|| "*".to_string()))
            .set_server_side_encryption(put.sse.as_deref().map(ServerSideEncryption::from))
            .set_ssekms_key_id(put.sse_kms_key_id.clone())
            .set_checksum_algorithm(put.crc32c.map(|_| aws_sdk_s3::types::ChecksumAlgorithm::Crc32C))
            .set_checksum_crc32_c(checksum)
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        Ok(())
    }
}
