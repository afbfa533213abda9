//! ListObjectsV2 with `encoding-type=url`, and decoding its answer back to raw keys.
//!
//! S3 keys may hold characters XML 1.0 cannot carry at all (`\x01`, NUL, most C0 controls):
//! listed plainly, one such key makes the whole page unparseable, so a directory (or the mount
//! probe, when it is the bucket's first key) fails. Every listing therefore asks for
//! `encoding-type=url`; S3, Garage and moto then percent-encode `Key`, `Prefix`, `Delimiter`,
//! `StartAfter` and the common prefixes (S3 writes a space as `+`, so `+` decodes to a space; a
//! literal `+` arrives as `%2B`). Only the keys and common prefixes are read back, and they are
//! decoded only when the answer says `EncodingType: url`, so a server that ignores the parameter
//! still lists correctly (as long as its XML parses). The continuation token is opaque and never
//! encoded. The trait above sees raw keys only.
//!
//! A listed key that does not decode (a malformed escape, or bytes that are not UTF-8, which S3
//! never produces) is skipped with a warning rather than failing the page.

use aws_sdk_s3::types::EncodingType;

use crate::escape::escaped;

/// The encoding every listing asks for.
pub(super) const ENCODING: EncodingType = EncodingType::Url;

/// Decodes one listed key or prefix as the answer's `EncodingType` says; `None` if it cannot be
/// decoded (logged once here).
pub(super) fn decode_listed(value: &str, encoding: Option<&EncodingType>) -> Option<String> {
    if encoding != Some(&EncodingType::Url) {
        return Some(value.to_string());
    }
    let decoded = url_decode(value);
    if decoded.is_none() {
        tracing::warn!(key = %escaped(value), "listed key skipped: its url encoding is malformed or not UTF-8");
    }
    decoded
}

/// Form-style percent-decoding (`+` is a space), strict: a `%` must start two hex digits and the
/// result must be UTF-8.
fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_only_when_the_answer_says_url() {
        let url = Some(&EncodingType::Url);
        assert_eq!(decode_listed("ctl/bad%01name", url).as_deref(), Some("ctl/bad\x01name"));
        assert_eq!(decode_listed("nul%00", url).as_deref(), Some("nul\0"));
        assert_eq!(decode_listed("a+b%2Bc%2fd", url).as_deref(), Some("a b+c/d"));
        assert_eq!(decode_listed("%C3%BC%F0%9F%A6%80", url).as_deref(), Some("ü🦀"));
        assert_eq!(decode_listed("100%25.txt", url).as_deref(), Some("100%.txt"));
        assert_eq!(decode_listed("plain/ü", url).as_deref(), Some("plain/ü"), "moto leaves '/' as is");
        assert_eq!(decode_listed("100%25+x", None).as_deref(), Some("100%25+x"), "not encoded: raw");
    }

    #[test]
    fn malformed_encodings_are_skipped() {
        let url = Some(&EncodingType::Url);
        for bad in ["%", "%4", "%zz", "a%g1", "%ff%fe", "%C3"] {
            assert_eq!(decode_listed(bad, url), None, "{bad}");
        }
    }
}
