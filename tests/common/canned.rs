//! [`CannedServer`]: answers every request with one fixed HTTP response, on 127.0.0.1.
//!
//! For failure shapes the local S3 servers never produce: redirects with a region hint,
//! throttling, 5xx, GET answers with the wrong range. It reads each request head, answers and
//! closes the connection (so every SDK attempt is a new connection and is counted). Requests
//! with bodies are not supported. Must be started inside a tokio runtime; stops on drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::config::Credentials;
use mount_s3::client::aws::{AwsClient, AwsClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-answer HTTP server.
pub struct CannedServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CannedServer {
    /// Serves `HTTP/1.1 <status_line>` with `headers` and `body` (Content-Length is added).
    pub async fn start(status_line: &str, headers: &[(&str, &str)], body: &str) -> CannedServer {
        let mut response = format!("HTTP/1.1 {status_line}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(body);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let response = response.clone();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        CannedServer { endpoint, requests, task }
    }

    /// Connections accepted so far (one per request attempt).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Settings for `AwsClient`: bucket `bucket`, us-east-1, path style, 2 attempts.
    pub fn aws_client_config(&self) -> AwsClientConfig {
        AwsClientConfig {
            bucket: "bucket".into(),
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.endpoint.clone()),
            force_path_style: true,
            max_attempts: 2,
            ..AwsClientConfig::default()
        }
    }

    /// An `AwsClient` for this server, with made-up static credentials.
    pub async fn aws_client(&self) -> AwsClient {
        let credentials = Credentials::new("AKIDCANNED", "canned-secret", None, None, "canned");
        AwsClient::with_credentials(&self.aws_client_config(), credentials).await.expect("AwsClient")
    }
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
