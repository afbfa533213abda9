//! Checks on the mount point, made just before mounting (failures exit with status 1, not 2).
//!
//! The directory must exist, be a directory, and not already carry a mount: mounting over an
//! existing mount would hide it, which is never what the user meant. "Already mounted" means the
//! directory appears as a mount point (field 5) in `/proc/self/mountinfo`, except for `autofs`
//! trigger mounts, which exist precisely so that something gets mounted over them.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Where the kernel lists this process's mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Why a directory cannot be mounted on.
#[derive(Debug, thiserror::Error)]
pub enum MountPointError {
    #[error("mount point {} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("mount point {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("mount point {} is already mounted", .0.display())]
    AlreadyMounted(PathBuf),
    #[error("mount point {} is not empty: mounting would hide its files; use an empty directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot check mount point {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks that `path` is an existing directory with nothing mounted on it yet.
pub fn check_mount_point(path: &Path) -> Result<(), MountPointError> {
    let mountinfo = std::fs::read_to_string(MOUNTINFO)
        .map_err(|source| MountPointError::Io { path: PathBuf::from(MOUNTINFO), source })?;
    check_mount_point_with(path, &mountinfo)
}

/// [`check_mount_point`] against a given mountinfo text (for tests).
pub fn check_mount_point_with(path: &Path, mountinfo: &str) -> Result<(), MountPointError> {
    let io_error = |source| MountPointError::Io { path: path.to_owned(), source };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(MountPointError::NotADirectory(path.to_owned())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(MountPointError::NotFound(path.to_owned()));
        }
        Err(err) => {
            // A dead FUSE mount fails stat with ENOTCONN; saying "already mounted" names the
            // fix (unmount it) better than the raw error does.
            return match std::path::absolute(path) {
                Ok(absolute) if is_mounted_at(mountinfo, &absolute) => {
                    Err(MountPointError::AlreadyMounted(path.to_owned()))
                }
                _ => Err(io_error(err)),
            };
        }
    }
    let canonical = std::fs::canonicalize(path).map_err(io_error)?;
    if is_mounted_at(mountinfo, &canonical) {
        return Err(MountPointError::AlreadyMounted(path.to_owned()));
    }
    if std::fs::read_dir(&canonical).map_err(io_error)?.next().is_some() {
        return Err(MountPointError::NotEmpty(path.to_owned()));
    }
    Ok(())
}

/// True when a non-`autofs` mount sits at `path` according to `mountinfo`.
pub fn is_mounted_at(mountinfo: &str, path: &Path) -> bool {
    mountinfo
        .lines()
        .filter_map(parse_line)
        .any(|(mount_point, fs_type)| fs_type != "autofs" && Path::new(&mount_point) == path)
}

/// Field 5 (the mount point, unescaped) and the file-system type (first field after `-`).
fn parse_line(line: &str) -> Option<(OsString, &str)> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let fs_type = fields.skip_while(|field| *field != "-").nth(1)?;
    Some((unescape(mount_point), fs_type))
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                // At most \377 in practice; anything larger is not an escape the kernel writes.
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(mount_point: &str, fs_type: &str) -> String {
        format!("40 27 0:50 / {mount_point} rw,relatime shared:1 - {fs_type} src rw\n")
    }

    #[test]
    fn unescapes_octal_sequences() {
        let cases = [
            ("/mnt/plain", "/mnt/plain"),
            ("/mnt/with\\040space", "/mnt/with space"),
            ("/mnt/tab\\011and\\012newline", "/mnt/tab\tand\nnewline"),
            ("/mnt/back\\134slash", "/mnt/back\\slash"),
            ("/mnt/not\\08escape", "/mnt/not\\08escape"),
            ("/mnt/trailing\\04", "/mnt/trailing\\04"),
        ];
        for (field, expected) in cases {
            assert_eq!(unescape(field), OsString::from(expected), "{field}");
        }
    }

    #[test]
    fn finds_mounts_in_mountinfo() {
        let mountinfo = [
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n".to_owned(),
            line("/mnt/my\\040bucket", "fuse.mountpoint-s3"),
            line("/auto/home", "autofs"),
            line("/auto/both", "autofs"),
            line("/auto/both", "nfs4"),
            // Optional fields before the separator must not confuse the parser.
            "50 27 0:60 / /opt/x rw master:3 propagate_from:2 - ext4 /dev/sda1 rw\n".to_owned(),
            "malformed line\n".to_owned(),
        ]
        .concat();
        let cases = [
            ("/proc", true),
            ("/mnt/my bucket", true),
            ("/mnt/my\\040bucket", false),
            ("/mnt/my", false),
            ("/auto/home", false),
            ("/auto/both", true),
            ("/opt/x", true),
            ("/opt", false),
        ];
        for (path, expected) in cases {
            assert_eq!(is_mounted_at(&mountinfo, Path::new(path)), expected, "{path}");
        }
    }

    #[test]
    fn checks_temp_directories() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mount here");
        std::fs::create_dir(&dir).unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let missing = root.path().join("missing");
        let canonical = std::fs::canonicalize(&dir).unwrap();
        let escaped = canonical.to_str().unwrap().replace(' ', "\\040");

        assert!(check_mount_point_with(&dir, "").is_ok());
        assert!(check_mount_point_with(&dir, &line(&escaped, "autofs")).is_ok());

        let mounted = check_mount_point_with(&dir, &line(&escaped, "fuse.mountpoint-s3")).unwrap_err();
        assert!(matches!(mounted, MountPointError::AlreadyMounted(_)), "{mounted}");
        assert_eq!(mounted.to_string(), format!("mount point {} is already mounted", dir.display()));

        let not_dir = check_mount_point_with(&file, "").unwrap_err();
        assert_eq!(not_dir.to_string(), format!("mount point {} is not a directory", file.display()));

        let not_found = check_mount_point_with(&missing, "").unwrap_err();
        assert_eq!(not_found.to_string(), format!("mount point {} does not exist", missing.display()));

        std::fs::write(dir.join("hidden-by-a-mount"), b"x").unwrap();
        let not_empty = check_mount_point_with(&dir, "").unwrap_err();
        assert!(matches!(not_empty, MountPointError::NotEmpty(_)), "{not_empty}");
        assert!(not_empty.to_string().contains("is not empty"));
    }

    #[test]
    fn follows_symlinks_to_the_mounted_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("real");
        std::fs::create_dir(&dir).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let canonical = std::fs::canonicalize(&dir).unwrap();
        let mountinfo = line(canonical.to_str().unwrap(), "fuse");
        assert!(matches!(check_mount_point_with(&link, &mountinfo), Err(MountPointError::AlreadyMounted(_))));
    }

    #[test]
    fn proc_is_already_mounted_on_this_system() {
        assert!(matches!(check_mount_point(Path::new("/proc")), Err(MountPointError::AlreadyMounted(_))));
    }
}
