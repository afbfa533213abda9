//! Full-object CRC64NVME for `--upload-checksums crc64nvme`.
//!
//! S3 checks a full-object CRC64NVME against the whole object it assembled, so a part sent in
//! the wrong order or a byte changed anywhere fails the write. A PutObject carries the CRC of its
//! body. A multipart upload is created with type FULL_OBJECT; each part carries its own CRC, which
//! is recorded here with its length; CompleteMultipartUpload carries the object's CRC, combined
//! from the parts' in part order (CRCs combine without the data, so parts can still go out
//! concurrently and nothing is read twice). Wherever S3 answers with its own value, it must equal
//! ours.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crc_fast::CrcAlgorithm;

use crate::client::{ClientError, ClientErrorKind};

/// The CRC64NVME of `data`.
pub(crate) fn crc64nvme(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
}

/// A CRC64NVME as S3 writes it: base64 of the 8 big-endian bytes.
pub(crate) fn to_base64(crc: u64) -> String {
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

/// A CRC64NVME from S3's base64 form; `None` unless it is exactly 8 bytes.
pub(crate) fn from_base64(text: &str) -> Option<u64> {
    let bytes = aws_smithy_types::base64::decode(text).ok()?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// An error unless S3's value (if it gave one) is the one we sent.
pub(crate) fn check_acknowledged(
    operation: &'static str,
    what: &str,
    sent: &str,
    acknowledged: Option<&str>,
) -> Result<(), ClientError> {
    match acknowledged {
        Some(theirs) if theirs != sent => Err(ClientError::new(
            ClientErrorKind::Other,
            operation,
            format!("{what}: sent CRC64NVME {sent}, S3 computed {theirs}"),
        )),
        _ => Ok(()),
    }
}

/// (CRC, length) of each part of one upload, by part number.
type Parts = BTreeMap<u32, (u64, u64)>;

/// The parts of the multipart uploads in progress, by upload id.
#[derive(Debug, Default)]
pub(crate) struct PartCrcs {
    uploads: Mutex<HashMap<String, Parts>>,
}

impl PartCrcs {
    /// Records part `number` (a retried part replaces its earlier record).
    pub(crate) fn record(&self, upload_id: &str, number: u32, crc: u64, len: u64) {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        uploads.entry(upload_id.to_string()).or_default().insert(number, (crc, len));
    }

    /// The object's CRC: the parts' combined in the order given. `Err(n)`: part n is unknown.
    pub(crate) fn combined(&self, upload_id: &str, parts: &[u32]) -> Result<u64, u32> {
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = uploads.get(upload_id);
        let mut crc = crc64nvme(&[]);
        for (i, number) in parts.iter().enumerate() {
            let &(part_crc, len) = recorded.and_then(|r| r.get(number)).ok_or(*number)?;
            crc =
                if i == 0 { part_crc } else { crc_fast::checksum_combine(CrcAlgorithm::Crc64Nvme, crc, part_crc, len) };
        }
        Ok(crc)
    }

    /// Drops the records of a completed or aborted upload.
    pub(crate) fn forget(&self, upload_id: &str) {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(upload_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_combine_into_the_crc_of_the_whole_object() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let crcs = PartCrcs::default();
        // Recorded out of order, as concurrent parts finish; part 2 retried.
        let parts = [(1u32, &data[..4096]), (3, &data[8192..]), (2, &data[4096..8192])];
        crcs.record("u", 2, 0xdead, 4096);
        for (number, part) in parts {
            crcs.record("u", number, crc64nvme(part), part.len() as u64);
        }
        assert_eq!(crcs.combined("u", &[1, 2, 3]), Ok(crc64nvme(&data)));
        assert_eq!(crcs.combined("u", &[1, 2, 3, 4]), Err(4));
        assert_eq!(crcs.combined("other", &[1]), Err(1));
        crcs.forget("u");
        assert_eq!(crcs.combined("u", &[1]), Err(1));
        assert_eq!(crcs.combined("u", &[]), Ok(crc64nvme(&[])));
    }

    #[test]
    fn base64_round_trips() {
        let crc = crc64nvme(b"123456789");
        assert_eq!(from_base64(&to_base64(crc)), Some(crc));
        assert_eq!(from_base64("AAAA"), None);
        assert_eq!(from_base64("not base64!"), None);
    }

    #[test]
    fn known_values() {
        // The CRC-64/NVME check value ("123456789").
        assert_eq!(crc64nvme(b"123456789"), 0xae8b_1486_0a79_9888);
        assert_eq!(to_base64(0xae8b_1486_0a79_9888), "rosUhgp5mIg=");
    }
}
