//! Settling a write whose outcome is unknown.
//!
//! A PutObject or CompleteMultipartUpload can fail in a way that says nothing about its effect:
//! a 2xx answer whose body cannot be read, a lost answer whose retry is refused ("no such
//! upload", "exists"), an abort after a failure answered "no such upload". S3 may hold the new
//! object or not. Instead of reporting a failure (or a success) we do not know, the key is asked
//! for with HeadObject: the object is ours when its size and ETag are the ones our request makes
//! (the MD5 of the body for a PutObject; for a multipart upload, the MD5 of the parts' MD5s
//! followed by `-N`, as S3 computes it). Anything else is an honest EIO that says what S3 holds.

use md5::{Digest, Md5};

use crate::client::{ClientError, ClientErrorKind, ETag, ObjectClient, UploadedPart};
use crate::escape::escaped;
use crate::fs::FsError;

/// The object a write would have made, as S3 describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    /// `None` when it cannot be computed (a part ETag that is not an MD5, as with SSE-KMS).
    pub etag: Option<String>,
}

impl Expected {
    /// A PutObject of `body`.
    pub fn put(body: &[u8]) -> Expected {
        Expected { size: body.len() as u64, etag: Some(hex(&Md5::digest(body))) }
    }

    /// A multipart upload of `parts`, `size` bytes in all.
    pub fn multipart(size: u64, parts: &[UploadedPart]) -> Expected {
        let mut md5 = Md5::new();
        for part in parts {
            match unhex(bare(part.etag.as_str())) {
                Some(digest) if digest.len() == 16 => md5.update(&digest),
                _ => return Expected { size, etag: None },
            }
        }
        Expected { size, etag: Some(format!("{}-{}", hex(&md5.finalize()), parts.len())) }
    }
}

/// Asks S3 what `key` holds after `cause` left a write's outcome unknown: `Ok` with the
/// object's ETag if it is ours, else the error to report (EIO), which says what was found.
pub async fn settle(
    client: &dyn ObjectClient,
    key: &str,
    expected: &Expected,
    cause: &ClientError,
) -> Result<ETag, FsError> {
    let outcome = |detail: String| FsError::UploadOutcome { key: key.to_string(), detail, unknown: false };
    let meta = match client.head_object(key).await {
        Ok(meta) => meta,
        Err(e) if e.kind == ClientErrorKind::NotFound => {
            return Err(outcome(format!("{cause}; S3 has no object at the key, so the upload did not land")));
        }
        Err(e) => {
            return Err(FsError::UploadOutcome {
                key: key.to_string(),
                detail: format!(
                    "{cause}; asking S3 what it holds failed too ({e}): whether the object landed is unknown"
                ),
                unknown: true,
            });
        }
    };
    let ours = meta.size == expected.size
        && expected.etag.as_deref().is_some_and(|want| bare(meta.etag.as_str()).eq_ignore_ascii_case(want));
    if ours {
        tracing::warn!(
            key = %escaped(key),
            size = meta.size,
            etag = %escaped(meta.etag.as_str()),
            "the answer to an upload could not be read ({cause}); S3 holds an object of our size and ETag, so the \
             upload succeeded"
        );
        return Ok(meta.etag);
    }
    let why = match &expected.etag {
        _ if meta.size != expected.size => format!("{} bytes instead of our {}", meta.size, expected.size),
        Some(want) => format!("ETag {} instead of our \"{want}\"", escaped(meta.etag.as_str())),
        None => "the right size, but its ETag cannot be compared with our parts' (not MD5s)".to_string(),
    };
    Err(outcome(format!("{cause}; S3 holds an object with {why}: it is not known to be ours")))
}

/// An ETag without its quotes.
fn bare(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_computed_as_s3_does() {
        // MD5("") and MD5("abc").
        assert_eq!(Expected::put(b"").etag.unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
        let part = |etag: &str| UploadedPart { part_number: 1, etag: ETag::new(etag), checksum_crc32c: None };
        let parts = [part("\"900150983cd24fb0d6963f7d28e17f72\""), part("\"d41d8cd98f00b204e9800998ecf8427e\"")];
        let multi = Expected::multipart(3, &parts);
        assert!(multi.etag.as_deref().unwrap().ends_with("-2"));
        assert_eq!(Expected::multipart(3, &[part("\"not-an-md5\"")]).etag, None);
    }
}
