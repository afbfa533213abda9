//! Turning aws-sdk-s3 failures into [`ClientError`]s, and mount-time hints for the user.
//!
//! Classification is a pure function of (HTTP status, S3 error code, region hint) so it can be
//! unit-tested without a server. Codes win over statuses: a 404 `NoSuchBucket` is not a missing
//! key, and throttling is never mistaken for anything permanent.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;

use super::AwsClientConfig;
use crate::client::{ClientError, ClientErrorKind};
use crate::escape::escaped;

/// Marker put in a [`ClientErrorKind::WrongRegion`] message before the bucket's real region.
const REGION_MARKER: &str = "bucket region: ";
/// Start of the message of a connection refused because the server's certificate is not trusted.
const CERTIFICATE_MARKER: &str = "TLS certificate not trusted: ";

/// Classifies a failed S3 answer. `region_hint` says the response named the bucket's region
/// (an `x-amz-bucket-region` header, a `<Region>` element or an "expecting 'R'" message).
pub(crate) fn classify(status: Option<u16>, code: Option<&str>, region_hint: bool) -> ClientErrorKind {
    use ClientErrorKind::*;
    if let Some(code) = code {
        let kind = match code {
            "NoSuchBucket" => Some(NoSuchBucket),
            "NoSuchKey" | "NotFound" | "NoSuchUpload" => Some(NotFound),
            // An append whose offset is not the object's size: another writer moved its end.
            "PreconditionFailed" | "InvalidWriteOffset" => Some(PreconditionFailed),
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "EC2ThrottledException" => Some(Throttled),
            "PermanentRedirect" | "TemporaryRedirect" | "IncorrectEndpoint" => Some(WrongRegion),
            "AuthorizationHeaderMalformed" if region_hint => Some(WrongRegion),
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "AllAccessDisabled"
            | "AuthorizationHeaderMalformed" => Some(AccessDenied),
            "InvalidRange" => Some(InvalidRange),
            // The SDK corrects clock skew and a timed-out socket is the network's fault.
            "InternalError" | "RequestTimeout" | "RequestTimeTooSkewed" => Some(Transient),
            _ => None,
        };
        if let Some(kind) = kind {
            return kind;
        }
    }
    match status {
        Some(404) => NotFound,
        Some(412) => PreconditionFailed,
        Some(429) => Throttled,
        // HEAD answers have no body, so a bare 503 is S3's SlowDown; a 503 with another code
        // (ServiceUnavailable) is an ordinary server failure.
        Some(503) if code.is_none() => Throttled,
        Some(301 | 307) => WrongRegion,
        Some(400) if region_hint && code.is_none() => WrongRegion,
        Some(401 | 403) => AccessDenied,
        Some(416) => InvalidRange,
        Some(408) => Transient,
        Some(500..=599) => Transient,
        _ => Other,
    }
}

