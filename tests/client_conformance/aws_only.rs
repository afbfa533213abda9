//! Checks that only make sense for the AWS client: error mapping (missing bucket, wrong secret,
//! closed port), `probe_bucket` and its hints, exact request counts, and a body that ends early.

use super::*;

/// A 127.0.0.1 port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn config_for(endpoint: &str) -> AwsClientConfig {
    AwsClientConfig {
        bucket: "bucket".into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.to_string()),
        force_path_style: true,
        max_attempts: 2,
        ..AwsClientConfig::default()
    }
}

fn test_credentials() -> Credentials {
    Credentials::new("AKIDLOCALTEST", "local-test-secret", None, None, "test")
}

#[tokio::test]
async fn closed_port_is_transient_and_probe_fails_fast() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let client = AwsClient::with_credentials(&config_for(&endpoint), test_credentials()).await.unwrap();
    let err = client.head_object("k").await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::Transient, "{err}");
    assert_eq!(err.status, None);
    assert!(err.is_retryable());

    let started = Instant::now();
    let err = client.probe_bucket("some/prefix/").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(9), "probe took {:?}", started.elapsed());
    assert_eq!(err.kind, ClientErrorKind::Transient, "{err}");
    assert!(err.message.starts_with(&format!("could not reach endpoint {endpoint}")), "{err}");
    assert!(err.message.contains("(check --endpoint-url / network)"), "{err}");
}

#[tokio::test]
async fn probe_of_a_silent_endpoint_gives_up_within_the_deadline() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = AwsClient::with_credentials(&config_for(&endpoint), test_credentials()).await.unwrap();
    let started = Instant::now();
    let err = client.probe_bucket("").await.unwrap_err();
    let elapsed = started.elapsed();
    hold.abort();
    assert!(elapsed < Duration::from_millis(8_500), "probe took {elapsed:?}");
    assert_eq!(err.kind, ClientErrorKind::Transient, "{err}");
    assert!(err.message.contains(&format!("could not reach endpoint {endpoint}")), "{err}");
}

#[tokio::test]
async fn probe_bucket_succeeds_on_a_good_bucket() {
    let server = LocalS3::start();
    let client = server.aws_client().await;
    client.probe_bucket("").await.unwrap();
    client.probe_bucket("some/prefix/").await.unwrap();
    assert_eq!(server.request_count(S3Operation::ListObjectsV2), 2);
}

#[tokio::test]
async fn probe_bucket_succeeds_when_the_first_key_holds_a_control_character() {
    let (s3s_fs, moto) = (LocalS3::start(), MotoServer::start());
    for server in [&s3s_fs as &dyn TestS3Dyn, &moto] {
        let client = AwsClient::with_credentials(&server.config(), server.creds()).await.unwrap();
        client.put_object("\x01first", Bytes::from_static(b"x"), &PutOptions::default()).await.unwrap();
        client.probe_bucket("").await.unwrap_or_else(|e| panic!("{}: {e}", server.config().endpoint_url.unwrap()));
    }
}

#[tokio::test]
async fn wrong_secret_key_is_access_denied() {
    let server = LocalS3::start();
    server.put("k", pattern_bytes(10, 0));
    let wrong = Credentials::new(s3_server::ACCESS_KEY, "not-the-secret", None, None, "test");
    let client = AwsClient::with_credentials(&server.aws_client_config(), wrong).await.unwrap();
    let err = client.head_object("k").await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::AccessDenied, "{err}");
    let err = client.list_objects(&ListRequest { max_keys: 1, ..ListRequest::default() }).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::AccessDenied, "{err}");
    assert_eq!(err.code.as_deref(), Some("SignatureDoesNotMatch"), "{err}");
    assert!(!err.is_retryable());
    let err = client.probe_bucket("").await.unwrap_err();
    assert!(err.message.contains("(SignatureDoesNotMatch)") && err.message.contains("AWS_PROFILE/--profile"), "{err}");

    let unknown = Credentials::new("AKIDUNKNOWN", "whatever", None, None, "test");
    let client = AwsClient::with_credentials(&server.aws_client_config(), unknown).await.unwrap();
    let err = client.list_objects(&ListRequest { max_keys: 1, ..ListRequest::default() }).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::AccessDenied, "{err}");
    assert_eq!(server.total_request_count(), 0, "rejected requests are not counted");
}

