//! Test harness shared by integration tests (`mod common;`) and by examples and benches
//! (`#[path = "../tests/common/mod.rs"] mod common;`).
//!
//! Two local S3 servers, both on 127.0.0.1 only (nothing here may send a packet off the machine):
//! - [`s3_server::LocalS3`]: s3s-fs 0.14.1 in-process, one per test, with exact per-operation
//!   request counts. The default backend.
//! - [`moto::MotoServer`]: a `moto_server` child process, for what s3s-fs cannot do
//!   (directory markers, `x` beside `x/y`, conditional GETs).
//! - [`mem_server::MemS3`]: objects in memory behind `s3s`, served as zero-copy slices, with
//!   request counts and its own CPU time: the benchmark backend (`benches/fs_throughput.rs`).
//!   [`mem_server::MemS3::start_express`] makes it a strict S3 Express One Zone directory-bucket
//!   emulator ([`express`]: sessions that expire, shuffled listings, RenameObject, appends).
//!
//! Both offer the same helpers, also through the [`TestS3`] trait for code generic over them.
//! [`garage::GarageS3`]: a real Garage server (child process, binary found or built), for
//! benchmarks against a production store.
//! [`canned::CannedServer`] answers every request with one fixed response, for failure shapes
//! (redirects, throttling, broken ranges) no local server produces.
//! [`tls_front::TlsFront`] serves HTTPS in front of a server with a certificate from a CA made
//! in the test ([`tls_front::TestCa`]).
//! [`fault_proxy::FaultProxy`] sits between a mount and a server and breaks requests on the wire
//! (S3 error answers, resets, lost responses, cut bodies, stalls, the endpoint disappearing).
//! Helper calls (`put`, `get`, ...) block the calling thread and run on a runtime of their own,
//! so they work from `#[test]` and from inside `#[tokio::test]` alike.

#![allow(dead_code)]

pub mod canned;
pub mod data;
pub mod express;
pub mod express_sigv4;
pub mod express_store;
pub mod fault_proxy;
pub mod garage;
pub mod helper;
pub mod mem_rules;
pub mod mem_server;
pub mod mem_store;
pub mod moto;
pub mod mount;
pub mod s3_server;
pub mod tls_front;
pub mod tools;
pub mod writer;

use aws_sdk_s3::config::Credentials;
use mount_s3::client::aws::{AwsClient, AwsClientConfig};

/// Environment variables a child process must NOT inherit from the developer's shell, or it may
/// pick up a real profile, real credentials or a real endpoint. Remove them before adding
/// [`TestS3::env_vars`]; [`TestS3::configure_command`] does both.
pub const UNSET_ENV_VARS: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_MAX_ATTEMPTS",
    "AWS_DEFAULT_REGION",
];

/// What every local S3 server offers tests.
pub trait TestS3 {
    /// `http://127.0.0.1:PORT`.
    fn endpoint(&self) -> &str;
    /// The bucket created at start.
    fn bucket(&self) -> &str;
    /// The key pair `AwsClient` and child processes should use.
    fn credentials(&self) -> Credentials;
    /// Settings for [`AwsClient`] against this server and bucket (path style, fixed region).
    fn aws_client_config(&self) -> AwsClientConfig;
    /// Environment a child `mount-s3` needs: static credentials, region, no instance metadata.
    /// The caller must also remove [`UNSET_ENV_VARS`] (see [`TestS3::configure_command`]).
    fn env_vars(&self) -> Vec<(String, String)>;
    /// The harness's own object helper.
    fn helper(&self) -> &helper::HelperClient;

    /// An [`AwsClient`] for the bucket (built with [`TestS3::credentials`], no credential chain).
    fn aws_client(&self) -> impl Future<Output = AwsClient> + Send {
        let config = self.aws_client_config();
        let credentials = self.credentials();
        async move { AwsClient::with_credentials(&config, credentials).await.expect("AwsClient for a local server") }
    }

    /// Applies [`UNSET_ENV_VARS`] and [`TestS3::env_vars`] to a child process.
    fn configure_command(&self, command: &mut std::process::Command) {
        for var in UNSET_ENV_VARS {
            command.env_remove(var);
        }
        command.envs(self.env_vars());
    }
}

/// Settings for our `AwsClient` against a local test server: its endpoint, path style, `region`,
/// 3 attempts.
fn local_client_config(bucket: &str, endpoint: &str, region: &str) -> AwsClientConfig {
    AwsClientConfig {
        bucket: bucket.to_string(),
        region: Some(region.to_string()),
        endpoint_url: Some(endpoint.to_string()),
        force_path_style: true,
        max_attempts: 3,
        ..AwsClientConfig::default()
    }
}

/// Static-credential environment for a child process talking to `region` only.
fn child_env(access_key: &str, secret_key: &str, region: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", access_key),
        ("AWS_SECRET_ACCESS_KEY", secret_key),
        ("AWS_REGION", region),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A bucket name no other server in this process has used.
fn unique_bucket_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("test-bucket-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
