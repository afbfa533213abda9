//! [`CliArgs`] -> [`MountConfig`]: checks that span several arguments, the table of flags this
//! version does not implement yet, and the defaults that come from the process environment.
//!
//! Order matters: the whole command line is validated first, exactly as Mountpoint would, and
//! only then are unimplemented features refused. A user therefore learns about a typo before
//! learning that a feature is missing, and a command line we reject today is one Mountpoint
//! accepts.

use std::ffi::OsString;
use std::time::Duration;

use super::args::CliArgs;
use super::error::CliError;
use super::values::{BucketType, UploadChecksums};
use crate::client::aws::AwsClientConfig;
use crate::config::{AccessPolicy, CacheConfig, FuseConfig, LoggingConfig, MountConfig};
use crate::fs::config::{FsConfig, MetadataTtl};
use crate::metrics::{MetricsConfig, RequestPrices};

/// Attempts per S3 request when `AWS_MAX_ATTEMPTS` is unset.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// Metadata TTL implied by a data cache (`--cache`, `--cache-xz`).
const CACHE_METADATA_TTL: Duration = Duration::from_secs(60);

const ZERO_TTL_WARNING: &str = "'--metadata-ttl 0' is deprecated and is treated as \
    'minimal'; use '--metadata-ttl minimal' instead";

/// The parts of the process environment that feed the configuration; passed in explicitly so
/// that tests never touch the real environment.
#[derive(Clone, Debug)]
pub struct Environment {
    /// Effective UID, the default owner of inodes.
    pub uid: u32,
    /// Effective GID, the default group of inodes.
    pub gid: u32,
    /// Value of `AWS_MAX_ATTEMPTS`, if set.
    pub aws_max_attempts: Option<OsString>,
    /// Value of `AWS_CA_BUNDLE`, if set: the environment form of `--ca-bundle`.
    pub aws_ca_bundle: Option<OsString>,
    /// Every `UNSTABLE_*` variable (see [`super::unstable`]).
    pub unstable: std::collections::BTreeMap<String, OsString>,
}

impl Environment {
    /// Reads the current process's environment.
    pub fn current() -> Self {
        Environment {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            aws_max_attempts: std::env::var_os("AWS_MAX_ATTEMPTS"),
            aws_ca_bundle: std::env::var_os("AWS_CA_BUNDLE"),
            unstable: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .filter(|(k, _)| k.starts_with("UNSTABLE_"))
                .collect(),
        }
    }
}

/// A feature that is parsed and validated but not implemented: `used` says whether the command
/// line asks for it. Implementing a feature means deleting its row.
struct Unsupported {
    what: &'static str,
    used: fn(&CliArgs) -> bool,
    fix: &'static str,
}

#[allow(dead_code)] // No feature needs it today; the next unimplemented flag will.
const REMOVE: &str = "remove it from the command line (or fstab options)";

/// Every unimplemented feature, in one place, one line each.
#[rustfmt::skip]
const UNSUPPORTED: &[Unsupported] = &[
    // Writing.
    // Caching.
    // Logging and metrics.
    // Networking.
    // Bucket kinds and mount targets.
];

impl CliArgs {
    /// Validates the arguments and builds the mount configuration, using the current process's
    /// effective UID/GID and `AWS_MAX_ATTEMPTS`.
    pub fn into_config(self) -> Result<MountConfig, CliError> {
        self.into_config_with(&Environment::current())
    }

    /// [`Self::into_config`] with an explicit environment.
    pub fn into_config_with(self, env: &Environment) -> Result<MountConfig, CliError> {
        self.validate()?;
        let (max_attempts, warning) = parse_max_attempts(env.aws_max_attempts.as_ref());
        if let Some(feature) = UNSUPPORTED.iter().find(|feature| (feature.used)(&self)) {
            return Err(CliError::Unsupported { what: feature.what, fix: feature.fix });
        }
        let unstable = super::unstable::UnstableEnv::read(&|name| env.unstable.get(name).cloned())?;
        let mut config = self.build(env, max_attempts);
        if config.fs.incremental_upload && !config.fs.directory_bucket {
            // Mountpoint mounts and its writes then fail; we mount, and write as without the flag.
            config.warnings.push(format!(
                "--incremental-upload has no effect on {}, a general purpose bucket (S3 appends only in directory \
                 buckets): new files are uploaded as usual and appends stay refused; pass --bucket-type directory \
                 if it is a directory bucket",
                crate::escape::escaped(&config.client.bucket)
            ));
            config.fs.incremental_upload = false;
            config.client.head_checksums = false;
        }
        config.warnings.extend(warning);
        config.fs.max_concurrent_requests = concurrency_for_throughput(config.maximum_throughput_gbps);
        if let Some(window) = unstable.max_prefetch_window {
            config.fs.max_prefetch_window = window;
        }
        config.fuse.max_background = unstable.max_background;
        config.fuse.congestion_threshold = unstable.congestion_threshold;
        config.fuse.clone_fd = unstable.clone_fuse_fd;
        if let Some(part) = unstable.copy_part_size {
            config.fs.single_copy_limit = part;
            config.fs.copy_part_size = part;
        }
        config.unstable = unstable;
        Ok(config)
    }

