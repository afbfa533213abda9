//! [`LocalS3`]: s3s-fs 0.14.1 served in-process on `127.0.0.1:0`, one per test.
//!
//! Each server has its own port, its own temporary data directory and its own tokio runtime on
//! a thread of its own, so `#[test]` and `#[tokio::test]` tests can both use it, in parallel.
//! Every accepted socket gets `TCP_NODELAY` (without it each small GET waits ~40 ms for Nagle and
//! delayed ACKs). SigV4 is checked.
//!
//! Request counting is exact: s3s calls our access hook once per request, after it has checked
//! the signature and resolved the operation, and that is where we count, by S3 operation name.
//! Requests signed with the harness's own key ([`HELPER_ACCESS_KEY`]: `put`, `get`, `delete`,
//! `sdk_client()`) are not counted, so seeding a bucket never disturbs a test's assertions.
//! Requests rejected before that point (bad signature, unknown route) are not counted either.
//!
//! Every response carries an `x-amz-request-id` (`LOCALS3` and 13 digits), as S3's do.
//! Two s3s-fs 0.14.1 answers are corrected to S3's: an unknown multipart upload id gets 404
//! NoSuchUpload, not 403 AccessDenied (see [`no_such_upload`]), and `encoding-type=url`
//! listings really are url-encoded (see [`encode_listing`]).
//!
//! Known s3s-fs 0.14.1 limits (see /work/shared/TESTING.md): keys ending in `/` and a key `x`
//! beside `x/y` do not work, conditional GET/HEAD are ignored, listings carry no ETags, and HEAD
//! of a key that is an implicit directory (`a` when `a/b` exists) answers 500, not 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_s3::config::Credentials;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::http::{Method, header};
use hyper_util::rt::TokioIo;
use mount_s3::client::S3Operation;
use mount_s3::client::aws::AwsClientConfig;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::stream::{ByteStream as S3sByteStream, DynByteStream};
use s3s::{Body, HttpError, HttpResponse, S3Result, s3_error};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::helper::{HelperClient, local_sdk_client};
use super::{TestS3, child_env, unique_bucket_name};

/// Access key of the credentials under test (counted).
pub const ACCESS_KEY: &str = "LOCALS3TESTACCESSKEY";
/// Secret key of the credentials under test.
pub const SECRET_KEY: &str = "local-s3-test-secret-key-0123456789abcdef";
/// Region the server signs for.
pub const REGION: &str = "us-east-1";
/// Access key of a second identity that may only list the bucket: every other operation it
/// signs is refused with AccessDenied, as an IAM policy granting only `s3:ListBucket` would.
/// Its requests are counted.
pub const LIST_ONLY_ACCESS_KEY: &str = "LOCALS3LISTONLYKEY00";
const LIST_ONLY_SECRET_KEY: &str = "local-s3-list-only-secret-0123456789abcd";
/// Operations [`LIST_ONLY_ACCESS_KEY`] may call.
const LIST_ONLY_OPERATIONS: &[&str] = &["ListObjectsV2", "ListObjects", "ListBuckets", "HeadBucket"];
/// Access key of the harness's own requests (not counted).
pub const HELPER_ACCESS_KEY: &str = "LOCALS3HELPERACCESSKEY";
const HELPER_SECRET_KEY: &str = "local-s3-helper-secret-key-0123456789abcd";

/// Requests per s3s operation name (`GetObject`, `ListObjectsV2`, `CreateBucket`, ...), and the
/// distinct `User-Agent` headers seen.
#[derive(Default)]
struct Counts {
    by_operation: Mutex<HashMap<String, u64>>,
    /// The same, per bucket: (bucket, operation) -> requests.
    by_bucket: Mutex<HashMap<(String, String), u64>>,
    /// Body bytes of successful GetObject responses to clients other than the harness.
    get_bytes: std::sync::atomic::AtomicU64,
    /// The same, per bucket (path-style requests).
    get_bytes_by_bucket: Mutex<HashMap<String, u64>>,
    user_agents: Mutex<Vec<String>>,
    /// (operation, `x-amz-content-sha256`) of each PutObject and UploadPart: whether bodies
    /// were signed (a SHA-256) or sent as `UNSIGNED-PAYLOAD`.
    payload_hashes: Mutex<Vec<(String, String)>>,
}

