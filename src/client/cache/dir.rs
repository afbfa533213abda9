//! [`CacheDir`]: the `--cache` directory, opened so that nobody else decides what is in it.
//!
//! Everything the cache keeps (blocks, the usage counter, the metadata journal) lives under
//! `<DIR>/mount-s3-cache/`, and everything there passes the same checks before it is used:
//! owned by our euid, no group or other write bits (directories: no group or other bits at all),
//! the expected file type, and no symbolic link followed (`O_NOFOLLOW`). `<DIR>` itself may be
//! owned by root (as `/tmp` is) and may be writable by others only if sticky; if it is a symbolic
//! link, the link must be ours or root's. If any check fails, nothing of the cache is used: the
//! caller logs the reason and mounts without it.
//!
//! Every path is resolved under the verified directory handle, not from the root again: the
//! base directory is held open and reached as `/proc/self/fd/N`, which the kernel resolves
//! through the open descriptor (an `openat` without unsafe code), so renaming or replacing a
//! parent of `<DIR>` after the checks changes nothing. Without `/proc`, the checked path is used.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of our directory inside `--cache`.
pub const BASE_NAME: &str = "mount-s3-cache";

/// The verified `<DIR>/mount-s3-cache`, held open.
#[derive(Debug)]
pub struct CacheDir {
    /// Keeps the descriptor that `path` may name alive.
    _base: File,
    /// How to reach the base: `/proc/self/fd/N`, or the checked path.
    path: PathBuf,
    /// `<DIR>/mount-s3-cache`, for messages.
    shown: PathBuf,
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn refused(path: &Path, why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}", path.display()))
}

/// Opens a directory without following a symbolic link in its last component.
fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags(nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW))
        .open(path)
}

fn libc_flags(flags: nix::fcntl::OFlag) -> i32 {
    flags.bits()
}

/// `/proc/self/fd/N` for `file` if it names the same file, else `fallback`.
fn anchored(file: &File, meta: &Metadata, fallback: &Path) -> PathBuf {
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    match std::fs::metadata(&proc_path) {
        Ok(m) if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) => proc_path,
        _ => fallback.to_path_buf(),
    }
}

