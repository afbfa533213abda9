//! Real mounts for end-to-end tests: the `mount-s3` binary, a temp mount point, and a guard
//! that always unmounts (also when the test panics).
//!
//! Every process started here gets a clean environment: no inherited AWS settings, HOME in a
//! temp dir (no ~/.aws files), `AWS_EC2_METADATA_DISABLED=true`, and the static credentials
//! and region of the local server, so nothing ever talks to anything but 127.0.0.1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a mount may take before the test fails.
/// How long a mount may take to come up. Generous: CI machines can be loaded far beyond their
/// cores (a mount took over 20 s once with a load average of 10 on 2 cores).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary under test (for examples, which cargo gives no path: next to the example's dir).
pub fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_mount-s3") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            exe.parent().and_then(Path::parent).expect("target dir").join("mount-s3")
        }
    }
}

/// A `mount-s3` command with a sealed environment: `env` (the server's credentials and region)
/// plus PATH, a private HOME and IMDS disabled.
pub fn command(env: &[(String, String)], home: &Path) -> Command {
    sealed_command(binary(), env, home)
}

/// Any program (`mount`, `sh`, ...) with the sealed environment of [`command`].
pub fn sealed_command(program: impl AsRef<std::ffi::OsStr>, env: &[(String, String)], home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-aws-credentials"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// True if `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Processes whose command line mentions `needle` (e.g. a mount point: finds its daemon).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until no process mentions `needle`; false on timeout.
pub fn wait_no_process_mentioning(needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !processes_mentioning(needle).is_empty() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Unmounts `path` when dropped (also when the test panics): for mounts made by a daemon the
/// test has no handle on (background mode, mount(8), scripts). The daemon then exits by itself.
pub struct UnmountGuard(pub PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

/// Unmounts `path` (lazily if busy). Returns whether something was unmounted.
pub fn force_unmount(path: &Path) -> bool {
    if !is_mounted(path) {
        return false;
    }
    if nix::mount::umount(path).is_err() {
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    }
    true
}

/// Collects a child's stdout and stderr (piped) into one string, line by line; the receiver
/// gets a message for each "... is mounted at ..." line.
pub fn collect_output(child: &mut Child) -> (Arc<Mutex<String>>, mpsc::Receiver<()>) {
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped stderr")),
    ] {
        let (output, tx) = (output.clone(), tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if line.contains(" is mounted at ") {
                    let _ = tx.send(());
                }
                let mut out = output.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
    }
    (output, rx)
}

/// A live mount served by a foreground `mount-s3` child process.
pub struct TestMount {
    // Field order matters: the mount point must outlive the unmount in Drop.
    child: Option<Child>,
    mount_point: PathBuf,
    output: Arc<Mutex<String>>,
    home: TempDir,
    /// The temp dir holding the mount point, when [`TestMount::new`] made it.
    _dir: Option<TempDir>,
}

impl TestMount {
    /// Mounts `bucket` with `args` (endpoint, flags...) and waits until it is live; panics with
    /// the daemon's output if it does not come up.
    pub fn new(env: &[(String, String)], bucket: &str, args: &[&str]) -> TestMount {
        match Self::try_new(env, bucket, args) {
            Ok(m) => m,
            Err(output) => panic!("mount-s3 did not mount:\n{output}"),
        }
    }

    /// Like [`new`](Self::new), but returns the daemon's output if the mount fails.
    pub fn try_new(env: &[(String, String)], bucket: &str, args: &[&str]) -> Result<TestMount, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        Self::start(&binary(), env, bucket, mount_point, Some(dir), args)
    }

    /// Like [`try_new`](Self::try_new), with another mount binary (a benchmark's `--compare`
    /// build): same arguments, same sealed environment.
    pub fn try_new_binary(
        program: &Path,
        env: &[(String, String)],
        bucket: &str,
        args: &[&str],
    ) -> Result<TestMount, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        Self::start(program, env, bucket, mount_point, Some(dir), args)
    }

    /// Mounts at an existing empty directory `mount_point` (which the caller keeps and removes).
    pub fn try_new_at(
        env: &[(String, String)],
        bucket: &str,
        mount_point: &Path,
        args: &[&str],
    ) -> Result<TestMount, String> {
        Self::start(&binary(), env, bucket, mount_point.to_path_buf(), None, args)
    }

    fn start(
        program: &Path,
        env: &[(String, String)],
        bucket: &str,
        mount_point: PathBuf,
        dir: Option<TempDir>,
        args: &[&str],
    ) -> Result<TestMount, String> {
        let home = tempfile::tempdir().expect("temp home");
        let mut cmd = sealed_command(program, env, home.path());
        cmd.arg(bucket).arg(&mount_point).arg("--foreground").args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mount-s3");
        let (output, rx) = collect_output(&mut child);
        let mut mount = TestMount { child: Some(child), mount_point, output, home, _dir: dir };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() && is_mounted(&mount.mount_point) {
                return Ok(mount);
            }
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("exited with {status}\n{}", mount.output()));
            }
            if Instant::now() > deadline {
                let stacks = process_tree_stacks(mount.pid());
                return Err(format!("timed out after {MOUNT_TIMEOUT:?}\n{}\n{stacks}", mount.output()));
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Everything the daemon printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Unmounts with `umount` and returns the daemon's exit status.
    pub fn unmount(mut self) -> ExitStatus {
        let status = Command::new("umount").arg(&self.mount_point).status().expect("run umount");
        assert!(status.success(), "umount failed: {status}");
        self.wait_exit(Duration::from_secs(10)).expect("daemon did not exit after umount")
    }

    /// Like [`unmount`](Self::unmount), and everything the daemon printed until it exited.
    pub fn unmount_with_output(self) -> (ExitStatus, String) {
        let output = self.output.clone();
        let status = self.unmount();
        // The reader threads may still be appending the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let text = output.lock().unwrap().clone();
        (status, text)
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The private HOME of the daemon (for credential files).
    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        force_unmount(&self.mount_point);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The arguments that point a mount at local server `s3` (path-style, us-east-1).
pub fn server_args(s3: &impl super::TestS3) -> Vec<String> {
    ["--endpoint-url", s3.endpoint(), "--force-path-style", "--region", "us-east-1"].map(String::from).to_vec()
}

/// Mounts `s3`'s bucket at a temp dir with `extra` arguments (see [`TestMount::new`]).
pub fn mount(s3: &impl super::TestS3, extra: &[&str]) -> TestMount {
    let mut args = server_args(s3);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestMount::new(&s3.env_vars(), s3.bucket(), &args)
}

/// The errno of a failed call (`None` if it succeeded).
pub fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// The flags that point a mount at a local server at `endpoint` (path style, us-east-1).
pub fn endpoint_args(endpoint: &str) -> Vec<&str> {
    vec!["--endpoint-url", endpoint, "--force-path-style", "--region", "us-east-1"]
}

/// Waits until `done` holds, polling every 20 ms, or panics naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The threads' stacks of `pid` and its children (gdb, if installed), for a mount that hangs.
fn process_tree_stacks(pid: u32) -> String {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut out = String::new();
    for p in std::iter::once(pid.to_string()).chain(children.split_whitespace().map(String::from)) {
        let bt = Command::new("gdb")
            .args(["-batch", "-p", &p, "-ex", "thread apply all bt 30"])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(gdb: {e})"));
        out.push_str(&format!("--- stacks of process {p}:\n{bt}\n"));
    }
    out
}
