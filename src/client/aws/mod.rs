//! [`AwsClient`]: the [`ObjectClient`] over aws-sdk-s3.
//!
//! Configuration follows the AWS CLI: the standard credential chain (or a named profile, or no
//! credentials at all with `--no-sign-request`), region from the flag, else the chain, else
//! `us-east-1`. Credentials refresh through the SDK's identity cache.
//!
//! Region discovery: a region the user chose (`--region`, `AWS_REGION`/`AWS_DEFAULT_REGION`, the
//! profile's `region`) is kept, and a bucket elsewhere fails the mount naming its region. A
//! region we only guessed (instance metadata, or the `us-east-1` fallback) follows S3's redirect:
//! [`AwsClient::region_to_follow`] reads the bucket's region from the probe's answer and
//! [`AwsClient::with_region`] rebuilds the SDK clients for it on the same configuration
//! (credentials, connections), so the mount proceeds as if that region had been given.
//!
//! Two SDK clients share one connection pool and identity cache and differ only in timeouts:
//! `fast` (HEAD, LIST, DELETE, multipart bookkeeping, and GET up to its response headers) gives
//! each attempt [`FAST_ATTEMPT_TIMEOUT`]; `slow` (PUT, UploadPart, Complete, Copy) has no attempt
//! timeout because sending a large body or assembling a large object can take minutes. Neither
//! bounds a GET body: that is streamed after the attempt ends, guarded by the SDK's stalled-stream
//! protection. Connecting is bounded by [`CONNECT_TIMEOUT`] everywhere.
//!
//! Every request carries `x-amz-expected-bucket-owner` and `x-amz-request-payer` when configured.
//! Request checksums are sent only when asked for ([`PutOptions::checksum_crc32c`]); we compute
//! the CRC32C ourselves so it can be returned with the part. With
//! [`AwsClientConfig::checksum_crc64nvme`] the checksum asked for is a full-object CRC64NVME
//! instead (see `crc64`); parts then return no CRC32C, and this client checks S3's values itself.

mod cache_bucket;
mod checksum;
mod copy;
mod crc64;
mod error;
pub mod express;
mod get;
mod http;
mod list;
mod user_agent;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::meta::region::ProvideRegion;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::{AppName, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, RequestPayer,
    ServerSideEncryption, StorageClass,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;

pub use self::cache_bucket::{StorePut, StoredObject};
pub use self::error::{bucket_region, mount_hint};
use self::error::{credential_source, from_sdk};
use super::memory::crc32c_base64;
use super::{
    ClientError, ClientErrorKind, CopyOptions, ETag, GetObjectResponse, ListPage, ListRequest, ListedObject,
    ObjectClient, ObjectMeta, PutOptions, PutResult, RenameOptions, UploadedPart,
};

/// Settings of the AWS client.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AwsClientConfig {
    pub bucket: String,
    /// `--region`; `None`: AWS_REGION / profile / IMDS chain, else us-east-1.
    pub region: Option<String>,
    /// `--endpoint-url` (or AWS_ENDPOINT_URL).
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    pub profile: Option<String>,
    pub no_sign_request: bool,
    pub requester_pays: bool,
    pub expected_bucket_owner: Option<String>,
    pub user_agent_prefix: Option<String>,
    pub transfer_acceleration: bool,
    pub dual_stack: bool,
    /// Total attempts per request (AWS_MAX_ATTEMPTS, default 10).
    pub max_attempts: u32,
    /// `--ca-bundle` (or AWS_CA_BUNDLE): PEM file of the only certificate authorities trusted.
    pub ca_bundle: Option<PathBuf>,
    /// `--bind`: network interfaces to spread connections over (empty: the default route).
    pub bind: Vec<String>,
    /// `--upload-checksums crc64nvme`: uploads that ask for a checksum carry a full-object
    /// CRC64NVME rather than CRC32C.
    pub checksum_crc64nvme: bool,
    /// HeadObject in checksum mode, filling [`ObjectMeta::checksum`] (`--incremental-upload`).
    /// Off otherwise: checksum mode on a KMS-encrypted object needs `kms:Decrypt`.
    pub head_checksums: bool,
}

