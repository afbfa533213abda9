//! [`TlsFront`]: HTTPS on 127.0.0.1 in front of a local S3 server, with a certificate signed by
//! a certificate authority made in the test ([`TestCa`], rcgen), so nothing trusts it unless
//! told to (`--ca-bundle`, `AWS_CA_BUNDLE`).
//!
//! Each accepted connection is TLS-terminated (rustls over aws-lc) and its plaintext copied both
//! ways to a new connection to the upstream server, so SigV4 and keep-alive work unchanged.
//! Handshakes that fail (the client rejected our certificate) are counted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority that exists only in this test.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("self-signed CA").pem();
        TestCa { pem, issuer: Issuer::new(params, key) }
    }

    /// Writes the CA certificate to `dir/name`; returns the path.
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write CA bundle");
        path
    }

    /// A server certificate for 127.0.0.1 and localhost, and its key.
    fn server_certificate(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        let certificate = params.signed_by(&key, &self.issuer).expect("server certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (certificate.der().clone(), key)
    }
}

/// HTTPS in front of `upstream`; stops on drop.
pub struct TlsFront {
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    failed_handshakes: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsFront {
    /// Serves TLS with a certificate signed by `ca`, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr, ca: &TestCa) -> TlsFront {
        let (certificate, key) = ca.server_certificate();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .expect("server TLS config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let failed_handshakes = Arc::new(AtomicU64::new(0));
        let failed = failed_handshakes.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tls-front".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("TLS front runtime");
                rt.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
                    ready_tx.send(listener.local_addr().expect("local addr")).expect("report address");
                    loop {
                        let socket = tokio::select! {
                            _ = &mut stop_rx => return,
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(_) => continue,
                            },
                        };
                        let _ = socket.set_nodelay(true);
                        let (acceptor, failed) = (acceptor.clone(), failed.clone());
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(socket).await else {
                                failed.fetch_add(1, Ordering::SeqCst);
                                return;
                            };
                            let Ok(mut up) = TcpStream::connect(upstream).await else { return };
                            let _ = up.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                        });
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("TLS front thread");
        let addr = ready_rx.recv().expect("TLS front failed to start");
        TlsFront { endpoint: format!("https://{addr}"), failed_handshakes, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// TLS handshakes that failed so far (a client that did not trust the certificate).
    pub fn failed_handshakes(&self) -> u64 {
        self.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