#[tokio::test]
async fn unsigned_requests_denied_by_s3s_fs_carry_the_anonymous_hint() {
    let server = LocalS3::start();
    let config = AwsClientConfig { no_sign_request: true, ..server.aws_client_config() };
    let client = AwsClient::new(&config).await.unwrap();
    let err = client.probe_bucket("").await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::AccessDenied, "{err}");
    assert!(err.message.contains("drop --no-sign-request"), "{err}");
}

#[tokio::test]
async fn unsigned_requests_work_against_moto() {
    let server = MotoServer::start();
    // moto checks ACLs of anonymous requests: the object must be public.
    let (sdk, bucket) = (server.sdk_client(), server.bucket.clone());
    let put = sdk
        .put_object()
        .bucket(bucket)
        .key("public")
        .acl(ObjectCannedAcl::PublicRead)
        .body(pattern_bytes(42, 0).into());
    put.send().await.unwrap();
    let config = AwsClientConfig { no_sign_request: true, ..server.aws_client_config() };
    let client = AwsClient::new(&config).await.unwrap();
    client.probe_bucket("").await.unwrap();
    assert_eq!(client.head_object("public").await.unwrap().size, 42);
}

#[tokio::test]
async fn s3s_fs_counts_every_request_exactly() {
    let server = LocalS3::start();
    server.put("seed", pattern_bytes(100, 0));
    assert_eq!(server.total_request_count(), 0, "helper requests are not counted");
    let client = server.aws_client().await;
    client.head_object("seed").await.unwrap();
    read_all(client.get_object("seed", 0..10, None).await.unwrap()).await.unwrap();
    client.list_objects(&ListRequest { max_keys: 5, ..ListRequest::default() }).await.unwrap();
    client.put_object("new", pattern_bytes(5, 0), &PutOptions::default()).await.unwrap();
    let id = client.create_multipart_upload("mpu", &PutOptions::default()).await.unwrap();
    let part = client.upload_part("mpu", &id, 1, pattern_bytes(10, 0), &PutOptions::default()).await.unwrap();
    client.complete_multipart_upload("mpu", &id, &[part], &PutOptions::default()).await.unwrap();
    let id = client.create_multipart_upload("aborted", &PutOptions::default()).await.unwrap();
    client.abort_multipart_upload("aborted", &id).await.unwrap();
    client.copy_object("new", "copy", &CopyOptions::default()).await.unwrap();
    client.delete_object("copy").await.unwrap();
    let expected = [
        (S3Operation::HeadObject, 1),
        (S3Operation::GetObject, 1),
        (S3Operation::ListObjectsV2, 1),
        (S3Operation::PutObject, 1),
        (S3Operation::CreateMultipartUpload, 2),
        (S3Operation::UploadPart, 1),
        (S3Operation::CompleteMultipartUpload, 1),
        (S3Operation::AbortMultipartUpload, 1),
        (S3Operation::CopyObject, 1),
        (S3Operation::DeleteObject, 1),
    ];
    for (op, n) in expected {
        assert_eq!(server.request_count(op), n, "{op:?}: {:?}", server.request_counts());
    }
    assert_eq!(server.total_request_count(), 11, "{:?}", server.request_counts());
    server.reset_counts();
    assert_eq!(server.total_request_count(), 0);
    // A failed HEAD is one request too: no hidden retries of 404s.
    client.head_object("missing").await.unwrap_err();
    assert_eq!(server.request_count(S3Operation::HeadObject), 1);
    assert_eq!(server.total_request_count(), 1);
}

#[tokio::test]
async fn requests_carry_our_user_agent() {
    let server = LocalS3::start();
    let config = AwsClientConfig { user_agent_prefix: Some("my-prefix/1.0".into()), ..server.aws_client_config() };
    let client = AwsClient::with_credentials(&config, server.credentials()).await.unwrap();
    client.probe_bucket("").await.unwrap();
    let agents = server.user_agents();
    let expected = format!("my-prefix/1.0 mount-s3/{} ", env!("CARGO_PKG_VERSION"));
    assert!(!agents.is_empty() && agents.iter().all(|ua| ua.starts_with(&expected)), "{agents:?}");
}