/// Faults the server can inject.
#[derive(Default)]
struct Faults {
    /// Serve at most this many bytes of each GetObject body, then end the body cleanly
    /// (chunked encoding, no Content-Length), as a server that lost data would.
    truncate_get_bodies: Mutex<Option<usize>>,
}

/// Counts each authenticated request, then applies s3s's default rule (signature required).
struct CountingAccess {
    counts: Arc<Counts>,
}

#[async_trait::async_trait]
impl S3Access for CountingAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        if credentials.access_key != HELPER_ACCESS_KEY {
            *self.counts.by_operation.lock().unwrap().entry(cx.s3_op().name().to_string()).or_insert(0) += 1;
            let bucket = match cx.s3_path() {
                s3s::path::S3Path::Bucket { bucket } | s3s::path::S3Path::Object { bucket, .. } => bucket.to_string(),
                s3s::path::S3Path::Root => String::new(),
            };
            let op = cx.s3_op().name().to_string();
            *self.counts.by_bucket.lock().unwrap().entry((bucket, op)).or_insert(0) += 1;
            let agent = cx.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let mut agents = self.counts.user_agents.lock().unwrap();
            if !agents.iter().any(|a| a == agent) {
                agents.push(agent.to_string());
            }
            if matches!(cx.s3_op().name(), "PutObject" | "UploadPart") {
                let hash = cx.headers().get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).unwrap_or_default();
                self.counts.payload_hashes.lock().unwrap().push((cx.s3_op().name().to_string(), hash.to_string()));
            }
        }
        if credentials.access_key == LIST_ONLY_ACCESS_KEY && !LIST_ONLY_OPERATIONS.contains(&cx.s3_op().name()) {
            return Err(s3_error!(AccessDenied, "this key may only list"));
        }
        Ok(())
    }
}

/// An s3s-fs server on 127.0.0.1 with one bucket; stops (and deletes its data) on drop.
pub struct LocalS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    /// The listening address.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    faults: Arc<Faults>,
    helper: Option<HelperClient>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    dir: TempDir,
}

impl LocalS3 {
    /// Starts a server with one empty bucket of a unique name.
    pub fn start() -> LocalS3 {
        let dir = tempfile::Builder::new().prefix("local-s3-").tempdir().expect("temp dir");
        let bucket = unique_bucket_name();
        std::fs::create_dir(dir.path().join(&bucket)).expect("bucket directory");

        let counts = Arc::new(Counts::default());
        let faults = Arc::new(Faults::default());
        let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs root");
        let mut auth = SimpleAuth::new();
        auth.register(ACCESS_KEY.to_string(), SECRET_KEY.into());
        auth.register(HELPER_ACCESS_KEY.to_string(), HELPER_SECRET_KEY.into());
        auth.register(LIST_ONLY_ACCESS_KEY.to_string(), LIST_ONLY_SECRET_KEY.into());
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(auth);
        builder.set_access(CountingAccess { counts: counts.clone() });
        let service = builder.build();

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let server_faults = faults.clone();
        let server_counts = counts.clone();
        let root = Arc::new(dir.path().to_path_buf());
        let thread = std::thread::Builder::new()
            .name("local-s3".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("local-s3-worker")
                    .enable_all()
                    .build()
                    .expect("server runtime");
                let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
                let addr = listener.local_addr().expect("local addr");
                ready_tx.send((addr, rt.handle().clone())).expect("report address");
                rt.block_on(serve(listener, service, server_faults, server_counts, root, stop_rx));
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("server thread");
        let (addr, handle) = ready_rx.recv().expect("server thread failed to start");
        let endpoint = format!("http://{addr}");
        let helper_sdk = local_sdk_client(&endpoint, HELPER_ACCESS_KEY, HELPER_SECRET_KEY, REGION);
        let helper = HelperClient::on_runtime(helper_sdk, &bucket, handle);
        LocalS3 {
            endpoint,
            bucket,
            addr,
            counts,
            faults,
            helper: Some(helper),
            stop: Some(stop_tx),
            thread: Some(thread),
            dir,
        }
    }

    /// An SDK client for this server (path style, fixed credentials, no IMDS). It signs with
    /// the harness key, so its requests are NOT counted.
    pub fn sdk_client(&self) -> aws_sdk_s3::Client {
        local_sdk_client(&self.endpoint, HELPER_ACCESS_KEY, HELPER_SECRET_KEY, REGION)
    }

    /// An SDK client signing with [`ACCESS_KEY`]: its requests are counted.
    pub fn counted_sdk_client(&self) -> aws_sdk_s3::Client {
        local_sdk_client(&self.endpoint, ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// Writes an object (not counted); returns its ETag.
    pub fn put(&self, key: &str, data: impl AsRef<[u8]>) -> String {
        self.helper().put(key, data)
    }

    /// Reads a whole object (not counted).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.helper().get(key)
    }

    /// Deletes an object (not counted).
    pub fn delete(&self, key: &str) {
        self.helper().delete(key)
    }

    /// Every key under `prefix` (not counted).
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.helper().list_keys(prefix)
    }

    /// Creates another (empty) bucket.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir(self.dir.path().join(bucket)).expect("bucket directory");
    }