/// Converts any aws-sdk-s3 error into a [`ClientError`], keeping code, status, request id and
/// the server's message.
pub(crate) fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> ClientError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let raw = err.raw_response();
    let status = raw.map(|r| r.status().as_u16());
    let header = |name: &str| raw.and_then(|r| r.headers().get(name)).map(str::to_string);
    // moto and some other servers send only the `x-amzn-` spelling, or only the XML element.
    let request_id = header("x-amz-request-id")
        .or_else(|| header("x-amzn-requestid"))
        .or_else(|| xml_element(body_of(raw), "RequestId"));
    let credentials = credentials_error(&err);
    let certificate = certificate_problem(&err);
    let (kind, code, message) = match &err {
        // No request was sent: the credential provider failed (a credential_process exiting
        // non-zero, an unreachable SSO or instance-metadata endpoint). A credentials problem,
        // not a network one, and not worth retrying: the next request asks the provider again.
        SdkError::DispatchFailure(_) if credentials.is_some() => {
            let cause = credentials.map(innermost).unwrap_or_default();
            // A directory bucket's CreateSession that failed for a passing reason (throttled,
            // 5xx, network) is worth another try; a refusal is not.
            let kind = match credentials {
                Some(CredentialsError::ProviderError(_) | CredentialsError::ProviderTimedOut(_))
                    if cause.contains(super::express::SESSION_REFUSED) =>
                {
                    ClientErrorKind::Transient
                }
                _ => ClientErrorKind::AccessDenied,
            };
            (kind, None, format!("cannot load credentials: {cause}"))
        }
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().map(str::to_string);
            let message = match e.message() {
                Some(m) if !m.is_empty() => m.to_string(),
                // No message and no code: a HEAD error (no body) says nothing more than its status;
                // anything else is an answer the SDK could not parse, and the parser's complaint is
                // the only clue.
                _ if code.is_none() && (status.is_some_and(|s| s < 300) || !body_of(raw).is_empty()) => {
                    DisplayErrorContext(e).to_string()
                }
                _ => default_message(status, code.as_deref()),
            };
            let body = body_of(raw);
            let region = header("x-amz-bucket-region")
                .or_else(|| xml_element(body, "Region"))
                .or_else(|| expected_region(&message));
            let kind = classify(status, code.as_deref(), region.is_some());
            let message = match (kind, region) {
                (ClientErrorKind::WrongRegion, Some(r)) => format!("{message} ({REGION_MARKER}{r})"),
                _ => message,
            };
            (kind, code, message)
        }
        SdkError::ResponseError(_) => {
            // An answer we could not read: a cut connection or garbage; worth another try
            // unless the status already says otherwise.
            let kind = match status.map(|s| classify(Some(s), None, false)) {
                None | Some(ClientErrorKind::Other) => ClientErrorKind::Transient,
                Some(kind) => kind,
            };
            (kind, None, DisplayErrorContext(&err).to_string())
        }
        // Retrying cannot make a certificate trusted: not transient.
        SdkError::DispatchFailure(_) if certificate.is_some() => {
            (ClientErrorKind::Other, None, format!("{CERTIFICATE_MARKER}{}", certificate.unwrap_or_default()))
        }
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            (ClientErrorKind::Other, None, DisplayErrorContext(&err).to_string())
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            (ClientErrorKind::Transient, None, DisplayErrorContext(&err).to_string())
        }
        _ => (ClientErrorKind::Other, None, DisplayErrorContext(&err).to_string()),
    };
    // A write answered 2xx that still failed: the server acted, but its answer could not be
    // read (a body the SDK rejects). Whether the object is ours is for the caller to settle.
    let kind = if status.is_some_and(|s| (200..300).contains(&s)) && writes_an_object(operation) {
        ClientErrorKind::OutcomeUnknown
    } else {
        kind
    };
    ClientError { kind, operation, code, status, request_id, message }
}

/// The operations whose success creates an object, so an unreadable 2xx leaves it unknown.
fn writes_an_object(operation: &str) -> bool {
    matches!(operation, "PutObject" | "CompleteMultipartUpload")
}

/// The credential provider's error somewhere in `err`'s chain of causes.
fn credentials_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(found) = e.downcast_ref::<CredentialsError>() {
            return Some(found);
        }
        cause = e.source();
    }
    None
}

/// What rustls found wrong with the server's certificate, somewhere in `err`'s causes. An
/// `io::Error` hides the error it wraps from `source()`, so it is opened explicitly.
fn certificate_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        // io::Errors may nest (tokio-rustls wraps rustls's, the connector wraps that again).
        let mut inner: &(dyn std::error::Error + 'static) = e;
        while let Some(wrapped) = inner.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            inner = wrapped;
        }
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        cause = e.source();
    }
    None
}

