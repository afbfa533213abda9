//! S3 Express One Zone directory buckets at the client level: the same cases against the
//! in-memory directory bucket ([`InMemoryClient::directory_bucket`]) and against `AwsClient`
//! talking to the directory-bucket emulator ([`MemS3::start_express`]), so neither can drift;
//! then what only the emulator can show (sessions, signatures, refusals), and the general
//! purpose answers (RenameObject and appends refused).

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TestS3;
use common::express::ExpressOptions;
use common::mem_server::{self, MemS3};
use futures::StreamExt;
use mount_s3::client::aws::AwsClient;
use mount_s3::client::memory::InMemoryClient;
use mount_s3::client::{ClientErrorKind, ETag, ListRequest, ObjectClient, PutOptions, RenameOptions, S3Operation};

/// A fresh directory bucket on one backend.
struct Fixture {
    client: Arc<dyn ObjectClient>,
    /// The emulator, when the backend is one (kept running).
    _server: Option<MemS3>,
}

async fn fixture(emulated: bool) -> Fixture {
    if emulated {
        let server = MemS3::start_express(ExpressOptions::default());
        Fixture { client: Arc::new(server.aws_client().await), _server: Some(server) }
    } else {
        Fixture { client: Arc::new(InMemoryClient::directory_bucket("dir--use1-az4--x-s3")), _server: None }
    }
}

async fn both<F, Fut>(case: F)
where
    F: Fn(Fixture) -> Fut,
    Fut: Future<Output = ()>,
{
    case(fixture(false).await).await;
    case(fixture(true).await).await;
}

impl Fixture {
    async fn put(&self, key: &str, data: &'static [u8]) -> ETag {
        self.client.put_object(key, Bytes::from_static(data), &PutOptions::default()).await.unwrap().etag
    }

    async fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        let meta = match self.client.head_object(key).await {
            Ok(meta) => meta,
            Err(e) if e.kind == ClientErrorKind::NotFound => return None,
            Err(e) => panic!("HEAD {key}: {e}"),
        };
        if meta.size == 0 {
            return Some(vec![]);
        }
        let mut body = self.client.get_object(key, 0..meta.size, None).await.unwrap().body;
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        Some(out)
    }

    /// Every page of a listing: (objects, common prefixes), in the order received.
    async fn list_all(&self, prefix: &str, delimiter: Option<&str>, max_keys: u32) -> (Vec<String>, Vec<String>) {
        let mut request = ListRequest {
            prefix: prefix.into(),
            delimiter: delimiter.map(Into::into),
            continuation_token: None,
            max_keys,
        };
        let (mut objects, mut prefixes) = (vec![], vec![]);
        for _ in 0..1000 {
            let page = self.client.list_objects(&request).await.unwrap();
            assert!(page.objects.len() + page.common_prefixes.len() <= max_keys as usize);
            objects.extend(page.objects.into_iter().map(|o| o.key));
            prefixes.extend(page.common_prefixes);
            match page.next_continuation_token {
                Some(token) => request.continuation_token = Some(token),
                None => return (objects, prefixes),
            }
        }
        panic!("listing does not end");
    }
}

#[tokio::test]
async fn rename_moves_the_object_atomically() {
    both(|f| async move {
        let etag = f.put("a/src", b"source bytes").await;
        f.client.rename_object("a/src", "b/dst", &RenameOptions::default()).await.unwrap();
        assert_eq!(f.bytes("a/src").await, None);
        assert_eq!(f.bytes("b/dst").await.as_deref(), Some(&b"source bytes"[..]));
        assert_eq!(f.client.head_object("b/dst").await.unwrap().etag, etag, "a rename keeps the ETag");
        let err = f.client.rename_object("a/src", "c", &RenameOptions::default()).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::NotFound, "{err}");
        // Without conditions an existing destination is replaced.
        f.put("x", b"x").await;
        f.client.rename_object("x", "b/dst", &RenameOptions::default()).await.unwrap();
        assert_eq!(f.bytes("b/dst").await.as_deref(), Some(&b"x"[..]));
    })
    .await;
}

