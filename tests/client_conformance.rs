//! One suite of [`ObjectClient`] behaviours, run against every implementation: the in-memory
//! client, `AwsClient` -> s3s-fs (in-process), `AwsClient` -> moto and `AwsClient` -> the
//! benchmark server (`MemS3`, in-process). A behaviour a server cannot
//! provide is skipped for that backend only, in [`SKIPS`], with the reason; everything else must
//! agree, so the in-memory client can never drift from real servers.
//!
//! Checks that only make sense for the AWS client (error mapping, `probe_bucket` and its hints,
//! exact request counts, a body that ends early) are in `client_conformance/aws_only.rs`.

mod common;

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::types::ObjectCannedAcl;
use bytes::Bytes;
use common::TestS3;
use common::canned::CannedServer;
use common::data::pattern_bytes;
use common::mem_server::MemS3;
use common::moto::MotoServer;
use common::s3_server::{self, LocalS3};
use futures::StreamExt;
use mount_s3::client::aws::{AwsClient, AwsClientConfig};
use mount_s3::client::memory::{InMemoryClient, crc32c_base64};
use mount_s3::client::{
    ClientError, ClientErrorKind, ContentHeaders, CopyOptions, ETag, GetObjectResponse, ListRequest, ObjectClient,
    PutOptions, S3Operation, UploadedPart, UserMetadata,
};

const MIB: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Memory,
    S3sFs,
    Moto,
    MemS3,
}

/// Cases a backend cannot run, and why. Measured, see /work/shared/TESTING.md.
const SKIPS: &[(Backend, &str, &str)] = &[
    (Backend::S3sFs, "get_if_match", "s3s-fs 0.14.1 ignores If-Match on GET"),
    (Backend::S3sFs, "directory_markers", "s3s-fs stores a key ending in '/' as a directory (HEAD/GET then 500)"),
    (Backend::S3sFs, "file_beside_directory", "s3s-fs cannot hold a key 'x' beside 'x/y' (one path, file or dir)"),
    (
        Backend::S3sFs,
        "head_of_implicit_directory",
        "s3s-fs answers HEAD of a key that is a directory on its disk with 500, not 404",
    ),
    (Backend::S3sFs, "nul_in_keys", "s3s-fs stores keys as file names, which cannot hold NUL"),
    (Backend::S3sFs, "copy_conditional_destination", "s3s-fs 0.14.1 ignores If-None-Match/If-Match on CopyObject"),
    (Backend::S3sFs, "copy_onto_itself_replacing_metadata", "s3s-fs 0.14.1 copies an object onto itself unchanged"),
    (Backend::S3sFs, "put_if_match", "s3s-fs 0.14.1 answers If-Match on a missing key with 412, S3 with 404"),
    (Backend::S3sFs, "upload_part_copy", "s3s-fs 0.14.1 ignores x-amz-copy-source-if-match on UploadPartCopy"),
    (Backend::Moto, "copy_pinned_source", "moto ignores x-amz-copy-source-if-match on CopyObject"),
    (Backend::Moto, "copy_conditional_destination", "moto ignores If-None-Match/If-Match on CopyObject"),
    (Backend::Moto, "multipart_if_match", "moto ignores If-Match on CompleteMultipartUpload"),
    (Backend::Moto, "upload_part_copy", "moto ignores x-amz-copy-source-if-match on UploadPartCopy"),
    (Backend::Memory, "missing_bucket", "an in-memory client is its own bucket; there is no other one"),
    (Backend::MemS3, "content_headers", "MemS3 keeps the Content-Type only, not Content-Encoding, Cache-Control..."),
];

enum Server {
    Memory,
    Local(LocalS3),
    Moto(MotoServer),
    Mem(MemS3),
}