    /// Checks that involve more than one argument (single values were checked by clap).
    fn validate(&self) -> Result<(), CliError> {
        if let Some(prefix) = self.prefix.as_deref().filter(|prefix| !prefix.is_empty())
            && self.bucket_name.is_uri()
        {
            return Err(CliError::PrefixWithUri {
                bucket: self.bucket_name.bucket().to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if crate::fuse_fd::parse(&self.mount_point).is_some() {
            let ignored: Vec<&str> = [(self.read_only, "--read-only"), (self.auto_unmount, "--auto-unmount")]
                .into_iter()
                .filter_map(|(set, flag)| set.then_some(flag))
                .collect();
            if !ignored.is_empty() {
                return Err(CliError::FdMountOptions { options: ignored.join(", ") });
            }
        }
        if self.sse.as_deref() == Some("AES256") && self.sse_kms_key_id.is_some() {
            return Err(CliError::KmsKeyWithAes256);
        }
        if let Some(cache_xz) = &self.cache_xz
            && !cache_xz.uri_prefix().is_empty()
        {
            return Err(CliError::CacheXzPrefix { bucket: cache_xz.bucket().to_owned() });
        }
        if let Some(address) = self.metrics_address
            && !address.ip().is_loopback()
            && !self.metrics_allow_remote
        {
            return Err(CliError::MetricsAddressNotLoopback { address });
        }
        Ok(())
    }

    // `..Default::default()` on complete literals keeps this compiling when other layers add
    // fields to their config structs.
    #[allow(clippy::needless_update)]
    pub(super) fn build(self, env: &Environment, max_attempts: u32) -> MountConfig {
        let bucket = self.bucket_name.bucket().to_owned();
        // `validate` made sure that at most one of the two is non-empty.
        let prefix = match self.prefix {
            Some(prefix) if !prefix.is_empty() => prefix,
            _ => self.bucket_name.uri_prefix().to_owned(),
        };
        let mut warnings = Vec::new();
        // The flag wins over the variable, as for every other setting with both forms.
        let ca_bundle = self.ca_bundle.or_else(|| env.aws_ca_bundle.clone().filter(|v| !v.is_empty()).map(Into::into));

        let has_data_cache = self.cache.is_some() || self.cache_xz.is_some();
        let metadata_ttl = match self.metadata_ttl {
            Some(MetadataTtl::Duration(Duration::ZERO)) => {
                warnings.push(ZERO_TTL_WARNING.to_owned());
                MetadataTtl::Minimal
            }
            Some(ttl) => ttl,
            None if has_data_cache => MetadataTtl::Duration(CACHE_METADATA_TTL),
            None => MetadataTtl::Minimal,
        };
        // A zero negative TTL caches nothing, which is what `minimal` means for negative entries.
        let negative_metadata_ttl = match self.negative_metadata_ttl {
            Some(MetadataTtl::Duration(Duration::ZERO)) => MetadataTtl::Minimal,
            Some(ttl) => ttl,
            None => metadata_ttl,
        };

        let access = if self.allow_other {
            AccessPolicy::All
        } else if self.allow_root {
            AccessPolicy::RootAndOwner
        } else {
            AccessPolicy::Owner
        };

        let fs = FsConfig {
            prefix: prefix.clone(),
            uid: self.uid.unwrap_or(env.uid),
            gid: self.gid.unwrap_or(env.gid),
            dir_mode: self.dir_mode.unwrap_or(0o755),
            file_mode: self.file_mode.unwrap_or(0o644),
            read_only: self.read_only,
            allow_delete: self.allow_delete,
            allow_overwrite: self.allow_overwrite,
            allow_modify: self.allow_modify,
            allow_rename: self.allow_rename,
            rename_dir_limit: self.rename_dir_limit.map_or(crate::fs::config::DEFAULT_RENAME_DIR_LIMIT, |n| n as usize),
            metadata_ttl,
            negative_metadata_ttl,
            read_part_size: self.read_part_size.unwrap_or(self.part_size),
            write_part_size: self.write_part_size.unwrap_or(self.part_size),
            memory_target: self.memory_target.map(|mib| mib.saturating_mul(1024 * 1024)),
            upload_checksums: self.upload_checksums != Some(UploadChecksums::Off),
            storage_class: self.storage_class.clone(),
            sse: self.sse.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
            infer_content_type: self.infer_content_type,
            posix_metadata: self.posix_metadata,
            incremental_upload: self.incremental_upload,
            directory_bucket: match self.bucket_type {
                Some(kind) => kind == BucketType::Directory,
                None => crate::client::is_directory_bucket_name(&bucket),
            },
            ..FsConfig::default()
        };
        let client = AwsClientConfig {
            bucket: bucket.clone(),
            region: self.region,
            endpoint_url: self.endpoint_url,
            force_path_style: self.force_path_style,
            profile: self.profile,
            no_sign_request: self.no_sign_request,
            requester_pays: self.requester_pays,
            expected_bucket_owner: self.expected_bucket_owner,
            user_agent_prefix: self.user_agent_prefix,
            transfer_acceleration: self.transfer_acceleration,
            dual_stack: self.dual_stack,
            max_attempts,
            ca_bundle,
            bind: self.bind.unwrap_or_default(),
            checksum_crc64nvme: self.upload_checksums == Some(UploadChecksums::Crc64nvme),
            head_checksums: self.incremental_upload,
            ..AwsClientConfig::default()
        };
        let fuse = FuseConfig {
            mount_point: self.mount_point,
            read_only: self.read_only,
            auto_unmount: self.auto_unmount,
            access,
            // Only a lower bound is checked; a count that does not fit a usize exceeds any machine.
            max_threads: usize::try_from(self.max_threads).unwrap_or(usize::MAX),
            max_background: None,
            congestion_threshold: None,
            clone_fd: false,
        };
        let logging = LoggingConfig {
            log_directory: self.log_directory,
            debug: self.debug,
            debug_crt: self.debug_crt,
            no_log: self.no_log,
            log_metrics: self.log_metrics,
            ..LoggingConfig::default()
        };
        let metrics = MetricsConfig {
            address: self.metrics_address,
            prices: RequestPrices {
                get: self.cost_per_1k_get,
                put: self.cost_per_1k_put,
                delete: self.cost_per_1k_delete,
            },
            otlp: self.otlp_endpoint.map(|endpoint| crate::metrics::otlp::OtlpConfig {
                endpoint,
                interval: Duration::from_secs(self.otlp_export_interval.unwrap_or(60)),
            }),
        };
        let cache_xz = self.cache_xz.map(|bucket| crate::config::CacheXzConfig {
            bucket: bucket.bucket().to_owned(),
            block_size: self.cache_block_size.unwrap_or(1024).saturating_mul(1024),
        });
        let cache = self.cache.map(|dir| CacheConfig {
            dir,
            max_size: self.max_cache_size.map(|mib| mib.saturating_mul(1024 * 1024)),
            block_size: self.cache_block_size.unwrap_or(1024).saturating_mul(1024),
            wipe_at_start: self.cache_wipe_at_start,
        });
        MountConfig {
            cache,
            cache_xz,
            bucket,
            prefix,
            foreground: self.foreground,
            client,
            fs,
            fuse,
            logging,
            metrics,
            fstab_style: false,
            maximum_throughput_gbps: self.maximum_throughput_gbps,
            warnings,
            unstable: Default::default(),
        }
    }
}

/// Upstream's throughput target when none is given and no instance table applies (Gbps).
pub const DEFAULT_THROUGHPUT_GBPS: u64 = 10;

/// Ranged GETs in flight across the mount for `--maximum-throughput-gbps`: 64 at upstream's
/// default of 10 Gbps (the cap this mount always had), in proportion to the target, between 16
/// and 1,024 (each GET holds one part's memory, which `--memory-target` bounds anyway).
pub fn concurrency_for_throughput(gbps: Option<u64>) -> usize {
    let gbps = gbps.unwrap_or(DEFAULT_THROUGHPUT_GBPS);
    usize::try_from(gbps.saturating_mul(32) / 5).unwrap_or(usize::MAX).clamp(16, 1024)
}

/// `AWS_MAX_ATTEMPTS`: total attempts per request, at least 1. An invalid value is ignored with
/// a warning, as Mountpoint does: the variable is shared with every other AWS tool, and a value
/// one of them accepts should not stop a mount.
fn parse_max_attempts(value: Option<&OsString>) -> (u32, Option<String>) {
    let Some(value) = value else {
        return (DEFAULT_MAX_ATTEMPTS, None);
    };
    match value.to_str().and_then(|s| s.trim().parse::<u32>().ok()).filter(|attempts| *attempts >= 1) {
        Some(attempts) => (attempts, None),
        None => (
            DEFAULT_MAX_ATTEMPTS,
            Some(format!(
                "ignoring AWS_MAX_ATTEMPTS='{}': not a whole number of at least 1; using {DEFAULT_MAX_ATTEMPTS} \
                 attempts per request",
                value.to_string_lossy()
            )),
        ),
    }
}
