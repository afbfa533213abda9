//! Block identity and the block file format: what a block proves about itself.
//!
//! Identity: an [`ObjectId`] is one version of one object (bucket, key, ETag) at one block size,
//! as seen from one namespace (store and reading identity);
//! its SHA-256 (over length-prefixed fields, so no two identities share an input) names the
//! directory of its blocks, and a block is that plus an index ([`BlockName`]). The key is never
//! part of a path.
//!
//! File (little-endian), format version 2: the *head*, then the data.
//! The head is `MS3CACHE`, version u32, header length u32, object size u64, block index u64,
//! offset u64, length u64, chunk size u32, then bucket, key and ETag each as u32 length + bytes
//! (the header length counts up to here); then one CRC32C (Castagnoli) per chunk of the data
//! (chunks of [`CHUNK_SIZE`], the last one shorter); then a CRC32C of everything before it in
//! the head. [`parse_head`] accepts a head only if its checksum is right and every field is what
//! the reader asked for and consistent with the block geometry; [`Head::check_chunk`] accepts
//! a chunk only if its CRC is the one the head lists. So a read checks the head and only the
//! chunks it returns (the first 4 KiB of a block cost the head and one 64 KiB chunk, not the
//! whole block), and a damaged chunk is never returned, whichever chunk it is. Version 1 files
//! (one CRC over the whole file) are never read: the version is part of the identity hash, so
//! they sit in other directories, and their header says version 1 anyway; they age out of the
//! LRU like any unused block.

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::client::ETag;

pub(crate) const MAGIC: [u8; 8] = *b"MS3CACHE";
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Data bytes per checksummed chunk; the last chunk of a block may be shorter.
pub(crate) const CHUNK_SIZE: u64 = 64 * 1024;
/// Header bytes before the variable-length fields.
const FIXED_HEADER: usize = 64;
/// Bound on the header, so a damaged length cannot make a reader allocate much.
pub(crate) const MAX_HEADER: usize = 1 << 20;
const CRC_LEN: usize = 4;

/// One object version, as the cache keys it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectId {
    bucket: String,
    key: String,
    etag: ETag,
    hash: [u8; 32],
}

impl ObjectId {
    /// The identity of `key` at `etag` in `bucket`, cached in blocks of `block_size`, in the
    /// empty namespace.
    pub fn new(bucket: &str, key: &str, etag: &ETag, block_size: u64) -> Self {
        Self::in_namespace("", bucket, key, etag, block_size)
    }

    /// The identity of `key` at `etag` in `bucket` as seen from `namespace` (the store and the
    /// reading identity): the same object read through another store or identity is another
    /// object here.
    pub fn in_namespace(namespace: &str, bucket: &str, key: &str, etag: &ETag, block_size: u64) -> Self {
        let mut h = Sha256::new();
        h.update(b"mount-s3 cache\0");
        h.update(FORMAT_VERSION.to_le_bytes());
        h.update(block_size.to_le_bytes());
        for field in [namespace.as_bytes(), bucket.as_bytes(), key.as_bytes(), etag.as_str().as_bytes()] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field);
        }
        ObjectId { bucket: bucket.to_string(), key: key.to_string(), etag: etag.clone(), hash: h.finalize().into() }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn etag(&self) -> &ETag {
        &self.etag
    }

    /// The name of block `index` of this object.
    pub(crate) fn block(&self, index: u64) -> BlockName {
        BlockName { hash: self.hash, index }
    }
}

/// Where a block lives: its object's hash and its index. Also the key of the LRU index and of
/// the in-flight map (SHA-256 makes collisions between identities a non-issue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BlockName {
    pub hash: [u8; 32],
    pub index: u64,
}

impl BlockName {
    /// `<hh>/<62 hex>`, the directory of the object's blocks, relative to the version root.
    pub fn dir(&self) -> PathBuf {
        let mut hex = String::with_capacity(64);
        for b in self.hash {
            let _ = write!(hex, "{b:02x}");
        }
        let (hh, rest) = hex.split_at(2);
        [hh, rest].iter().collect()
    }

    /// `<hh>/<62 hex>/<index:010>`, relative to the version root.
    pub fn path(&self) -> PathBuf {
        self.dir().join(format!("{:010}", self.index))
    }