    /// Settings for our `AwsClient`: this endpoint, path style, [`REGION`], 3 attempts. Build it
    /// with [`LocalS3::credentials`] (`AwsClient::with_credentials`), or through the environment
    /// of [`LocalS3::env_vars`].
    pub fn aws_client_config(&self) -> AwsClientConfig {
        super::local_client_config(&self.bucket, &self.endpoint, REGION)
    }

    /// [`ACCESS_KEY`] / [`SECRET_KEY`].
    pub fn credentials(&self) -> Credentials {
        Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "local-s3")
    }

    /// What a child `mount-s3` needs in its environment: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_EC2_METADATA_DISABLED=true`. Removing
    /// inherited variables ([`super::UNSET_ENV_VARS`]: `AWS_PROFILE`, ...) is the caller's job;
    /// [`TestS3::configure_command`] does both.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        child_env(ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// Like [`LocalS3::env_vars`], for the identity that may only list ([`LIST_ONLY_ACCESS_KEY`]).
    pub fn list_only_env_vars(&self) -> Vec<(String, String)> {
        child_env(LIST_ONLY_ACCESS_KEY, LIST_ONLY_SECRET_KEY, REGION)
    }

    /// Requests of `op` signed with [`ACCESS_KEY`] (or [`LIST_ONLY_ACCESS_KEY`]) so far.
    pub fn request_count(&self, op: S3Operation) -> u64 {
        self.request_count_by_name(op.name())
    }

    /// Requests of an s3s operation by name (e.g. `HeadBucket`, `ListObjects`, `UploadPartCopy`).
    pub fn request_count_by_name(&self, name: &str) -> u64 {
        self.counts.by_operation.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Requests of an s3s operation by name (`GetObject`, `PutObject`, ...) to `bucket`.
    pub fn request_count_in(&self, bucket: &str, name: &str) -> u64 {
        let counts = self.counts.by_bucket.lock().unwrap();
        counts.get(&(bucket.to_string(), name.to_string())).copied().unwrap_or(0)
    }

    /// Counted requests to `bucket` by operation name, for failure messages and reports.
    pub fn request_counts_in(&self, bucket: &str) -> std::collections::BTreeMap<String, u64> {
        let counts = self.counts.by_bucket.lock().unwrap();
        counts.iter().filter(|((b, _), _)| b == bucket).map(|((_, op), n)| (op.clone(), *n)).collect()
    }

    /// All counted requests, of every operation.
    pub fn total_request_count(&self) -> u64 {
        self.counts.by_operation.lock().unwrap().values().sum()
    }

    /// Counted requests by operation name, for failure messages.
    pub fn request_counts(&self) -> HashMap<String, u64> {
        self.counts.by_operation.lock().unwrap().clone()
    }

    /// Sets every count back to zero.
    pub fn reset_counts(&self) {
        self.counts.by_operation.lock().unwrap().clear();
        self.counts.by_bucket.lock().unwrap().clear();
        self.counts.get_bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        self.counts.get_bytes_by_bucket.lock().unwrap().clear();
    }

    /// Body bytes of GetObject responses from `bucket` served to the code under test.
    pub fn get_bytes_in(&self, bucket: &str) -> u64 {
        self.counts.get_bytes_by_bucket.lock().unwrap().get(bucket).copied().unwrap_or(0)
    }

    /// Body bytes of GetObject responses served to the code under test (not the harness).
    pub fn get_bytes(&self) -> u64 {
        self.counts.get_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Distinct `User-Agent` headers of counted requests, in order of first appearance.
    pub fn user_agents(&self) -> Vec<String> {
        self.counts.user_agents.lock().unwrap().clone()
    }

    /// (operation, `x-amz-content-sha256`) of every PutObject and UploadPart so far.
    pub fn payload_hashes(&self) -> Vec<(String, String)> {
        self.counts.payload_hashes.lock().unwrap().clone()
    }

    /// Makes every later GetObject body stop cleanly after `keep` bytes (`None`: serve normally).
    pub fn truncate_get_bodies(&self, keep: Option<usize>) {
        *self.faults.truncate_get_bodies.lock().unwrap() = keep;
    }

    /// The data directory (objects are files under `<dir>/<bucket>/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Multipart uploads created and neither completed nor aborted. s3s-fs has no
    /// ListMultipartUploads; it keeps one `.upload-<id>.json` per open upload in its data dir.
    pub fn pending_uploads(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else { return 0 };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    }

    fn helper(&self) -> &HelperClient {
        self.helper.as_ref().expect("server running")
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        // The helper's connections live on the server runtime: drop it first.
        self.helper = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TestS3 for LocalS3 {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn bucket(&self) -> &str {
        &self.bucket
    }
    fn credentials(&self) -> Credentials {
        LocalS3::credentials(self)
    }
    fn aws_client_config(&self) -> AwsClientConfig {
        LocalS3::aws_client_config(self)
    }
    fn env_vars(&self) -> Vec<(String, String)> {
        LocalS3::env_vars(self)
    }
    fn helper(&self) -> &HelperClient {
        LocalS3::helper(self)
    }
}

async fn serve(
    listener: TcpListener,
    service: S3Service,
    faults: Arc<Faults>,
    counts: Arc<Counts>,
    root: Arc<std::path::PathBuf>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let socket = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let (service, faults, counts, root) = (service.clone(), faults.clone(), counts.clone(), root.clone());
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |request| {
                handle(service.clone(), faults.clone(), counts.clone(), root.clone(), request)
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), handler).await;
        });
    }
}

