//! [`AwsClient`]: the [`ObjectClient`] over aws-sdk-s3.

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
}
