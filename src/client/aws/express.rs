//! S3 Express One Zone sessions: one CreateSession per session lifetime for the whole client.
//!
//! Requests to a directory bucket (`…--x-s3`) are signed with temporary keys from
//! CreateSession (the SDK's `sigv4-s3express` scheme). The SDK's own session provider lives in
//! each SDK client, and [`super::AwsClient`] has two (`fast` and `slow`), so each would open and
//! renew sessions of its own. [`SessionProvider`] is one provider both share: it asks for a
//! session with the client's long-term credentials, and the SDK's identity cache (shared by both
//! clients, as they come from one `SdkConfig`) keeps it and loads a new one 5 to 10 s before it
//! expires (a 10 s buffer less up to 5 s of jitter), concurrent requests waiting on one
//! CreateSession.
//!
//! A refused CreateSession becomes a credentials error that names the permission the credentials
//! need, `s3express:CreateSession`, so a mount fails with that in its message.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, future};

use super::error::from_sdk;
use crate::client::ClientErrorKind;

/// The permission CreateSession needs, as IAM spells it.
pub const CREATE_SESSION_PERMISSION: &str = "s3express:CreateSession";
/// How the message of a refused CreateSession starts (the mount-time hint looks for it).
pub const SESSION_REFUSED: &str = "S3 Express One Zone session refused";

/// Session credentials of one directory bucket, from CreateSession (see the module notes).
#[derive(Clone, Debug)]
pub(crate) struct SessionProvider {
    /// An SDK client without this provider: CreateSession itself is signed with the long-term
    /// credentials.
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl SessionProvider {
    pub(crate) fn new(client: aws_sdk_s3::Client, bucket: &str) -> Self {
        SessionProvider { client, bucket: bucket.to_string() }
    }

    async fn create(&self) -> provider::Result {
        let out = self.client.create_session().bucket(&self.bucket).send().await.map_err(|e| {
            let e = from_sdk("CreateSession", e);
            let message = format!("{SESSION_REFUSED} for bucket {}: {e}", self.bucket);
            match e.is_retryable() || e.kind != ClientErrorKind::AccessDenied {
                true => CredentialsError::provider_error(message),
                false => CredentialsError::invalid_configuration(message),
            }
        })?;
        let c = out.credentials().ok_or_else(|| {
            CredentialsError::unhandled(format!("CreateSession on {} answered without credentials", self.bucket))
        })?;
        let expiry = SystemTime::try_from(*c.expiration())
            .map_err(|_| CredentialsError::unhandled("CreateSession answered an unrepresentable expiry"))?;
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            Some(expiry),
            "s3express-create-session",
        ))
    }
}

impl ProvideCredentials for SessionProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.create())
    }
}