async fn handle(
    service: S3Service,
    faults: Arc<Faults>,
    counts: Arc<Counts>,
    root: Arc<std::path::PathBuf>,
    request: hyper::Request<Incoming>,
) -> Result<HttpResponse, HttpError> {
    let is_get = request.method() == Method::GET;
    let url_listing = is_get
        && request.uri().query().is_some_and(|q| {
            let mut params = q.split('&');
            params.clone().any(|p| p == "list-type=2") && params.any(|p| p == "encoding-type=url")
        });
    let from_harness = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(&format!("Credential={HELPER_ACCESS_KEY}/")));
    let path_bucket = request.uri().path().trim_start_matches('/').split('/').next().unwrap_or_default().to_string();
    let unknown_upload =
        upload_id(request.uri().query()).is_some_and(|id| !root.join(format!(".upload-{id}.json")).exists());
    let mut response = hyper::service::Service::call(&service, request).await?;
    if unknown_upload && response.status() == hyper::StatusCode::FORBIDDEN {
        return Ok(no_such_upload());
    }
    if is_get && !from_harness && response.status().is_success() && response.headers().contains_key(header::ETAG) {
        let length = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        counts.get_bytes.fetch_add(length.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        *counts.get_bytes_by_bucket.lock().unwrap().entry(path_bucket).or_insert(0) += length.unwrap_or(0);
    }
    // Real S3 names every response; s3s does not, so give each one an id clients can log.
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = format!("LOCALS3{:013}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    response.headers_mut().insert("x-amz-request-id", header::HeaderValue::from_str(&id).expect("ascii id"));
    if url_listing && response.status().is_success() {
        return encode_listing(response).await;
    }
    let keep = *faults.truncate_get_bodies.lock().unwrap();
    // Only a successful GetObject carries an ETag header on a GET.
    match keep {
        Some(keep) if is_get && response.status().is_success() && response.headers().contains_key(header::ETAG) => {
            truncate(response, keep).await
        }
        _ => Ok(response),
    }
}

/// The `uploadId` query parameter.
fn upload_id(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|p| p.strip_prefix("uploadId="))
}

