//! Conformance cases for server-side copies, user metadata and conditional replacement: what
//! rename (copy pinned to the source's ETag), chmod (copy onto itself with new metadata) and
//! modify-in-place (If-Match replacement, UploadPartCopy of unchanged bytes) rely on.

use super::*;

fn meta(pairs: &[(&str, &str)]) -> UserMetadata {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn with_meta(pairs: &[(&str, &str)]) -> PutOptions {
    PutOptions { metadata: meta(pairs), ..PutOptions::default() }
}

pub async fn copy_object(f: Fixture) {
    let data = pattern_bytes(5000, 0);
    let c = f.client.as_ref();
    c.put_object("src file+1", data.clone(), &with_meta(&[("mode", "33188")])).await.unwrap();
    let copied = c.copy_object("src file+1", "dst/copy", &CopyOptions::default()).await.unwrap();
    let head = c.head_object("dst/copy").await.unwrap();
    assert_eq!(head.size, 5000);
    assert_eq!(head.etag, copied.etag);
    assert_eq!(head.metadata, meta(&[("mode", "33188")]), "COPY keeps the source's metadata");
    assert!(f.get("dst/copy", 0..5000).await[..] == data[..]);
    assert!(f.get("src file+1", 0..5000).await[..] == data[..]);
    let err = c.copy_object("no/such/source", "dst/other", &CopyOptions::default()).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::NotFound, "{err}");
    f.not_found("dst/other").await;
}

pub async fn copy_pinned_source(f: Fixture) {
    let c = f.client.as_ref();
    let old = f.put("src", pattern_bytes(100, 0)).await;
    let new = f.put("src", pattern_bytes(200, 0)).await;
    let pinned = CopyOptions { source_if_match: Some(old), ..CopyOptions::default() };
    let err = c.copy_object("src", "dst", &pinned).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
    f.not_found("dst").await;
    let pinned = CopyOptions { source_if_match: Some(new), ..CopyOptions::default() };
    c.copy_object("src", "dst", &pinned).await.unwrap();
    assert_eq!(c.head_object("dst").await.unwrap().size, 200);
}

pub async fn copy_conditional_destination(f: Fixture) {
    let c = f.client.as_ref();
    f.put("src", pattern_bytes(100, 0)).await;
    let existing = f.put("dst", Bytes::from_static(b"keep")).await;
    let no_replace =
        CopyOptions { dest: PutOptions { if_none_match_any: true, ..PutOptions::default() }, ..CopyOptions::default() };
    let err = c.copy_object("src", "dst", &no_replace).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
    assert_eq!(f.get("dst", 0..4).await, b"keep");
    c.copy_object("src", "fresh", &no_replace).await.unwrap();
    assert_eq!(c.head_object("fresh").await.unwrap().size, 100);

    let stale = CopyOptions {
        dest: PutOptions { if_match: Some(ETag::new("\"0123456789abcdef0123456789abcdef\"")), ..PutOptions::default() },
        ..CopyOptions::default()
    };
    let err = c.copy_object("src", "dst", &stale).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
    assert_eq!(f.get("dst", 0..4).await, b"keep");
    let current = CopyOptions {
        dest: PutOptions { if_match: Some(existing), ..PutOptions::default() },
        ..CopyOptions::default()
    };
    c.copy_object("src", "dst", &current).await.unwrap();
    assert_eq!(c.head_object("dst").await.unwrap().size, 100);
}

pub async fn copy_onto_itself_replacing_metadata(f: Fixture) {
    let c = f.client.as_ref();
    let data = pattern_bytes(3000, 0);
    let first = c.put_object("k", data.clone(), &with_meta(&[("mode", "33188"), ("uid", "0")])).await.unwrap();
    let replace = CopyOptions {
        source_if_match: Some(first.etag),
        replace_metadata: true,
        dest: with_meta(&[("mode", "33261"), ("mtime", "1700000000")]),
    };
    c.copy_object("k", "k", &replace).await.unwrap();
    let head = c.head_object("k").await.unwrap();
    assert_eq!(head.metadata, meta(&[("mode", "33261"), ("mtime", "1700000000")]), "REPLACE drops the old set");
    assert!(f.get("k", 0..3000).await[..] == data[..], "the bytes are unchanged");
    let err = c.copy_object("k", "k", &CopyOptions::default()).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::Other, "copying onto itself changing nothing is refused: {err}");
}

