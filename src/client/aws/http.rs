//! The one HTTP client every AWS call goes through: S3, and the credential and region providers
//! (STS, SSO, instance metadata), since it is handed to the shared aws-config loader.
//!
//! Without `--ca-bundle` or `--bind` the SDK's default client is used unchanged. Otherwise we
//! build the same client the SDK would (rustls over aws-lc, proxies from `HTTPS_PROXY`,
//! `HTTP_PROXY`, `NO_PROXY`), with two changes:
//!
//! - `--ca-bundle` (or `AWS_CA_BUNDLE`): the certificates of that PEM file are the whole trust
//!   store; the system's roots are not used. The file is read and every certificate checked here,
//!   at start, so a bad file is a clear error and not a failure at the first connection.
//! - `--bind IFACE` (repeatable): one client per interface, each with its own connection pool
//!   and every socket bound to its interface (`SO_BINDTODEVICE`); request attempts take the
//!   clients in turn, so requests and connections are spread evenly over the interfaces.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{HttpClient, SharedHttpClient, http_client_fn};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::client::{ClientError, ClientErrorKind};

/// The HTTP client for these settings; `None`: the SDK's default is right.
pub(crate) fn http_client(
    ca_bundle: Option<&Path>,
    interfaces: &[String],
) -> Result<Option<SharedHttpClient>, ClientError> {
    if ca_bundle.is_none() && interfaces.is_empty() {
        return Ok(None);
    }
    let trust_store = match ca_bundle {
        Some(path) => TrustStore::empty().with_pem_certificate(read_ca_bundle(path)?),
        None => TrustStore::default(),
    };
    let tls = TlsContext::builder()
        .with_trust_store(trust_store)
        .build()
        .map_err(|e| config_error(format!("TLS settings: {e}")))?;
    for interface in interfaces {
        check_interface(interface)?;
    }
    if interfaces.len() <= 1 {
        return Ok(Some(one_client(tls, interfaces.first().cloned())));
    }
    let clients: Vec<SharedHttpClient> =
        interfaces.iter().map(|interface| one_client(tls.clone(), Some(interface.clone()))).collect();
    let next = Arc::new(AtomicUsize::new(0));
    // Called once per request attempt: each attempt takes the next interface's client.
    Ok(Some(http_client_fn(move |settings, components| {
        let i = next.fetch_add(1, Ordering::Relaxed) % clients.len();
        clients[i].http_connector(settings, components)
    })))
}

/// The SDK's default HTTPS client with `tls` and, if given, sockets bound to `interface`.
fn one_client(tls: TlsContext, interface: Option<String>) -> SharedHttpClient {
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut builder =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc)).tls_context(tls.clone());
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        if let Some(interface) = &interface {
            builder.set_interface(interface.clone());
        }
        builder.build()
    })
}

/// The PEM file's bytes, once every certificate in it is known to be a usable trust anchor.
fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, ClientError> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| config_error(format!("cannot read the CA bundle {shown}: {e}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("the CA bundle {shown} is not a valid PEM file: {e}")))?;
    if certificates.is_empty() {
        return Err(config_error(format!("the CA bundle {shown} holds no PEM certificate (BEGIN CERTIFICATE)")));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, certificate) in certificates.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|e| config_error(format!("certificate {} of the CA bundle {shown} is not usable: {e}", i + 1)))?;
    }
    Ok(pem)
}

/// A `--bind` interface must exist (binding to a missing one fails every connection instead).
fn check_interface(interface: &str) -> Result<(), ClientError> {
    nix::net::if_::if_nametoindex(interface)
        .map(|_| ())
        .map_err(|e| config_error(format!("--bind {interface}: no such network interface ({e})")))
}

fn config_error(message: String) -> ClientError {
    ClientError::new(ClientErrorKind::Other, "Configure", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_special_keeps_the_sdk_default() {
        assert!(http_client(None, &[]).unwrap().is_none());
    }

    #[test]
    fn bad_bundles_and_interfaces_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = http_client(Some(&missing), &[]).unwrap_err();
        assert!(e.message.contains("cannot read the CA bundle"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = http_client(Some(&empty), &[]).unwrap_err();
        assert!(e.message.contains("holds no PEM certificate"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = http_client(Some(&garbage), &[]).unwrap_err();
        assert!(e.message.contains("not usable"), "{e}");
        let e = http_client(None, &["no-such-nic0".to_string()]).unwrap_err();
        assert!(e.message.contains("--bind no-such-nic0: no such network interface"), "{e}");
        assert!(http_client(None, &["lo".to_string(), "lo".to_string()]).unwrap().is_some());
    }
}