/// The deepest cause's message on one line (a credential_process's stderr ends in a newline).
fn innermost(err: &CredentialsError) -> String {
    let mut deepest: &(dyn std::error::Error + 'static) = err;
    while let Some(cause) = deepest.source() {
        deepest = cause;
    }
    deepest.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where the client's credentials come from, for messages (never the credentials themselves).
/// `fixed`: the caller handed the client its credentials.
pub(crate) fn credential_source(config: &AwsClientConfig, fixed: bool) -> String {
    if config.no_sign_request {
        return "none (--no-sign-request)".to_string();
    }
    if fixed {
        return "fixed credentials given to the client".to_string();
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let file = var("AWS_CONFIG_FILE").unwrap_or_else(|| "~/.aws/config".to_string());
    // The chain asks the environment first, even with --profile.
    if var("AWS_ACCESS_KEY_ID").is_some() {
        return "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".to_string();
    }
    match (&config.profile, var("AWS_PROFILE")) {
        (Some(profile), _) => format!("profile {profile:?} in {file} (--profile)"),
        (None, Some(profile)) => format!("profile {profile:?} in {file} (AWS_PROFILE)"),
        (None, None) => "the default chain (environment, ~/.aws profiles, web identity, container and \
                         instance roles)"
            .to_string(),
    }
}

fn body_of(raw: Option<&HttpResponse>) -> &[u8] {
    raw.and_then(|r| r.body().bytes()).unwrap_or_default()
}

fn default_message(status: Option<u16>, code: Option<&str>) -> String {
    match (code, status) {
        (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
        (Some(code), None) => code.to_string(),
        (None, Some(status)) => format!("HTTP {status} without an error message"),
        (None, None) => "no error message".to_string(),
    }
}

/// The text of the first `<name>…</name>` in an XML error body.
fn xml_element(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find("</")?;
    let value = text[start..start + len].trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The region in S3's "... the region 'us-east-1' is wrong; expecting 'eu-west-1'" message.
fn expected_region(message: &str) -> Option<String> {
    let start = message.find("expecting '")? + "expecting '".len();
    let len = message[start..].find('\'')?;
    let region = &message[start..start + len];
    (!region.is_empty()).then(|| region.to_string())
}

/// The bucket's real region, when a [`ClientErrorKind::WrongRegion`] error learned it.
pub fn bucket_region(err: &ClientError) -> Option<&str> {
    let start = err.message.rfind(REGION_MARKER)? + REGION_MARKER.len();
    // The marker's parenthesis may be followed by more text (a mount hint).
    let region = err.message[start..].split(')').next().unwrap_or_default().trim();
    (!region.is_empty()).then_some(region)
}

/// What to tell the user when the mount-time bucket check fails: the S3 error code, what it
/// means for this configuration, and which flag to look at.
pub fn mount_hint(err: &ClientError, config: &AwsClientConfig) -> String {
    let bucket = &config.bucket;
    // The code and message come from the server: escaped, as everything the user may see in a log.
    let code = err.code.as_deref().map(|c| format!(" ({})", escaped(c))).unwrap_or_default();
    let status = err.status.map(|s| format!(" HTTP {s}")).unwrap_or_default();
    let msg = escaped(&err.message);
    let endpoint = config.endpoint_url.as_deref().unwrap_or("the default S3 endpoint");
    if let Some(problem) = err.message.strip_prefix(CERTIFICATE_MARKER) {
        return match &config.ca_bundle {
            None => format!(
                "cannot connect to {endpoint} securely: its TLS certificate is not trusted ({problem}); if a \
                 private certificate authority signed it (an on-premises store, a TLS-inspecting proxy), give \
                 that CA's PEM file with --ca-bundle PATH (or AWS_CA_BUNDLE)"
            ),
            Some(path) => format!(
                "cannot connect to {endpoint} securely: its TLS certificate is not trusted by the CAs in {} \
                 (--ca-bundle or AWS_CA_BUNDLE) ({problem}); that file must hold the CA that signed the \
                 endpoint's certificate",
                path.display()
            ),
        };
    }
    match err.kind {
        ClientErrorKind::NoSuchBucket => {
            format!("bucket {bucket} does not exist{code}: {msg} (check the name, --region and --endpoint-url)")
        }
        // The long-term credentials loaded, but the directory bucket refused them a session.
        ClientErrorKind::AccessDenied if err.message.contains(super::express::SESSION_REFUSED) => format!(
            "cannot open an S3 Express One Zone session on directory bucket {bucket}: {msg}; grant {} on the \
             bucket to these credentials (bucket policy or IAM policy)",
            super::express::CREATE_SESSION_PERMISSION
        ),
        // No status: no request was sent, the credentials could not be loaded.
        ClientErrorKind::AccessDenied if err.status.is_none() => format!(
            "no credentials to access bucket {bucket}: {msg}; fix the credential source, or use \
             --no-sign-request for a public bucket"
        ),
        ClientErrorKind::AccessDenied if config.no_sign_request => format!(
            "access to bucket {bucket} denied{code}: {msg}; the bucket does not allow anonymous access: \
             drop --no-sign-request and check credentials (AWS_PROFILE/--profile)"
        ),
        ClientErrorKind::AccessDenied => format!(
            "access to bucket {bucket} denied{code}: {msg}; check credentials \
             (AWS_PROFILE/--profile, --no-sign-request for public buckets)"
        ),
        ClientErrorKind::WrongRegion => match bucket_region(err) {
            Some(region) => {
                let region = escaped(&region);
                format!("bucket {bucket} is in region {region}{code}: {msg}; use --region {region}")
            }
            None => format!("bucket {bucket} is in another region{code}: {msg}; use --region with the bucket's region"),
        },
        ClientErrorKind::Transient | ClientErrorKind::Throttled if err.status.is_none() => {
            format!("could not reach endpoint {endpoint}: {msg} (check --endpoint-url / network)")
        }
        ClientErrorKind::Throttled => {
            format!("endpoint {endpoint} is throttling requests{code}{status}: {msg}; try again later")
        }
        ClientErrorKind::Transient => {
            format!("endpoint {endpoint} failed{code}{status}: {msg}; try again later")
        }
        ClientErrorKind::NotFound => format!(
            "bucket {bucket} not found at endpoint {endpoint}{code}{status}: {msg} \
             (check the name, --region, --endpoint-url and --force-path-style)"
        ),
        ClientErrorKind::PreconditionFailed
        | ClientErrorKind::InvalidRange
        | ClientErrorKind::Other
        | ClientErrorKind::OutcomeUnknown => {
            format!("checking bucket {bucket} failed{code}{status}: {msg}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientErrorKind::*;

    #[test]
    fn codes_win_over_statuses() {
        let cases: &[(Option<u16>, Option<&str>, bool, ClientErrorKind)] = &[
            (Some(404), Some("NoSuchBucket"), false, NoSuchBucket),
            (Some(404), Some("NoSuchKey"), false, NotFound),
            (Some(404), None, false, NotFound),
            (Some(404), Some("NoSuchUpload"), false, NotFound),
            (Some(412), None, false, PreconditionFailed),
            (Some(412), Some("PreconditionFailed"), false, PreconditionFailed),
            (Some(403), Some("AccessDenied"), false, AccessDenied),
            (Some(403), Some("InvalidAccessKeyId"), false, AccessDenied),
            (Some(403), Some("SignatureDoesNotMatch"), false, AccessDenied),
            (Some(400), Some("ExpiredToken"), false, AccessDenied),
            (Some(403), None, false, AccessDenied),
            (Some(301), Some("PermanentRedirect"), true, WrongRegion),
            (Some(301), None, true, WrongRegion),
            (Some(400), Some("AuthorizationHeaderMalformed"), true, WrongRegion),
            (Some(400), Some("AuthorizationHeaderMalformed"), false, AccessDenied),
            (Some(400), Some("IncorrectEndpoint"), true, WrongRegion),
            (Some(400), None, true, WrongRegion),
            (Some(400), Some("InvalidArgument"), true, Other),
            (Some(503), Some("SlowDown"), false, Throttled),
            (Some(503), None, false, Throttled),
            (Some(503), Some("ServiceUnavailable"), false, Transient),
            (Some(429), None, false, Throttled),
            (Some(400), Some("ThrottlingException"), false, Throttled),
            (Some(500), Some("InternalError"), false, Transient),
            (Some(502), None, false, Transient),
            (Some(400), Some("RequestTimeout"), false, Transient),
            (Some(416), Some("InvalidRange"), false, InvalidRange),
            (Some(416), None, false, InvalidRange),
            (Some(400), Some("InvalidArgument"), false, Other),
            (Some(409), Some("BucketNotEmpty"), false, Other),
            (None, None, false, Other),
        ];
        for &(status, code, hint, expected) in cases {
            assert_eq!(classify(status, code, hint), expected, "status {status:?} code {code:?} hint {hint}");
        }
    }

    #[test]
    fn throttling_and_server_errors_are_never_not_found() {
        for status in [429u16, 500, 502, 503, 504] {
            for code in [None, Some("SlowDown"), Some("InternalError"), Some("ServiceUnavailable")] {
                let kind = classify(Some(status), code, false);
                assert!(matches!(kind, Throttled | Transient), "{status} {code:?} -> {kind:?}");
            }
        }
    }

    #[test]
    fn a_credential_provider_failure_is_access_denied_not_the_network() {
        use aws_sdk_s3::operation::head_object::HeadObjectError;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let provider = CredentialsError::provider_error("process exited 1. Stderr: vault\n unreachable\n");
        let err: SdkError<HeadObjectError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::other(Box::new(provider), None));
        let e = from_sdk("HeadObject", err);
        assert_eq!(e.kind, AccessDenied, "{e}");
        assert!(!e.is_retryable());
        assert_eq!(e.message, "cannot load credentials: process exited 1. Stderr: vault unreachable");
        assert_eq!(e.status, None);
    }

    #[test]
    fn region_is_found_in_bodies_and_messages() {
        let body = b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-west-1</Region></Error>";
        assert_eq!(xml_element(body, "Region").as_deref(), Some("eu-west-1"));
        assert_eq!(xml_element(b"<Error></Error>", "Region"), None);
        let msg = "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'ap-south-1'";
        assert_eq!(expected_region(msg).as_deref(), Some("ap-south-1"));
        assert_eq!(expected_region("no region here"), None);
    }

    #[test]
    fn untrusted_certificates_name_the_flag_that_fixes_them() {
        let c =
            AwsClientConfig { bucket: "b".into(), endpoint_url: Some("https://s3.corp".into()), ..Default::default() };
        let err = error(Other, None, None, &format!("{CERTIFICATE_MARKER}invalid peer certificate: UnknownIssuer"));
        let hint = mount_hint(&err, &c);
        assert!(hint.starts_with("cannot connect to https://s3.corp securely"), "{hint}");
        assert!(
            hint.contains("(invalid peer certificate: UnknownIssuer)") && hint.contains("--ca-bundle PATH"),
            "{hint}"
        );
        let with_bundle = AwsClientConfig { ca_bundle: Some("/etc/corp.pem".into()), ..c };
        let hint = mount_hint(&err, &with_bundle);
        assert!(hint.contains("not trusted by the CAs in /etc/corp.pem"), "{hint}");
    }

    fn error(kind: ClientErrorKind, code: Option<&str>, status: Option<u16>, message: &str) -> ClientError {
        ClientError { code: code.map(str::to_string), status, ..ClientError::new(kind, "ListObjectsV2", message) }
    }

    fn config() -> AwsClientConfig {
        AwsClientConfig {
            bucket: "my-bucket".into(),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            ..AwsClientConfig::default()
        }
    }

    #[test]
    fn hints_name_the_code_and_the_flag() {
        let c = config();
        let hint = mount_hint(&error(NoSuchBucket, Some("NoSuchBucket"), Some(404), "gone"), &c);
        assert!(hint.contains("bucket my-bucket does not exist (NoSuchBucket)"), "{hint}");
        assert!(hint.contains("check the name, --region and --endpoint-url"), "{hint}");

        let hint = mount_hint(&error(AccessDenied, Some("AccessDenied"), Some(403), "no"), &c);
        assert!(hint.contains("(AccessDenied)") && hint.contains("AWS_PROFILE/--profile"), "{hint}");
        assert!(hint.contains("--no-sign-request for public buckets"), "{hint}");

        let anonymous = AwsClientConfig { no_sign_request: true, ..config() };
        let hint = mount_hint(&error(AccessDenied, Some("AccessDenied"), Some(403), "no"), &anonymous);
        assert!(hint.contains("drop --no-sign-request"), "{hint}");

        let wrong = error(WrongRegion, Some("PermanentRedirect"), Some(301), "moved (bucket region: eu-west-1)");
        assert_eq!(bucket_region(&wrong), Some("eu-west-1"));
        let hint = mount_hint(&wrong, &c);
        let hinted = ClientError { message: hint.clone(), ..wrong.clone() };
        assert_eq!(bucket_region(&hinted), Some("eu-west-1"), "{hint}");
        assert!(hint.contains("(PermanentRedirect)") && hint.contains("use --region eu-west-1"), "{hint}");
        let hint = mount_hint(&error(WrongRegion, None, Some(301), "moved"), &c);
        assert!(hint.contains("use --region with the bucket's region"), "{hint}");

        let no_credentials = error(AccessDenied, None, None, "cannot load credentials: process exited 1");
        let hint = mount_hint(&no_credentials, &c);
        assert!(hint.starts_with("no credentials to access bucket my-bucket: cannot load credentials"), "{hint}");
        assert!(hint.contains("fix the credential source"), "{hint}");

        let hint = mount_hint(&error(Transient, None, None, "connection refused"), &c);
        assert!(hint.starts_with("could not reach endpoint http://127.0.0.1:9: connection refused"), "{hint}");
        assert!(hint.contains("(check --endpoint-url / network)"), "{hint}");

        let hint = mount_hint(&error(Transient, Some("InternalError"), Some(500), "oops"), &c);
        assert!(hint.contains("(InternalError) HTTP 500"), "{hint}");
        let hint = mount_hint(&error(Throttled, Some("SlowDown"), Some(503), "slow"), &c);
        assert!(hint.contains("throttling") && hint.contains("(SlowDown)"), "{hint}");
    }
}
