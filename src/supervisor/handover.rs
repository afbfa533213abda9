//! The worker's side of a supervised mount: taking over a FUSE connection that is already live.
//!
//! fuser's `Session::from_fd` insists on performing the FUSE INIT handshake before it returns,
//! but the kernel sends INIT once per connection, and the supervisor has answered it. So the
//! worker hands fuser one end of a `SOCK_SEQPACKET` socket pair, replays the kernel's INIT (as
//! the supervisor recorded it: ABI version and offered capabilities) into the other end, and
//! discards fuser's answer. Then `dup2` puts the real `/dev/fuse` descriptor on the socket's
//! descriptor number: the session reads and writes the live connection directly, with no relay
//! and no copies, and `clone_fd` clones the real device. This is the one place where sessions
//! are created from an inherited connection ([`Worker::session`]).
//!
//! Requests the previous worker had read but not answered are still in the kernel's
//! processing queue of this (shared) device: `FUSE_NOTIFY_RESEND` (Linux 6.9+) puts them back
//! on the pending queue, their unique ids marked with bit 63, which fuser passes through. The
//! resend is asked for before the session reads anything, since it moves every request of the
//! queue, and the worker's own would be answered twice.
//!
//! Cloned devices (`clone_fd`) are released with the worker that cloned them: requests read
//! through them end with ECONNABORTED when the worker dies, not resent.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use fuser::{Filesystem, Session, SessionACL};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tracing::{info, warn};

/// Environment of a worker process, set by the supervisor (see [`super`]).
pub const ENV_FUSE_FD: &str = "MOUNT_S3_WORKER_FUSE_FD";
pub const ENV_STATUS_FD: &str = "MOUNT_S3_WORKER_STATUS_FD";
pub const ENV_INIT: &str = "MOUNT_S3_WORKER_INIT";
pub const ENV_RESTARTS: &str = "MOUNT_S3_WORKER_RESTARTS";
pub const ENV_REASON: &str = "MOUNT_S3_WORKER_REASON";
pub const ENV_MOUNT_POINT: &str = "MOUNT_S3_WORKER_MOUNT_POINT";
pub const ENV_LOG_FILE: &str = "MOUNT_S3_WORKER_LOG_FILE";
pub const ENV_SUPERVISOR: &str = "MOUNT_S3_WORKER_SUPERVISOR";
pub const ENV_STATE_DIR: &str = "MOUNT_S3_WORKER_STATE_DIR";

/// Every variable of the worker contract (the supervisor clears them from what it inherited).
pub const ALL_ENV: [&str; 9] = [
    ENV_FUSE_FD,
    ENV_STATUS_FD,
    ENV_INIT,
    ENV_RESTARTS,
    ENV_REASON,
    ENV_MOUNT_POINT,
    ENV_LOG_FILE,
    ENV_SUPERVISOR,
    ENV_STATE_DIR,
];

/// The line a worker writes on its status pipe once its session reads the connection.
pub const READY: &[u8] = b"ready\n";

/// `FUSE_INIT`'s opcode and `FUSE_NOTIFY_RESEND`'s notification code (linux/fuse.h).
const FUSE_INIT: u32 = 26;
const FUSE_NOTIFY_RESEND: i32 = 7;
/// `FUSE_INIT_EXT`: the init request carries `flags2` (the high 32 capability bits).
const FUSE_INIT_EXT: u64 = 1 << 30;

/// What the kernel offered at INIT: its ABI version and capabilities (without `FUSE_INIT_EXT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOffer {
    pub major: u32,
    pub minor: u32,
    pub capabilities: u64,
}

impl InitOffer {
    /// `7.45:0x...`, as passed in [`ENV_INIT`].
    pub fn encode(&self) -> String {
        format!("{}.{}:{:#x}", self.major, self.minor, self.capabilities)
    }

    /// The inverse of [`InitOffer::encode`].
    pub fn decode(text: &str) -> Option<InitOffer> {
        let (version, caps) = text.split_once(':')?;
        let (major, minor) = version.split_once('.')?;
        let capabilities = u64::from_str_radix(caps.strip_prefix("0x")?, 16).ok()?;
        Some(InitOffer { major: major.parse().ok()?, minor: minor.parse().ok()?, capabilities })
    }