/// S3's answer for an upload id that does not exist. s3s-fs 0.14.1 says 403 AccessDenied, which
/// would make a retried Complete or Abort (after a lost response) look like a credentials
/// problem; S3 says 404 NoSuchUpload, and so does this server.
fn no_such_upload() -> HttpResponse {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchUpload</Code>\
                <Message>The specified upload does not exist.</Message></Error>";
    let mut response = HttpResponse::new(Body::from(body.to_string()));
    *response.status_mut() = hyper::StatusCode::NOT_FOUND;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/xml"));
    response
}

async fn truncate(response: HttpResponse, keep: usize) -> Result<HttpResponse, HttpError> {
    let (mut parts, mut body) = response.into_parts();
    let all = body.store_all_limited(usize::MAX).await.map_err(HttpError::new)?;
    let kept = all.slice(..keep.min(all.len()));
    parts.headers.remove(header::CONTENT_LENGTH);
    let stream: DynByteStream = Box::pin(OneChunk(Some(kept)));
    Ok(HttpResponse::from_parts(parts, Body::from(stream)))
}

/// s3s-fs 0.14.1 answers `encoding-type=url` with `<EncodingType>url</EncodingType>` but raw
/// keys (so a key with `%` would be decoded wrongly, and one with `\x01` breaks the XML): encode
/// `Key`, `Prefix`, `Delimiter` and `StartAfter` elements as S3 does. The continuation token
/// (s3s-fs uses the last key) stays raw, as S3's opaque tokens do.
async fn encode_listing(response: HttpResponse) -> Result<HttpResponse, HttpError> {
    let (mut parts, mut body) = response.into_parts();
    let all = body.store_all_limited(usize::MAX).await.map_err(HttpError::new)?;
    let mut xml = String::from_utf8(all.to_vec()).map_err(|e| HttpError::new(Box::new(e)))?;
    for tag in ["Key", "Prefix", "Delimiter", "StartAfter"] {
        xml = encode_elements(&xml, tag);
    }
    parts.headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(xml.len()));
    Ok(HttpResponse::from_parts(parts, Body::from(xml)))
}

/// Replaces the text of every `<tag>...</tag>` in `xml` by its url encoding.
fn encode_elements(xml: &str, tag: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let text_start = start + open.len();
        let Some(len) = rest[text_start..].find(&close) else { break };
        out.push_str(&rest[..text_start]);
        out.push_str(&super::mem_rules::url_encode_listed(&xml_unescape(&rest[text_start..text_start + len])));
        rest = &rest[text_start + len..];
    }
    out.push_str(rest);
    out
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let Some(end) = rest[amp..].find(';') else { break };
        let entity = &rest[amp + 1..amp + end];
        let c = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..=amp + end]),
        }
        rest = &rest[amp + end + 1..];
    }
    out.push_str(rest);
    out
}

/// A body of one chunk whose length is not announced (so it goes out chunked).
struct OneChunk(Option<Bytes>);

impl futures::Stream for OneChunk {
    type Item = Result<Bytes, s3s::StdError>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

impl S3sByteStream for OneChunk {}
