//! [`GarageS3`]: a real, single-node Garage object store (a `garage server` child process) on
//! 127.0.0.1, in a temporary directory of its own, for what only a production server shows
//! (benchmarks against a server whose costs are a real store's, not an in-memory one's).
//!
//! The binary is found, not shipped: `GARAGE_BIN`, then `garage` on `PATH`, then
//! `~/.cargo/bin/garage`. [`GarageS3::find_or_build`] builds it when it is missing
//! (`cargo install garage@2.5.0 --locked` from crates.io, ~10 minutes on 2 cores; the binary is
//! then cached in `~/.cargo/bin` for later runs). Ports are taken from the kernel (bind
//! 127.0.0.1:0, then released), so parallel servers do not collide.
//!
//! Setup, as Garage's own quick start: a config file (LMDB metadata, replication factor 1, no
//! compression, RPC, S3 and admin APIs on loopback), `garage server`, a one-node layout, an
//! imported key with fixed test credentials, one bucket that key owns. Request counts come from
//! the server's Prometheus metrics (admin API, `api_s3_request_counter` by `api_endpoint`),
//! CPU time from `/proc/<pid>/stat`. Garage ignores conditional PUTs (`If-None-Match: *`,
//! `If-Match`): tests of those need the in-process servers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::helper::{HelperClient, local_sdk_client};
use super::mem_server::{clock_ticks_per_second, stat_cpu_ticks};
use super::{child_env, unique_bucket_name};

/// Garage's access key id of the credentials under test (`GK` + 24 hex digits).
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
/// Secret key of the credentials under test (64 hex digits).
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Region the server signs for (Garage accepts any).
pub const REGION: &str = "us-east-1";
/// The version built when no binary is found.
pub const VERSION: &str = "2.5.0";
const METRICS_TOKEN: &str = "fs-bench-metrics-token";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running single-node Garage with one bucket; killed (and its data removed) on drop.
pub struct GarageS3 {
    /// `http://127.0.0.1:PORT` of the S3 API.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    /// The binary serving it.
    pub binary: PathBuf,
    admin: String,
    child: Child,
    helper: OnceLock<HelperClient>,
    dir: TempDir,
}

/// A free TCP port on 127.0.0.1 (the kernel's pick, released for the server to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl GarageS3 {
    /// The installed `garage` binary, if there is one (see the module notes for where it looks).
    pub fn find() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("GARAGE_BIN").map(PathBuf::from) {
            return path.is_file().then_some(path);
        }
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|dir| dir.join("garage")).collect::<Vec<_>>())
            .unwrap_or_default();
        let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage"));
        on_path.into_iter().chain(cargo_bin).find(|p| p.is_file())
    }

    /// [`GarageS3::find`], or else builds Garage [`VERSION`] with `cargo install` (slow; its
    /// output goes to stderr) and returns the installed binary.
    pub fn find_or_build() -> Result<PathBuf, String> {
        if let Some(path) = Self::find() {
            return Ok(path);
        }
        eprintln!("no garage binary found: building garage {VERSION} with cargo install (about 10 minutes)");
        let status = Command::new("cargo")
            .args(["install", &format!("garage@{VERSION}"), "--locked"])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cargo install garage: {e}"))?;
        if !status.success() {
            return Err(format!("cargo install garage@{VERSION} failed: {status}"));
        }
        Self::find().ok_or_else(|| "cargo install succeeded but no garage binary was found".into())
    }

    /// Starts `binary` as a fresh one-node server with one bucket, ready for requests.
    pub fn start(binary: &Path) -> Result<GarageS3, String> {
        let dir = tempfile::Builder::new().prefix("garage-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"lmdb\"\nreplication_factor = 1\n\
             compression_level = \"none\"\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n[s3_api]\n\
             s3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nmetrics_token = \"{METRICS_TOKEN}\"\n",
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
            secret = SECRET_KEY,
        );
        let config_path = dir.path().join("garage.toml");
        std::fs::write(&config_path, config).map_err(|e| format!("write garage config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("server.log")).map_err(|e| format!("garage log: {e}"))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .arg("server")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("garage log: {e}"))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary.display()))?;
        let mut server = GarageS3 {
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: unique_bucket_name(),
            binary: binary.to_path_buf(),
            admin: format!("127.0.0.1:{admin}"),
            child,
            helper: OnceLock::new(),
            dir,
        };
        server.configure().map_err(|e| format!("{e}\n{}", server.log()))?;
        Ok(server)
    }

    /// Layout, key and bucket, once the server answers its CLI.
    fn configure(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let node = loop {
            match self.cli(&["node", "id", "-q"]) {
                Ok(id) => break id,
                Err(e) if Instant::now() > deadline => return Err(format!("garage did not start: {e}")),
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(format!("garage server exited with {status}"));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let node = node.split('@').next().unwrap_or_default().trim().to_string();
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "20G", &node])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        self.cli(&["key", "import", "--yes", "-n", "fs-bench", ACCESS_KEY, SECRET_KEY])?;
        // The layout takes a moment to be in force: bucket creation fails until it is.
        loop {
            match self.cli(&["bucket", "create", &self.bucket]) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        let bucket = self.bucket.clone();
        self.cli(&["bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", "fs-bench"])?;
        Ok(())
    }

    /// Runs `garage -c CONFIG ARGS...`; its stdout, or its stderr as the error.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("garage {}: {e}", args.join(" ")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("garage {}: {}: {}", args.join(" "), output.status, stderr.trim()));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The server's log so far (its last lines matter when it fails).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The `garage --version` line of the binary.
    pub fn version(&self) -> String {
        let out = Command::new(&self.binary).arg("--version").output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    }

    /// Environment a child `mount-s3` (or SDK process) needs: static credentials, region, no IMDS.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        child_env(ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// An SDK client with the test credentials (Garage counts every request; there is no
    /// uncounted harness key).
    pub fn sdk_client(&self) -> aws_sdk_s3::Client {
        local_sdk_client(&self.endpoint, ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// The harness's blocking client for the bucket.
    pub fn helper(&self) -> &HelperClient {
        self.helper.get_or_init(|| HelperClient::with_own_runtime(self.sdk_client(), &self.bucket))
    }

    /// CPU seconds (user + system, all threads) the server process has used so far.
    pub fn server_cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        stat_cpu_ticks(&stat).unwrap_or(0) as f64 / clock_ticks_per_second()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// S3 requests served so far, by API endpoint name (`GetObject`, `ListObjectsV2`, ...),
    /// from the server's metrics; empty if they cannot be read.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        parse_request_counts(&self.metrics().unwrap_or_default())
    }

    fn metrics(&self) -> Result<String, String> {
        let mut stream = std::net::TcpStream::connect(&self.admin).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let request =
            format!("GET /metrics HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {METRICS_TOKEN}\r\n\r\n", self.admin);
        stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(|e| format!("read: {e}"))?;
        Ok(response)
    }
}

/// Sums `api_s3_request_counter` samples of a metrics text by their `api_endpoint` label.
pub fn parse_request_counts(metrics: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("api_s3_request_counter{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Some(endpoint) = labels.split("api_endpoint=\"").nth(1).and_then(|s| s.split('"').next()) else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        *counts.entry(endpoint.to_string()).or_insert(0) += value;
    }
    counts
}

impl Drop for GarageS3 {
    fn drop(&mut self) {
        // The helper's connections must not outlive the server.
        self.helper.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