#[tokio::test]
async fn rename_conditions_refuse_and_change_nothing() {
    both(|f| async move {
        let src = f.put("src", b"new").await;
        let dst = f.put("dst", b"old").await;
        let keep = || async {
            assert_eq!(f.bytes("src").await.as_deref(), Some(&b"new"[..]));
            assert_eq!(f.bytes("dst").await.as_deref(), Some(&b"old"[..]));
        };
        let refused = [
            RenameOptions { destination_if_none_match_any: true, ..Default::default() },
            RenameOptions { source_if_match: Some(dst.clone()), ..Default::default() },
            RenameOptions { destination_if_match: Some(src.clone()), ..Default::default() },
        ];
        for options in refused {
            let err = f.client.rename_object("src", "dst", &options).await.unwrap_err();
            assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{options:?}: {err}");
            keep().await;
        }
        let err = f
            .client
            .rename_object(
                "src",
                "absent",
                &RenameOptions { destination_if_match: Some(dst.clone()), ..Default::default() },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "If-Match on a missing destination: {err}");
        let exact = RenameOptions { source_if_match: Some(src), destination_if_match: Some(dst), ..Default::default() };
        f.client.rename_object("src", "dst", &exact).await.unwrap();
        assert_eq!(f.bytes("dst").await.as_deref(), Some(&b"new"[..]));
        let none = RenameOptions { destination_if_none_match_any: true, ..Default::default() };
        f.client.rename_object("dst", "fresh", &none).await.unwrap();
        assert_eq!(f.bytes("fresh").await.as_deref(), Some(&b"new"[..]));
    })
    .await;
}

#[tokio::test]
async fn appends_only_at_the_current_end() {
    both(|f| async move {
        let at = |offset| PutOptions { write_offset: Some(offset), ..PutOptions::default() };
        let first = f.client.put_object("log", Bytes::from_static(b"one,"), &at(0)).await.unwrap();
        let second = f.client.put_object("log", Bytes::from_static(b"two,"), &at(4)).await.unwrap();
        assert_ne!(first.etag, second.etag, "an append changes the ETag");
        assert_eq!(f.client.head_object("log").await.unwrap().etag, second.etag);
        for wrong in [0, 4, 9] {
            let err = f.client.put_object("log", Bytes::from_static(b"lost"), &at(wrong)).await.unwrap_err();
            assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "offset {wrong}: {err}");
            assert_eq!(err.code.as_deref(), Some("InvalidWriteOffset"), "{err}");
        }
        let err = f.client.put_object("absent", Bytes::from_static(b"x"), &at(3)).await.unwrap_err();
        assert_eq!(err.code.as_deref(), Some("InvalidWriteOffset"), "no object: only offset 0 creates one: {err}");
        // If-Match: an append to the version the writer last saw, and no other.
        let stale = PutOptions { if_match: Some(first.etag.clone()), ..at(8) };
        let err = f.client.put_object("log", Bytes::from_static(b"lost"), &stale).await.unwrap_err();
        assert_eq!(err.kind, ClientErrorKind::PreconditionFailed, "{err}");
        let current = PutOptions { if_match: Some(second.etag.clone()), ..at(8) };
        f.client.put_object("log", Bytes::from_static(b"three"), &current).await.unwrap();
        assert_eq!(f.bytes("log").await.as_deref(), Some(&b"one,two,three"[..]));
        assert_eq!(f.bytes("absent").await, None);
    })
    .await;
}

