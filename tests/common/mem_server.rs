//! [`MemS3`]: an in-memory S3 server ([`MemStore`] behind the `s3s` crate) on `127.0.0.1:0`,
//! fast enough that a benchmark measures its client, not the server.
//!
//! Design as [`super::s3_server::LocalS3`]: its own port, its own tokio runtime on threads of its
//! own, `TCP_NODELAY` on every accepted socket, SigV4 checked, and exact request counts taken in
//! s3s's access hook (once per authenticated request, by S3 operation name). Requests signed with
//! the harness key ([`HELPER_ACCESS_KEY`]) are not counted, and [`MemS3::put`] does not send a
//! request at all: it stores the `Bytes` it is given (slices of one big buffer cost nothing).
//!
//! The runtime has a fixed 2 worker threads, all named `mem-s3-<n>-...`, so
//! [`MemS3::server_cpu_seconds`] can sum their CPU time from `/proc/self/task/*/stat`: a
//! benchmark reports it next to the client's, and the reader can tell who was the bottleneck.
//! What the store implements, and how, is in [`super::mem_store`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_s3::config::Credentials;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use mount_s3::client::S3Operation;
use mount_s3::client::aws::AwsClientConfig;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::express::{ExpressAccess, ExpressAuth, ExpressFront, ExpressOptions, ExpressState, ZONE};
use super::express_store::{ExpressStore, NoRenameRoute, RenameRoute};
use super::helper::{HelperClient, local_sdk_client};
use super::mem_store::MemStore;
use super::{TestS3, child_env, unique_bucket_name};

/// Access key of the credentials under test (counted).
pub const ACCESS_KEY: &str = "MEMS3TESTACCESSKEY00";
/// Secret key of the credentials under test.
pub const SECRET_KEY: &str = "mem-s3-test-secret-key-0123456789abcdefgh";
/// Region the server signs for.
pub const REGION: &str = "us-east-1";
/// Access key of the harness's own requests (not counted).
pub const HELPER_ACCESS_KEY: &str = "MEMS3HELPERACCESSKEY";
const HELPER_SECRET_KEY: &str = "mem-s3-helper-secret-key-0123456789abcdef";
/// Worker threads of the server's runtime.
pub const SERVER_THREADS: usize = 2;

/// Counts each authenticated request by s3s operation name, then requires a signature.
struct CountingAccess {
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

#[async_trait::async_trait]
impl S3Access for CountingAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        if credentials.access_key != HELPER_ACCESS_KEY {
            *self.counts.lock().unwrap().entry(cx.s3_op().name().to_string()).or_insert(0) += 1;
        }
        Ok(())
    }
}