    /// A `FUSE_INIT` request as the kernel sends it: `fuse_in_header` + `fuse_init_in`.
    pub fn request(&self) -> Vec<u8> {
        let caps = self.capabilities | FUSE_INIT_EXT;
        let mut body = Vec::with_capacity(64);
        for word in [self.major, self.minor, 1024 * 1024, caps as u32, (caps >> 32) as u32] {
            body.extend_from_slice(&word.to_ne_bytes());
        }
        body.resize(64, 0);
        let mut message = Vec::with_capacity(40 + body.len());
        message.extend_from_slice(&((40 + body.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&FUSE_INIT.to_ne_bytes());
        message.extend_from_slice(&1u64.to_ne_bytes()); // unique
        message.extend_from_slice(&[0; 8 + 4 + 4 + 4 + 4]); // nodeid, uid, gid, pid, padding
        message.extend_from_slice(&body);
        message
    }
}

/// A worker process: the inherited connection and what the supervisor told it.
pub struct Worker {
    fuse: Option<OwnedFd>,
    status: OwnedFd,
    offer: InitOffer,
    /// How many workers served this mount before this one.
    pub restarts: u64,
    /// Why the previous worker stopped, if this is a restart.
    pub reason: Option<String>,
    /// The mount point (never touched by the worker: it would wait on itself).
    pub mount_point: PathBuf,
    /// The log file the supervisor writes, for `--log-directory`.
    pub log_file: Option<PathBuf>,
    /// Where state that survives the worker is kept.
    pub state_dir: Option<PathBuf>,
}

/// True in a worker process.
pub fn is_worker() -> bool {
    std::env::var_os(ENV_FUSE_FD).is_some()
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("mount-s3 worker started without a valid {name}"))
}

fn fd_var(name: &str) -> Result<RawFd, String> {
    var(name)?.parse().map_err(|_| format!("mount-s3 worker started without a valid {name}"))
}

impl Worker {
    /// Reads the worker contract from the environment and takes the inherited descriptors.
    /// Ties the worker's life to the supervisor's (it is killed when the supervisor dies) and
    /// makes it the OOM killer's first choice: its death costs the mount a stall, the
    /// supervisor's would cost the mount.
    pub fn from_env() -> Result<Worker, String> {
        let supervisor: i32 = var(ENV_SUPERVISOR)?.parse().map_err(|_| format!("invalid {ENV_SUPERVISOR}"))?;
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        if nix::unistd::getppid().as_raw() != supervisor {
            return Err("the mount-s3 supervisor is gone".to_string());
        }
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
        let offer = InitOffer::decode(&var(ENV_INIT)?).ok_or_else(|| format!("invalid {ENV_INIT}"))?;
        let fuse = crate::fuse_fd::adopt(fd_var(ENV_FUSE_FD)?)?;
        let status = crate::fuse_fd::inherit(fd_var(ENV_STATUS_FD)?, "status pipe")?;
        let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Ok(Worker {
            fuse: Some(fuse),
            status,
            offer,
            restarts: var(ENV_RESTARTS).ok().and_then(|n| n.parse().ok()).unwrap_or(0),
            reason: std::env::var(ENV_REASON).ok().filter(|r| !r.is_empty()),
            mount_point: path(ENV_MOUNT_POINT).unwrap_or_else(|| PathBuf::from(OsString::from("?"))),
            log_file: path(ENV_LOG_FILE),
            state_dir: path(ENV_STATE_DIR),
        })
    }

    /// A fuser session serving the inherited connection (see the module note). Call once.
    pub fn session<FS: Filesystem>(
        &mut self,
        fs: FS,
        acl: SessionACL,
        config: fuser::Config,
    ) -> Result<Session<FS>, String> {
        let fuse = self.fuse.take().ok_or("the FUSE connection was already taken")?;
        let failed = |e: &dyn std::fmt::Display| format!("cannot take over the FUSE connection: {e}");
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| failed(&e))?;
        let request = self.offer.request();
        // fuser blocks reading INIT: feed it from another thread, and swallow its answer.
        let feeder = std::thread::spawn(move || -> nix::Result<()> {
            nix::unistd::write(&ours, &request)?;
            let mut answer = vec![0u8; 4096];
            nix::unistd::read(ours.as_raw_fd(), &mut answer)?;
            Ok(())
        });
        let session = Session::from_fd(fs, theirs, acl, config).map_err(|e| failed(&e))?;
        feeder.join().map_err(|_| failed(&"the INIT thread panicked"))?.map_err(|e| failed(&e))?;
        let number = session.as_fd().as_raw_fd();
        nix::unistd::dup2(fuse.as_raw_fd(), number).map_err(|e| failed(&e))?;
        let _ = nix::fcntl::fcntl(number, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        drop(fuse);
        if self.restarts > 0 {
            resend(&session);
        }
        Ok(session)
    }

    /// Tells the supervisor that the session is built (the mount is served from now on).
    pub fn report_ready(&self) {
        if let Err(e) = nix::unistd::write(&self.status, READY) {
            warn!("cannot tell the supervisor that the mount is served: {e}");
        }
    }
}

/// Asks the kernel to send again every request a dead worker had read and not answered.
fn resend(connection: &impl AsFd) {
    let mut notification = Vec::with_capacity(16);
    notification.extend_from_slice(&16u32.to_ne_bytes());
    notification.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    notification.extend_from_slice(&0u64.to_ne_bytes());
    match nix::unistd::write(connection, &notification) {
        Ok(_) => info!("asked the kernel to resend requests the previous worker left unanswered"),
        Err(e) => warn!(
            "the kernel cannot resend requests the previous worker left unanswered ({e}; Linux 6.9 or later can): \
             they fail with EINTR or wait forever"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_offer_round_trips_and_builds_a_kernel_shaped_request() {
        let offer = InitOffer { major: 7, minor: 45, capabilities: 0x1_2345_6789 };
        assert_eq!(InitOffer::decode(&offer.encode()), Some(offer));
        assert_eq!(InitOffer::decode("7.45"), None);
        assert_eq!(InitOffer::decode("7:0x1"), None);
        let request = offer.request();
        assert_eq!(request.len(), 104);
        assert_eq!(u32::from_ne_bytes(request[0..4].try_into().unwrap()), 104);
        assert_eq!(u32::from_ne_bytes(request[4..8].try_into().unwrap()), FUSE_INIT);
        assert_eq!(u32::from_ne_bytes(request[44..48].try_into().unwrap()), 45);
        let low = u32::from_ne_bytes(request[52..56].try_into().unwrap());
        let high = u32::from_ne_bytes(request[56..60].try_into().unwrap());
        assert_eq!(((high as u64) << 32) | low as u64, 0x1_2345_6789 | FUSE_INIT_EXT);
    }
}
