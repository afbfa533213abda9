//! Background mode: the parent waits for the mount, then leaves the daemon running.
//!
//! Without `--foreground` the parent validates the command line, then starts itself again as
//! the daemon (same arguments, [`CHILD_ENV`] set) with stdout and stderr on pipes. The daemon
//! mounts and writes [`READY_LINE`] to stdout; the parent then prints "B is mounted at D" and
//! exits 0. If the daemon exits first, the parent prints what the daemon printed (its error)
//! and exits 1; after [`READY_TIMEOUT`] it kills the daemon and fails. Re-executing instead of
//! fork() keeps the tokio runtime and every lock out of a half-copied process.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Set in the daemon's environment.
pub const CHILD_ENV: &str = "MOUNT_S3_DAEMON_CHILD";
/// What the daemon writes to stdout once the file system is mounted.
pub const READY_LINE: &str = "mount-s3: mounted";
/// How long the parent waits for the daemon (as Mountpoint).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// True in the daemon process.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Parent side: start the daemon and wait until it has mounted. `success_message` is printed
/// on success.
pub fn spawn_and_wait(success_message: &str) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("Error: cannot find the mount-s3 executable to start the daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spawned = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("Error: failed to create mount process: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ready = BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line == READY_LINE);
        let _ = tx.send(ready);
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(true) => {
            println!("{success_message}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            let _ = child.wait();
            let mut message = String::new();
            let _ = stderr.read_to_string(&mut message);
            if message.trim().is_empty() {
                eprintln!("Error: failed to create mount process (it exited without a message; see the logs)");
            } else {
                eprint!("{message}");
            }
            ExitCode::FAILURE
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            eprintln!("Error: timeout after 30 seconds while waiting for mount process to be ready");
            ExitCode::FAILURE
        }
    }
}

/// Daemon side, at start: leave the caller's session so its terminal's signals do not reach us.
pub fn detach() {
    let _ = nix::unistd::setsid();
}

/// Daemon side, once mounted: tell the parent, then stop writing to its pipes.
pub fn report_ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();
    drop(out);
    silence();
}

/// Points stdin, stdout and stderr at /dev/null: the parent that read them has gone.
pub fn silence() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}
