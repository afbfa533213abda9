//! The durable record of a staged file: what a later mount needs to know about staged data that
//! a crash left behind (which bucket and key, which version of the object it was staged from).
//!
//! Format (little endian): magic `MS3STAGE`, format version (u32), base size (u64), then bucket,
//! key and ETag, each as a u32 length and its bytes, then a CRC32C (u32) of everything before it.
//! A record is written to a temporary name, fsynced and renamed into place. Records are read
//! back as untrusted: any length, UTF-8 or checksum problem makes the record unreadable.

use std::io;

const MAGIC: &[u8; 8] = b"MS3STAGE";
const VERSION: u32 = 1;
/// Longest string field accepted when reading (S3 keys are at most 1024 bytes).
const MAX_FIELD: usize = 4096;

/// What the record of one staged file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageRecord {
    pub bucket: String,
    pub key: String,
    /// The ETag of the object the file was staged from; empty for a file staged without one.
    pub etag: String,
    /// The size of that object.
    pub base_size: u64,
}

impl StageRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.key.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.base_size.to_le_bytes());
        for field in [&self.bucket, &self.key, &self.etag] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a record read from disk; anything malformed is an `InvalidData` error.
    pub fn decode(bytes: &[u8]) -> io::Result<StageRecord> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("staging record: {why}"));
        if bytes.len() < MAGIC.len() + 4 + 8 + 12 + 4 {
            return Err(bad("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        if &body[..8] != MAGIC {
            return Err(bad("not a staging record"));
        }
        let mut rest = &body[8..];
        let mut take = |n: usize| -> io::Result<&[u8]> {
            if rest.len() < n {
                return Err(bad("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let version = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(bad("unknown format version"));
        }
        let base_size = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let mut fields = Vec::with_capacity(3);
        for _ in 0..3 {
            let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            if len > MAX_FIELD {
                return Err(bad("field too long"));
            }
            let s = std::str::from_utf8(take(len)?).map_err(|_| bad("not UTF-8"))?;
            fields.push(s.to_string());
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let etag = fields.pop().expect("3 fields");
        let key = fields.pop().expect("3 fields");
        let bucket = fields.pop().expect("3 fields");
        Ok(StageRecord { bucket, key, etag, base_size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let record =
            StageRecord { bucket: "b".into(), key: "dir/db.sqlite".into(), etag: "\"abc\"".into(), base_size: 12345 };
        let bytes = record.encode();
        assert_eq!(StageRecord::decode(&bytes).unwrap(), record);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(StageRecord::decode(&damaged).is_err(), "flipped byte {i} accepted");
        }
        for len in 0..bytes.len() {
            assert!(StageRecord::decode(&bytes[..len]).is_err());
        }
    }
}
