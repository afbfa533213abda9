//! systemd readiness notification (`sd_notify`), for units with `Type=notify`.
//!
//! When systemd starts a `Type=notify` service it sets `NOTIFY_SOCKET` to a Unix datagram
//! socket: a path, or an abstract name written with a leading `@`. The service sends
//! newline-separated `KEY=value` assignments to it. We send, from the process that serves the
//! mount:
//! - `READY=1`, `MAINPID=<our pid>` and a `STATUS=` line once the mount is live, so units
//!   ordered after this one (and `systemctl start`) wait for a usable mount and not for a
//!   process that has merely started. In background mode the daemon (not the short-lived
//!   parent) sends it; `MAINPID` then tells systemd which process to watch, which systemd
//!   accepts with `NotifyAccess=all`. With `--foreground` the default `NotifyAccess=main` works;
//! - `STOPPING=1` when shutdown begins (a signal, or an external unmount).
//!
//! Without `NOTIFY_SOCKET` every call does nothing. Failures to notify are logged, never fatal:
//! the mount works either way. No libsystemd, no unsafe code: std's `UnixDatagram` suffices.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, warn};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated assignments) to `$NOTIFY_SOCKET`. Returns whether a socket
/// was configured.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET_ENV) {
        None => Ok(false),
        Some(socket) => send(&socket.to_string_lossy(), state).map(|()| true),
    }
}

/// Sends `state` to the socket named `address` (`/path` or `@abstract-name`).
pub fn send(address: &str, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let sent = if let Some(name) = address.strip_prefix('@') {
        send_abstract(&socket, name, state)?
    } else if address.starts_with('/') {
        socket.send_to(state.as_bytes(), address)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported {NOTIFY_SOCKET_ENV} address {address:?} (expected /path or @name)"),
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "notification truncated"));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &address)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_socket: &UnixDatagram, _name: &str, _state: &str) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets exist on Linux only"))
}

/// The mount is live: `READY=1`, our pid, and `status` for `systemctl status`.
pub fn ready(status: &str) {
    let state = format!("READY=1\nMAINPID={}\nSTATUS={}\n", std::process::id(), one_line(status));
    report("READY=1", notify(&state));
}

/// Shutdown has begun (sent once, however many times shutdown is noticed).
pub fn stopping() {
    static SENT: AtomicBool = AtomicBool::new(false);
    if !SENT.swap(true, Ordering::Relaxed) {
        report("STOPPING=1", notify("STOPPING=1\nSTATUS=unmounting\n"));
    }
}

fn report(what: &str, result: io::Result<bool>) {
    match result {
        Ok(true) => debug!("notified systemd: {what}"),
        Ok(false) => {}
        Err(e) => warn!("cannot notify systemd ({what}) through ${NOTIFY_SOCKET_ENV}: {e}"),
    }
}

/// A STATUS value must not contain newlines (they separate assignments).
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1\nMAINPID=7\n").unwrap();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=7\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mount-s3-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send(&format!("@{name}"), "STOPPING=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[test]
    fn refuses_other_addresses_and_missing_sockets() {
        assert_eq!(send("vsock:2:1", "READY=1").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let dir = tempfile::tempdir().unwrap();
        assert!(send(dir.path().join("none").to_str().unwrap(), "READY=1").is_err());
        assert_eq!(one_line("a\nb"), "a b");
    }
}