/// Attempts per request when [`AwsClientConfig::max_attempts`] is 0.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Longest wait for a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the response headers of a metadata request or a GET, per attempt.
pub const FAST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Hard deadline of [`AwsClient::probe_bucket`], retries included.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(8);
/// Attempts of the mount-time probe.
const PROBE_ATTEMPTS: u32 = 2;
/// Per-attempt timeout of the probe.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Region when neither the flag nor the chain gives one (as the AWS CLI does).
const FALLBACK_REGION: &str = "us-east-1";

/// The production [`ObjectClient`]: aws-sdk-s3 bound to one bucket.
pub struct AwsClient {
    fast: aws_sdk_s3::Client,
    slow: aws_sdk_s3::Client,
    config: AwsClientConfig,
    region: String,
    /// The user chose the region (flag, environment, profile): never switch away from it.
    region_chosen: bool,
    /// The shared configuration (credentials, HTTP client) the SDK clients are built from.
    sdk: SdkConfig,
    /// Part CRC64NVMEs of multipart uploads in progress (`checksum_crc64nvme` only).
    part_crcs: crc64::PartCrcs,
    /// Where the credentials come from, for messages.
    credential_source: String,
    /// The resolved credentials chain (`None` with `no_sign_request`).
    credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
}

impl fmt::Debug for AwsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsClient")
            .field("bucket", &self.config.bucket)
            .field("region", &self.region)
            .field("endpoint_url", &self.config.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl AwsClient {
    /// Builds a client from the configuration, loading credentials through the standard chain
    /// (none at all with `no_sign_request`). Nothing is sent to S3 here.
    pub async fn new(config: &AwsClientConfig) -> Result<AwsClient, ClientError> {
        Self::build(config, None).await
    }

    /// Like [`AwsClient::new`] but with fixed credentials instead of the chain (tests, tools).
    pub async fn with_credentials(
        config: &AwsClientConfig,
        credentials: Credentials,
    ) -> Result<AwsClient, ClientError> {
        Self::build(config, Some(credentials)).await
    }

    async fn build(config: &AwsClientConfig, credentials: Option<Credentials>) -> Result<AwsClient, ClientError> {
        let credential_source = credential_source(config, credentials.is_some());
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // Given to the loader, so credential and region providers use it as well as S3.
        if let Some(client) = http::http_client(config.ca_bundle.as_deref(), &config.bind)? {
            loader = loader.http_client(client);
        }
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        let chosen = match &config.region {
            Some(region) => Some(region.clone()),
            None => chosen_region(config.profile.as_deref()).await,
        };
        if let Some(region) = &chosen {
            loader = loader.region(Region::new(region.clone()));
        }
        if config.no_sign_request {
            loader = loader.no_credentials();
        } else if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let sdk = loader.load().await;
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_else(|| FALLBACK_REGION.to_string());
        Self::from_sdk(sdk, config, region, chosen.is_some(), credential_source)
    }

    /// The two SDK clients for `region` over the shared configuration `sdk`.
    fn from_sdk(
        sdk: SdkConfig,
        config: &AwsClientConfig,
        region: String,
        region_chosen: bool,
        credential_source: String,
    ) -> Result<AwsClient, ClientError> {
        let invalid = |message: String| ClientError::new(ClientErrorKind::Other, "Configure", message);
        let attempts = if config.max_attempts == 0 { DEFAULT_MAX_ATTEMPTS } else { config.max_attempts };
        let app_name = AppName::new("mount-s3").map_err(|e| invalid(format!("app name: {e}")))?;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .region(Region::new(region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(attempts))
            .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .app_name(app_name)
            .interceptor(user_agent::UserAgentPrefix::new(config.user_agent_prefix.as_deref()));
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        if config.force_path_style {
            builder = builder.force_path_style(true);
        }
        if config.transfer_acceleration {
            builder = builder.accelerate(true);
        }
        if config.dual_stack {
            builder = builder.use_dual_stack(true);
        }
        if config.no_sign_request {
            builder = builder.allow_no_auth();
        }
        if !config.no_sign_request {
            // One session provider for both clients (see `express`): without it each SDK client
            // would open sessions of its own. Unused unless the bucket is a directory bucket.
            let plain = aws_sdk_s3::Client::from_conf(builder.clone().build());
            builder = builder.express_credentials_provider(express::SessionProvider::new(plain, &config.bucket));
        }
        let slow = aws_sdk_s3::Client::from_conf(builder.clone().build());
        let fast_timeouts =
            TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_attempt_timeout(FAST_ATTEMPT_TIMEOUT);
        let fast = aws_sdk_s3::Client::from_conf(builder.timeout_config(fast_timeouts.build()).build());
        let credentials = sdk.credentials_provider();
        Ok(AwsClient {
            fast,
            slow,
            config: config.clone(),
            region,
            region_chosen,
            sdk,
            part_crcs: crc64::PartCrcs::default(),
            credential_source,
            credentials,
        })
    }

    /// The region S3 redirected a request to, when this client should follow it: `err` is a
    /// [`ClientErrorKind::WrongRegion`] answer naming another region, and the user did not
    /// choose ours (see the module notes).
    pub fn region_to_follow(&self, err: &ClientError) -> Option<String> {
        if self.region_chosen || err.kind != ClientErrorKind::WrongRegion {
            return None;
        }
        bucket_region(err).filter(|r| *r != self.region).map(str::to_string)
    }

    /// This client for another region: same settings, credentials and connection pool.
    pub fn with_region(&self, region: &str) -> Result<AwsClient, ClientError> {
        let config = AwsClientConfig { region: Some(region.to_string()), ..self.config.clone() };
        let mut client =
            Self::from_sdk(self.sdk.clone(), &config, region.to_string(), true, self.credential_source.clone())?;
        // What the user asked for stays as they wrote it, for messages and hints.
        client.config.region.clone_from(&self.config.region);
        Ok(client)
    }

    /// The region requests are signed for and sent to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &AwsClientConfig {
        &self.config
    }

    /// Who this client reads as, for the persistent cache's namespace: `anonymous` with
    /// `no_sign_request`, else the SHA-256 of the access key id of the credentials the chain
    /// resolves now (never the secret). `None` if no credentials can be resolved.
    pub async fn credential_identity(&self) -> Option<String> {
        use aws_sdk_s3::config::ProvideCredentials;
        use sha2::{Digest, Sha256};
        if self.config.no_sign_request {
            return Some("anonymous".to_string());
        }
        let provider = self.credentials.as_ref()?;
        let credentials = provider.provide_credentials().await.ok()?;
        let hash = Sha256::digest(credentials.access_key_id().as_bytes());
        Some(format!("access-key-sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    /// The mount-time check: one ListObjectsV2 of `prefix` (max-keys 1), at most
    /// [`PROBE_ATTEMPTS`] attempts and [`PROBE_DEADLINE`] in all, so a wrong or unreachable
    /// endpoint fails fast. The error's message is a [`mount_hint`] for the user.
    pub async fn probe_bucket(&self, prefix: &str) -> Result<(), ClientError> {
        let override_config = aws_sdk_s3::Config::builder()
            .retry_config(RetryConfig::standard().with_max_attempts(PROBE_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(PROBE_ATTEMPT_TIMEOUT)
                    .build(),
            );
        let request = self
            .fast
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .set_prefix(non_empty(prefix))
            .max_keys(1)
            .encoding_type(list::ENCODING)
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .customize()
            .config_override(override_config)
            .send();
        let result = match tokio::time::timeout(PROBE_DEADLINE, request).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => self.error("ListObjectsV2", e),
            Err(_) => ClientError::new(
                ClientErrorKind::Transient,
                "ListObjectsV2",
                format!("no answer within {} s", PROBE_DEADLINE.as_secs()),
            ),
        };
        let message = mount_hint(&result, &self.config);
        Err(ClientError { message, ..result })
    }

    /// A failed call as a [`ClientError`]; a refusal of the credentials names their source.
    fn error<E>(&self, operation: &'static str, err: SdkError<E, HttpResponse>) -> ClientError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut e = from_sdk(operation, err);
        if e.kind == ClientErrorKind::AccessDenied {
            e.message = format!("{} (credentials from {})", e.message, self.credential_source);
        }
        e
    }

    /// The checksum algorithm of uploads with `options`, if any.
    fn algorithm(&self, options: &PutOptions) -> Option<ChecksumAlgorithm> {
        match (options.checksum_crc32c, self.config.checksum_crc64nvme) {
            (false, _) => None,
            (true, false) => Some(ChecksumAlgorithm::Crc32C),
            (true, true) => Some(ChecksumAlgorithm::Crc64Nvme),
        }
    }

    fn payer(&self) -> Option<RequestPayer> {
        self.config.requester_pays.then_some(RequestPayer::Requester)
    }

    fn owner(&self) -> Option<String> {
        self.config.expected_bucket_owner.clone()
    }
}

/// The region the user chose outside the command line: `AWS_REGION` (or `AWS_DEFAULT_REGION`),
/// else the `region` of the profile in use. Instance metadata is not a choice.
async fn chosen_region(profile: Option<&str>) -> Option<String> {
    if let Some(region) = aws_config::environment::EnvironmentVariableRegionProvider::new().region().await {
        return Some(region.to_string());
    }
    let mut from_profile = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(profile) = profile {
        from_profile = from_profile.profile_name(profile);
    }
    from_profile.build().region().await.map(|r| r.to_string())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `None` for STANDARD, as [`ObjectMeta::storage_class`] wants it.
fn storage_class(class: Option<&str>) -> Option<String> {
    class.filter(|c| !c.is_empty() && *c != "STANDARD").map(str::to_string)
}

fn system_time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok()).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn size(operation: &'static str, length: Option<i64>) -> Result<u64, ClientError> {
    let length = length.ok_or_else(|| ClientError::new(ClientErrorKind::Other, operation, "no Content-Length"))?;
    u64::try_from(length)
        .map_err(|_| ClientError::new(ClientErrorKind::Other, operation, format!("negative Content-Length {length}")))
}

fn etag(operation: &'static str, etag: Option<&str>) -> Result<ETag, ClientError> {
    match etag {
        Some(e) if !e.is_empty() => Ok(ETag::new(e)),
        _ => Err(ClientError::new(ClientErrorKind::Other, operation, "the answer has no ETag")),
    }
}

/// `x-amz-copy-source` for a key of `bucket`: percent-encoded except unreserved characters and
/// the `/` separators.
pub(crate) fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    for b in bucket.bytes().chain(std::iter::once(b'/')).chain(key.bytes()) {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[async_trait]
impl ObjectClient for AwsClient {
    fn bucket(&self) -> &str {
        &self.config.bucket
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        const OP: &str = "HeadObject";
        let out = self
            .fast
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .set_checksum_mode(self.config.head_checksums.then_some(ChecksumMode::Enabled))
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: size(OP, out.content_length())?,
            last_modified: system_time(out.last_modified()),
            etag: etag(OP, out.e_tag())?,
            storage_class: storage_class(out.storage_class().map(|c| c.as_str())),
            archived: super::is_archived(
                out.storage_class().map(|c| c.as_str()),
                out.restore(),
                out.archive_status().map(|s| s.as_str()),
            ),
            metadata: copy::from_sdk_metadata(out.metadata()),
            content_type: out.content_type().map(str::to_string),
            headers: super::ContentHeaders {
                encoding: out.content_encoding().map(str::to_string),
                language: out.content_language().map(str::to_string),
                disposition: out.content_disposition().map(str::to_string),
                cache_control: out.cache_control().map(str::to_string),
            },
            checksum: checksum::of_head(&out),
        })
    }

    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        const OP: &str = "GetObject";
        if range.is_empty() {
            return Err(ClientError::new(ClientErrorKind::InvalidRange, OP, format!("empty range {range:?}")));
        }
        let out = self
            .fast
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .range(get::range_header(&range))
            .set_if_match(if_match.map(|e| e.as_str().to_string()))
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        let checked = get::check_response_range(&range, out.content_range(), out.content_length())
            .map_err(|m| ClientError::new(ClientErrorKind::Other, OP, format!("{key:?}: {m}")))?;
        let etag = etag(OP, out.e_tag())?;
        let body = futures::stream::unfold(out.body, |mut body| async move {
            let item = body.next().await?;
            Some((item.map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string()), body))
        });
        Ok(GetObjectResponse {
            etag,
            object_size: checked.object_size,
            body: get::checked_body(body, checked.body_len),
        })
    }

    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        const OP: &str = "ListObjectsV2";
        let max_keys = i32::try_from(request.max_keys.clamp(1, 1000)).unwrap_or(1000);
        let out = self
            .fast
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .set_prefix(non_empty(&request.prefix))
            .set_delimiter(request.delimiter.clone().filter(|d| !d.is_empty()))
            .set_continuation_token(request.continuation_token.clone())
            .max_keys(max_keys)
            .encoding_type(list::ENCODING)
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        let encoding = out.encoding_type();
        let mut objects = Vec::with_capacity(out.contents().len());
        for o in out.contents() {
            let Some(key) = o.key().and_then(|k| list::decode_listed(k, encoding)) else { continue };
            objects.push(ListedObject {
                key,
                size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                last_modified: system_time(o.last_modified()),
                etag: o.e_tag().filter(|e| !e.is_empty()).map(ETag::new),
                storage_class: storage_class(o.storage_class().map(|c| c.as_str())),
            });
        }
        let common_prefixes =
            out.common_prefixes().iter().filter_map(|p| list::decode_listed(p.prefix()?, encoding)).collect();
        let token = out.next_continuation_token().filter(|t| !t.is_empty()).map(str::to_string);
        if out.is_truncated() == Some(true) && token.is_none() {
            return Err(ClientError::new(ClientErrorKind::Other, OP, "truncated listing without a continuation token"));
        }
        Ok(ListPage { objects, common_prefixes, next_continuation_token: token })
    }

    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError> {
        const OP: &str = "PutObject";
        let algorithm = options.checksum_algorithm.map(checksum::sdk_algorithm).or_else(|| self.algorithm(options));
        let checksum = (algorithm == Some(ChecksumAlgorithm::Crc32C)).then(|| crc32c_base64(&body));
        let crc64 =
            (algorithm == Some(ChecksumAlgorithm::Crc64Nvme)).then(|| crc64::to_base64(crc64::crc64nvme(&body)));
        // SHA-1 and SHA-256 (only ever carried for an append) are computed by the SDK.
        let crc32 = (algorithm == Some(ChecksumAlgorithm::Crc32)).then(|| checksum::crc32_base64(&body));
        let length = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let request = self
            .slow
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_length(length)
            .body(ByteStream::from(body))
            .set_if_none_match(options.if_none_match_any.then(|| "*".to_string()))
            .set_if_match(options.if_match.as_ref().map(|e| e.as_str().to_string()))
            .set_metadata(copy::sdk_metadata(&options.metadata))
            .set_storage_class(options.storage_class.as_deref().map(StorageClass::from))
            .set_content_type(options.content_type.clone())
            .set_content_encoding(options.headers.encoding.clone())
            .set_content_language(options.headers.language.clone())
            .set_content_disposition(options.headers.disposition.clone())
            .set_cache_control(options.headers.cache_control.clone())
            .set_server_side_encryption(options.sse.as_deref().map(ServerSideEncryption::from))
            .set_ssekms_key_id(options.sse_kms_key_id.clone())
            .set_checksum_algorithm(algorithm.clone())
            .set_checksum_crc32_c(checksum)
            .set_checksum_crc32(crc32)
            .set_checksum_crc64_nvme(crc64.clone())
            .set_write_offset_bytes(options.write_offset.map(|o| i64::try_from(o).unwrap_or(i64::MAX)))
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner());
        // With a checksum in a signed header, S3 checks the body against it: signing the body
        // too (SHA-256 over every byte, a third of a writer's CPU) adds no protection.
        let mut request = request.customize();
        if algorithm.is_some() {
            request = request.disable_payload_signing();
        }
        let out = request.send().await.map_err(|e| self.error(OP, e))?;
        if let Some(sent) = &crc64 {
            crc64::check_acknowledged(OP, key, sent, out.checksum_crc64_nvme())?;
        }
        Ok(PutResult { etag: etag(OP, out.e_tag())? })
    }

    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError> {
        const OP: &str = "CreateMultipartUpload";
        let out = self
            .fast
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .set_metadata(copy::sdk_metadata(&options.metadata))
            .set_storage_class(options.storage_class.as_deref().map(StorageClass::from))
            .set_content_type(options.content_type.clone())
            .set_content_encoding(options.headers.encoding.clone())
            .set_content_language(options.headers.language.clone())
            .set_content_disposition(options.headers.disposition.clone())
            .set_cache_control(options.headers.cache_control.clone())
            .set_server_side_encryption(options.sse.as_deref().map(ServerSideEncryption::from))
            .set_ssekms_key_id(options.sse_kms_key_id.clone())
            .set_checksum_algorithm(self.algorithm(options))
            .set_checksum_type(
                (self.algorithm(options) == Some(ChecksumAlgorithm::Crc64Nvme)).then_some(ChecksumType::FullObject),
            )
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        match out.upload_id() {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(ClientError::new(ClientErrorKind::Other, OP, "the answer has no upload id")),
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        const OP: &str = "UploadPart";
        let number = i32::try_from(part_number)
            .map_err(|_| ClientError::new(ClientErrorKind::Other, OP, format!("part number {part_number}")))?;
        let algorithm = self.algorithm(options);
        let checksum = (algorithm == Some(ChecksumAlgorithm::Crc32C)).then(|| crc32c_base64(&body));
        let crc64 = (algorithm == Some(ChecksumAlgorithm::Crc64Nvme)).then(|| crc64::crc64nvme(&body));
        let body_len = body.len() as u64;
        let length = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let request = self
            .slow
            .upload_part()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(length)
            .body(ByteStream::from(body))
            .set_checksum_algorithm(algorithm.clone())
            .set_checksum_crc32_c(checksum.clone())
            .set_checksum_crc64_nvme(crc64.map(crc64::to_base64))
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner());
        // As for PutObject: the checksum header protects the body; no SHA-256 of it.
        let mut request = request.customize();
        if algorithm.is_some() {
            request = request.disable_payload_signing();
        }
        let out = request.send().await.map_err(|e| self.error(OP, e))?;
        if let Some(crc) = crc64 {
            let what = format!("part {part_number} of {key:?}");
            crc64::check_acknowledged(OP, &what, &crc64::to_base64(crc), out.checksum_crc64_nvme())?;
            self.part_crcs.record(upload_id, part_number, crc, body_len);
        }
        let acknowledged = out.checksum_crc32_c().map(str::to_string);
        if let (Some(sent), Some(got)) = (&checksum, &acknowledged)
            && sent != got
        {
            return Err(ClientError::new(
                ClientErrorKind::Transient,
                OP,
                format!("part {part_number} of {key:?}: sent CRC32C {sent}, server computed {got}"),
            ));
        }
        Ok(UploadedPart { part_number, etag: etag(OP, out.e_tag())?, checksum_crc32c: acknowledged.or(checksum) })
    }

    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        const OP: &str = "CompleteMultipartUpload";
        let mut completed = Vec::with_capacity(parts.len());
        for part in parts {
            let number = i32::try_from(part.part_number).map_err(|_| {
                ClientError::new(ClientErrorKind::Other, OP, format!("part number {}", part.part_number))
            })?;
            let checksum = match self.algorithm(options) {
                Some(ChecksumAlgorithm::Crc32C) => part.checksum_crc32c.clone(),
                _ => None,
            };
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(part.etag.as_str())
                    .set_checksum_crc32_c(checksum)
                    .build(),
            );
        }
        let crc64 = match self.algorithm(options) {
            Some(ChecksumAlgorithm::Crc64Nvme) => {
                let numbers: Vec<u32> = parts.iter().map(|p| p.part_number).collect();
                let crc = self.part_crcs.combined(upload_id, &numbers).map_err(|n| {
                    ClientError::new(ClientErrorKind::Other, OP, format!("{key:?}: no CRC64NVME for part {n}"))
                })?;
                Some(crc64::to_base64(crc))
            }
            _ => None,
        };
        let out = self
            .slow
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .set_if_none_match(options.if_none_match_any.then(|| "*".to_string()))
            .set_if_match(options.if_match.as_ref().map(|e| e.as_str().to_string()))
            .set_checksum_crc64_nvme(crc64.clone())
            .set_checksum_type(crc64.as_ref().map(|_| ChecksumType::FullObject))
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        if let Some(sent) = &crc64 {
            crc64::check_acknowledged(OP, key, sent, out.checksum_crc64_nvme())?;
        }
        self.part_crcs.forget(upload_id);
        Ok(PutResult { etag: etag(OP, out.e_tag())? })
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), ClientError> {
        const OP: &str = "AbortMultipartUpload";
        self.fast
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(key)
            .upload_id(upload_id)
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await
            .map_err(|e| self.error(OP, e))?;
        self.part_crcs.forget(upload_id);
        Ok(())
    }

    async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        const OP: &str = "DeleteObject";
        let result = self
            .fast
            .delete_object()
            .bucket(&self.config.bucket)
            .key(key)
            .set_request_payer(self.payer())
            .set_expected_bucket_owner(self.owner())
            .send()
            .await;
        match result.map_err(|e| self.error(OP, e)) {
            // S3 answers 204 for a missing key; some servers say 404. Either way it is gone.
            Ok(_) => Ok(()),
            Err(e) if e.kind == ClientErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &CopyOptions,
    ) -> Result<PutResult, ClientError> {
        self.copy(source_key, dest_key, options).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_key: &str,
        range: Range<u64>,
        source_if_match: Option<&ETag>,
    ) -> Result<UploadedPart, ClientError> {
        self.part_copy(key, upload_id, part_number, source_key, range, source_if_match).await
    }

    async fn rename_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &RenameOptions,
    ) -> Result<(), ClientError> {
        self.slow
            .rename_object()
            .bucket(&self.config.bucket)
            .key(dest_key)
            .rename_source(copy_source(&self.config.bucket, source_key))
            .set_source_if_match(options.source_if_match.as_ref().map(|e| e.as_str().to_string()))
            .set_destination_if_match(options.destination_if_match.as_ref().map(|e| e.as_str().to_string()))
            .set_destination_if_none_match(options.destination_if_none_match_any.then(|| "*".to_string()))
            .send()
            .await
            .map_err(|e| self.error("RenameObject", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded() {
        assert_eq!(copy_source("b", "dir/file.txt"), "b/dir/file.txt");
        assert_eq!(copy_source("b", "a b+c%d"), "b/a%20b%2Bc%25d");
        assert_eq!(copy_source("b", "ü?#&="), "b/%C3%BC%3F%23%26%3D");
    }

    #[test]
    fn standard_storage_class_is_none() {
        assert_eq!(storage_class(Some("STANDARD")), None);
        assert_eq!(storage_class(Some("")), None);
        assert_eq!(storage_class(None), None);
        assert_eq!(storage_class(Some("GLACIER")).as_deref(), Some("GLACIER"));
    }

    #[tokio::test]
    async fn building_a_client_sends_nothing() {
        let config = AwsClientConfig {
            bucket: "b".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            force_path_style: true,
            ..AwsClientConfig::default()
        };
        let client =
            AwsClient::with_credentials(&config, Credentials::new("AK", "SK", None, None, "test")).await.unwrap();
        assert_eq!(client.region(), "eu-west-1");
        assert_eq!(client.bucket(), "b");
    }
}
