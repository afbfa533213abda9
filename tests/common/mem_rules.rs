//! Request rules [`super::mem_store::MemStore`] shares between operations: receiving an upload
//! body while verifying every checksum the request announced, and listing continuation tokens.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hyper::http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::{Checksum, ChecksumAlgorithm, StreamingBlob};
use s3s::{S3Result, TrailingHeaders, s3_error};

/// What a request claims about its body: checksums (values may come later, in trailers).
pub struct Claims<'a> {
    /// Values sent in headers.
    pub checksums: Checksum,
    /// `x-amz-sdk-checksum-algorithm`: compute this one even without a value.
    pub algorithm: Option<&'a ChecksumAlgorithm>,
    /// `Content-MD5`, base64.
    pub content_md5: Option<&'a str>,
    /// All request headers (for `x-amz-trailer`).
    pub headers: &'a HeaderMap,
    /// Values sent after an aws-chunked body.
    pub trailers: Option<TrailingHeaders>,
}

/// The checksum fields, by lowercase algorithm name.
fn fields(c: &mut Checksum) -> [(&'static str, &mut Option<String>); 5] {
    [
        ("crc32", &mut c.checksum_crc32),
        ("crc32c", &mut c.checksum_crc32c),
        ("crc64nvme", &mut c.checksum_crc64nvme),
        ("sha1", &mut c.checksum_sha1),
        ("sha256", &mut c.checksum_sha256),
    ]
}

/// The algorithm of the checksums in `sums` (the first one present), by lowercase name.
pub fn algorithm_of(sums: &Checksum) -> Option<&'static str> {
    let mut sums = sums.clone();
    fields(&mut sums).into_iter().find(|(_, value)| value.is_some()).map(|(name, _)| name)
}

/// The checksum of all of `data` with `algorithm` (a lowercase name): what S3 reports for a
/// whole object (a full-object CRC equals the CRC of the whole data).
pub fn checksum_of(algorithm: &str, data: &[u8]) -> Checksum {
    let mut hasher = ChecksumHasher::default();
    match algorithm {
        "crc32" => hasher.crc32 = Some(Default::default()),
        "crc32c" => hasher.crc32c = Some(Default::default()),
        "crc64nvme" => hasher.crc64nvme = Some(Default::default()),
        "sha1" => hasher.sha1 = Some(Default::default()),
        _ => hasher.sha256 = Some(Default::default()),
    }
    hasher.update(data);
    hasher.finalize()
}

/// Reads a whole request body, verifying every checksum the request announced. Returns the
/// bytes and the checksums computed (only those announced).
pub async fn receive(body: Option<StreamingBlob>, mut claims: Claims<'_>) -> S3Result<(Bytes, Checksum)> {
    let mut body = body.ok_or_else(|| s3_error!(IncompleteBody))?;
    let trailer = claims.headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let algorithm = claims.algorithm.map(|a| a.as_str().to_ascii_lowercase());
    let wanted: Vec<&str> = fields(&mut claims.checksums)
        .into_iter()
        .filter(|(name, value)| {
            value.is_some()
                || algorithm.as_deref() == Some(*name)
                || trailer.split(',').any(|t| t.trim().strip_prefix("x-amz-checksum-") == Some(*name))
        })
        .map(|(name, _)| name)
        .collect();
    let mut hasher = ChecksumHasher::default();
    for name in &wanted {
        match *name {
            "crc32" => hasher.crc32 = Some(Default::default()),
            "crc32c" => hasher.crc32c = Some(Default::default()),
            "crc64nvme" => hasher.crc64nvme = Some(Default::default()),
            "sha1" => hasher.sha1 = Some(Default::default()),
            _ => hasher.sha256 = Some(Default::default()),
        }
    }
    let mut md5 = claims.content_md5.map(|_| Md5::new());
    let mut chunks = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "body: {e}"))?;
        hasher.update(&chunk);
        if let Some(md5) = &mut md5 {
            md5.update(&chunk);
        }
        chunks.push(chunk);
    }
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap(),
        _ => {
            let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            chunks.iter().for_each(|c| all.extend_from_slice(c));
            all.freeze()
        }
    };
    if let Some(trailers) = claims.trailers.as_ref().and_then(TrailingHeaders::take) {
        for (name, value) in fields(&mut claims.checksums) {
            if let Some(v) = trailers.get(format!("x-amz-checksum-{name}").as_str()) {
                *value = Some(v.to_str().map_err(|_| s3_error!(InvalidArgument, "checksum trailer"))?.to_string());
            }
        }
    }
    let mut computed = hasher.finalize();
    for ((name, claimed), (_, got)) in fields(&mut claims.checksums).into_iter().zip(fields(&mut computed)) {
        if let Some(claimed) = claimed
            && Some(&*claimed) != got.as_ref()
        {
            return Err(s3_error!(BadDigest, "the {name} you specified did not match the calculated checksum"));
        }
    }
    if let (Some(claimed), Some(md5)) = (claims.content_md5, md5)
        && aws_smithy_types::base64::encode(md5.finalize()) != claimed
    {
        return Err(s3_error!(BadDigest, "the Content-MD5 you specified did not match what we received"));
    }
    Ok((data, computed))
}

/// Reads a PutObject's body, verifying the checksums and `Content-MD5` it announces ([`receive`]).
/// Takes the body out of `input`; everything else stays for the caller.
pub async fn receive_put(
    input: &mut s3s::dto::PutObjectInput,
    headers: &HeaderMap,
    trailers: Option<TrailingHeaders>,
) -> S3Result<(Bytes, Checksum)> {
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
        headers,
        trailers,
    };
    receive(input.body.take(), claims).await
}

/// Where a listing page stopped: after a key, or after a common prefix (whose keys are all
/// skipped). Encoded as hex, so any key survives XML and query strings unchanged.
pub enum ListToken {
    Key(String),
    Prefix(String),
}

impl ListToken {
    pub fn after(&self) -> &str {
        match self {
            ListToken::Key(k) | ListToken::Prefix(k) => k,
        }
    }

    pub fn encode(&self) -> String {
        let (tag, value) = match self {
            ListToken::Key(k) => ('k', k),
            ListToken::Prefix(p) => ('p', p),
        };
        std::iter::once(tag.to_string()).chain(value.bytes().map(|b| format!("{b:02x}"))).collect()
    }

    pub fn decode(token: &str) -> S3Result<ListToken> {
        let invalid = || s3_error!(InvalidArgument, "The continuation token provided is incorrect");
        let (tag, hex) = token.split_at_checked(1).ok_or_else(invalid)?;
        if hex.len() % 2 != 0 {
            return Err(invalid());
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(invalid)?, 16).map_err(|_| invalid()))
            .collect::<S3Result<_>>()?;
        let value = String::from_utf8(bytes).map_err(|_| invalid())?;
        match tag {
            "k" => Ok(ListToken::Key(value)),
            "p" => Ok(ListToken::Prefix(value)),
            _ => Err(invalid()),
        }
    }
}

/// A listed key, prefix, delimiter or start-after as S3 writes it under `encoding-type=url`:
/// unreserved characters and `/` as they are, a space as `+`, every other byte as `%XX`.
pub fn url_encode_listed(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
