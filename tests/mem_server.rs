//! Conformance of the benchmark server ([`MemS3`]) through the real aws-sdk-s3: ranged GET
//! bytes and headers, listing pagination, multipart uploads, conditional requests, checksums,
//! and request counts that are exact, since benchmark reports quote them. (The shared
//! `ObjectClient` suite in `client_conformance.rs` also runs against it.)

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use bytes::Bytes;
use common::data::pattern_bytes;
use common::mem_server::MemS3;
use common::mem_store::MIN_PART_SIZE;
use mount_s3::client::S3Operation;

/// The HTTP status and S3 error code of a failed SDK call.
fn failure<E: ProvideErrorMetadata>(err: SdkError<E, HttpResponse>) -> (u16, String) {
    let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    let code = err.as_service_error().and_then(|e| e.code()).unwrap_or("").to_string();
    (status, code)
}

fn counts(s3: &MemS3) -> HashMap<String, u64> {
    s3.request_counts()
}

fn expect(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn ranged_gets_serve_exactly_the_requested_bytes() {
    let s3 = MemS3::start();
    let data = pattern_bytes(3 * 1024 * 1024 + 17, 1);
    let etag = s3.put("dir/obj", data.clone());
    let client = s3.counted_sdk_client();
    let size = data.len();
    let cases: Vec<(String, std::ops::Range<usize>)> = vec![
        ("bytes=0-0".into(), 0..1),
        ("bytes=0-9".into(), 0..10),
        ("bytes=1000-1999".into(), 1000..2000),
        (format!("bytes={}-", size - 100), size - 100..size),
        ("bytes=-10".into(), size - 10..size),
        (format!("bytes={}-{}", size - 5, size + 100), size - 5..size),
        (format!("bytes=0-{}", size - 1), 0..size),
    ];
    for (header, want) in &cases {
        let out = client.get_object().bucket(&s3.bucket).key("dir/obj").range(header).send().await.unwrap();
        assert_eq!(out.content_range(), Some(format!("bytes {}-{}/{size}", want.start, want.end - 1).as_str()));
        assert_eq!(out.content_length(), Some(want.len() as i64), "{header}");
        assert_eq!(out.e_tag(), Some(etag.as_str()));
        let body = out.body.collect().await.unwrap().into_bytes();
        assert!(body == data.slice(want.clone()), "bytes of {header}");
    }
    // No Range: the whole object, 200 without Content-Range.
    let out = client.get_object().bucket(&s3.bucket).key("dir/obj").send().await.unwrap();
    assert_eq!(out.content_range(), None);
    assert!(out.body.collect().await.unwrap().into_bytes() == data);
    // Past the end, and any range of an empty object: 416 InvalidRange.
    s3.put("empty", Bytes::new());
    for (key, range) in [("dir/obj", format!("bytes={size}-")), ("empty", "bytes=0-0".to_string())] {
        let err = client.get_object().bucket(&s3.bucket).key(key).range(range).send().await.unwrap_err();
        assert_eq!(failure(err), (416, "InvalidRange".into()), "{key}");
    }
    let err = client.get_object().bucket(&s3.bucket).key("missing").send().await.unwrap_err();
    assert_eq!(failure(err), (404, "NoSuchKey".into()));
    let head = client.head_object().bucket(&s3.bucket).key("dir/obj").send().await.unwrap();
    assert_eq!((head.content_length(), head.e_tag()), (Some(size as i64), Some(etag.as_str())));
    let gets = cases.len() as u64 + 4;
    assert_eq!(counts(&s3), expect(&[("GetObject", gets), ("HeadObject", 1)]));
}

#[tokio::test]
async fn listings_paginate_without_loss_or_repeats() {
    let s3 = MemS3::start();
    let mut keys = BTreeSet::new();
    for i in 0..1234 {
        keys.insert(format!("many/k{i:05}"));
    }
    for dir in ["a", "b b", "c+c", "d%2F"] {
        for j in 0..7 {
            keys.insert(format!("many/{dir}/x{j}"));
        }
    }
    keys.insert("many/\u{e9}t\u{e9} <&>".to_string());
    keys.insert("other".to_string());
    let mut etags = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        etags.insert(key.clone(), s3.put(key, pattern_bytes(i % 7, i as u64)));
    }
    let client = s3.counted_sdk_client();
    for (delimiter, max_keys) in [(None, 1000), (None, 97), (Some("/"), 100), (Some("/"), 1), (Some("/"), 1000)] {
        s3.reset_counts();
        let (mut objects, mut prefixes, mut pages, mut token) = (Vec::new(), Vec::new(), 0, None);
        loop {
            let out = client
                .list_objects_v2()
                .bucket(&s3.bucket)
                .prefix("many/")
                .set_delimiter(delimiter.map(str::to_string))
                .max_keys(max_keys)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            pages += 1;
            let page_len = out.contents().len() + out.common_prefixes().len();
            assert!(page_len <= max_keys as usize);
            assert_eq!(out.key_count(), Some(page_len as i32));
            for o in out.contents() {
                let key = o.key().unwrap().to_string();
                assert_eq!(o.e_tag(), Some(etags[&key].as_str()), "listing ETag of {key}");
                objects.push(key);
            }
            prefixes.extend(out.common_prefixes().iter().map(|p| p.prefix().unwrap().to_string()));
            token = out.next_continuation_token().map(str::to_string);
            assert_eq!(out.is_truncated(), Some(token.is_some()));
            if token.is_none() {
                break;
            }
            assert!(pages < 5000, "listing does not end");
        }
        let (want_objects, want_prefixes): (Vec<String>, Vec<String>) = match delimiter {
            None => (keys.iter().filter(|k| k.starts_with("many/")).cloned().collect(), vec![]),
            Some(_) => (
                keys.iter().filter(|k| k.starts_with("many/") && !k[5..].contains('/')).cloned().collect(),
                ["many/a/", "many/b b/", "many/c+c/", "many/d%2F/"].map(String::from).to_vec(),
            ),
        };
        assert_eq!(objects, want_objects, "{delimiter:?} {max_keys}");
        assert_eq!(prefixes, want_prefixes, "{delimiter:?} {max_keys}");
        let entries = want_objects.len() + want_prefixes.len();
        assert_eq!(pages, entries.div_ceil(max_keys as usize).max(1), "{delimiter:?} {max_keys}");
        assert_eq!(counts(&s3), expect(&[("ListObjectsV2", pages as u64)]));
    }
    let out = client.list_objects_v2().bucket(&s3.bucket).start_after("many/k01230").send().await.unwrap();
    let listed: Vec<&str> = out.contents().iter().map(|o| o.key().unwrap()).collect();
    assert_eq!(listed, ["many/k01231", "many/k01232", "many/k01233", "many/\u{e9}t\u{e9} <&>", "other"]);
    let err = client.list_objects_v2().bucket(&s3.bucket).continuation_token("zz").send().await.unwrap_err();
    assert_eq!(failure(err), (400, "InvalidArgument".into()));
    let err = client.list_objects_v2().bucket("no-such-bucket").send().await.unwrap_err();
    assert_eq!(failure(err), (404, "NoSuchBucket".into()));
}

