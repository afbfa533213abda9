//! End to end: FUSE file-descriptor mounts, the way the Mountpoint CSI driver v2 makes them.
//!
//! The test plays the driver: as root it opens `/dev/fuse`, calls mount(2) with
//! `fd=N,rootmode=40000,user_id,group_id,default_permissions,allow_other`, and starts
//! `mount-s3 BUCKET /dev/fd/3 --foreground` as an unprivileged user (nobody, no capabilities)
//! with the descriptor as 3. The daemon must serve the mount, and exit 0 when it is unmounted.

mod common;

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use common::mount::{binary, collect_output, command, force_unmount, is_mounted, sealed_command};
use common::s3_server::LocalS3;
use nix::mount::MsFlags;
use tempfile::TempDir;

/// The unprivileged user the daemon runs as (the CSI driver uses a non-root uid too).
const NOBODY: u32 = 65534;

/// The binary, somewhere `nobody` can execute it (the checkout may sit under a private home).
fn public_binary() -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("fd-mount-bin-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("mount-s3");
    if std::fs::hard_link(binary(), &path).is_err() {
        std::fs::copy(binary(), &path).unwrap();
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
}

/// What the driver does before starting us: open /dev/fuse and mount it at `target`.
fn driver_mount(target: &Path) -> OwnedFd {
    let fuse = OpenOptions::new().read(true).write(true).open("/dev/fuse").expect("open /dev/fuse");
    let data = format!(
        "fd={},rootmode=40000,user_id={NOBODY},group_id={NOBODY},default_permissions,allow_other",
        fuse.as_raw_fd()
    );
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
    nix::mount::mount(Some("mountpoint-s3"), target, Some("fuse"), flags, Some(data.as_str())).expect("mount(2)");
    fuse.into()
}

/// A daemon started as the driver starts it, with its output collected.
struct FdDaemon {
    child: Child,
    output: Arc<Mutex<String>>,
    mounted: mpsc::Receiver<()>,
    _home: TempDir,
    _bin: TempDir,
}

impl FdDaemon {
    /// Starts `mount-s3 BUCKET /dev/fd/3 ARGS` as nobody with `fd` as descriptor 3.
    fn start(s3: &LocalS3, fd: OwnedFd, args: &[&str]) -> FdDaemon {
        let (bin, path) = public_binary();
        let home = tempfile::tempdir().unwrap();
        let mut cmd = sealed_command(path, &s3.env_vars(), home.path());
        cmd.arg(&s3.bucket)
            .arg("/dev/fd/3")
            .args(["--endpoint-url", &s3.endpoint, "--force-path-style", "--region", "us-east-1"])
            .args(args)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.fd_mappings(vec![FdMapping { parent_fd: fd, child_fd: 3 }]).unwrap();
        let mut child = cmd.spawn().expect("spawn mount-s3");
        let (output, mounted) = collect_output(&mut child);
        FdDaemon { child, output, mounted, _home: home, _bin: bin }
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.mounted.recv_timeout(Duration::from_millis(50)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("mount-s3 exited with {status}:\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "not mounted after 20 s:\n{}", self.output());
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for FdDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A status line of /proc/PID/status (`Uid:`, `CapEff:`...), without its label.
fn proc_status(pid: u32, label: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label}"));
    line[label.len()..].trim().to_string()
}

#[test]
fn serves_a_mount_made_by_another_process_without_privileges_and_exits_0_on_unmount() {
    let s3 = LocalS3::start();
    s3.put("dir/hello.txt", b"hello from S3\n");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s3.put("big.bin", &data);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let fd = driver_mount(&target);
    let _unmount = common::mount::UnmountGuard(target.clone());

    let mut daemon =
        FdDaemon::start(&s3, fd, &["--foreground", "--user-agent-prefix", "csi-driver/2.0", "--allow-delete"]);
    daemon.wait_mounted();
    let pid = daemon.child.id();
    assert_eq!(proc_status(pid, "Uid:").split_whitespace().next(), Some("65534"));
    assert_eq!(proc_status(pid, "CapEff:"), "0000000000000000", "the daemon must need no capabilities");

    assert_eq!(std::fs::read(target.join("dir/hello.txt")).unwrap(), b"hello from S3\n");
    assert_eq!(std::fs::read(target.join("big.bin")).unwrap(), data);
    std::fs::write(target.join("new.txt"), b"written through an fd mount").unwrap();
    assert_eq!(s3.get("new.txt").as_deref(), Some(&b"written through an fd mount"[..]));
    std::fs::remove_file(target.join("new.txt")).unwrap();
    assert_eq!(s3.get("new.txt"), None);
    assert!(s3.user_agents().iter().any(|ua| ua.starts_with("csi-driver/2.0")), "{:?}", s3.user_agents());

    // The driver unmounts: the daemon sees the connection end and exits 0.
    nix::mount::umount(&target).expect("umount");
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("daemon did not exit after the unmount");
    assert!(status.success(), "exit {status}:\n{}", daemon.output());
}

#[test]
fn sigterm_ends_an_fd_daemon_cleanly_and_leaves_the_mount_to_its_owner() {
    let s3 = LocalS3::start();
    s3.put("a.txt", b"a");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let fd = driver_mount(&target);
    let _unmount = common::mount::UnmountGuard(target.clone());
    let mut daemon = FdDaemon::start(&s3, fd, &["--foreground"]);
    daemon.wait_mounted();
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"a");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.child.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("daemon did not exit after SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", daemon.output());
    assert!(daemon.output().contains("is mounted by another process: shutting down"), "{}", daemon.output());
    // The mount is the driver's: still there (dead) until it unmounts.
    assert!(is_mounted(&target));
    let err = std::fs::read(target.join("a.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert!(force_unmount(&target));
}

#[test]
fn a_descriptor_that_is_not_a_mounted_fuse_device_fails_the_mount_with_exit_1() {
    let s3 = LocalS3::start();
    let file = tempfile::tempfile().unwrap();
    for foreground in [true, false] {
        let args: &[&str] = if foreground { &["--foreground"] } else { &[] };
        let mut daemon = FdDaemon::start(&s3, file.try_clone().unwrap().into(), args);
        let status = daemon.wait_exit(Duration::from_secs(20)).expect("must fail at once");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(status.code(), Some(1), "{}", daemon.output());
        assert!(daemon.output().contains("/dev/fd/3 is not a FUSE device (/dev/fuse)"), "{}", daemon.output());
    }
    // A number with nothing open behind it.
    let home = tempfile::tempdir().unwrap();
    let out = command(&s3.env_vars(), home.path())
        .args([&s3.bucket, "/dev/fd/57", "--foreground", "--endpoint-url", &s3.endpoint, "--force-path-style"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/dev/fd/57 is not an open file descriptor"), "{stderr}");
    // Options that only mount(2) can apply are refused as bad arguments.
    let out = command(&s3.env_vars(), home.path()).args([&s3.bucket, "/dev/fd/3", "--read-only"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("mount options --read-only are ignored with a FUSE fd mount point")
    );
}
