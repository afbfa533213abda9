//! Interrupting requests whose caller was signalled, although the kernel cannot tell us.
//!
//! fuser 0.18 answers FUSE_INTERRUPT with ENOSYS itself, after which the kernel never sends one
//! again, and a request the daemon has already read is waited for uninterruptibly
//! (`request_wait_answer` in fs/fuse/dev.c): a `stat` stuck on an S3 endpoint that does not
//! answer would ignore Ctrl-C and SIGKILL for the whole retry deadline (about 2 minutes).
//!
//! So a request that may wait on S3 watches its caller instead: after [`FIRST_CHECK`] it reads
//! `/proc/<tid>/status` every [`POLL_INTERVAL`] (FUSE gives the calling thread's id). The request
//! is interrupted when that thread has SIGKILL pending (a fatal signal, SIGKILL or an uncaught
//! SIGINT/SIGTERM, puts SIGKILL in every thread of the process) or a caught, unblocked signal
//! pending (what would have made the kernel send FUSE_INTERRUPT). The adapter then replies
//! EINTR at once and drops the waiting future. Only operations that can be abandoned at any
//! await without leaving anything half-done use this (see `fuse.rs`); a request that finishes
//! before [`FIRST_CHECK`] costs one timer and no file read.

use std::time::Duration;

/// How long a request runs before its caller is first checked.
pub const FIRST_CHECK: Duration = Duration::from_millis(150);
/// How often the caller is checked after that.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Completes once thread `tid` has a signal pending that should interrupt its request; never,
/// if the caller is unknown (`tid` 0: a process in another pid namespace).
pub async fn signalled(tid: u32) {
    if tid == 0 {
        return std::future::pending().await;
    }
    tokio::time::sleep(FIRST_CHECK).await;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status"))
            && interrupts(&status)
        {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// True if a `/proc/<tid>/status` text shows a pending SIGKILL, or a pending signal the thread
/// catches and does not block.
pub fn interrupts(status: &str) -> bool {
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = mask("SigPnd") | mask("ShdPnd");
    let kill = 1u64 << (libc::SIGKILL - 1);
    pending & kill != 0 || pending & mask("SigCgt") & !mask("SigBlk") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pnd: &str, shd: &str, blk: &str, cgt: &str) -> String {
        format!(
            "Name:\tstat\nState:\tD (disk sleep)\nSigQ:\t1/63\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\n\
             SigBlk:\t{blk}\nSigIgn:\t0000000000000000\nSigCgt:\t{cgt}\nCapInh:\t0\n"
        )
    }

    #[test]
    fn pending_sigkill_or_a_caught_unblocked_signal_interrupts() {
        let zero = "0000000000000000";
        // SIGKILL is signal 9: bit 8.
        assert!(interrupts(&status("0000000000000100", zero, zero, zero)));
        assert!(interrupts(&status(zero, "0000000000000100", zero, zero)));
        // SIGINT (2, bit 1) caught and not blocked.
        assert!(interrupts(&status(zero, "0000000000000002", zero, "0000000000000002")));
        // Caught but blocked, or pending but not caught (the default action would be fatal and
        // would have shown as SIGKILL): nothing to do.
        assert!(!interrupts(&status(zero, "0000000000000002", "0000000000000002", "0000000000000002")));
        assert!(!interrupts(&status("0000000000004000", zero, zero, zero)));
        assert!(!interrupts(&status(zero, zero, zero, "ffffffffffffffff")));
        assert!(!interrupts("garbage"));
    }

    #[tokio::test]
    async fn an_unsignalled_caller_is_never_interrupted() {
        let me = nix::unistd::gettid().as_raw() as u32;
        let waited = tokio::time::timeout(FIRST_CHECK + 3 * POLL_INTERVAL, signalled(me)).await;
        assert!(waited.is_err(), "no signal is pending for this test's thread");
    }
}