#[tokio::test]
async fn multipart_uploads_assemble_check_and_abort() {
    let s3 = MemS3::start();
    let client = s3.counted_sdk_client();
    let b = &s3.bucket;
    let data = pattern_bytes(MIN_PART_SIZE + 3, 2);
    let create = client.create_multipart_upload().bucket(b).key("mp").send().await.unwrap();
    let id = create.upload_id().unwrap();
    let mut parts = Vec::new();
    for (number, range) in [(1, 0..MIN_PART_SIZE), (2, MIN_PART_SIZE..data.len())] {
        let out = client
            .upload_part()
            .bucket(b)
            .key("mp")
            .upload_id(id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(data.slice(range.clone())))
            .send()
            .await
            .unwrap();
        let crc = out.checksum_crc32_c().expect("the server acknowledges the CRC32C").to_string();
        assert_eq!(crc, mount_s3::client::memory::crc32c_base64(&data.slice(range)));
        parts.push(
            CompletedPart::builder().part_number(number).e_tag(out.e_tag().unwrap()).checksum_crc32_c(crc).build(),
        );
    }
    assert!(s3.get("mp").is_none(), "invisible until completed");
    let complete = |parts: Vec<CompletedPart>| {
        client
            .complete_multipart_upload()
            .bucket(b)
            .key("mp")
            .upload_id(id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
    };
    let wrong_etag = vec![parts[0].clone(), CompletedPart::builder().part_number(2).e_tag("\"0\"").build()];
    assert_eq!(failure(complete(wrong_etag).await.unwrap_err()), (400, "InvalidPart".into()));
    let reversed = vec![parts[1].clone(), parts[0].clone()];
    assert_eq!(failure(complete(reversed).await.unwrap_err()), (400, "InvalidPartOrder".into()));
    let done = complete(parts.clone()).await.unwrap();
    assert!(done.e_tag().unwrap().ends_with("-2\""), "{:?}", done.e_tag());
    assert!(s3.get("mp").unwrap() == data);
    let head = client.head_object().bucket(b).key("mp").send().await.unwrap();
    assert_eq!(head.e_tag(), done.e_tag());
    // The upload is gone once completed.
    assert_eq!(failure(complete(parts).await.unwrap_err()), (404, "NoSuchUpload".into()));

    // Small parts other than the last are refused at completion.
    let id = client.create_multipart_upload().bucket(b).key("small").send().await.unwrap().upload_id.unwrap();
    let mut small = Vec::new();
    for number in 1..=2 {
        let out = client
            .upload_part()
            .bucket(b)
            .key("small")
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .unwrap();
        small.push(CompletedPart::builder().part_number(number).e_tag(out.e_tag().unwrap()).build());
    }
    let err = client
        .complete_multipart_upload()
        .bucket(b)
        .key("small")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(small)).build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(err), (400, "EntityTooSmall".into()));
    client.abort_multipart_upload().bucket(b).key("small").upload_id(&id).send().await.unwrap();
    let err = client
        .upload_part()
        .bucket(b)
        .key("small")
        .upload_id(&id)
        .part_number(3)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(err), (404, "NoSuchUpload".into()));
    assert!(s3.get("small").is_none());
    assert_eq!(s3.stored_bytes(), data.len() as u64, "aborted parts are freed");
}

