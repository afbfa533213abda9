//! Build script: puts the git commit into `mount-s3 --version` (`0.1.0+abc1234`).
//!
//! Sets `MOUNT_S3_GIT_COMMIT` for the compiler from, in order: the same variable in the build's
//! environment (packagers building from a tarball), else `git rev-parse --short HEAD`. Outside a
//! git checkout, or without git, it sets nothing and the version is the crate version alone;
//! it never fails the build. It reruns when HEAD moves (also in a git worktree, where `.git` is
//! a file), not on every build.

use std::path::PathBuf;
use std::process::Command;

const VAR: &str = "MOUNT_S3_GIT_COMMIT";

fn main() {
    println!("cargo:rerun-if-env-changed={VAR}");
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(commit) = std::env::var(VAR).ok().filter(|c| !c.trim().is_empty()) {
        println!("cargo:rustc-env={VAR}={}", commit.trim());
        return;
    }
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else { return };
    println!("cargo:rustc-env={VAR}={commit}");
    // HEAD itself, and the branch it points to (loose or packed), wherever git keeps them.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten().map(PathBuf::from).filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed output of a successful `git` command, run in the package directory.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let output = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
