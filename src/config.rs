//! The whole validated configuration of one mount, produced by `cli` and consumed by `run`.

use std::path::PathBuf;

use crate::client::aws::AwsClientConfig;
use crate::fs::config::FsConfig;
use crate::metrics::MetricsConfig;

/// Who besides the mounting user may use the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccessPolicy {
    /// Only the user who mounted (FUSE default).
    #[default]
    Owner,
    /// `--allow-root`: the owner and root.
    RootAndOwner,
    /// `--allow-other`: every user (needs `user_allow_other` in /etc/fuse.conf for non-root).
    All,
}

/// FUSE session settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuseConfig {
    pub mount_point: PathBuf,
    pub read_only: bool,
    pub auto_unmount: bool,
    pub access: AccessPolicy,
    /// `--max-threads`: FUSE dispatch threads.
    pub max_threads: usize,
    /// `UNSTABLE_MOUNTPOINT_MAX_BACKGROUND`: the kernel's `max_background` (default 64).
    pub max_background: Option<u16>,
    /// `UNSTABLE_MOUNTPOINT_CONGESTION_THRESHOLD` (default 3/4 of `max_background`).
    pub congestion_threshold: Option<u16>,
    /// `UNSTABLE_MOUNTPOINT_CLONE_FUSE_FD`: a cloned `/dev/fuse` descriptor per dispatch thread.
    pub clone_fd: bool,
}

/// Where logs go and how much.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LoggingConfig {
    /// `-l/--log-directory`; `None` means syslog (or stdout in the foreground).
    pub log_directory: Option<PathBuf>,
    /// `-d/--debug`.
    pub debug: bool,
    /// `--debug-crt`: debug logs of the HTTP/SDK layers (there is no CRT here).
    pub debug_crt: bool,
    /// `--no-log`.
    pub no_log: bool,
    /// `--log-metrics`.
    pub log_metrics: bool,
}

/// The local disk cache (`--cache` and friends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// `--cache DIR`.
    pub dir: PathBuf,
    /// `--max-cache-size` in bytes; `None`: keep 5% of the file system free; `Some(0)`: off.
    pub max_size: Option<u64>,
    /// `--cache-block-size` in bytes.
    pub block_size: u64,
    /// `--cache-wipe-at-start`.
    pub wipe_at_start: bool,
}

/// The shared cache (`--cache-xz`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheXzConfig {
    /// The cache bucket (no prefix).
    pub bucket: String,
    /// `--cache-block-size` in bytes (1 MiB by default); part of every block key.
    pub block_size: u64,
}

/// Everything `run` needs to mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountConfig {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
    pub foreground: bool,
    pub client: AwsClientConfig,
    pub fs: FsConfig,
    pub fuse: FuseConfig,
    pub logging: LoggingConfig,
    /// `--metrics-address` and the request prices of the cost estimate.
    pub metrics: MetricsConfig,
    /// `--cache`: the local disk block cache.
    pub cache: Option<CacheConfig>,
    /// `--cache-xz`: the shared cache bucket.
    pub cache_xz: Option<CacheXzConfig>,
    /// The command line came in fstab (`-o`) style.
    pub fstab_style: bool,
    /// `--maximum-throughput-gbps`: network throughput to aim for, which sizes S3 request
    /// concurrency. `None`: decided at mount time (Mountpoint: EC2 instance table, else 10 Gbps).
    pub maximum_throughput_gbps: Option<u64>,
    /// Warnings found while validating the command line (for example `--metadata-ttl 0`).
    /// `cli::parse_command_line` has already printed them to stderr; `run` may log them again
    /// once logging is set up, so that they also reach the log file.
    pub warnings: Vec<String>,
    /// The `UNSTABLE_*` tuning variables (PID file, I/O threads; the rest is copied into `fs`
    /// and `fuse`).
    pub unstable: crate::cli::unstable::UnstableEnv,
}

impl MountConfig {
    /// "bucket B" or "prefix P of bucket B", as in the mount message.
    pub fn describe_target(&self) -> String {
        if self.prefix.is_empty() {
            format!("bucket {}", self.bucket)
        } else {
            format!("prefix {} of bucket {}", self.prefix, self.bucket)
        }
    }
}