#[tokio::test]
async fn conditional_requests_follow_s3() {
    let s3 = MemS3::start();
    let client = s3.counted_sdk_client();
    let b = &s3.bucket;
    let etag = s3.put("k", pattern_bytes(100, 3));
    let stale = "\"0123456789abcdef0123456789abcdef\"";
    let out = client.get_object().bucket(b).key("k").if_match(&etag).range("bytes=0-9").send().await.unwrap();
    assert!(out.body.collect().await.unwrap().into_bytes() == pattern_bytes(100, 3).slice(0..10));
    let err = client.get_object().bucket(b).key("k").if_match(stale).send().await.unwrap_err();
    assert_eq!(failure(err), (412, "PreconditionFailed".into()));
    let err = client.head_object().bucket(b).key("k").if_match(stale).send().await.unwrap_err();
    assert_eq!(failure(err).0, 412);
    let err = client.get_object().bucket(b).key("k").if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(failure(err).0, 304);
    client.head_object().bucket(b).key("k").if_match(&etag).send().await.unwrap();

    let put = |key: &'static str, body: &'static [u8]| {
        client.put_object().bucket(b).key(key).if_none_match("*").body(ByteStream::from_static(body)).send()
    };
    assert_eq!(failure(put("k", b"other").await.unwrap_err()), (412, "PreconditionFailed".into()));
    assert!(s3.get("k").unwrap() == pattern_bytes(100, 3));
    put("new", b"fresh").await.unwrap();
    assert_eq!(&s3.get("new").unwrap()[..], b"fresh");
    // After an overwrite the old ETag no longer matches.
    s3.put("k", pattern_bytes(100, 3));
    let err = client.get_object().bucket(b).key("k").if_match(&etag).send().await.unwrap_err();
    assert_eq!(failure(err).0, 412);

    let id = client.create_multipart_upload().bucket(b).key("new").send().await.unwrap().upload_id.unwrap();
    let part =
        client.upload_part().bucket(b).key("new").upload_id(&id).part_number(1).body(ByteStream::from_static(b"x"));
    let part = part.send().await.unwrap();
    let parts = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).e_tag(part.e_tag().unwrap()).build())
        .build();
    let err = client
        .complete_multipart_upload()
        .bucket(b)
        .key("new")
        .upload_id(&id)
        .if_none_match("*")
        .multipart_upload(parts)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(err), (412, "PreconditionFailed".into()));
    assert_eq!(&s3.get("new").unwrap()[..], b"fresh");
}

