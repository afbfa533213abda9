//! SigV4 as S3 Express signs it, for the directory-bucket emulator ([`super::express`]).
//!
//! The SDK signs requests to a directory bucket for the service `s3express` (CreateSession with
//! the caller's own keys, everything else with the session's keys plus
//! `x-amz-s3session-token`). s3s 0.14.1 only accepts the services `s3` and `sts`, so the
//! emulator's front verifies an `s3express` signature here, byte for byte as AWS computes it,
//! and then re-signs the same canonical request for `s3` with the same secret, so s3s verifies
//! it once more and handles the body (aws-chunked, checksums) as usual. A request whose
//! signature is wrong is refused here and never reaches the store.
//!
//! Limits: only header signatures (no presigned URLs) and unsigned or precomputed payloads (the
//! SDK's default); a body with chunk signatures (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) chains
//! them from the seed signature and would not survive the re-signing.

use hyper::http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: String,
    pub signature: String,
}

impl Authorization {
    /// Parses the header; `None` if it is not a SigV4 header signature.
    pub fn parse(value: &str) -> Option<Authorization> {
        let rest = value.strip_prefix("AWS4-HMAC-SHA256")?.trim();
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, v) = part.trim().split_once('=')?;
            match name {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed_headers = Some(v),
                "Signature" => signature = Some(v),
                _ => return None,
            }
        }
        let mut scope = credential?.split('/');
        let (access_key, date, region, service, terminator) =
            (scope.next()?, scope.next()?, scope.next()?, scope.next()?, scope.next()?);
        if terminator != "aws4_request" || scope.next().is_some() {
            return None;
        }
        Some(Authorization {
            access_key: access_key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers: signed_headers?.to_string(),
            signature: signature?.to_string(),
        })
    }

    /// The header value for these parts.
    pub fn header_value(&self) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
            self.access_key, self.date, self.region, self.service, self.signed_headers, self.signature
        )
    }
}

/// Percent-encodes as SigV4 wants it: unreserved characters as they are, everything else `%XX`.
fn encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as itself, as S3 does in query strings signed by the SDK).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The canonical request of SigV4 for S3 (no path normalisation, no double encoding).
pub fn canonical_request(method: &Method, uri: &Uri, headers: &HeaderMap, signed_headers: &str) -> String {
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&percent_decode(k)), encode(&percent_decode(v)))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).unwrap_or("UNSIGNED-PAYLOAD");
    let path = if uri.path().is_empty() { "/" } else { uri.path() };
    format!("{method}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{payload}", query.join("&"))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature of `canonical` for the scope of `auth`, with `secret`.
pub fn signature(canonical: &str, auth: &Authorization, amz_date: &str, secret: &str) -> String {
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, string_to_sign.as_bytes()))
}
