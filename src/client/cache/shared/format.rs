//! Block objects of the shared cache: their keys and the metadata that proves what they hold.
//!
//! The layout is Mountpoint's (cache version `V2`), so mixed fleets share one cache bucket:
//! - prefix: lower-case hex SHA-256 of `V2`, the block size (u64 big-endian) and the source
//!   bucket name;
//! - block key: `<prefix>/<hex SHA-256 of source key then ETag>/<block index, 10 digits>`;
//! - body: the block's bytes, uploaded with their CRC32C checksum;
//! - user metadata: `cache-version` (`V2`), `block-idx`, `block-offset` (decimal), `etag`,
//!   `source-key` (standard base64 of the key), `source-bucket-name`, and `header-checksum`: the
//!   decimal CRC32C of `V2`, index and offset (u64 big-endian), ETag, key, bucket and the data's
//!   CRC32C (u32 big-endian).
//!
//! We add `object-size` (decimal), which Mountpoint ignores: a block read back must tell how
//! large its object is. A block without it (written by Mountpoint) is used only when the size is
//! known otherwise (an earlier block, or a block shorter than the block size, which is the last).
//!
//! A block is served only if every field matches the request and the header checksum computed
//! over the bytes received matches the stored one, which also proves the bytes are those the
//! writer checksummed. Anything else is a miss.

use std::collections::HashMap;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::client::cache::format::{ObjectId, block_extent};

/// Mountpoint's shared-cache format version.
pub const CACHE_VERSION: &str = "V2";

/// The metadata header carrying the object size (ours; Mountpoint ignores it).
const OBJECT_SIZE: &str = "object-size";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key prefix of every block of `source_bucket` at `block_size`.
pub fn key_prefix(source_bucket: &str, block_size: u64) -> String {
    let mut h = Sha256::new();
    h.update(CACHE_VERSION.as_bytes());
    h.update(block_size.to_be_bytes());
    h.update(source_bucket.as_bytes());
    hex(&h.finalize())
}

/// The key of block `index` of `key` at `etag`, under `prefix` ([`key_prefix`]).
pub fn block_key(prefix: &str, key: &str, etag: &str, index: u64) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(etag.as_bytes());
    format!("{prefix}/{}/{index:010}", hex(&h.finalize()))
}

/// Mountpoint's header checksum of a block.
fn header_checksum(bucket: &str, key: &str, etag: &str, index: u64, offset: u64, data_crc: u32) -> u32 {
    let mut crc = crc32c::crc32c(CACHE_VERSION.as_bytes());
    for part in
        [&index.to_be_bytes()[..], &offset.to_be_bytes()[..], etag.as_bytes(), key.as_bytes(), bucket.as_bytes()]
    {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc32c::crc32c_append(crc, &data_crc.to_be_bytes())
}

/// The user metadata of block `index` (at `offset`) of `key` at `etag` in `bucket`, holding
/// `data`, of an object of `object_size` bytes.
pub fn block_metadata(
    bucket: &str,
    key: &str,
    etag: &str,
    index: u64,
    offset: u64,
    data: &[u8],
    object_size: u64,
) -> HashMap<String, String> {
    let crc = crc32c::crc32c(data);
    let fields = [
        ("cache-version", CACHE_VERSION.to_string()),
        ("block-idx", index.to_string()),
        ("block-offset", offset.to_string()),
        ("etag", etag.to_string()),
        ("source-key", aws_smithy_types::base64::encode(key.as_bytes())),
        ("source-bucket-name", bucket.to_string()),
        ("header-checksum", header_checksum(bucket, key, etag, index, offset, crc).to_string()),
        (OBJECT_SIZE, object_size.to_string()),
    ];
    fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Why a block object read back was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("metadata {0} missing or not what was asked for")]
    Field(&'static str),
    #[error("header checksum does not match the bytes")]
    Checksum,
    #[error("{0} bytes where the block geometry says {1}")]
    Length(u64, String),
    #[error("object size unknown (a full block without object-size)")]
    SizeUnknown,
}

/// A block object that proved to be block `index` of `id`: its bytes and its object's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBlock {
    pub data: Bytes,
    pub object_size: u64,
}