#[tokio::test]
async fn checksums_are_verified_and_echoed() {
    let s3 = MemS3::start();
    let client = s3.counted_sdk_client();
    // The SDK's default: a CRC32 in an aws-chunked trailer.
    let out = client.put_object().bucket(&s3.bucket).key("t").body(ByteStream::from(pattern_bytes(70_000, 4))).send();
    let out = out.await.unwrap();
    assert!(out.checksum_crc32().is_some(), "the trailer's CRC32 is verified and echoed");
    assert!(s3.get("t").unwrap() == pattern_bytes(70_000, 4));
    let err = client
        .put_object()
        .bucket(&s3.bucket)
        .key("bad")
        .checksum_crc32_c("AAAAAA==")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(failure(err), (400, "BadDigest".into()));
    assert!(s3.get("bad").is_none());
}

#[tokio::test]
async fn counts_are_exact_and_exclude_the_harness() {
    let s3 = MemS3::start();
    s3.put("seeded", pattern_bytes(10, 5));
    let helper = s3.sdk_client();
    helper.put_object().bucket(&s3.bucket).key("by-helper").body(ByteStream::from_static(b"h")).send().await.unwrap();
    helper.get_object().bucket(&s3.bucket).key("seeded").send().await.unwrap();
    assert_eq!(s3.total_request_count(), 0, "direct and helper-signed requests are not counted");

    // An unsigned request is refused before it is counted.
    let mut tcp = std::net::TcpStream::connect(s3.addr).unwrap();
    write!(tcp, "GET /{}/seeded HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", s3.bucket, s3.addr).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    let client = s3.counted_sdk_client();
    let b = &s3.bucket;
    for _ in 0..3 {
        client.get_object().bucket(b).key("seeded").range("bytes=0-0").send().await.unwrap();
    }
    client.head_object().bucket(b).key("seeded").send().await.unwrap();
    client.head_object().bucket(b).key("missing").send().await.unwrap_err();
    client.list_objects_v2().bucket(b).max_keys(1).send().await.unwrap();
    client.put_object().bucket(b).key("p").body(ByteStream::from_static(b"p")).send().await.unwrap();
    client.delete_object().bucket(b).key("p").send().await.unwrap();
    client.head_bucket().bucket(b).send().await.unwrap();
    let want = expect(&[
        ("GetObject", 3),
        ("HeadObject", 2),
        ("ListObjectsV2", 1),
        ("PutObject", 1),
        ("DeleteObject", 1),
        ("HeadBucket", 1),
    ]);
    assert_eq!(counts(&s3), want);
    assert_eq!(s3.request_count(S3Operation::HeadObject), 2);
    assert_eq!(s3.total_request_count(), 9);
    s3.reset_counts();
    assert_eq!(s3.total_request_count(), 0);
}

#[tokio::test]
async fn server_cpu_time_is_measured() {
    let s3 = MemS3::start();
    s3.put("big", vec![7u8; 256 << 20]);
    let before = s3.server_cpu_seconds();
    let client = s3.counted_sdk_client();
    for _ in 0..2 {
        let out = client.get_object().bucket(&s3.bucket).key("big").send().await.unwrap();
        let mut body = out.body;
        let mut got = 0;
        while let Some(chunk) = body.next().await {
            got += chunk.unwrap().len();
        }
        assert_eq!(got, 256 << 20);
    }
    let after = s3.server_cpu_seconds();
    assert!(after > before, "512 MiB sent took no server CPU? {before} -> {after}");
}
