//! Ranged GETs: the `Range` header, checking that the answer covers exactly what was asked,
//! and a body stream that reports a short or long body as an error instead of ending quietly.
//!
//! The contract ([`crate::client::ObjectClient::get_object`]): a request for `start..end` of an
//! object of `size` bytes yields exactly `start..min(end, size)`. A server that answers with other
//! bytes (a different range, the whole object, a body that stops early) must never reach the
//! reader as if it were the data.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::client::{ClientError, ClientErrorKind, GetStream};

const OPERATION: &str = "GetObject";

/// `Range: bytes=a-b` for the half-open `range` (HTTP ranges are inclusive). `range` must be
/// non-empty.
pub(crate) fn range_header(range: &Range<u64>) -> String {
    debug_assert!(range.start < range.end, "empty range {range:?}");
    format!("bytes={}-{}", range.start, range.end - 1)
}

/// Parses `Content-Range: bytes a-b/total` (`total` may be `*`) into `(a, b, total)`.
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some((first, last, total))
}

/// What a checked GET answer promises: the body length to expect and the object's size.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct CheckedRange {
    pub body_len: u64,
    pub object_size: u64,
}

/// Checks the response headers of a GET for `requested` against the contract.
pub(crate) fn check_response_range(
    requested: &Range<u64>,
    content_range: Option<&str>,
    content_length: Option<i64>,
) -> Result<CheckedRange, String> {
    let content_length = content_length.map(|l| u64::try_from(l).map_err(|_| format!("Content-Length {l}")));
    let content_length = content_length.transpose()?;
    let checked = match content_range {
        Some(header) => {
            let (first, last, total) =
                parse_content_range(header).ok_or_else(|| format!("unparseable Content-Range {header:?}"))?;
            let total = total.ok_or_else(|| format!("Content-Range {header:?} does not give the object size"))?;
            let want_last = requested.end.min(total) - 1;
            if first != requested.start || last != want_last {
                return Err(format!(
                    "asked for bytes {}-{} but the server sent Content-Range {header:?}",
                    requested.start,
                    requested.end - 1
                ));
            }
            CheckedRange { body_len: last - first + 1, object_size: total }
        }
        None => {
            // No Content-Range: a 200 with the whole object. Fine only if that is what we asked for.
            let size = content_length.ok_or("neither Content-Range nor Content-Length in the answer")?;
            if requested.start != 0 || requested.end < size {
                return Err(format!(
                    "asked for bytes {}-{} but the server ignored the Range and sent all {size} bytes",
                    requested.start,
                    requested.end - 1
                ));
            }
            CheckedRange { body_len: size, object_size: size }
        }
    };
    if let Some(len) = content_length
        && len != checked.body_len
    {
        return Err(format!("Content-Length {len} does not match the range's {} bytes", checked.body_len));
    }
    Ok(checked)
}

/// Wraps a body so it yields exactly `expected` bytes or ends in a
/// [`ClientErrorKind::Transient`] error. Empty chunks are dropped.
pub(crate) fn checked_body<S>(source: S, expected: u64) -> GetStream
where
    S: Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    struct State<S> {
        source: std::pin::Pin<Box<S>>,
        got: u64,
        expected: u64,
        done: bool,
    }
    let state = State { source: Box::pin(source), got: 0, expected, done: false };
    let stream = futures::stream::unfold(state, |mut st| async move {
        while !st.done {
            let item = match st.source.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    st.got += chunk.len() as u64;
                    if st.got > st.expected {
                        st.done = true;
                        Err(transient(format!("body longer than requested: got {} of {} bytes", st.got, st.expected)))
                    } else {
                        Ok(chunk)
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    Err(transient(format!("body read failed after {} of {} bytes: {e}", st.got, st.expected)))
                }
                None if st.got < st.expected => {
                    st.done = true;
                    Err(transient(format!("body cut short: got {} of {} bytes", st.got, st.expected)))
                }
                None => return None,
            };
            return Some((item, st));
        }
        None
    });
    Box::pin(stream)
}

fn transient(message: String) -> ClientError {
    ClientError::new(ClientErrorKind::Transient, OPERATION, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_are_inclusive() {
        assert_eq!(range_header(&(0..1)), "bytes=0-0");
        assert_eq!(range_header(&(0..100)), "bytes=0-99");
        assert_eq!(range_header(&(5..6)), "bytes=5-5");
        assert_eq!(range_header(&(1 << 40..(1 << 40) + 8)), format!("bytes={}-{}", 1u64 << 40, (1u64 << 40) + 7));
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, Some(1000))));
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(parse_content_range(" bytes  7-9/10 "), Some((7, 9, Some(10))));
        for bad in ["", "bytes", "bytes 9-7/10", "bytes 0-10/10", "items 0-1/2", "bytes a-b/c", "bytes 0-1"] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn responses_must_cover_exactly_the_request() {
        let ok = |body_len, object_size| Ok(CheckedRange { body_len, object_size });
        assert_eq!(check_response_range(&(0..10), Some("bytes 0-9/100"), Some(10)), ok(10, 100));
        assert_eq!(check_response_range(&(90..200), Some("bytes 90-99/100"), Some(10)), ok(10, 100));
        assert_eq!(check_response_range(&(90..200), Some("bytes 90-99/100"), None), ok(10, 100));
        assert_eq!(check_response_range(&(0..200), None, Some(100)), ok(100, 100));
        assert!(check_response_range(&(1..10), Some("bytes 0-9/100"), Some(10)).is_err());
        assert!(check_response_range(&(0..10), Some("bytes 0-8/100"), Some(9)).is_err());
        assert!(check_response_range(&(0..10), Some("bytes 0-9/100"), Some(11)).is_err());
        assert!(check_response_range(&(0..10), Some("bytes 0-9/*"), Some(10)).is_err());
        assert!(check_response_range(&(5..10), None, Some(100)).is_err());
        assert!(check_response_range(&(0..10), None, Some(100)).is_err());
        assert!(check_response_range(&(0..10), None, None).is_err());
    }

    fn collect(stream: GetStream) -> Vec<Result<Bytes, ClientError>> {
        futures::executor::block_on(stream.collect::<Vec<_>>())
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Send + 'static {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[test]
    fn a_complete_body_passes_through() {
        let items = collect(checked_body(chunks(&[b"abc", b"", b"de"]), 5));
        let bytes: Vec<u8> = items.into_iter().flat_map(|i| i.unwrap().to_vec()).collect();
        assert_eq!(bytes, b"abcde");
    }

    #[test]
    fn a_short_body_ends_in_a_transient_error() {
        let items = collect(checked_body(chunks(&[b"abc"]), 5));
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::Transient);
        assert_eq!(err.message, "body cut short: got 3 of 5 bytes");
    }

    #[test]
    fn a_long_body_or_a_read_error_ends_the_stream() {
        let items = collect(checked_body(chunks(&[b"abc", b"def"]), 5));
        assert_eq!(items.len(), 2);
        assert!(items[1].as_ref().unwrap_err().message.contains("longer than requested"));

        let failing = futures::stream::iter(vec![Ok(Bytes::from_static(b"ab")), Err("reset".to_string())]);
        let items = collect(checked_body(failing, 5));
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::Transient);
        assert!(err.message.contains("after 2 of 5 bytes: reset"), "{}", err.message);
    }
}
