//! FUSE file-descriptor mounts: `mount-s3 BUCKET /dev/fd/N`.
//!
//! Another process (the Mountpoint CSI driver v2, a test harness) opened `/dev/fuse`, called
//! mount(2) itself with `fd=N,rootmode=40000,user_id=U,group_id=G,...`, and started us with the
//! descriptor inherited as N. We then only serve the connection: no mount(2), no mountinfo, no
//! sysfs, no root. The caller owns the mount, so what mount(2) decides (read-only,
//! `allow_other`, `default_permissions`) is the caller's: `--read-only` and `--auto-unmount`
//! cannot apply and are refused at argument time, and access is left to the kernel (the session
//! admits every uid the kernel lets through, since `allow_other` was the caller's decision).
//!
//! Before adopting the descriptor we check that it is open, is the FUSE device (character
//! device 10:229) and is open for reading and writing, so a wrong N fails the mount with a
//! message instead of serving nothing.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::{SFlag, fstat, major, minor};

/// The FUSE device's major and minor numbers (`/dev/fuse` is `c 10 229` on Linux).
const FUSE_DEVICE: (u64, u64) = (10, 229);

/// Parses `/dev/fd/N` (only that exact form; `/proc/self/fd/N` would re-open the device and
/// get a new, unmounted connection).
pub fn parse(path: &std::path::Path) -> Option<RawFd> {
    let digits = path.to_str()?.strip_prefix("/dev/fd/")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks that descriptor `fd` is an open `/dev/fuse` opened read-write, then takes ownership.
pub fn adopt(fd: RawFd) -> Result<OwnedFd, String> {
    check(fd)?;
    Ok(take_ownership(fd))
}

/// Takes ownership of descriptor `fd`, inherited from the process that started us (the
/// supervisor's status pipe, [`crate::supervisor`]), after checking that it is open.
pub fn inherit(fd: RawFd, what: &str) -> Result<OwnedFd, String> {
    fstat(fd).map_err(|e| format!("the inherited {what} (descriptor {fd}) is not open: {e}"))?;
    Ok(take_ownership(fd))
}

/// The checks of [`adopt`], without taking ownership.
pub fn check(fd: RawFd) -> Result<(), String> {
    let what = format!("/dev/fd/{fd}");
    let stat = fstat(fd).map_err(|e| {
        format!("{what} is not an open file descriptor ({e}): the caller must open /dev/fuse, mount it and pass the descriptor")
    })?;
    let is_char = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    let device = (major(stat.st_rdev), minor(stat.st_rdev));
    if !is_char || device != FUSE_DEVICE {
        return Err(format!(
            "{what} is not a FUSE device (/dev/fuse): pass the descriptor of an opened and mounted /dev/fuse"
        ));
    }
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("cannot read the flags of {what}: {e}"))?;
    if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE != OFlag::O_RDWR {
        return Err(format!("{what} is not open for reading and writing: open /dev/fuse with O_RDWR"));
    }
    Ok(())
}

/// Makes the inherited descriptor an [`OwnedFd`].
///
/// The one place in the crate that needs `unsafe`: Rust's I/O safety cannot know that a number
/// handed to us on the command line (or by the supervisor, in the environment) names a
/// descriptor nobody else owns. It does: the caller passed it for us to serve, [`check`] or
/// [`inherit`] has just seen it open, and this is called once per descriptor, at startup, before
/// anything else in the process could have opened or closed descriptors.
#[allow(unsafe_code)]
fn take_ownership(fd: RawFd) -> OwnedFd {
    // SAFETY: see above: `fd` is open (fstat succeeded) and owned by nothing else in this process.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    #[test]
    fn parses_only_dev_fd_numbers() {
        assert_eq!(parse(Path::new("/dev/fd/3")), Some(3));
        assert_eq!(parse(Path::new("/dev/fd/17")), Some(17));
        for other in ["/dev/fd/", "/dev/fd/x", "/dev/fd/3/", "/proc/self/fd/3", "/mnt/s3", "dev/fd/3", "/dev/fd/-1"] {
            assert_eq!(parse(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_open_fuse_device() {
        let file = tempfile::tempfile().unwrap();
        let err = check(file.as_raw_fd()).unwrap_err();
        assert!(err.contains("is not a FUSE device"), "{err}");
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(check(null.as_raw_fd()).unwrap_err().contains("is not a FUSE device"));
        let closed = 1_000_000;
        assert!(check(closed).unwrap_err().contains("is not an open file descriptor"));
        if let Ok(fuse) = std::fs::File::open("/dev/fuse") {
            let err = check(fuse.as_raw_fd()).unwrap_err();
            assert!(err.contains("not open for reading and writing"), "{err}");
        }
    }
}
