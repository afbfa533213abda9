//! System tools some tests drive, with the check for whether they are installed.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// `systemd-analyze verify` of a unit file (whose ExecStart binaries must exist): `None` when
/// the tool is not installed, else its verdict with its complaints.
pub fn systemd_verify(unit: &Path) -> Option<Result<(), String>> {
    let output = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(unit).output().ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Some(if output.status.success() && stderr.trim().is_empty() { Ok(()) } else { Err(stderr) })
}
