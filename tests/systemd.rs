//! End to end: systemd integration. `Type=notify` readiness through a test-owned
//! `NOTIFY_SOCKET` (path and abstract), and the example units checked by `systemd-analyze verify`
//! when it is installed.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mount::{TestMount, UnmountGuard, binary, command, is_mounted, processes_mentioning};
use common::s3_server::LocalS3;
use common::tools::systemd_verify;

fn server_args(s3: &LocalS3) -> Vec<String> {
    ["--endpoint-url", &s3.endpoint, "--force-path-style", "--region", "us-east-1"].map(String::from).to_vec()
}

/// The next notification, as its `KEY=value` lines.
fn receive(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string).collect()
}

#[test]
fn ready_is_sent_once_mounted_and_stopping_at_sigterm() {
    let s3 = LocalS3::start();
    s3.put("f", b"x");
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut env = s3.env_vars();
    env.push(("NOTIFY_SOCKET".into(), socket_path.to_string_lossy().into_owned()));
    let args = server_args(&s3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut m = TestMount::new(&env, &s3.bucket, &args);

    let ready = receive(&socket);
    assert!(is_mounted(m.path()), "READY=1 comes after the mount");
    assert_eq!(
        ready,
        [
            "READY=1".to_string(),
            format!("MAINPID={}", m.pid()),
            format!("STATUS=bucket {} is mounted at {}", s3.bucket, m.path().display()),
        ]
    );
    assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"x");

    // `systemctl stop` sends SIGTERM.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(receive(&socket), ["STOPPING=1", "STATUS=unmounting"]);
    let status = m.wait_exit(Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!is_mounted(m.path()));
    socket.set_nonblocking(true).unwrap();
    assert!(socket.recv(&mut [0u8; 64]).is_err(), "STOPPING=1 is sent once");
}

#[cfg(target_os = "linux")]
#[test]
fn a_background_daemon_notifies_with_its_own_pid_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let s3 = LocalS3::start();
    let name = format!("mount-s3-test-notify-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&address).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = UnmountGuard(mnt.clone());

    let home = tempfile::tempdir().unwrap();
    let mut env = s3.env_vars();
    env.push(("NOTIFY_SOCKET".into(), format!("@{name}")));
    let output = command(&env, home.path()).arg(&s3.bucket).arg(&mnt).args(server_args(&s3)).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let ready = receive(&socket);
    assert_eq!(ready[0], "READY=1");
    let pid: u32 = ready[1].strip_prefix("MAINPID=").unwrap().parse().unwrap();
    // The daemon is the supervisor; the other process serving the mount is its worker.
    let serving = processes_mentioning(mnt.to_str().unwrap());
    assert!(serving.contains(&pid), "MAINPID is the daemon, not the exited parent: {pid} not in {serving:?}");
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for other in serving.iter().filter(|p| **p != pid) {
        assert!(children.split_whitespace().any(|c| c == other.to_string()), "{other} is the daemon's worker");
    }

    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    assert_eq!(receive(&socket), ["STOPPING=1", "STATUS=unmounting"], "an external umount stops the daemon too");
    assert!(common::mount::wait_no_process_mentioning(mnt.to_str().unwrap(), Duration::from_secs(10)));
}

/// The example unit `name` with its binary path pointing at the binary under test, written to
/// `dir` as `file_name`.
fn example_unit(name: &str, dir: &Path, file_name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd").join(name);
    let text = std::fs::read_to_string(&path).unwrap().replace("/usr/local/bin/mount-s3", binary().to_str().unwrap());
    let out = dir.join(file_name);
    std::fs::write(&out, text).unwrap();
    out
}

#[test]
fn the_example_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = [
        example_unit("mount-s3@.service", dir.path(), "mount-s3@test-bucket.service"),
        example_unit("mountpoint-s3-example.service", dir.path(), "mountpoint-s3-example.service"),
    ];
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(text.contains(&format!("ExecStart={} ", binary().display())), "{text}");
        match systemd_verify(unit) {
            None => {
                eprintln!("note: systemd-analyze is not installed; {} not verified", unit.display());
                return;
            }
            Some(result) => result.unwrap_or_else(|e| panic!("{}: {e}", unit.display())),
        }
    }
    // The checker does catch mistakes.
    let broken = dir.path().join("broken.service");
    std::fs::write(&broken, "[Service]\nType=forking\nExecStart=mount-s3-not-a-path b /mnt\n").unwrap();
    assert!(systemd_verify(&broken).unwrap().is_err());
    let notify = std::fs::read_to_string(&units[0]).unwrap();
    assert!(notify.contains("Type=notify") && notify.contains("--foreground"), "{notify}");
    let forking = std::fs::read_to_string(&units[1]).unwrap();
    assert!(forking.contains("Type=forking") && forking.contains("--allow-root --read-only --debug"), "{forking}");
}