/// A fresh, empty bucket on one backend and a client for it.
struct Fixture {
    client: Arc<dyn ObjectClient>,
    server: Server,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        match backend {
            Backend::Memory => Fixture { client: Arc::new(InMemoryClient::new("conformance")), server: Server::Memory },
            Backend::S3sFs => {
                let server = LocalS3::start();
                Fixture { client: Arc::new(server.aws_client().await), server: Server::Local(server) }
            }
            Backend::Moto => {
                let server = MotoServer::start();
                Fixture { client: Arc::new(server.aws_client().await), server: Server::Moto(server) }
            }
            Backend::MemS3 => {
                let server = MemS3::start();
                Fixture { client: Arc::new(server.aws_client().await), server: Server::Mem(server) }
            }
        }
    }

    /// Settings of the server, when the backend is one.
    fn server(&self) -> Option<&dyn TestS3Dyn> {
        match &self.server {
            Server::Memory => None,
            Server::Local(s) => Some(s),
            Server::Moto(s) => Some(s),
            Server::Mem(s) => Some(s),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> ETag {
        self.client
            .put_object(key, data, &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"))
            .etag
    }

    async fn get(&self, key: &str, range: Range<u64>) -> Vec<u8> {
        let response = self.client.get_object(key, range.clone(), None).await;
        let response = response.unwrap_or_else(|e| panic!("get {key} {range:?}: {e}"));
        read_all(response).await.unwrap_or_else(|e| panic!("body of {key} {range:?}: {e}"))
    }

    async fn not_found(&self, key: &str) {
        let err = self.client.head_object(key).await.expect_err(key);
        assert_eq!(err.kind, ClientErrorKind::NotFound, "HEAD {key}: {err}");
    }
}

/// The object-safe part of [`TestS3`] the cases need.
trait TestS3Dyn {
    fn config(&self) -> AwsClientConfig;
    fn creds(&self) -> Credentials;
}

impl<T: TestS3> TestS3Dyn for T {
    fn config(&self) -> AwsClientConfig {
        self.aws_client_config()
    }
    fn creds(&self) -> Credentials {
        self.credentials()
    }
}

async fn run<F, Fut>(backend: Backend, case: &str, body: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()>,
{
    // CONFORMANCE_NO_SKIPS=1 runs skipped cases too, to re-check the table after a server upgrade.
    let honour_skips = std::env::var_os("CONFORMANCE_NO_SKIPS").is_none();
    if let Some((_, _, why)) = SKIPS.iter().find(|(b, c, _)| honour_skips && *b == backend && *c == case) {
        eprintln!("skipping {case} on {backend:?}: {why}");
        return;
    }
    body(Fixture::new(backend).await).await;
}

async fn read_all(response: GetObjectResponse) -> Result<Vec<u8>, ClientError> {
    let mut body = response.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Every page of a listing: (objects, common prefixes, number of pages).
async fn list_all(
    client: &dyn ObjectClient,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: u32,
) -> (Vec<String>, Vec<String>, usize) {
    let mut request = ListRequest {
        prefix: prefix.to_string(),
        delimiter: delimiter.map(str::to_string),
        continuation_token: None,
        max_keys,
    };
    let (mut objects, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = client.list_objects(&request).await.unwrap_or_else(|e| panic!("list {request:?}: {e}"));
        pages += 1;
        assert!(page.objects.len() + page.common_prefixes.len() <= max_keys as usize, "page over max_keys");
        objects.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        match page.next_continuation_token {
            Some(token) => request.continuation_token = Some(token),
            None => return (objects, prefixes, pages),
        }
        assert!(pages < 100, "listing does not end");
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[path = "client_conformance/copy.rs"]
mod copy_cases;

/// The shared behaviours. Each gets a fresh bucket.
mod cases {
    use super::*;

    pub use super::copy_cases::*;

    pub async fn head_object(f: Fixture) {
        let put = f.put("dir/file.bin", pattern_bytes(1234, 0)).await;
        let meta = f.client.head_object("dir/file.bin").await.unwrap();
        assert_eq!(meta.key, "dir/file.bin");
        assert_eq!(meta.size, 1234);
        assert_eq!(meta.etag, put);
        assert_eq!(meta.storage_class, None);
        assert!(meta.last_modified > SystemTime::UNIX_EPOCH);
        let err = f.client.head_object("dir/missing").await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::NotFound, "{err}");
        assert_eq!(err.operation, "HeadObject");
        assert_eq!(err.status, Some(404), "{err}");
        assert!(!err.is_retryable());
    }

    pub async fn head_of_implicit_directory(f: Fixture) {
        f.put("a/b", pattern_bytes(3, 0)).await;
        f.not_found("a").await;
    }

    pub async fn ranged_get(f: Fixture) {
        let size = 300 * 1024 + 17;
        let data = pattern_bytes(size, 0);
        f.put("obj", data.clone()).await;
        let etag = f.client.head_object("obj").await.unwrap().etag;
        let size = size as u64;
        let ranges = [0..10, 0..1, 5..6, 1000..2000, 123_456..200_000, size - 10..size, size - 1..size, 0..size];
        for range in ranges {
            let response = f.client.get_object("obj", range.clone(), None).await.unwrap();
            assert_eq!(response.object_size, size, "{range:?}");
            assert_eq!(response.etag, etag, "{range:?}");
            let body = read_all(response).await.unwrap();
            assert_eq!(body.len() as u64, range.end - range.start, "{range:?}");
            assert!(body[..] == data[range.start as usize..range.end as usize], "bytes of {range:?}");
        }
        // A range past the end yields what exists, as S3 does.
        assert!(f.get("obj", size - 5..size + 100).await[..] == data[size as usize - 5..]);
    }

    pub async fn get_errors(f: Fixture) {
        f.put("obj", pattern_bytes(100, 0)).await;
        let err = f.client.get_object("missing", 0..10, None).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::NotFound, "{err}");
        let err = f.client.get_object("obj", 100..200, None).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::InvalidRange, "{err}");
        // Any range of an empty object is unsatisfiable: readers must not GET empty objects.
        f.put("empty", Bytes::new()).await;
        let err = f.client.get_object("empty", 0..1, None).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::InvalidRange, "{err}");
    }

    pub async fn get_if_match(f: Fixture) {
        let etag = f.put("obj", pattern_bytes(100, 0)).await;
        let response = f.client.get_object("obj", 10..20, Some(&etag)).await.unwrap();
        assert!(read_all(response).await.unwrap()[..] == pattern_bytes(100, 0)[10..20]);
        let stale = ETag::new("\"00000000000000000000000000000000\"");
        let err = f.client.get_object("obj", 10..20, Some(&stale)).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
        // After an overwrite the old ETag no longer matches.
        f.put("obj", pattern_bytes(101, 0)).await;
        let err = f.client.get_object("obj", 0..10, Some(&etag)).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
    }

    pub async fn list_with_delimiter(f: Fixture) {
        for key in ["dir/a", "dir/b/c", "dir/b/d", "dir/c", "dir/e/f/g", "dir2/x", "top"] {
            f.put(key, pattern_bytes(key.len(), 0)).await;
        }
        let c = f.client.as_ref();
        let (objects, prefixes, _) = list_all(c, "", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (strings(&["top"]), strings(&["dir/", "dir2/"])));
        let (objects, prefixes, _) = list_all(c, "dir/", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (strings(&["dir/a", "dir/c"]), strings(&["dir/b/", "dir/e/"])));
        let (objects, prefixes, _) = list_all(c, "dir/b", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (vec![], strings(&["dir/b/"])));
        let (objects, prefixes, _) = list_all(c, "dir", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (vec![], strings(&["dir/", "dir2/"])));
        let (objects, prefixes, pages) = list_all(c, "nothing/", Some("/"), 1000).await;
        assert_eq!((objects.len(), prefixes.len(), pages), (0, 0, 1));
    }

    pub async fn list_pagination(f: Fixture) {
        let keys = ["p/a0", "p/a1", "p/b/x", "p/c0", "p/d/y", "p/e0", "p/e1", "p/e2", "p/f/z"];
        for key in keys {
            f.put(key, pattern_bytes(1, 0)).await;
        }
        let c = f.client.as_ref();
        let whole = list_all(c, "p/", Some("/"), 1000).await;
        assert_eq!(whole.0, strings(&["p/a0", "p/a1", "p/c0", "p/e0", "p/e1", "p/e2"]));
        assert_eq!(whole.1, strings(&["p/b/", "p/d/", "p/f/"]));
        let paged = list_all(c, "p/", Some("/"), 2).await;
        assert_eq!((&paged.0, &paged.1), (&whole.0, &whole.1));
        assert_eq!(paged.2, 5, "9 entries in pages of 2");

        let flat = list_all(c, "p/", None, 1000).await;
        assert_eq!(flat.0, strings(&keys));
        let flat_paged = list_all(c, "p/", None, 2).await;
        assert_eq!(flat_paged.0, flat.0);
        assert!(flat_paged.1.is_empty());
        assert_eq!(flat_paged.2, 5);
    }

    pub async fn list_without_delimiter(f: Fixture) {
        let keys = ["x/1", "x/2/deep/file", "x/3", "y"];
        for (i, key) in keys.iter().enumerate() {
            f.put(key, pattern_bytes(10 * i + 1, 0)).await;
        }
        let page = f
            .client
            .list_objects(&ListRequest {
                prefix: "x/".into(),
                delimiter: None,
                continuation_token: None,
                max_keys: 1000,
            })
            .await
            .unwrap();
        assert!(page.common_prefixes.is_empty());
        assert_eq!(page.next_continuation_token, None);
        let listed: Vec<(String, u64)> = page.objects.iter().map(|o| (o.key.clone(), o.size)).collect();
        assert_eq!(listed, vec![("x/1".into(), 1), ("x/2/deep/file".into(), 11), ("x/3".into(), 21)]);
        for object in &page.objects {
            // Some servers (s3s-fs) omit ETags in listings; when present they are the object's.
            if let Some(etag) = &object.etag {
                assert_eq!(*etag, f.client.head_object(&object.key).await.unwrap().etag);
            }
            assert!(object.last_modified > SystemTime::UNIX_EPOCH);
        }
    }

    /// Keys XML cannot carry (`\x01`) and keys whose url encoding must round-trip (`%`, `+`,
    /// space): listed raw, in prefixes and objects, across pages, and readable by that key.
    /// Pages of 3 end on plain keys: s3s-fs's continuation token is the last key, sent raw.
    pub async fn control_character_keys(f: Fixture) {
        let keys = ["ctl\x02top", "ctl/a b+c%41.txt", "ctl/bad\x01name", "ctl/c", "ctl/sub\x01dir/x", "ctl/y", "ctl/z"];
        for key in keys {
            f.put(key, Bytes::from(key.as_bytes().to_vec())).await;
        }
        let c = f.client.as_ref();
        for max_keys in [1000, 3] {
            let (objects, prefixes, _) = list_all(c, "ctl/", Some("/"), max_keys).await;
            let files = ["ctl/a b+c%41.txt", "ctl/bad\x01name", "ctl/c", "ctl/y", "ctl/z"];
            let want = (strings(&files), strings(&["ctl/sub\x01dir/"]));
            assert_eq!((objects, prefixes), want, "max_keys {max_keys}");
        }
        let (objects, _, _) = list_all(c, "", None, 1000).await;
        assert_eq!(objects, strings(&keys));
        let (objects, prefixes, _) = list_all(c, "ctl/sub\x01dir/", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (strings(&["ctl/sub\x01dir/x"]), vec![]));
        assert_eq!(f.get("ctl/bad\x01name", 0..100).await, b"ctl/bad\x01name");
    }

    /// A key holding NUL is listed as it is (the file system then hides it).
    pub async fn nul_in_keys(f: Fixture) {
        for key in ["n/nul\0name", "n/ok"] {
            f.put(key, pattern_bytes(3, 0)).await;
        }
        let (objects, _, _) = list_all(f.client.as_ref(), "n/", Some("/"), 1000).await;
        assert_eq!(objects, strings(&["n/nul\0name", "n/ok"]));
    }

    pub async fn put_overwrite(f: Fixture) {
        let first = f.put("k", Bytes::from_static(b"first version")).await;
        assert_eq!(f.get("k", 0..100).await, b"first version");
        let second = f.put("k", Bytes::from_static(b"second, longer version")).await;
        assert_ne!(first, second);
        assert_eq!(f.get("k", 0..100).await, b"second, longer version");
        assert_eq!(f.client.head_object("k").await.unwrap().size, 22);
        // An empty object exists and has size 0.
        f.put("empty", Bytes::new()).await;
        assert_eq!(f.client.head_object("empty").await.unwrap().size, 0);
    }

    pub async fn multipart_crc32c(f: Fixture) {
        let options = PutOptions { checksum_crc32c: true, ..PutOptions::default() };
        let data = pattern_bytes(11 * MIB + 3, 0);
        let bounds = [0, 5 * MIB, 10 * MIB, data.len()];
        let c = f.client.as_ref();
        let id = c.create_multipart_upload("big/object", &options).await.unwrap();
        let mut parts: Vec<UploadedPart> = Vec::new();
        for (i, w) in bounds.windows(2).enumerate() {
            let body = data.slice(w[0]..w[1]);
            let part = c.upload_part("big/object", &id, i as u32 + 1, body.clone(), &options).await.unwrap();
            assert_eq!(part.part_number, i as u32 + 1);
            assert_eq!(part.checksum_crc32c.as_deref(), Some(crc32c_base64(&body).as_str()), "part {}", i + 1);
            parts.push(part);
        }
        // Invisible until completed.
        f.not_found("big/object").await;
        let done = c.complete_multipart_upload("big/object", &id, &parts, &options).await.unwrap();
        let meta = c.head_object("big/object").await.unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.etag, done.etag);
        let back = f.get("big/object", 0..data.len() as u64).await;
        assert!(back[..] == data[..], "multipart object differs");
    }

    pub async fn multipart_abort(f: Fixture) {
        let options = PutOptions::default();
        let c = f.client.as_ref();
        let id = c.create_multipart_upload("gone", &options).await.unwrap();
        let part = c.upload_part("gone", &id, 1, pattern_bytes(1000, 0), &options).await.unwrap();
        c.abort_multipart_upload("gone", &id).await.unwrap();
        f.not_found("gone").await;
        let again = c.abort_multipart_upload("gone", &id).await.unwrap_err();
        assert_eq!(again.kind, ClientErrorKind::NotFound, "a second abort is told NoSuchUpload: {again}");
        let (objects, _, _) = list_all(c, "", None, 1000).await;
        assert!(objects.is_empty(), "{objects:?}");
        // S3 says NoSuchUpload; moto 5.2 answers 500 with no body. Either way: no object.
        assert!(c.complete_multipart_upload("gone", &id, &[part], &options).await.is_err());
        f.not_found("gone").await;
    }

    pub async fn put_if_none_match(f: Fixture) {
        let options = PutOptions { if_none_match_any: true, ..PutOptions::default() };
        f.put("k", Bytes::from_static(b"original")).await;
        let err = f.client.put_object("k", Bytes::from_static(b"other"), &options).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
        assert_eq!(f.get("k", 0..100).await, b"original");
        f.client.put_object("new", Bytes::from_static(b"fresh"), &options).await.unwrap();
        assert_eq!(f.get("new", 0..100).await, b"fresh");
    }

    pub async fn multipart_if_none_match(f: Fixture) {
        let options = PutOptions { if_none_match_any: true, ..PutOptions::default() };
        let c = f.client.as_ref();
        f.put("k", Bytes::from_static(b"original")).await;
        let id = c.create_multipart_upload("k", &options).await.unwrap();
        let part = c.upload_part("k", &id, 1, pattern_bytes(100, 0), &options).await.unwrap();
        let err = c.complete_multipart_upload("k", &id, &[part], &options).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
        let _ = c.abort_multipart_upload("k", &id).await;
        assert_eq!(f.get("k", 0..100).await, b"original");

        let id = c.create_multipart_upload("fresh", &options).await.unwrap();
        let part = c.upload_part("fresh", &id, 1, pattern_bytes(100, 0), &options).await.unwrap();
        c.complete_multipart_upload("fresh", &id, &[part], &options).await.unwrap();
        assert!(f.get("fresh", 0..100).await[..] == pattern_bytes(100, 0)[..]);
    }

    pub async fn delete_object(f: Fixture) {
        f.put("d/k", pattern_bytes(10, 0)).await;
        f.client.delete_object("d/k").await.unwrap();
        f.not_found("d/k").await;
        let err = f.client.get_object("d/k", 0..1, None).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::NotFound, "{err}");
        f.client.delete_object("d/k").await.expect("deleting a missing key succeeds");
        f.client.delete_object("never/was").await.expect("deleting a missing key succeeds");
        let (objects, prefixes, _) = list_all(f.client.as_ref(), "", Some("/"), 1000).await;
        assert!(objects.is_empty() && prefixes.is_empty(), "{objects:?} {prefixes:?}");
    }

    pub async fn directory_markers(f: Fixture) {
        f.put("d/", Bytes::new()).await;
        f.put("d/inner", pattern_bytes(4, 0)).await;
        let meta = f.client.head_object("d/").await.unwrap();
        assert_eq!(meta.size, 0);
        let (objects, prefixes, _) = list_all(f.client.as_ref(), "", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (vec![], strings(&["d/"])));
        let (objects, prefixes, _) = list_all(f.client.as_ref(), "d/", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (strings(&["d/", "d/inner"]), vec![]));
    }

    pub async fn file_beside_directory(f: Fixture) {
        f.put("x", pattern_bytes(1, 0)).await;
        f.put("x/y", pattern_bytes(2, 0)).await;
        let (objects, prefixes, _) = list_all(f.client.as_ref(), "", Some("/"), 1000).await;
        assert_eq!((objects, prefixes), (strings(&["x"]), strings(&["x/"])));
        assert_eq!(f.client.head_object("x").await.unwrap().size, 1);
        assert_eq!(f.client.head_object("x/y").await.unwrap().size, 2);
    }

    pub async fn missing_bucket(f: Fixture) {
        let server = f.server().expect("a server backend");
        let config = AwsClientConfig { bucket: "no-such-bucket-here".into(), ..server.config() };
        let client = AwsClient::with_credentials(&config, server.creds()).await.unwrap();
        let request = ListRequest { max_keys: 10, ..ListRequest::default() };
        let err = client.list_objects(&request).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::NoSuchBucket, "{err}");
        assert_eq!(err.code.as_deref(), Some("NoSuchBucket"));
        assert_eq!(err.status, Some(404));
        let err = client.probe_bucket("").await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::NoSuchBucket, "{err}");
        assert!(err.message.contains("bucket no-such-bucket-here does not exist (NoSuchBucket)"), "{err}");
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(#[tokio::test]
            async fn $case() {
                super::run(super::Backend::Memory, stringify!($case), super::cases::$case).await;
            })*
        }
        mod s3s_fs {
            $(#[tokio::test]
            async fn $case() {
                super::run(super::Backend::S3sFs, stringify!($case), super::cases::$case).await;
            })*
        }
        mod moto {
            $(#[tokio::test]
            async fn $case() {
                super::run(super::Backend::Moto, stringify!($case), super::cases::$case).await;
            })*
        }
        mod mem_s3 {
            $(#[tokio::test]
            async fn $case() {
                super::run(super::Backend::MemS3, stringify!($case), super::cases::$case).await;
            })*
        }
    };
}

conformance!(
    head_object,
    head_of_implicit_directory,
    ranged_get,
    get_errors,
    get_if_match,
    list_with_delimiter,
    list_pagination,
    list_without_delimiter,
    control_character_keys,
    nul_in_keys,
    put_overwrite,
    multipart_crc32c,
    multipart_abort,
    put_if_none_match,
    multipart_if_none_match,
    delete_object,
    copy_object,
    copy_pinned_source,
    copy_conditional_destination,
    copy_onto_itself_replacing_metadata,
    content_headers,
    user_metadata,
    put_if_match,
    multipart_if_match,
    upload_part_copy,
    directory_markers,
    file_beside_directory,
    missing_bucket,
);

/// Checks of the AWS client alone.
#[path = "client_conformance/aws_only.rs"]
mod aws_only;