    /// Parses the three path components of a block file, as [`BlockName::path`] makes them.
    pub fn parse(hh: &str, rest: &str, file: &str) -> Option<BlockName> {
        if hh.len() != 2 || rest.len() != 62 || file.len() < 10 || !file.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hex = format!("{hh}{rest}");
        let mut hash = [0u8; 32];
        for (i, out) in hash.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2)?;
            if !pair.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return None;
            }
            *out = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(BlockName { hash, index: file.parse().ok()? })
    }
}

/// The geometry of block `index` of an object of `object_size` bytes: `(offset, length)`, or
/// `None` if the object has no such block.
pub(crate) fn block_extent(index: u64, block_size: u64, object_size: u64) -> Option<(u64, u64)> {
    let offset = index.checked_mul(block_size)?;
    (offset < object_size).then(|| (offset, block_size.min(object_size - offset)))
}

/// Chunks of a block of `length` bytes.
pub(crate) fn chunk_count(length: u64) -> u64 {
    length.div_ceil(CHUNK_SIZE)
}

fn header_len(id: &ObjectId) -> usize {
    FIXED_HEADER + id.bucket.len() + id.key.len() + id.etag.as_str().len()
}

/// Size of the head (header, chunk checksums, head checksum) of a block of `length` bytes of `id`.
pub(crate) fn head_len(id: &ObjectId, length: u64) -> u64 {
    header_len(id) as u64 + CRC_LEN as u64 * (chunk_count(length) + 1)
}

/// Size of the file holding a block of `length` bytes of `id`.
pub(crate) fn file_len(id: &ObjectId, length: u64) -> u64 {
    head_len(id, length) + length
}

/// The head of block `index` of `id` (at `offset` in an object of `object_size` bytes) whose
/// bytes are `data`, in parts of any sizes.
pub(crate) fn encode_head(id: &ObjectId, index: u64, offset: u64, object_size: u64, data: &[Bytes]) -> Vec<u8> {
    let length: u64 = data.iter().map(|b| b.len() as u64).sum();
    let fields = [id.bucket.as_bytes(), id.key.as_bytes(), id.etag.as_str().as_bytes()];
    let header_len = header_len(id);
    let mut h = Vec::with_capacity(head_len(id, length) as usize);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&(header_len as u32).to_le_bytes());
    for n in [object_size, index, offset, length] {
        h.extend_from_slice(&n.to_le_bytes());
    }
    h.extend_from_slice(&(CHUNK_SIZE as u32).to_le_bytes());
    for f in fields {
        h.extend_from_slice(&(f.len() as u32).to_le_bytes());
        h.extend_from_slice(f);
    }
    debug_assert_eq!(h.len(), header_len);
    // Chunk checksums, across however the data is split.
    let (mut crc, mut in_chunk) = (0u32, 0u64);
    for part in data {
        let mut rest = &part[..];
        while !rest.is_empty() {
            let take = rest.len().min((CHUNK_SIZE - in_chunk) as usize);
            crc = crc32c::crc32c_append(crc, &rest[..take]);
            in_chunk += take as u64;
            rest = &rest[take..];
            if in_chunk == CHUNK_SIZE {
                h.extend_from_slice(&crc.to_le_bytes());
                (crc, in_chunk) = (0, 0);
            }
        }
    }
    if in_chunk > 0 {
        h.extend_from_slice(&crc.to_le_bytes());
    }
    let head_crc = crc32c::crc32c(&h);
    h.extend_from_slice(&head_crc.to_le_bytes());
    debug_assert_eq!(h.len() as u64, head_len(id, length));
    h
}

/// Why a block file (or a chunk of it) was not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Shorter than its header says.
    Short,
    Magic,
    Version(u32),
    /// A length field that cannot be right.
    Header,
    /// A field differs from what was asked for.
    Mismatch(&'static str),
    /// The head's checksum.
    Checksum,
    /// The checksum (or length) of chunk `n`.
    Chunk(u64),
}

/// A block that passed every check.
#[cfg(test)]
#[derive(Clone, Debug)]
pub struct ValidBlock {
    pub data: Bytes,
    pub object_size: u64,
}

/// What a reader expects of a block file.
pub(crate) struct Expected<'a> {
    pub id: &'a ObjectId,
    pub index: u64,
    pub block_size: u64,
    /// The object size, when the reader already knows it.
    pub object_size: Option<u64>,
}

/// A head that passed every check: what the block holds and the checksum of each chunk.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub object_size: u64,
    /// Data bytes of the block.
    pub length: u64,
    /// Where the data starts in the file.
    pub data_start: u64,
    crcs: Vec<u32>,
}

