//! Upstream Mountpoint's documented tuning environment variables, read once at start.
//!
//! | variable | effect here |
//! |---|---|
//! | `UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE` | cap of one handle's prefetch window, bytes |
//! | `UNSTABLE_MOUNTPOINT_MAX_BACKGROUND` | FUSE `max_background` (default 64) |
//! | `UNSTABLE_MOUNTPOINT_CONGESTION_THRESHOLD` | FUSE `congestion_threshold` (default 3/4 of max_background) |
//! | `UNSTABLE_MOUNTPOINT_CLONE_FUSE_FD` | `true`/`1`: one cloned `/dev/fuse` descriptor per dispatch thread |
//! | `UNSTABLE_MOUNTPOINT_PID_FILE` | file the daemon writes its process id to once mounted |
//! | `UNSTABLE_CRT_EVENTLOOP_THREADS` | threads of the I/O runtime (there is no CRT: same role) |
//! | `UNSTABLE_MOUNTPOINT_CACHE_KEY` | with `--cache`: whose cached data this mount reuses |
//! | `UNSTABLE_MOUNTPOINT_COPY_PART_SIZE` | ours, for tests only: objects larger than this (5 MiB..=5 GiB) are copied in UploadPartCopy parts of this size instead of over 5 GiB in 512 MiB parts |
//!
//! A value that does not parse is a usage error (exit 2) naming the variable: silently ignoring
//! a tuning someone set is worse than refusing to start. `UNSTABLE_MOUNTPOINT_DISABLE_CACHE_CLEANUP`
//! needs no handling (the cache here is kept across mounts anyway, see CONFIGURATION.md).

use std::ffi::OsString;
use std::path::PathBuf;

use super::CliError;

/// The parsed variables; `None`/`false` when unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnstableEnv {
    pub max_prefetch_window: Option<u64>,
    pub max_background: Option<u16>,
    pub congestion_threshold: Option<u16>,
    pub clone_fuse_fd: bool,
    pub pid_file: Option<PathBuf>,
    pub io_threads: Option<usize>,
    /// `UNSTABLE_MOUNTPOINT_CACHE_KEY` when set and not empty.
    pub cache_key: Option<OsString>,
    /// `UNSTABLE_MOUNTPOINT_COPY_PART_SIZE` (tests only: exercises multipart copies with small
    /// objects).
    pub copy_part_size: Option<u64>,
}

/// Looks a variable up (the process environment, or a table in tests).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

impl UnstableEnv {
    /// Reads the process environment.
    pub fn current() -> Result<Self, CliError> {
        Self::read(&|name| std::env::var_os(name))
    }

    /// Reads the variables through `lookup`.
    pub fn read(lookup: Lookup<'_>) -> Result<Self, CliError> {
        Ok(UnstableEnv {
            max_prefetch_window: number(lookup, "UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE", 1)?,
            max_background: number(lookup, "UNSTABLE_MOUNTPOINT_MAX_BACKGROUND", 1)?,
            congestion_threshold: number(lookup, "UNSTABLE_MOUNTPOINT_CONGESTION_THRESHOLD", 1)?,
            clone_fuse_fd: flag(lookup, "UNSTABLE_MOUNTPOINT_CLONE_FUSE_FD")?,
            pid_file: lookup("UNSTABLE_MOUNTPOINT_PID_FILE").filter(|v| !v.is_empty()).map(PathBuf::from),
            io_threads: number(lookup, "UNSTABLE_CRT_EVENTLOOP_THREADS", 1)?,
            cache_key: lookup("UNSTABLE_MOUNTPOINT_CACHE_KEY").filter(|v| !v.is_empty()),
            copy_part_size: copy_part_size(lookup)?,
        })
    }
}

fn number<T: std::str::FromStr + PartialOrd + From<u8>>(
    lookup: Lookup<'_>,
    name: &'static str,
    min: u8,
) -> Result<Option<T>, CliError> {
    let Some(raw) = lookup(name) else { return Ok(None) };
    let text = raw.to_string_lossy();
    match text.trim().parse::<T>() {
        Ok(value) if value >= T::from(min) => Ok(Some(value)),
        _ => Err(CliError::EnvValue { name, value: text.into_owned(), expected: "a whole number of at least 1" }),
    }
}

/// S3's bounds on a copied part: at least 5 MiB (all but the last), at most 5 GiB.
fn copy_part_size(lookup: Lookup<'_>) -> Result<Option<u64>, CliError> {
    const NAME: &str = "UNSTABLE_MOUNTPOINT_COPY_PART_SIZE";
    match number::<u64>(lookup, NAME, 1)? {
        Some(n) if !(5 << 20..=5 << 30).contains(&n) => Err(CliError::EnvValue {
            name: NAME,
            value: n.to_string(),
            expected: "a number of bytes between 5 MiB (5242880) and 5 GiB",
        }),
        n => Ok(n),
    }
}

fn flag(lookup: Lookup<'_>, name: &'static str) -> Result<bool, CliError> {
    let Some(raw) = lookup(name) else { return Ok(false) };
    match raw.to_string_lossy().trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        other => Err(CliError::EnvValue { name, value: other.to_string(), expected: "true or false" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<UnstableEnv, CliError> {
        UnstableEnv::read(&|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v)))
    }

    #[test]
    fn parses_what_upstream_documents() {
        assert_eq!(read(&[]).unwrap(), UnstableEnv::default());
        let env = read(&[
            ("UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE", "67108864"),
            ("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND", "128"),
            ("UNSTABLE_MOUNTPOINT_CONGESTION_THRESHOLD", "96"),
            ("UNSTABLE_MOUNTPOINT_CLONE_FUSE_FD", "true"),
            ("UNSTABLE_MOUNTPOINT_PID_FILE", "/run/m.pid"),
            ("UNSTABLE_CRT_EVENTLOOP_THREADS", "4"),
            ("UNSTABLE_MOUNTPOINT_CACHE_KEY", "pod-1234"),
        ])
        .unwrap();
        assert_eq!(env.max_prefetch_window, Some(64 << 20));
        assert_eq!((env.max_background, env.congestion_threshold), (Some(128), Some(96)));
        assert!(env.clone_fuse_fd);
        assert_eq!(env.pid_file, Some(PathBuf::from("/run/m.pid")));
        assert_eq!(env.io_threads, Some(4));
        assert_eq!(env.cache_key, Some(OsString::from("pod-1234")));
        assert_eq!(read(&[("UNSTABLE_MOUNTPOINT_CACHE_KEY", "")]).unwrap().cache_key, None);
        let copy = read(&[("UNSTABLE_MOUNTPOINT_COPY_PART_SIZE", "5242880")]).unwrap();
        assert_eq!(copy.copy_part_size, Some(5 << 20));
        let err = read(&[("UNSTABLE_MOUNTPOINT_COPY_PART_SIZE", "1024")]).unwrap_err().to_string();
        assert!(err.contains("UNSTABLE_MOUNTPOINT_COPY_PART_SIZE=1024"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE", "2GiB"),
            ("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND", "70000"),
            ("UNSTABLE_CRT_EVENTLOOP_THREADS", "0"),
            ("UNSTABLE_MOUNTPOINT_CLONE_FUSE_FD", "yes please"),
        ] {
            let err = read(&[(name, value)]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{name}=")) && err.contains(value), "{err}");
        }
    }
}