#[tokio::test]
async fn listings_are_unordered_but_complete() {
    both(|f| async move {
        let mut keys = HashSet::new();
        for i in 0..250 {
            let key = format!("d/f{i:03}");
            f.client.put_object(&key, Bytes::from(vec![1u8; 3]), &PutOptions::default()).await.unwrap();
            keys.insert(key);
        }
        for i in 0..30 {
            f.put(&format!("d/sub{i:02}/inner"), b"i").await;
        }
        let (first, prefixes) = f.list_all("d/", Some("/"), 40).await;
        let unique: HashSet<String> = first.iter().cloned().collect();
        assert_eq!(unique.len(), first.len(), "a key was listed twice");
        assert_eq!(unique, keys);
        let unique_prefixes: HashSet<String> = prefixes.iter().cloned().collect();
        assert_eq!(unique_prefixes.len(), 30);
        assert_eq!(prefixes.len(), 30, "a common prefix was listed twice");
        let mut sorted = first.clone();
        sorted.sort();
        assert_ne!(first, sorted, "listed in lexicographic order");
        let (second, _) = f.list_all("d/", Some("/"), 40).await;
        assert_ne!(first, second, "two listings in the same order");
        let (all, none) = f.list_all("d/", None, 1000).await;
        assert_eq!((all.len(), none.len()), (280, 0));
    })
    .await;
}

#[tokio::test]
async fn general_purpose_buckets_refuse_rename_and_appends() {
    let server = MemS3::start();
    let clients: [Arc<dyn ObjectClient>; 2] =
        [Arc::new(InMemoryClient::new("gp")), Arc::new(server.aws_client().await)];
    for client in clients {
        client.put_object("k", Bytes::from_static(b"data"), &PutOptions::default()).await.unwrap();
        client.put_object("dst", Bytes::from_static(b"keep"), &PutOptions::default()).await.unwrap();
        let err = client.rename_object("k", "dst", &RenameOptions::default()).await.unwrap_err();
        assert!(err.is_not_implemented(), "{err}");
        assert_eq!(client.head_object("dst").await.unwrap().size, 4, "the destination is untouched");
        let append = PutOptions { write_offset: Some(4), ..PutOptions::default() };
        let err = client.put_object("k", Bytes::from_static(b"more"), &append).await.unwrap_err();
        assert!(err.is_not_implemented() || err.kind == ClientErrorKind::Other, "{err}");
        assert_eq!(client.head_object("k").await.unwrap().size, 4);
    }
}

// ---- the emulator only ----

#[tokio::test]
async fn one_session_serves_every_request_of_a_client() {
    let server = MemS3::start_express(ExpressOptions::default());
    let client = Arc::new(server.aws_client().await);
    // Both SDK clients inside AwsClient (metadata and uploads), concurrently.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let key = format!("k{i}");
                client.put_object(&key, Bytes::from_static(b"v"), &PutOptions::default()).await.unwrap();
                client.head_object(&key).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(server.request_count_by_name("CreateSession"), 1);
    assert_eq!(server.request_count(S3Operation::PutObject), 20);
    assert_eq!(server.express().sessions_issued(), 1);
}