/// Checks a block object read back for block `index` of `id` (`source_bucket`, blocks of
/// `block_size`); `known_size` is the object size if the reader knows it.
pub fn check_block(
    source_bucket: &str,
    id: &ObjectId,
    index: u64,
    block_size: u64,
    known_size: Option<u64>,
    data: Bytes,
    metadata: &HashMap<String, String>,
) -> Result<CheckedBlock, Invalid> {
    let (key, etag) = (id.key(), id.etag().as_str());
    let offset = index.checked_mul(block_size).ok_or(Invalid::Field("block-offset"))?;
    let field = |name: &'static str, want: &str| match metadata.get(name) {
        Some(v) if v == want => Ok(()),
        _ => Err(Invalid::Field(name)),
    };
    field("cache-version", CACHE_VERSION)?;
    field("block-idx", &index.to_string())?;
    field("block-offset", &offset.to_string())?;
    field("etag", etag)?;
    field("source-key", &aws_smithy_types::base64::encode(key.as_bytes()))?;
    field("source-bucket-name", source_bucket)?;
    let crc = crc32c::crc32c(&data);
    field("header-checksum", &header_checksum(source_bucket, key, etag, index, offset, crc).to_string())
        .map_err(|_| Invalid::Checksum)?;
    let len = data.len() as u64;
    let stated = match metadata.get(OBJECT_SIZE) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| Invalid::Field(OBJECT_SIZE))?),
        None => None,
    };
    if let (Some(a), Some(b)) = (stated, known_size)
        && a != b
    {
        return Err(Invalid::Field(OBJECT_SIZE));
    }
    let size = match stated.or(known_size) {
        Some(size) => size,
        // Only the last block is short: it ends the object.
        None if len > 0 && len < block_size => offset + len,
        None => return Err(Invalid::SizeUnknown),
    };
    match block_extent(index, block_size, size) {
        Some((_, want)) if want == len => Ok(CheckedBlock { data, object_size: size }),
        Some((_, want)) => Err(Invalid::Length(len, want.to_string())),
        None => Err(Invalid::Length(len, format!("no block {index} in {size} bytes"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ETag;

    const BS: u64 = 8;

    fn id(key: &str, etag: &str) -> ObjectId {
        ObjectId::new("src", key, &ETag::new(etag), BS)
    }

    #[test]
    fn keys_follow_the_v2_layout() {
        let prefix = key_prefix("src", 1024 * 1024);
        assert_eq!(prefix.len(), 64);
        assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(prefix, key_prefix("src", 512 * 1024), "the block size is part of the prefix");
        assert_ne!(prefix, key_prefix("other", 1024 * 1024), "the source bucket is part of the prefix");
        let key = block_key(&prefix, "a/b", "\"e1\"", 7);
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!((parts.len(), parts[0], parts[1].len(), parts[2]), (3, prefix.as_str(), 64, "0000000007"));
        assert_ne!(key, block_key(&prefix, "a/b", "\"e2\"", 7), "a new ETag is a new key");
        // The key is hashed, so no source key makes the cache key long.
        assert!(block_key(&prefix, &"k".repeat(1024), "e", u64::MAX).len() < 160);
    }

    #[test]
    fn a_block_checks_only_against_what_it_was_written_for() {
        let a = id("dir/a", "\"e1\"");
        let data = Bytes::from_static(b"0123456789");
        let block = |index: u64, object_size: u64| {
            let (off, len) = block_extent(index, BS, object_size).unwrap();
            let bytes = data.slice(off as usize..(off + len) as usize);
            (bytes.clone(), block_metadata("src", "dir/a", "\"e1\"", index, off, &bytes, object_size))
        };
        let (b0, m0) = block(0, 10);
        let ok = check_block("src", &a, 0, BS, None, b0.clone(), &m0).unwrap();
        assert_eq!((ok.data, ok.object_size), (b0.clone(), 10));
        let (b1, m1) = block(1, 10);
        assert_eq!(check_block("src", &a, 1, BS, Some(10), b1.clone(), &m1).unwrap().object_size, 10);

        // Another block, version, key or bucket, other bytes, another size: all misses.
        assert_eq!(check_block("src", &a, 1, BS, None, b0.clone(), &m0), Err(Invalid::Field("block-idx")));
        assert_eq!(
            check_block("src", &id("dir/a", "\"e2\""), 0, BS, None, b0.clone(), &m0),
            Err(Invalid::Field("etag"))
        );
        assert_eq!(
            check_block("src", &id("dir/b", "\"e1\""), 0, BS, None, b0.clone(), &m0),
            Err(Invalid::Field("source-key"))
        );
        assert_eq!(check_block("dst", &a, 0, BS, None, b0.clone(), &m0), Err(Invalid::Field("source-bucket-name")));
        let flipped = Bytes::from_static(b"0123456X");
        assert_eq!(check_block("src", &a, 0, BS, None, flipped, &m0), Err(Invalid::Checksum));
        assert_eq!(check_block("src", &a, 0, BS, Some(11), b0.clone(), &m0), Err(Invalid::Field("object-size")));

        // Mountpoint's blocks carry no object size: a short block is the last one, a full one
        // needs the size from elsewhere.
        let mut upstream = m0.clone();
        upstream.remove("object-size");
        assert_eq!(check_block("src", &a, 0, BS, None, b0.clone(), &upstream), Err(Invalid::SizeUnknown));
        assert_eq!(check_block("src", &a, 0, BS, Some(10), b0, &upstream).unwrap().object_size, 10);
        let mut upstream1 = m1.clone();
        upstream1.remove("object-size");
        assert_eq!(check_block("src", &a, 1, BS, None, b1, &upstream1).unwrap().object_size, 10);

        // A length that does not fit the stated size.
        let mut lying = m0.clone();
        lying.insert("object-size".into(), "20".into());
        let (b1, _) = block(1, 10);
        let m = block_metadata("src", "dir/a", "\"e1\"", 1, 8, &b1, 20);
        assert!(matches!(check_block("src", &a, 1, BS, None, b1, &m), Err(Invalid::Length(2, _))));
        let mut missing = m0;
        missing.remove("header-checksum");
        assert_eq!(
            check_block("src", &a, 0, BS, None, Bytes::from_static(b"01234567"), &missing),
            Err(Invalid::Checksum)
        );
    }

    #[test]
    fn the_header_checksum_covers_every_field_in_order() {
        // Computed by hand from the definition: CRC32C over the concatenation.
        let mut all = Vec::new();
        all.extend_from_slice(b"V2");
        all.extend_from_slice(&3u64.to_be_bytes());
        all.extend_from_slice(&(3u64 << 20).to_be_bytes());
        all.extend_from_slice(b"\"etag\"");
        all.extend_from_slice(b"key");
        all.extend_from_slice(b"bucket");
        all.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        assert_eq!(header_checksum("bucket", "key", "\"etag\"", 3, 3 << 20, 0xdead_beef), crc32c::crc32c(&all));
    }
}