impl Head {
    /// The size the block file must have.
    pub fn file_len(&self) -> u64 {
        self.data_start + self.length
    }

    /// The bytes (within the block) of chunk `k`.
    pub fn chunk_range(&self, k: u64) -> std::ops::Range<u64> {
        (k * CHUNK_SIZE).min(self.length)..((k + 1) * CHUNK_SIZE).min(self.length)
    }

    pub fn chunks(&self) -> u64 {
        self.crcs.len() as u64
    }

    /// Checks that `data` is chunk `k`, whole.
    pub fn check_chunk(&self, k: u64, data: &[u8]) -> Result<(), Invalid> {
        let range = self.chunk_range(k);
        match self.crcs.get(k as usize) {
            Some(crc) if data.len() as u64 == range.end - range.start && crc32c::crc32c(data) == *crc => Ok(()),
            _ => Err(Invalid::Chunk(k)),
        }
    }
}

/// Validates the head of a block file: `buf` is the start of the file, at least its head (more
/// is ignored). The data is not looked at: each chunk is checked when read
/// ([`Head::check_chunk`]).
pub(crate) fn parse_head(buf: &[u8], want: &Expected<'_>) -> Result<Head, Invalid> {
    let mut r = Reader { buf, at: 0 };
    if r.take(8).ok_or(Invalid::Short)? != MAGIC {
        return Err(Invalid::Magic);
    }
    let version = r.u32().ok_or(Invalid::Short)?;
    if version != FORMAT_VERSION {
        return Err(Invalid::Version(version));
    }
    let header_len = r.u32().ok_or(Invalid::Short)? as usize;
    if !(FIXED_HEADER..=MAX_HEADER).contains(&header_len) {
        return Err(Invalid::Header);
    }
    let mut fixed = [0u64; 4];
    for n in &mut fixed {
        *n = r.u64().ok_or(Invalid::Short)?;
    }
    let [object_size, index, offset, length] = fixed;
    if r.u32().ok_or(Invalid::Short)? as u64 != CHUNK_SIZE {
        return Err(Invalid::Mismatch("chunk size"));
    }
    let mut field = || -> Result<&[u8], Invalid> {
        let n = r.u32().ok_or(Invalid::Short)? as usize;
        if n > header_len {
            return Err(Invalid::Header);
        }
        r.take(n).ok_or(Invalid::Short)
    };
    let (bucket, key, etag) = (field()?, field()?, field()?);
    if r.at != header_len {
        return Err(Invalid::Header);
    }
    if bucket != want.id.bucket.as_bytes() {
        return Err(Invalid::Mismatch("bucket"));
    }
    if key != want.id.key.as_bytes() {
        return Err(Invalid::Mismatch("key"));
    }
    if etag != want.id.etag.as_str().as_bytes() {
        return Err(Invalid::Mismatch("etag"));
    }
    if index != want.index {
        return Err(Invalid::Mismatch("index"));
    }
    if want.object_size.is_some_and(|s| s != object_size) {
        return Err(Invalid::Mismatch("object size"));
    }
    let Some((want_offset, want_length)) = block_extent(index, want.block_size, object_size) else {
        return Err(Invalid::Mismatch("offset"));
    };
    if offset != want_offset {
        return Err(Invalid::Mismatch("offset"));
    }
    if length != want_length {
        return Err(Invalid::Mismatch("length"));
    }
    // `length` is at most the block size now, so the table is bounded too.
    let crcs: Vec<u32> = (0..chunk_count(length)).map(|_| r.u32().ok_or(Invalid::Short)).collect::<Result<_, _>>()?;
    let covered = r.at;
    let head_crc = r.u32().ok_or(Invalid::Short)?;
    if crc32c::crc32c(&buf[..covered]) != head_crc {
        return Err(Invalid::Checksum);
    }
    Ok(Head { object_size, length, data_start: r.at as u64, crcs })
}