/// Content-Type and the other headers describing the body: stored by PutObject, returned by
/// HeadObject, kept by a COPY, replaced by what a REPLACE copy sends (chmod sends them back).
pub async fn content_headers(f: Fixture) {
    let c = f.client.as_ref();
    let headers = ContentHeaders {
        encoding: Some("gzip".into()),
        language: Some("fr".into()),
        disposition: Some("attachment; filename=\"a.html\"".into()),
        cache_control: Some("max-age=3600".into()),
    };
    let options = PutOptions {
        content_type: Some("text/html".into()),
        headers: headers.clone(),
        ..with_meta(&[("mode", "33188")])
    };
    let put = c.put_object("k", pattern_bytes(10, 0), &options).await.unwrap();
    let head = c.head_object("k").await.unwrap();
    assert_eq!((head.content_type.as_deref(), &head.headers), (Some("text/html"), &headers));
    c.copy_object("k", "copy", &CopyOptions::default()).await.unwrap();
    let head = c.head_object("copy").await.unwrap();
    assert_eq!((head.content_type.as_deref(), &head.headers), (Some("text/html"), &headers), "COPY keeps them");
    let replace = CopyOptions { source_if_match: Some(put.etag), replace_metadata: true, dest: options.clone() };
    c.copy_object("k", "k", &replace).await.unwrap();
    let head = c.head_object("k").await.unwrap();
    assert_eq!((head.content_type.as_deref(), &head.headers), (Some("text/html"), &headers), "sent again");
}

pub async fn user_metadata(f: Fixture) {
    let c = f.client.as_ref();
    let options = with_meta(&[("mode", "41453"), ("mtime", "1700000000.5")]);
    c.put_object("small", pattern_bytes(10, 0), &options).await.unwrap();
    assert_eq!(c.head_object("small").await.unwrap().metadata, options.metadata);
    let id = c.create_multipart_upload("big", &options).await.unwrap();
    let part = c.upload_part("big", &id, 1, pattern_bytes(10, 0), &options).await.unwrap();
    c.complete_multipart_upload("big", &id, &[part], &options).await.unwrap();
    assert_eq!(c.head_object("big").await.unwrap().metadata, options.metadata);
    f.put("plain", pattern_bytes(1, 0)).await;
    assert!(c.head_object("plain").await.unwrap().metadata.is_empty());
}

pub async fn put_if_match(f: Fixture) {
    let c = f.client.as_ref();
    let first = f.put("k", Bytes::from_static(b"one")).await;
    f.put("k", Bytes::from_static(b"two")).await;
    let stale = PutOptions { if_match: Some(first), ..PutOptions::default() };
    let err = c.put_object("k", Bytes::from_static(b"three"), &stale).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
    assert_eq!(f.get("k", 0..3).await, b"two");
    let current = PutOptions { if_match: Some(c.head_object("k").await.unwrap().etag), ..PutOptions::default() };
    c.put_object("k", Bytes::from_static(b"four"), &current).await.unwrap();
    assert_eq!(f.get("k", 0..4).await, b"four");
    let err = c.put_object("missing", Bytes::from_static(b"x"), &current).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::NotFound, "If-Match on a missing key: {err}");
    f.not_found("missing").await;
}

pub async fn multipart_if_match(f: Fixture) {
    let c = f.client.as_ref();
    let first = f.put("k", Bytes::from_static(b"original")).await;
    f.put("k", Bytes::from_static(b"replaced")).await;
    let stale = PutOptions { if_match: Some(first), ..PutOptions::default() };
    let id = c.create_multipart_upload("k", &stale).await.unwrap();
    let part = c.upload_part("k", &id, 1, pattern_bytes(100, 0), &stale).await.unwrap();
    let err = c.complete_multipart_upload("k", &id, std::slice::from_ref(&part), &stale).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
    assert_eq!(f.get("k", 0..8).await, b"replaced");
    let current = PutOptions { if_match: Some(c.head_object("k").await.unwrap().etag), ..PutOptions::default() };
    c.complete_multipart_upload("k", &id, &[part], &current).await.unwrap();
    assert!(f.get("k", 0..100).await[..] == pattern_bytes(100, 0)[..]);
}

pub async fn upload_part_copy(f: Fixture) {
    let c = f.client.as_ref();
    let source = pattern_bytes(5 * MIB + 1000, 0);
    let etag = f.put("src", source.clone()).await;
    let options = PutOptions::default();
    let id = c.create_multipart_upload("dst", &options).await.unwrap();
    let copied = c.upload_part_copy("dst", &id, 1, "src", 0..5 * MIB as u64, Some(&etag)).await.unwrap();
    let tail = c.upload_part("dst", &id, 2, Bytes::from_static(b"appended"), &options).await.unwrap();
    c.complete_multipart_upload("dst", &id, &[copied, tail], &options).await.unwrap();
    let got = f.get("dst", 0..5 * MIB as u64 + 8).await;
    assert!(got[..5 * MIB] == source[..5 * MIB], "the copied part holds the source's bytes");
    assert_eq!(&got[5 * MIB..], b"appended");

    let id = c.create_multipart_upload("other", &options).await.unwrap();
    f.put("src", pattern_bytes(10, 0)).await;
    let err = c.upload_part_copy("other", &id, 1, "src", 0..10, Some(&etag)).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "a replaced source is not copied: {err}");
    let _ = c.abort_multipart_upload("other", &id).await;
}