/// An in-memory S3 server on 127.0.0.1 with one bucket; stops on drop.
pub struct MemS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    /// The listening address.
    pub addr: SocketAddr,
    store: MemStore,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    /// Sessions and switches of the directory-bucket emulator.
    express: Option<Arc<ExpressState>>,
    thread_prefix: String,
    helper: OnceLock<HelperClient>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MemS3 {
    /// Starts a server with one empty bucket of a unique name.
    pub fn start() -> MemS3 {
        Self::start_with(None)
    }

    /// Starts the directory-bucket emulator ([`super::express`]): one empty bucket named
    /// `…--use1-az4--x-s3`, session authentication, shuffled listings, RenameObject, appends.
    pub fn start_express(options: ExpressOptions) -> MemS3 {
        Self::start_with(Some(options))
    }

    fn start_with(express: Option<ExpressOptions>) -> MemS3 {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Thread names are cut at 15 bytes by the kernel: "mem-s3-999-work" just fits.
        let thread_prefix = format!("mem-s3-{}-", NEXT.fetch_add(1, Ordering::Relaxed) % 1000);
        let bucket = match express {
            Some(_) => format!("{}--{ZONE}--x-s3", unique_bucket_name()),
            None => unique_bucket_name(),
        };
        let store = MemStore::new(&bucket);
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let (service, express) = match express {
            None => {
                let mut auth = SimpleAuth::new();
                auth.register(ACCESS_KEY.to_string(), SECRET_KEY.into());
                auth.register(HELPER_ACCESS_KEY.to_string(), HELPER_SECRET_KEY.into());
                let mut builder = S3ServiceBuilder::new(store.clone());
                builder.set_auth(auth);
                builder.set_access(CountingAccess { counts: counts.clone() });
                builder.set_route(NoRenameRoute);
                (Front::General(builder.build()), None)
            }
            Some(options) => {
                let state = Arc::new(ExpressState::new(
                    &options,
                    (ACCESS_KEY, SECRET_KEY),
                    (HELPER_ACCESS_KEY, HELPER_SECRET_KEY),
                    counts.clone(),
                ));
                let express_store = ExpressStore { mem: store.clone(), state: state.clone() };
                let mut builder = S3ServiceBuilder::new(express_store.clone());
                builder.set_auth(ExpressAuth(state.clone()));
                builder.set_access(ExpressAccess(state.clone()));
                builder.set_route(RenameRoute(express_store));
                let front = ExpressFront { inner: builder.build(), state: state.clone() };
                (Front::Express(front), Some(state))
            }
        };

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let worker_name = format!("{thread_prefix}work");
        let thread = std::thread::Builder::new()
            .name(format!("{thread_prefix}main"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(SERVER_THREADS)
                    .thread_name(worker_name)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
                ready_tx.send(listener.local_addr().expect("local addr")).expect("report address");
                rt.block_on(serve(listener, service, stop_rx));
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("server thread");
        let addr = ready_rx.recv().expect("server thread failed to start");
        MemS3 {
            endpoint: format!("http://{addr}"),
            bucket,
            addr,
            store,
            counts,
            express,
            thread_prefix,
            helper: OnceLock::new(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The directory-bucket emulator's sessions and switches (panics on a general purpose server).
    pub fn express(&self) -> &ExpressState {
        self.express.as_deref().expect("a server started with MemS3::start_express")
    }

    /// Stores an object directly, without a request (not counted); returns its quoted ETag.
    /// `Bytes` are kept as they are: slices of one buffer share it.
    pub fn put(&self, key: &str, data: impl Into<Bytes>) -> String {
        self.store.insert(&self.bucket, key, data.into())
    }

    /// [`Self::put`] of an object written with a checksum of `algorithm` (`crc32`, `crc32c`,
    /// `crc64nvme`, `sha1`, `sha256`), as HeadObject in checksum mode then reports it.
    pub fn put_with_checksum(&self, key: &str, data: impl Into<Bytes>, algorithm: &'static str) -> String {
        self.store.insert_with_checksum(&self.bucket, key, data.into(), algorithm)
    }

    /// The bytes of an object, read directly (not counted).
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.store.data(&self.bucket, key)
    }

    /// Appends `data` at the object's end directly, as another writer's append would (not
    /// counted; the object is created if missing), with the object's checksum algorithm;
    /// returns its new quoted ETag.
    pub fn append(&self, key: &str, data: impl Into<Bytes>) -> String {
        let size = self.get(key).map_or(0, |d| d.len() as u64);
        let algorithm = self.store.checksum_algorithm(&self.bucket, key);
        let (etag, _) = self.store.append(&self.bucket, key, size, data.into(), None, algorithm).expect("append");
        format!("\"{etag}\"")
    }

    /// Deletes an object directly (not counted).
    pub fn delete(&self, key: &str) {
        self.store.remove(&self.bucket, key)
    }

    /// Deletes every object under `prefix` directly (not counted); returns how many.
    pub fn clear_prefix(&self, prefix: &str) -> usize {
        let keys = self.list_keys(prefix);
        for key in &keys {
            self.delete(key);
        }
        keys.len()
    }

    /// Every key under `prefix`, in order (not counted).
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.store.keys(&self.bucket, prefix)
    }

    /// Keys of the multipart uploads in progress under `prefix` (not counted).
    pub fn upload_keys(&self, prefix: &str) -> Vec<String> {
        self.store.upload_keys(&self.bucket, prefix)
    }

    /// Creates another (empty) bucket.
    pub fn create_bucket(&self, bucket: &str) {
        assert!(self.store.add_bucket(bucket), "bucket {bucket} exists");
    }

    /// Bytes held in objects and unfinished uploads.
    pub fn stored_bytes(&self) -> u64 {
        self.store.stored_bytes()
    }

    /// An SDK client signing with the harness key: its requests are NOT counted.
    pub fn sdk_client(&self) -> aws_sdk_s3::Client {
        local_sdk_client(&self.endpoint, HELPER_ACCESS_KEY, HELPER_SECRET_KEY, REGION)
    }

    /// An SDK client signing with [`ACCESS_KEY`]: its requests are counted.
    pub fn counted_sdk_client(&self) -> aws_sdk_s3::Client {
        local_sdk_client(&self.endpoint, ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// Settings for our `AwsClient`: this endpoint, path style, [`REGION`], 3 attempts.
    pub fn aws_client_config(&self) -> AwsClientConfig {
        super::local_client_config(&self.bucket, &self.endpoint, REGION)
    }

    /// [`ACCESS_KEY`] / [`SECRET_KEY`].
    pub fn credentials(&self) -> Credentials {
        Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "mem-s3")
    }

    /// What a child process needs in its environment: static credentials, `AWS_REGION`,
    /// `AWS_EC2_METADATA_DISABLED=true` (see [`TestS3::configure_command`]).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        child_env(ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// Requests of `op` signed with [`ACCESS_KEY`] so far.
    pub fn request_count(&self, op: S3Operation) -> u64 {
        self.request_count_by_name(op.name())
    }

    /// Requests of an s3s operation by name (e.g. `HeadBucket`, `ListObjects`).
    pub fn request_count_by_name(&self, name: &str) -> u64 {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// All counted requests, of every operation.
    pub fn total_request_count(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    /// Counted requests by operation name.
    pub fn request_counts(&self) -> HashMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// Sets every count back to zero.
    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
    }

    /// CPU seconds (user + system) the server's threads have used since it started. Threads
    /// that have exited no longer count (the runtime's workers live as long as the server).
    pub fn server_cpu_seconds(&self) -> f64 {
        threads_cpu_seconds(&self.thread_prefix)
    }

    fn helper(&self) -> &HelperClient {
        self.helper.get_or_init(|| HelperClient::with_own_runtime(self.sdk_client(), &self.bucket))
    }
}

impl Drop for MemS3 {
    fn drop(&mut self) {
        // The helper's connections must not outlive the server.
        self.helper.take();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TestS3 for MemS3 {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn bucket(&self) -> &str {
        &self.bucket
    }
    fn credentials(&self) -> Credentials {
        MemS3::credentials(self)
    }
    fn aws_client_config(&self) -> AwsClientConfig {
        MemS3::aws_client_config(self)
    }
    fn env_vars(&self) -> Vec<(String, String)> {
        MemS3::env_vars(self)
    }
    fn helper(&self) -> &HelperClient {
        MemS3::helper(self)
    }
}

/// Clock ticks per second, for `/proc/*/stat` CPU fields.
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        ticks as f64
    })
}

/// `utime + stime` in clock ticks from the text of a `/proc/.../stat` file (fields 14 and 15;
/// the command name in parentheses may itself hold spaces and parentheses).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so utime (14) is at index 11.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut ticks = 0;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        ticks += stat_cpu_ticks(&stat).unwrap_or(0);
    }
    ticks as f64 / clock_ticks_per_second()
}

/// What serves the connections: s3s alone, or the directory-bucket emulator's front.
#[derive(Clone)]
enum Front {
    General(S3Service),
    Express(ExpressFront),
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        match self {
            Front::General(s) => hyper::service::Service::call(s, req),
            Front::Express(s) => hyper::service::Service::call(s, req),
        }
    }
}

async fn serve(listener: TcpListener, service: Front, mut stop: oneshot::Receiver<()>) {
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
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
        });
    }
}
