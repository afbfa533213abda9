//! [`MotoServer`]: a `moto_server` child process on 127.0.0.1, for what s3s-fs cannot do
//! (keys ending in `/`, a key `x` beside `x/y`, conditional GETs, multipart listings).
//!
//! moto is started as `moto_server -H 127.0.0.1 -p 0` under a tiny `sh` guard that reads our
//! stdin: when this process goes away for any reason (drop, panic, SIGKILL of the test binary),
//! the pipe closes and the guard stops moto, so no server outlives its test. The port comes from
//! moto's " * Running on http://127.0.0.1:PORT" line on stderr; stderr keeps being drained so
//! moto never blocks on a full pipe, and its last lines go into panic messages.
//!
//! moto does not check signatures (but does check ACLs of unsigned requests) and copies the whole
//! object for every ranged GET: use it for semantics, never for anything large. Use moto >= 5.2.5:
//! 5.2.1 answers CompleteMultipartUpload with a `<CompleteMultipartUploadResponse>` root element,
//! which aws-sdk-s3 rejects (boto3 does not notice).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::Credentials;
use mount_s3::client::aws::AwsClientConfig;

use super::helper::{HelperClient, local_sdk_client};
use super::{TestS3, UNSET_ENV_VARS, child_env, unique_bucket_name};

/// Credentials handed to clients (moto accepts any).
pub const ACCESS_KEY: &str = "MOTOTESTACCESSKEY";
/// Secret key handed to clients.
pub const SECRET_KEY: &str = "moto-test-secret-key";
/// Region of the bucket.
pub const REGION: &str = "us-east-1";
/// Longest wait for moto to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of moto's output kept for error messages.
const KEPT_LINES: usize = 40;

/// Runs moto in the background, stops it when stdin closes. `$!` is moto's pid.
const GUARD_SCRIPT: &str = r#"
"$0" -H 127.0.0.1 -p 0 </dev/null &
moto=$!
echo "pid $moto"
cat >/dev/null
kill "$moto" 2>/dev/null
wait "$moto"
"#;

/// A running moto server with one bucket; killed on drop.
pub struct MotoServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
    /// The port moto listens on.
    pub port: u16,
    guard: Child,
    guard_stdin: Option<ChildStdin>,
    moto_pid: Option<i32>,
    output: Arc<Mutex<VecDeque<String>>>,
    helper: Option<HelperClient>,
}

impl MotoServer {
    /// Starts moto and creates one bucket. Panics with an install hint if `moto_server` is missing.
    pub fn start() -> MotoServer {
        let program =
            find_in_path("moto_server").unwrap_or_else(|| panic!("moto is required: pip install 'moto[server]'"));
        let mut command = Command::new("sh");
        command.arg("-c").arg(GUARD_SCRIPT).arg(&program);
        for var in UNSET_ENV_VARS {
            command.env_remove(var);
        }
        command.envs(child_env(ACCESS_KEY, SECRET_KEY, REGION));
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut guard = command.spawn().expect("spawn sh for moto_server");
        let guard_stdin = guard.stdin.take();

        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        drain_lines(guard.stderr.take().expect("stderr"), output.clone(), Some(port_tx));
        let mut stdout = BufReader::new(guard.stdout.take().expect("stdout"));
        let mut pid_line = String::new();
        let _ = stdout.read_line(&mut pid_line);
        let moto_pid = pid_line.trim().strip_prefix("pid ").and_then(|p| p.parse().ok());
        drain_lines(stdout, output.clone(), None);

        let mut server = MotoServer {
            endpoint: String::new(),
            bucket: unique_bucket_name(),
            port: 0,
            guard,
            guard_stdin,
            moto_pid,
            output,
            helper: None,
        };
        let port = match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(_) => panic!("moto_server did not start within {START_TIMEOUT:?}; output:\n{}", server.output()),
        };
        server.port = port;
        server.endpoint = format!("http://127.0.0.1:{port}");
        let sdk = local_sdk_client(&server.endpoint, ACCESS_KEY, SECRET_KEY, REGION);
        server.helper = Some(HelperClient::with_own_runtime(sdk, &server.bucket));
        server.wait_until_ready();
        server
    }

    /// Creates the bucket, retrying while moto finishes starting (its first request imports a lot).
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let (client, bucket) = (self.helper().sdk().clone(), self.bucket.clone());
        loop {
            let (client, bucket) = (client.clone(), bucket.clone());
            let result = self.helper().block_on(async move { client.create_bucket().bucket(&bucket).send().await });
            match result {
                Ok(_) => return,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!(
                    "moto_server at {} never answered: {}; output:\n{}",
                    self.endpoint,
                    aws_smithy_types::error::display::DisplayErrorContext(e),
                    self.output()
                ),
            }
        }
    }

    /// An SDK client for this server (path style, fixed credentials, no IMDS).
    pub fn sdk_client(&self) -> aws_sdk_s3::Client {
        local_sdk_client(&self.endpoint, ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// Writes an object; returns its ETag.
    pub fn put(&self, key: &str, data: impl AsRef<[u8]>) -> String {
        self.helper().put(key, data)
    }

    /// Reads a whole object.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.helper().get(key)
    }

    /// Deletes an object (a missing one is fine).
    pub fn delete(&self, key: &str) {
        self.helper().delete(key)
    }

    /// Every key under `prefix`.
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.helper().list_keys(prefix)
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, bucket: &str) {
        self.helper().create_bucket(bucket)
    }

    /// Settings for our `AwsClient`: this endpoint, path style, [`REGION`], 3 attempts.
    pub fn aws_client_config(&self) -> AwsClientConfig {
        super::local_client_config(&self.bucket, &self.endpoint, REGION)
    }

    /// [`ACCESS_KEY`] / [`SECRET_KEY`].
    pub fn credentials(&self) -> Credentials {
        Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "moto")
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_EC2_METADATA_DISABLED=true`.
    /// Removing inherited variables ([`super::UNSET_ENV_VARS`]) is the caller's job.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        child_env(ACCESS_KEY, SECRET_KEY, REGION)
    }

    /// moto's recent output (its request log), for diagnostics.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn helper(&self) -> &HelperClient {
        self.helper.as_ref().expect("moto helper")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.helper = None;
        // Closing stdin makes the guard stop moto and exit.
        drop(self.guard_stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.guard.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(pid) = self.moto_pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.guard.kill();
        let _ = self.guard.wait();
    }
}

impl TestS3 for MotoServer {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn bucket(&self) -> &str {
        &self.bucket
    }
    fn credentials(&self) -> Credentials {
        MotoServer::credentials(self)
    }
    fn aws_client_config(&self) -> AwsClientConfig {
        MotoServer::aws_client_config(self)
    }
    fn env_vars(&self) -> Vec<(String, String)> {
        MotoServer::env_vars(self)
    }
    fn helper(&self) -> &HelperClient {
        MotoServer::helper(self)
    }
}

/// Reads lines on a thread until EOF, keeping the last few; reports the port from werkzeug's
/// "Running on http://127.0.0.1:PORT" line.
fn drain_lines(
    source: impl Read + Send + 'static,
    kept: Arc<Mutex<VecDeque<String>>>,
    port_tx: Option<std::sync::mpsc::Sender<u16>>,
) {
    std::thread::spawn(move || {
        let mut port_tx = port_tx;
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = port_tx.as_ref().and(parse_port(&line)) {
                let _ = port_tx.take().map(|tx| tx.send(port));
            }
            let mut kept = kept.lock().unwrap();
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    });
}

fn parse_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("Running on http://127.0.0.1:")? + "Running on http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}