/// A private directory of ours: owned by our euid, no group or other bits.
fn check_private_dir(meta: &Metadata, shown: &Path) -> io::Result<()> {
    let euid = euid();
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
        return Err(refused(
            shown,
            format!(
                "must be a directory owned by uid {euid} with mode 0700 (it has uid {}, mode {:o})",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A file of ours: a regular file owned by our euid that no one else may write.
pub(crate) fn check_private_file(meta: &Metadata, shown: &Path) -> io::Result<()> {
    let euid = euid();
    if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(refused(
            shown,
            format!(
                "must be a regular file owned by uid {euid} that only its owner can write (it has uid {}, mode {:o})",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Opens (creating, 0600) the file at `path` for reading and `append`ing or writing, without
/// following a symbolic link, and checks it is ours ([`check_private_file`]).
pub(crate) fn open_private_file(path: &Path, append: bool, shown: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).create(true).mode(0o600).custom_flags(libc_flags(nix::fcntl::OFlag::O_NOFOLLOW));
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(false);
    }
    let file = options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
            refused(shown, "is a symbolic link; refusing to follow it".into())
        } else {
            io::Error::new(e.kind(), format!("{}: {e}", shown.display()))
        }
    })?;
    check_private_file(&file.metadata()?, shown)?;
    Ok(file)
}

impl CacheDir {
    /// Creates (0700) and checks `dir` and `dir/mount-s3-cache`; see the module notes.
    pub fn open(dir: &Path) -> io::Result<CacheDir> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let euid = euid();
        let link = std::fs::symlink_metadata(dir)?;
        if link.file_type().is_symlink() && ![0, euid].contains(&link.uid()) {
            return Err(refused(
                dir,
                format!("is a symbolic link owned by uid {}: only ours or root's are followed", link.uid()),
            ));
        }
        let top = OpenOptions::new().read(true).custom_flags(libc_flags(nix::fcntl::OFlag::O_DIRECTORY)).open(dir)?;
        let meta = top.metadata()?;
        if ![0, euid].contains(&meta.uid()) || (meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0) {
            return Err(refused(
                dir,
                format!(
                    "lets other users replace the cache (uid {}, mode {:o}): use a directory owned by uid {euid} \
                     or root that only its owner can write to",
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            ));
        }
        let top_path = anchored(&top, &meta, dir);
        let shown = dir.join(BASE_NAME);
        let base_path = top_path.join(BASE_NAME);
        match DirBuilder::new().mode(0o700).create(&base_path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let base = open_dir_nofollow(&base_path).map_err(|e| nofollow_error(e, &shown))?;
        let base_meta = base.metadata()?;
        check_private_dir(&base_meta, &shown)?;
        let path = anchored(&base, &base_meta, &shown);
        Ok(CacheDir { _base: base, path, shown })
    }

    /// The base directory, resolved through the held descriptor.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<DIR>/mount-s3-cache`, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `path` (under [`CacheDir::path`]) as the user knows it, for messages.
    pub fn show(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.path) {
            Ok(rest) => self.shown.join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Creates (0700) and checks the directory `name` under the base; returns its path.
    pub fn subdir(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.path.join(name);
        match DirBuilder::new().mode(0o700).create(&path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let shown = self.shown.join(name);
        let dir = open_dir_nofollow(&path).map_err(|e| nofollow_error(e, &shown))?;
        check_private_dir(&dir.metadata()?, &shown)?;
        Ok(path)
    }
}

fn nofollow_error(e: io::Error, shown: &Path) -> io::Error {
    if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32)
        || e.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32)
    {
        refused(shown, "is not a directory (a symbolic link or a file); refusing to use it".into())
    } else {
        io::Error::new(e.kind(), format!("{}: {e}", shown.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_fresh_directory_is_accepted_and_paths_resolve_through_the_handle() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("c");
        let cache = CacheDir::open(&dir).unwrap();
        assert!(cache.path().starts_with("/proc/self/fd/"), "{:?}", cache.path());
        let meta = cache.subdir("metadata").unwrap();
        assert!(dir.join("mount-s3-cache/metadata").is_dir());
        assert_eq!(cache.show(&meta.join("x")), dir.join("mount-s3-cache/metadata/x"));
        // Renaming the directory away after the checks does not redirect us.
        std::fs::rename(&dir, parent.path().join("moved")).unwrap();
        std::fs::create_dir(&dir).unwrap();
        open_private_file(&meta.join("f"), true, Path::new("f")).unwrap();
        assert!(parent.path().join("moved/mount-s3-cache/metadata/f").exists());
    }

    #[test]
    fn foreign_owners_open_modes_and_symlinks_are_refused() {
        let parent = tempfile::tempdir().unwrap();
        // Our base directory owned by someone else.
        let theirs = parent.path().join("theirs");
        std::fs::create_dir_all(theirs.join(BASE_NAME)).unwrap();
        std::os::unix::fs::chown(theirs.join(BASE_NAME), Some(65534), Some(65534)).unwrap();
        assert!(CacheDir::open(&theirs).is_err());
        // A base that others may write to.
        let open = parent.path().join("open");
        std::fs::create_dir_all(open.join(BASE_NAME)).unwrap();
        std::fs::set_permissions(open.join(BASE_NAME), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(CacheDir::open(&open).is_err());
        // A base that is a symbolic link (even to a good directory).
        let linked = parent.path().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(parent.path().join("open"), linked.join(BASE_NAME)).unwrap();
        assert!(CacheDir::open(&linked).unwrap_err().to_string().contains("symbolic link"));
        // A file planted inside: a symlink, another owner, group-writable.
        let good = CacheDir::open(&parent.path().join("good")).unwrap();
        let victim = parent.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, good.path().join("link")).unwrap();
        let err = open_private_file(&good.path().join("link"), true, Path::new("link")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::write(good.path().join("foreign"), b"").unwrap();
        std::os::unix::fs::chown(good.path().join("foreign"), Some(65534), None).unwrap();
        assert!(open_private_file(&good.path().join("foreign"), true, Path::new("foreign")).is_err());
        std::fs::write(good.path().join("shared"), b"").unwrap();
        std::fs::set_permissions(good.path().join("shared"), std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(open_private_file(&good.path().join("shared"), true, Path::new("shared")).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // The --cache directory itself: owned by another user.
        let foreign_top = parent.path().join("foreign-top");
        std::fs::create_dir(&foreign_top).unwrap();
        std::os::unix::fs::chown(&foreign_top, Some(65534), None).unwrap();
        assert!(CacheDir::open(&foreign_top).is_err());
    }
}
