//! [`HelperClient`]: the harness's own blocking S3 client, for seeding and inspecting a bucket.
//!
//! It runs every call on a tokio runtime that is not the test's (the server's, or one it owns),
//! and waits for the answer on a plain channel. Blocking the caller's thread is fine: nothing the
//! call needs runs there. That makes the helpers usable from sync tests and async tests alike.

use std::future::Future;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::runtime::{Handle, Runtime};

/// A runtime this helper owns; shut down without blocking, so it may be dropped anywhere.
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A blocking S3 client bound to one server and bucket.
pub struct HelperClient {
    client: aws_sdk_s3::Client,
    bucket: String,
    handle: Handle,
    _owned: Option<OwnedRuntime>,
}

/// An `aws_sdk_s3::Client` for a local endpoint: path style, fixed credentials and region, no
/// credential chain and no instance metadata (nothing is loaded from the environment).
pub fn local_sdk_client(endpoint: &str, access_key: &str, secret_key: &str, region: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(access_key, secret_key, None, None, "local-test"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

impl HelperClient {
    /// Runs on an existing runtime (it must outlive the helper).
    pub fn on_runtime(client: aws_sdk_s3::Client, bucket: &str, handle: Handle) -> Self {
        HelperClient { client, bucket: bucket.to_string(), handle, _owned: None }
    }

    /// Runs on a small runtime of its own.
    pub fn with_own_runtime(client: aws_sdk_s3::Client, bucket: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("s3-test-helper")
            .enable_all()
            .build()
            .expect("helper runtime");
        let handle = rt.handle().clone();
        HelperClient { client, bucket: bucket.to_string(), handle, _owned: Some(OwnedRuntime(Some(rt))) }
    }

    /// Runs `fut` on the helper's runtime and waits for it.
    pub fn block_on<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("helper runtime stopped before answering")
    }

    /// The underlying SDK client.
    pub fn sdk(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Creates another bucket on the same server.
    pub fn create_bucket(&self, bucket: &str) {
        let (client, bucket) = (self.client.clone(), bucket.to_string());
        self.block_on(async move { client.create_bucket().bucket(&bucket).send().await.map(|_| ()) })
            .unwrap_or_else(|e| panic!("create bucket: {}", aws_smithy_types::error::display::DisplayErrorContext(e)));
    }

    /// Writes an object; returns its ETag.
    pub fn put(&self, key: &str, data: impl AsRef<[u8]>) -> String {
        let (client, bucket, key, data) =
            (self.client.clone(), self.bucket.clone(), key.to_string(), Bytes::copy_from_slice(data.as_ref()));
        let out = self.block_on(async move {
            client.put_object().bucket(&bucket).key(&key).body(ByteStream::from(data)).send().await
        });
        let out = out.unwrap_or_else(|e| panic!("put: {}", aws_smithy_types::error::display::DisplayErrorContext(e)));
        out.e_tag().unwrap_or_default().to_string()
    }

    /// Writes an object with user metadata (bare names: `mode`, not `x-amz-meta-mode`) and,
    /// when given, a Content-Type, as another S3 tool (s3fs, rclone) would; returns its ETag.
    pub fn put_with_metadata(
        &self,
        key: &str,
        data: impl AsRef<[u8]>,
        metadata: &[(&str, &str)],
        content_type: Option<&str>,
    ) -> String {
        let (client, bucket, key, data) =
            (self.client.clone(), self.bucket.clone(), key.to_string(), Bytes::copy_from_slice(data.as_ref()));
        let metadata: std::collections::HashMap<String, String> =
            metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let content_type = content_type.map(str::to_string);
        let out = self.block_on(async move {
            client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .set_metadata(Some(metadata))
                .set_content_type(content_type)
                .body(ByteStream::from(data))
                .send()
                .await
        });
        let out = out.unwrap_or_else(|e| panic!("put: {}", aws_smithy_types::error::display::DisplayErrorContext(e)));
        out.e_tag().unwrap_or_default().to_string()
    }

    /// Writes an object with the standard headers describing its body (`content-type`,
    /// `content-encoding`, `content-language`, `content-disposition`, `cache-control`), as a
    /// web publishing tool would; returns its ETag.
    pub fn put_with_headers(&self, key: &str, data: impl AsRef<[u8]>, headers: &[(&str, &str)]) -> String {
        let (client, bucket, key, data) =
            (self.client.clone(), self.bucket.clone(), key.to_string(), Bytes::copy_from_slice(data.as_ref()));
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        let request = client
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .set_content_type(get("content-type"))
            .set_content_encoding(get("content-encoding"))
            .set_content_language(get("content-language"))
            .set_content_disposition(get("content-disposition"))
            .set_cache_control(get("cache-control"))
            .body(ByteStream::from(data));
        let out = self.block_on(async move { request.send().await });
        let out = out.unwrap_or_else(|e| panic!("put: {}", aws_smithy_types::error::display::DisplayErrorContext(e)));
        out.e_tag().unwrap_or_default().to_string()
    }

    /// The standard headers (as [`HelperClient::put_with_headers`] names them) HeadObject
    /// returns for `key`.
    pub fn head_headers(&self, key: &str) -> std::collections::BTreeMap<String, String> {
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), key.to_string());
        let out = self.block_on(async move { client.head_object().bucket(&bucket).key(&key).send().await });
        let out = out.unwrap_or_else(|e| panic!("head: {}", aws_smithy_types::error::display::DisplayErrorContext(e)));
        [
            ("content-type", out.content_type()),
            ("content-encoding", out.content_encoding()),
            ("content-language", out.content_language()),
            ("content-disposition", out.content_disposition()),
            ("cache-control", out.cache_control()),
        ]
        .into_iter()
        .filter_map(|(n, v)| Some((n.to_string(), v?.to_string())))
        .collect()
    }

    /// The user metadata of the object at `key` (bare names, lowercase as S3 returns them);
    /// `None` if there is no object.
    pub fn head_metadata(&self, key: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), key.to_string());
        self.block_on(async move {
            match client.head_object().bucket(&bucket).key(&key).send().await {
                Ok(out) => Some(out.metadata().cloned().unwrap_or_default().into_iter().collect()),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => None,
                Err(e) => panic!("head: {}", aws_smithy_types::error::display::DisplayErrorContext(e)),
            }
        })
    }

    /// Reads a whole object; `None` if there is none at `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), key.to_string());
        self.block_on(async move {
            let out = match client.get_object().bucket(&bucket).key(&key).send().await {
                Ok(out) => out,
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return None,
                Err(e) => panic!("get: {}", aws_smithy_types::error::display::DisplayErrorContext(e)),
            };
            Some(out.body.collect().await.expect("get body").to_vec())
        })
    }

    /// Deletes an object (a missing one is fine).
    pub fn delete(&self, key: &str) {
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), key.to_string());
        self.block_on(async move { client.delete_object().bucket(&bucket).key(&key).send().await.map(|_| ()) })
            .unwrap_or_else(|e| panic!("delete: {}", aws_smithy_types::error::display::DisplayErrorContext(e)));
    }

    /// Every key under `prefix`, in listing order (all pages).
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        let (client, bucket, prefix) = (self.client.clone(), self.bucket.clone(), prefix.to_string());
        self.block_on(async move {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                let out = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("list: {}", aws_smithy_types::error::display::DisplayErrorContext(e)));
                keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_string)));
                token = out.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    return keys;
                }
            }
        })
    }
}