#[tokio::test]
async fn a_body_cut_short_is_a_transient_error() {
    let server = LocalS3::start();
    server.put("obj", pattern_bytes(100_000, 0));
    let client = server.aws_client().await;
    server.truncate_get_bodies(Some(1000));
    let response = client.get_object("obj", 0..50_000, None).await.unwrap();
    let err = read_all(response).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::Transient, "{err}");
    assert!(err.message.contains("body cut short: got 1000 of 50000 bytes"), "{err}");
    server.truncate_get_bodies(None);
    let response = client.get_object("obj", 0..50_000, None).await.unwrap();
    assert_eq!(read_all(response).await.unwrap().len(), 50_000);
}

fn error_xml(code: &str, message: &str, extra: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message>{extra}<RequestId>REQ-XML</RequestId></Error>"
    )
}

#[tokio::test]
async fn redirects_map_to_wrong_region_with_the_region_in_the_hint() {
    let body = error_xml(
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified endpoint.",
        "<Endpoint>bucket.s3.eu-west-1.amazonaws.com</Endpoint>",
    );
    let headers =
        [("x-amz-bucket-region", "eu-west-1"), ("x-amz-request-id", "REQ-301"), ("Content-Type", "application/xml")];
    let server = CannedServer::start("301 Moved Permanently", &headers, &body).await;
    let client = server.aws_client().await;
    let err = client.list_objects(&ListRequest { max_keys: 1, ..ListRequest::default() }).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::WrongRegion, "{err}");
    assert_eq!(
        (err.code.as_deref(), err.status, err.request_id.as_deref()),
        (Some("PermanentRedirect"), Some(301), Some("REQ-301"))
    );
    assert_eq!(mount_s3::client::aws::bucket_region(&err), Some("eu-west-1"), "{err}");
    // HEAD answers carry no body: the status and the header are all there is.
    let err = client.head_object("k").await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::WrongRegion, "{err}");
    let err = client.probe_bucket("").await.unwrap_err();
    assert!(err.message.contains("(PermanentRedirect)") && err.message.contains("use --region eu-west-1"), "{err}");
}

#[tokio::test]
async fn a_malformed_authorization_region_maps_to_wrong_region() {
    let body = error_xml(
        "AuthorizationHeaderMalformed",
        "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'ap-south-1'",
        "<Region>ap-south-1</Region>",
    );
    let server = CannedServer::start("400 Bad Request", &[("Content-Type", "application/xml")], &body).await;
    let err = server
        .aws_client()
        .await
        .list_objects(&ListRequest { max_keys: 1, ..ListRequest::default() })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::WrongRegion, "{err}");
    assert_eq!(mount_s3::client::aws::bucket_region(&err), Some("ap-south-1"), "{err}");
    assert_eq!(err.request_id.as_deref(), Some("REQ-XML"), "without the header, the body's request id");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_and_retryable() {
    let body = error_xml("SlowDown", "Please reduce your request rate.", "");
    let server = CannedServer::start("503 Slow Down", &[("Content-Type", "application/xml")], &body).await;
    let err = server
        .aws_client()
        .await
        .list_objects(&ListRequest { max_keys: 1, ..ListRequest::default() })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::Throttled, "{err}");
    assert!(err.is_retryable());
    assert_eq!(server.requests(), 2, "max_attempts 2");

    let body = error_xml("InternalError", "We encountered an internal error.", "");
    let server = CannedServer::start("500 Internal Server Error", &[("Content-Type", "application/xml")], &body).await;
    let err = server.aws_client().await.head_object("k").await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::Transient, "{err}");
    assert_eq!(err.status, Some(500));
}

#[tokio::test]
async fn a_get_answered_with_the_wrong_range_is_refused() {
    let headers = [("Content-Range", "bytes 0-9/100"), ("ETag", "\"abc\"")];
    let server = CannedServer::start("206 Partial Content", &headers, "0123456789").await;
    let err = server.aws_client().await.get_object("k", 10..20, None).await.unwrap_err();
    assert_eq!(err.kind, ClientErrorKind::Other, "{err}");
    assert!(err.message.contains("asked for bytes 10-19"), "{err}");

    let server = CannedServer::start("200 OK", &[("ETag", "\"abc\"")], "0123456789").await;
    let err = server.aws_client().await.get_object("k", 2..5, None).await.unwrap_err();
    assert!(err.message.contains("ignored the Range"), "{err}");
    // The whole object when the whole object was asked for is fine.
    let response = server.aws_client().await.get_object("k", 0..10, None).await.unwrap();
    assert_eq!((response.object_size, response.etag.as_str()), (10, "\"abc\""));
    assert_eq!(read_all(response).await.unwrap(), b"0123456789");
}
