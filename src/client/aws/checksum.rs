//! Checksum algorithms chosen per request: an append carries the algorithm of the object it
//! extends ([`PutOptions::checksum_algorithm`](crate::client::PutOptions)), which HeadObject in
//! checksum mode reports ([`crate::client::ObjectMeta::checksum`]).

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::ChecksumAlgorithm;

use crate::client::ObjectChecksum;

/// The SDK's name of `algorithm`.
pub(super) fn sdk_algorithm(algorithm: ObjectChecksum) -> ChecksumAlgorithm {
    match algorithm {
        ObjectChecksum::Crc32 => ChecksumAlgorithm::Crc32,
        ObjectChecksum::Crc32c => ChecksumAlgorithm::Crc32C,
        ObjectChecksum::Crc64nvme => ChecksumAlgorithm::Crc64Nvme,
        ObjectChecksum::Sha1 => ChecksumAlgorithm::Sha1,
        ObjectChecksum::Sha256 => ChecksumAlgorithm::Sha256,
    }
}

/// The algorithm of the object checksum a HeadObject answer carries (checksum mode), if any.
pub(super) fn of_head(out: &HeadObjectOutput) -> Option<ObjectChecksum> {
    [
        (out.checksum_crc64_nvme(), ObjectChecksum::Crc64nvme),
        (out.checksum_crc32_c(), ObjectChecksum::Crc32c),
        (out.checksum_crc32(), ObjectChecksum::Crc32),
        (out.checksum_sha256(), ObjectChecksum::Sha256),
        (out.checksum_sha1(), ObjectChecksum::Sha1),
    ]
    .into_iter()
    .find_map(|(value, algorithm)| value.filter(|v| !v.is_empty()).map(|_| algorithm))
}

/// The CRC32 of `data` as S3 writes it: base64 of the 4 big-endian bytes.
pub(super) fn crc32_base64(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, data) as u32;
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}
