//! The `User-Agent` header: `[<prefix> ]mount-s3/<version> <the SDK's own user agent>`.
//!
//! The SDK's `app_name` cannot hold a `/`, so the product token is added by an interceptor just
//! before the request is sent. `User-Agent` is not part of the SigV4 signature, so changing it
//! after signing is safe. Each retry attempt starts from the unsigned request again, so the
//! prefix is never added twice.

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;

/// Prepends our product token (and the user's prefix) to the SDK's `User-Agent`.
#[derive(Debug, Clone)]
pub(crate) struct UserAgentPrefix {
    prefix: String,
}

impl UserAgentPrefix {
    pub(crate) fn new(user_prefix: Option<&str>) -> Self {
        let product = format!("mount-s3/{}", env!("CARGO_PKG_VERSION"));
        let prefix = match user_prefix.map(str::trim).filter(|p| !p.is_empty()) {
            Some(user) => format!("{user} {product}"),
            None => product,
        };
        UserAgentPrefix { prefix }
    }

    fn apply(&self, current: Option<&str>) -> String {
        match current {
            Some(ua) if !ua.is_empty() => format!("{} {ua}", self.prefix),
            _ => self.prefix.clone(),
        }
    }
}

impl Intercept for UserAgentPrefix {
    fn name(&self) -> &'static str {
        "MountS3UserAgentPrefix"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request_mut().headers_mut();
        let value = self.apply(headers.get("user-agent"));
        headers.try_insert("user-agent", value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_goes_first() {
        let version = env!("CARGO_PKG_VERSION");
        let plain = UserAgentPrefix::new(None);
        assert_eq!(plain.apply(Some("aws-sdk-rust/1")), format!("mount-s3/{version} aws-sdk-rust/1"));
        let custom = UserAgentPrefix::new(Some("my-app/2 "));
        assert_eq!(custom.apply(Some("aws-sdk-rust/1")), format!("my-app/2 mount-s3/{version} aws-sdk-rust/1"));
        assert_eq!(custom.apply(None), format!("my-app/2 mount-s3/{version}"));
        assert_eq!(UserAgentPrefix::new(Some("  ")).apply(None), format!("mount-s3/{version}"));
    }
}