#[tokio::test]
async fn sessions_are_renewed_before_they_expire() {
    // The SDK renews a session 5 to 10 s before its end: a 3 s session is never reused, so each
    // request opens one; what matters is that none is sent with an expired session.
    let options = ExpressOptions { session_lifetime: Duration::from_secs(3), ..ExpressOptions::default() };
    let server = MemS3::start_express(options);
    let client = server.aws_client().await;
    client.put_object("k", Bytes::from_static(b"v"), &PutOptions::default()).await.unwrap();
    for _ in 0..25 {
        client.head_object("k").await.expect("no request fails across renewals");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sessions = server.request_count_by_name("CreateSession");
    assert!(sessions >= 2, "{sessions} sessions over 5 s of 3 s sessions");
    assert_eq!(server.express().expired_refusals(), 0, "never used an expired session");
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let server = MemS3::start_express(ExpressOptions::default());
    let client = server.aws_client().await;
    client.put_object("k", Bytes::from_static(b"v"), &PutOptions::default()).await.unwrap();
    server.express().expire_all_sessions();
    // The SDK still holds the session (it has not reached its end by the SDK's clock).
    let err = client.list_objects(&ListRequest { max_keys: 1, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::AccessDenied, "{err}");
    assert_eq!(err.code.as_deref(), Some("ExpiredToken"), "{err}");
    // A HEAD answer has no body: only the status tells.
    let err = client.head_object("k").await.unwrap_err();
    assert_eq!(err.status, Some(400), "{err}");
    assert_eq!(server.express().expired_refusals(), 2);
}

#[tokio::test]
async fn requests_without_a_session_are_refused() {
    let server = MemS3::start_express(ExpressOptions::default());
    server.put("k", "v");
    // Signed with the long-term keys themselves, as with session auth disabled.
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(mem_server::REGION))
        .credentials_provider(server.credentials())
        .endpoint_url(&server.endpoint)
        .disable_s3_express_session_auth(true)
        .build();
    let sdk = aws_sdk_s3::Client::from_conf(config);
    let err = sdk.head_object().bucket(&server.bucket).key("k").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let err = sdk.list_objects_v2().bucket(&server.bucket).send().await.unwrap_err();
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&err), Some("AccessDenied"), "{err:?}");
    // Signed for plain S3 (not `s3express`): refused before it reaches the store.
    let plain = common::helper::local_sdk_client(
        &server.endpoint,
        mem_server::ACCESS_KEY,
        mem_server::SECRET_KEY,
        mem_server::REGION,
    );
    let err = plain.list_objects_v2().bucket("any-general-bucket").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400), "{err:?}");
    assert_eq!(server.request_count(S3Operation::ListObjectsV2) + server.request_count(S3Operation::HeadObject), 2);
}

#[tokio::test]
async fn a_refused_create_session_names_the_permission() {
    let options = ExpressOptions { deny_create_session: true, ..ExpressOptions::default() };
    let server = MemS3::start_express(options);
    let client = server.aws_client().await;
    let err = client.probe_bucket("").await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::AccessDenied, "{err}");
    assert!(err.message.contains("s3express:CreateSession"), "{err}");
    assert!(err.message.contains(&server.bucket), "{err}");
    assert_eq!(server.request_count(S3Operation::ListObjectsV2), 0, "nothing sent without a session");
}

#[tokio::test]
async fn listings_refuse_what_directory_buckets_refuse() {
    let server = MemS3::start_express(ExpressOptions::default());
    let client = server.aws_client().await;
    for (prefix, delimiter) in [("d", Some("/")), ("d/x", None), ("", Some("-"))] {
        let request = ListRequest {
            prefix: prefix.into(),
            delimiter: delimiter.map(Into::into),
            max_keys: 10,
            ..Default::default()
        };
        let err = client.list_objects(&request).await.unwrap_err();
        assert_eq!(err.code.as_deref(), Some("InvalidArgument"), "{request:?}: {err}");
    }
    // A multipart upload in progress shows up as a common prefix.
    let id = client.create_multipart_upload("up/big", &PutOptions::default()).await.unwrap();
    let request = ListRequest { delimiter: Some("/".into()), max_keys: 10, ..Default::default() };
    let page = client.list_objects(&request).await.unwrap();
    assert_eq!(page.common_prefixes, vec!["up/".to_string()]);
    assert!(page.objects.is_empty());
    client.abort_multipart_upload("up/big", &id).await.unwrap();
    assert!(client.list_objects(&request).await.unwrap().common_prefixes.is_empty());
}

#[tokio::test]
async fn the_harness_works_through_sessions_uncounted() {
    let server = MemS3::start_express(ExpressOptions::default());
    server.put("a/b", "bytes");
    assert_eq!(server.get("a/b").as_deref(), Some(&b"bytes"[..]));
    let helper = server.helper();
    assert_eq!(helper.list_keys(""), vec!["a/b".to_string()]);
    assert_eq!(server.total_request_count(), 0);
    let client = AwsClient::with_credentials(&server.aws_client_config(), server.credentials()).await.unwrap();
    client.head_object("a/b").await.unwrap();
    assert_eq!(server.request_count(S3Operation::HeadObject), 1);
}