/// Validates a whole block file and returns its data (zero-copy).
#[cfg(test)]
pub(crate) fn decode(file: Vec<u8>, want: &Expected<'_>) -> Result<ValidBlock, Invalid> {
    let head = parse_head(&file, want)?;
    if (file.len() as u64) < head.file_len() {
        return Err(Invalid::Short);
    }
    if file.len() as u64 != head.file_len() {
        return Err(Invalid::Mismatch("file length"));
    }
    let start = head.data_start as usize;
    for k in 0..head.chunks() {
        let range = head.chunk_range(k);
        head.check_chunk(k, &file[start + range.start as usize..start + range.end as usize])?;
    }
    let object_size = head.object_size;
    Ok(ValidBlock { data: Bytes::from(file).slice(start..), object_size })
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> ObjectId {
        ObjectId::new("bucket", key, &ETag::new("\"e1\""), 100)
    }

    fn file(id: &ObjectId, index: u64, object_size: u64) -> Vec<u8> {
        let (offset, length) = block_extent(index, 100, object_size).unwrap();
        let data: Vec<u8> = (offset..offset + length).map(|i| i as u8).collect();
        let mut f = encode_head(id, index, offset, object_size, &[Bytes::from(data.clone())]);
        f.extend_from_slice(&data);
        assert_eq!(f.len() as u64, file_len(id, length));
        f
    }

    fn want(id: &ObjectId, index: u64) -> Expected<'_> {
        Expected { id, index, block_size: 100, object_size: None }
    }

    #[test]
    fn a_good_block_round_trips_including_a_short_last_block() {
        let k = id("a/b");
        let b = decode(file(&k, 2, 250), &want(&k, 2)).unwrap();
        assert_eq!((b.object_size, b.data.len()), (250, 50));
        assert_eq!(b.data[0], 200);
        assert_eq!(decode(file(&k, 1, 250), &want(&k, 1)).unwrap().data.len(), 100);
    }

    #[test]
    fn every_mismatch_and_every_damage_is_rejected() {
        let k = id("a/b");
        let good = file(&k, 1, 250);
        let other = id("a/c");
        let other_etag = ObjectId::new("bucket", "a/b", &ETag::new("\"e2\""), 100);
        let other_bucket = ObjectId::new("bucket2", "a/b", &ETag::new("\"e1\""), 100);
        assert_eq!(decode(good.clone(), &want(&other, 1)).unwrap_err(), Invalid::Mismatch("key"));
        assert_eq!(decode(good.clone(), &want(&other_etag, 1)).unwrap_err(), Invalid::Mismatch("etag"));
        assert_eq!(decode(good.clone(), &want(&other_bucket, 1)).unwrap_err(), Invalid::Mismatch("bucket"));
        assert_eq!(decode(good.clone(), &want(&k, 0)).unwrap_err(), Invalid::Mismatch("index"));
        let sized = Expected { object_size: Some(251), ..want(&k, 1) };
        assert_eq!(decode(good.clone(), &sized).unwrap_err(), Invalid::Mismatch("object size"));
        let other_geometry = Expected { block_size: 50, ..want(&k, 1) };
        assert!(decode(good.clone(), &other_geometry).is_err());
        // Every single flipped byte anywhere in the file is caught.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(bad, &want(&k, 1)).is_err(), "flip at {i}");
        }
        // Every truncation, and trailing garbage.
        for n in 0..good.len() {
            assert!(decode(good[..n].to_vec(), &want(&k, 1)).is_err(), "truncated to {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode(long, &want(&k, 1)).is_err());
        let mut version = good;
        version[8] = 1;
        assert_eq!(decode(version, &want(&k, 1)).unwrap_err(), Invalid::Version(1));
    }

    /// A file of format version 1 (header, data, one CRC32C over both), as earlier releases
    /// wrote them.
    fn v1_file(id: &ObjectId, index: u64, object_size: u64) -> Vec<u8> {
        let (offset, length) = block_extent(index, 100, object_size).unwrap();
        let fields = [id.bucket.as_bytes(), id.key.as_bytes(), id.etag.as_str().as_bytes()];
        let mut f = b"MS3CACHE".to_vec();
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&((60 + fields.iter().map(|x| x.len()).sum::<usize>()) as u32).to_le_bytes());
        for n in [object_size, index, offset, length] {
            f.extend_from_slice(&n.to_le_bytes());
        }
        for x in fields {
            f.extend_from_slice(&(x.len() as u32).to_le_bytes());
            f.extend_from_slice(x);
        }
        f.extend((offset..offset + length).map(|i| i as u8));
        let crc = crc32c::crc32c(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    #[test]
    fn version_1_files_are_never_read() {
        let k = id("a/b");
        let old = v1_file(&k, 1, 250);
        assert_eq!(decode(old.clone(), &want(&k, 1)).unwrap_err(), Invalid::Version(1));
        assert_eq!(parse_head(&old, &want(&k, 1)).unwrap_err(), Invalid::Version(1));
        // Nor even looked for: the version is part of the identity, so of the path.
        let mut h = Sha256::new();
        h.update(b"mount-s3 cache\0");
        h.update(1u32.to_le_bytes());
        h.update(100u64.to_le_bytes());
        for field in [&b""[..], b"bucket", b"a/b", b"\"e1\""] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field);
        }
        assert_ne!(k.block(0), BlockName { hash: h.finalize().into(), index: 0 });
    }

    #[test]
    fn each_chunk_is_checked_on_its_own() {
        let block_size = 3 * CHUNK_SIZE + 100;
        let k = ObjectId::new("bucket", "big", &ETag::new("\"e1\""), block_size);
        let data: Vec<u8> = (0..block_size).map(|i| (i * 7 % 251) as u8).collect();
        // Split unevenly: chunk checksums do not depend on how the data arrived.
        let parts = [Bytes::copy_from_slice(&data[..1000]), Bytes::copy_from_slice(&data[1000..])];
        let mut f = encode_head(&k, 0, 0, 2 * block_size, &parts);
        assert_eq!(f, encode_head(&k, 0, 0, 2 * block_size, &[Bytes::from(data.clone())]));
        f.extend_from_slice(&data);
        let want = Expected { id: &k, index: 0, block_size, object_size: None };
        let head = parse_head(&f, &want).unwrap();
        assert_eq!((head.chunks(), head.length, head.file_len()), (4, block_size, f.len() as u64));
        assert_eq!(head.chunk_range(3), 3 * CHUNK_SIZE..block_size);
        let start = head.data_start as usize;
        let chunk = |f: &[u8], k: u64| {
            let r = head.chunk_range(k);
            f[start + r.start as usize..start + r.end as usize].to_vec()
        };
        for c in 0..4 {
            head.check_chunk(c, &chunk(&f, c)).unwrap();
        }
        // One flipped byte in chunk 2 fails chunk 2 only; a short chunk fails too.
        let mut bad = f.clone();
        bad[start + 2 * CHUNK_SIZE as usize + 5] ^= 1;
        let bad_head = parse_head(&bad, &want).unwrap();
        assert_eq!(bad_head.check_chunk(2, &chunk(&bad, 2)), Err(Invalid::Chunk(2)));
        for c in [0, 1, 3] {
            bad_head.check_chunk(c, &chunk(&bad, c)).unwrap();
        }
        assert_eq!(head.check_chunk(3, &chunk(&f, 3)[1..]), Err(Invalid::Chunk(3)));
        assert_eq!(decode(bad, &want).unwrap_err(), Invalid::Chunk(2));
        // The head alone is enough to parse it; less is not.
        assert!(parse_head(&f[..start], &want).is_ok());
        assert_eq!(parse_head(&f[..start - 1], &want).unwrap_err(), Invalid::Short);
        assert_eq!(decode(f, &want).unwrap().data, data);
    }

    #[test]
    fn identity_hash_separates_fields_and_block_sizes() {
        let e = ETag::new("e");
        let a = ObjectId::new("b", "ab", &e, 100).block(0);
        assert_ne!(a, ObjectId::new("ba", "b", &e, 100).block(0), "length-prefixed fields");
        assert_ne!(a, ObjectId::new("b", "ab", &e, 200).block(0), "block size is part of identity");
        assert_ne!(a, ObjectId::new("b", "ab", &ETag::new("f"), 100).block(0));
        assert_ne!(a, ObjectId::in_namespace("store-2", "b", "ab", &e, 100).block(0), "the namespace too");
    }

    #[test]
    fn paths_are_hex_only_and_parse_back() {
        for key in ["../../etc/passwd", "/abs", "a/../../b", &"k".repeat(5000), "\u{0}x"] {
            let name = id(key).block(42);
            let path = name.path();
            let parts: Vec<&str> = path.iter().map(|c| c.to_str().unwrap()).collect();
            assert_eq!(parts.len(), 3);
            assert!(parts[..2].iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit())));
            assert_eq!(parts[2], "0000000042");
            assert_eq!(BlockName::parse(parts[0], parts[1], parts[2]), Some(name));
        }
        assert_eq!(BlockName::parse("zz", &"0".repeat(62), "0000000001"), None);
        assert_eq!(BlockName::parse("00", &"0".repeat(62), ".tmp-1"), None);
    }
}
