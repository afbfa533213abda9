//! [`CliArgs`]: Mountpoint's command-line surface, flag for flag.
//!
//! Names, short forms, value names, defaults, environment variables, help headings, ranges and
//! conflicts follow Mountpoint for Amazon S3 1.24, so that scripts and fstab lines written for it
//! keep working. Whether a flag is implemented is decided later, in `config.rs`; here every flag
//! is accepted and checked the same way Mountpoint checks it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{ArgGroup, Parser, value_parser};

use super::values::{
    BucketArg, BucketType, SSE_VALUES, UploadChecksums, parse_bucket, parse_kms_key_arn, parse_mode,
    parse_otlp_endpoint, parse_prefix, parse_ttl,
};
use crate::fs::config::MetadataTtl;
use crate::metrics::PricePer1k;

const BUCKET: &str = "Bucket options";
const CREDENTIALS: &str = "AWS credentials options";
const MOUNT: &str = "Mount options";
const CLIENT: &str = "Client options";
const LOGGING: &str = "Logging options";
const CACHING: &str = "Caching options";
const ADVANCED: &str = "Advanced options";

/// Part size used for GET and PUT when no size flag is given (8 MiB).
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// Largest part size accepted by the size flags (exclusive), as in Mountpoint.
const MAX_PART_SIZE: u64 = usize::MAX as u64;

const FSTAB_HELP: &str = "\
fstab style (used by mount(8) and /etc/fstab):
  mount-s3 <BUCKET_NAME> <DIRECTORY> -o <OPTIONS>

  <OPTIONS> is a comma-separated list of the long options above without their leading
  dashes, e.g. `ro,allow-other,uid=1000,prefix=logs/`. Write a literal comma, backslash or
  double quote as \\, \\\\ or \\\". `ro` means --read-only; `rw`, `auto`, `noauto`, `user`,
  `nouser`, `users`, `_netdev`, `nofail`, `nodev`, `nosuid` and `x-*` are ignored. The mount
  always runs in the background.";

/// `mount-s3 --version` prints `mount-s3 <this>`: the crate version, plus the git commit when
/// the build sets `MOUNT_S3_GIT_COMMIT`.
pub fn full_version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| match option_env!("MOUNT_S3_GIT_COMMIT") {
        Some(commit) if !commit.is_empty() => format!("{}+{commit}", env!("CARGO_PKG_VERSION")),
        _ => env!("CARGO_PKG_VERSION").to_owned(),
    });
    &VERSION
}

/// Every argument of `mount-s3 [OPTIONS] <BUCKET_NAME> <DIRECTORY>`.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "mount-s3",
    about = "Mount an Amazon S3 bucket (or a prefix of it) as a local file system",
    version = full_version(),
    after_help = FSTAB_HELP,
    group(ArgGroup::new("cache_group").multiple(true)),
)]
pub struct CliArgs {
    /// Bucket to mount: a bucket name, an access point ARN or alias, or an S3 URI
    /// (s3://bucket/prefix/)
    #[arg(value_name = "BUCKET_NAME", value_parser = parse_bucket)]
    pub bucket_name: BucketArg,

    /// Existing directory to mount the bucket on
    #[arg(value_name = "DIRECTORY")]
    pub mount_point: PathBuf,

    /// Mount only the keys under this prefix, which must end in '/' [default: the whole bucket]
    #[arg(long, help_heading = BUCKET, value_parser = parse_prefix)]
    pub prefix: Option<String>,

    /// AWS region of the bucket [default: detected from the environment, then from the bucket]
    #[arg(long, help_heading = BUCKET)]
    pub region: Option<String>,

    /// S3 endpoint URL, e.g. for an S3-compatible store [default: derived from the region]
    #[arg(long, help_heading = BUCKET)]
    pub endpoint_url: Option<String>,

    /// Address the bucket as https://endpoint/bucket/ rather than https://bucket.endpoint/
    #[arg(long, help_heading = BUCKET)]
    pub force_path_style: bool,

    /// Use the S3 Transfer Acceleration endpoint (acceleration must be enabled on the bucket)
    #[arg(long, help_heading = BUCKET)]
    pub transfer_acceleration: bool,

    /// Use dual-stack (IPv4 and IPv6) S3 endpoints
    #[arg(long, help_heading = BUCKET)]
    pub dual_stack: bool,

    /// Send 'x-amz-request-payer: requester' so that the requester pays for requests and transfer
    #[arg(long, help_heading = BUCKET)]
    pub requester_pays: bool,

    /// Kind of bucket being mounted [default: inferred from the bucket name]
    #[arg(long, help_heading = BUCKET, value_enum)]
    pub bucket_type: Option<BucketType>,

    /// Storage class of objects written through the mount [default: the bucket's default]
    #[arg(long, help_heading = BUCKET)]
    pub storage_class: Option<String>,

    /// Require the bucket to belong to this AWS account; requests to a bucket owned by anyone
    /// else fail with access denied
    #[arg(long, help_heading = BUCKET, value_name = "AWS_ACCOUNT_ID")]
    pub expected_bucket_owner: Option<String>,

    /// Server-side encryption for objects written through the mount [default: the bucket's
    /// default]
    #[arg(long, help_heading = BUCKET, value_parser = SSE_VALUES)]
    pub sse: Option<String>,

    /// ARN of the KMS key used with --sse aws:kms or aws:kms:dsse (key IDs, aliases and alias
    /// ARNs are not accepted)
    #[arg(long, help_heading = BUCKET, value_name = "AWS_KMS_KEY_ARN", requires = "sse", value_parser = parse_kms_key_arn)]
    pub sse_kms_key_id: Option<String>,

    /// Additional checksum sent with uploads [default: crc32c]
    #[arg(long, help_heading = BUCKET, value_name = "ALGORITHM", value_enum)]
    pub upload_checksums: Option<UploadChecksums>,

    /// Set each new object's Content-Type from its file extension [default: binary/octet-stream]
    #[arg(long, help_heading = BUCKET)]
    pub infer_content_type: bool,

    /// Send unsigned requests; no credentials are loaded (for public buckets)
    #[arg(long, help_heading = CREDENTIALS)]
    pub no_sign_request: bool,

    /// Named profile from the AWS config and credentials files [default: AWS_PROFILE or 'default']
    #[arg(long, help_heading = CREDENTIALS)]
    pub profile: Option<String>,

    /// Mount read-only
    #[arg(long, help_heading = MOUNT)]
    pub read_only: bool,

    /// Allow deleting files (and so their objects)
    #[arg(long, help_heading = MOUNT)]
    pub allow_delete: bool,

    /// Allow replacing existing files (and so their objects)
    #[arg(long, help_heading = MOUNT)]
    pub allow_overwrite: bool,

    /// Allow modifying existing files (appends, writes in place, truncate): staged on local disk
    /// and uploaded whole at close or fsync
    #[arg(long, help_heading = MOUNT)]
    pub allow_modify: bool,
    /// Allow renaming files and directories (server-side copy, then delete; not atomic to
    /// other clients)
    #[arg(long, help_heading = MOUNT)]
    pub allow_rename: bool,

    /// Most objects a directory rename may copy; larger directories fail with EXDEV [default: 1000]
    #[arg(long, help_heading = MOUNT, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rename_dir_limit: Option<u64>,

    /// Keep POSIX attributes (mode, owner, times) and symbolic links in each object's user
    /// metadata, in the conventions s3fs uses and rclone reads; chmod, chown and utimes then work
    #[arg(long, help_heading = MOUNT)]
    pub posix_metadata: bool,

    /// Upload writes incrementally and allow appending to existing objects (directory buckets)
    #[arg(long, help_heading = MOUNT)]
    pub incremental_upload: bool,

    /// Unmount the file system when the mount-s3 process exits
    #[arg(long, help_heading = MOUNT)]
    pub auto_unmount: bool,

    /// Let root use the mount as well as the mounting user
    #[arg(long, help_heading = MOUNT)]
    pub allow_root: bool,

    /// Let every user, root included, use the mount (non-root mounts need user_allow_other in
    /// /etc/fuse.conf)
    #[arg(long, help_heading = MOUNT, conflicts_with = "allow_root")]
    pub allow_other: bool,

    /// Owner of every file and directory [default: your effective UID]
    #[arg(long, help_heading = MOUNT, value_parser = value_parser!(u32).range(1..))]
    pub uid: Option<u32>,

    /// Group of every file and directory [default: your effective GID]
    #[arg(long, help_heading = MOUNT, value_parser = value_parser!(u32).range(1..))]
    pub gid: Option<u32>,

    /// Permission bits of directories, in octal [default: 0755]
    #[arg(long, help_heading = MOUNT, value_parser = parse_mode)]
    pub dir_mode: Option<u16>,

    /// Permission bits of files, in octal [default: 0644]
    #[arg(long, help_heading = MOUNT, value_parser = parse_mode)]
    pub file_mode: Option<u16>,

    /// Stay in the foreground instead of running as a background daemon
    #[arg(short, long)]
    pub foreground: bool,

    /// Network throughput to aim for, in gigabits per second [default: from the EC2 instance
    /// type, else 10]
    #[arg(long, help_heading = CLIENT, value_name = "N", value_parser = value_parser!(u64).range(1..))]
    pub maximum_throughput_gbps: Option<u64>,

    /// Most FUSE requests handled at once
    #[arg(long, help_heading = CLIENT, value_name = "N", default_value = "16", value_parser = value_parser!(u64).range(1..))]
    pub max_threads: u64,

    /// Memory to aim to stay within, in MiB (at least 512) [default: 95% of system memory]
    #[arg(long, help_heading = CLIENT, value_name = "MiB", value_parser = value_parser!(u64).range(512..))]
    pub memory_target: Option<u64>,

    /// Size in bytes of both GET ranges and upload parts (superseded by --read-part-size and
    /// --write-part-size)
    #[arg(long, help_heading = CLIENT, value_name = "SIZE", default_value = "8388608", value_parser = value_parser!(u64).range(1..MAX_PART_SIZE))]
    pub part_size: u64,

    /// Size in bytes of each ranged GET [default: 8388608]
    #[arg(long, help_heading = CLIENT, value_name = "SIZE", conflicts_with = "part_size", value_parser = value_parser!(u64).range(1..MAX_PART_SIZE))]
    pub read_part_size: Option<u64>,

    /// Size in bytes of each multipart-upload part; objects can grow to 10,000 parts
    /// [default: 8388608]
    #[arg(long, help_heading = CLIENT, value_name = "SIZE", conflicts_with = "part_size", value_parser = value_parser!(u64).range(1..MAX_PART_SIZE))]
    pub write_part_size: Option<u64>,

    /// Network interface to send requests through; repeat to spread requests over several
    /// (needs Linux 5.7+ or root)
    #[arg(long, help_heading = CLIENT, value_name = "NETWORK_INTERFACE")]
    pub bind: Option<Vec<String>>,

    /// Write logs to a new file in this directory [default: syslog]
    #[arg(short, long, help_heading = LOGGING, value_name = "DIRECTORY")]
    pub log_directory: Option<PathBuf>,

    /// Log metric summaries every 5 seconds, and the estimated S3 request cost at unmount
    #[arg(long, help_heading = LOGGING)]
    pub log_metrics: bool,

    /// Publish metrics to this OpenTelemetry (OTLP/HTTP) endpoint
    #[arg(long, help_heading = LOGGING, value_name = "ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// Seconds between OTLP metric exports [default: 60]
    #[arg(long, help_heading = LOGGING, value_name = "SECONDS", requires = "otlp_endpoint", value_parser = value_parser!(u64).range(1..))]
    pub otlp_export_interval: Option<u64>,

    /// Log at debug level
    #[arg(short, long, help_heading = LOGGING)]
    pub debug: bool,

    /// Log the S3 client's HTTP and SDK layers at debug level
    #[arg(long, help_heading = LOGGING)]
    pub debug_crt: bool,

    /// Serve metrics in Prometheus text format at http://ADDRESS:PORT/metrics, e.g.
    /// 127.0.0.1:9464 (port 0 picks a free port; the log names it)
    #[arg(long, help_heading = LOGGING, value_name = "ADDRESS:PORT")]
    pub metrics_address: Option<SocketAddr>,

    /// Let --metrics-address listen on an address other than loopback (anyone who can reach it
    /// can read the metrics)
    #[arg(long, help_heading = LOGGING, requires = "metrics_address")]
    pub metrics_allow_remote: bool,

    /// US dollars per 1,000 GET, HEAD and other requests, for the request cost estimate
    /// (S3 "Tier 2"; the default is the S3 Standard price in us-east-1)
    #[arg(long, help_heading = LOGGING, value_name = "USD", default_value = "0.0004")]
    pub cost_per_1k_get: PricePer1k,

    /// US dollars per 1,000 PUT, COPY, POST and LIST requests, multipart parts included, for
    /// the request cost estimate (S3 "Tier 1"; the default is the S3 Standard price in us-east-1)
    #[arg(long, help_heading = LOGGING, value_name = "USD", default_value = "0.005")]
    pub cost_per_1k_put: PricePer1k,

    /// US dollars per 1,000 DELETE and multipart-abort requests, for the request cost estimate
    /// (free on S3)
    #[arg(long, help_heading = LOGGING, value_name = "USD", default_value = "0")]
    pub cost_per_1k_delete: PricePer1k,

    /// Turn logging off (messages printed on stdout still appear)
    #[arg(long, help_heading = LOGGING, conflicts_with_all = ["log_directory", "debug", "debug_crt", "log_metrics"])]
    pub no_log: bool,

    /// Cache object content in this local directory; also makes the metadata TTL 60 seconds
    #[arg(long, help_heading = CACHING, value_name = "DIRECTORY", group = "cache_group")]
    pub cache: Option<PathBuf>,

    /// How long file and directory metadata may be reused without asking S3 again
    /// [default: minimal, or 60 seconds with --cache]
    #[arg(long, help_heading = CACHING, value_name = "SECONDS|indefinite|minimal", value_parser = parse_ttl)]
    pub metadata_ttl: Option<MetadataTtl>,

    /// How long "no such file" answers may be reused [default: the metadata TTL]
    #[arg(long, help_heading = CACHING, value_name = "SECONDS|indefinite|minimal", value_parser = parse_ttl)]
    pub negative_metadata_ttl: Option<MetadataTtl>,

    /// Largest size of the --cache directory, in MiB; 0 turns the local cache off
    /// [default: keep 5% of the file system free]
    #[arg(long, help_heading = CACHING, value_name = "MiB", requires = "cache", value_parser = value_parser!(u64))]
    pub max_cache_size: Option<u64>,

    /// Size of a cache block in KiB [default: 1024]
    #[arg(long, help_heading = CACHING, value_name = "KiB", requires = "cache_group", hide = true, value_parser = value_parser!(u64).range(1..))]
    pub cache_block_size: Option<u64>,

    /// Empty the --cache directory when mounting, as Mountpoint does (by default valid blocks
    /// and, with --metadata-ttl indefinite, known metadata survive remounts)
    #[arg(long, help_heading = CACHING, requires = "cache")]
    pub cache_wipe_at_start: bool,

    /// Also cache object content in this bucket, shared by every node mounting the same bucket: an
    /// S3 Express One Zone directory bucket (same region) or any bucket the client reaches; no
    /// prefix
    #[arg(long, help_heading = CACHING, value_name = "BUCKET", group = "cache_group", value_parser = parse_bucket)]
    pub cache_xz: Option<BucketArg>,

    /// Text to put in front of the User-Agent header of every S3 request
    #[arg(long, help_heading = ADVANCED, value_name = "PREFIX")]
    pub user_agent_prefix: Option<String>,

    /// PEM file of certificate authorities to trust instead of the system's [env: AWS_CA_BUNDLE]
    // AWS_CA_BUNDLE is read through `Environment`, not clap's `env`, so that tests do not depend
    // on the environment they run in.
    #[arg(long, help_heading = ADVANCED, value_name = "PATH")]
    pub ca_bundle: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_is_well_formed() {
        CliArgs::command().debug_assert();
    }

    #[test]
    fn help_groups_flags_under_mountpoint_headings() {
        let help = CliArgs::command().render_help().to_string();
        let headings = [BUCKET, CREDENTIALS, MOUNT, CLIENT, LOGGING, CACHING, ADVANCED];
        let mut last = 0;
        for heading in headings {
            let at = help.find(&format!("{heading}:")).unwrap_or_else(|| panic!("{heading} missing:\n{help}"));
            assert!(at > last, "{heading} out of order:\n{help}");
            last = at;
        }
        for flag in ["<BUCKET_NAME>", "<DIRECTORY>", "--prefix <PREFIX>", "--expected-bucket-owner <AWS_ACCOUNT_ID>"] {
            assert!(help.contains(flag), "{flag} missing:\n{help}");
        }
        assert!(help.contains("--max-threads <N>"), "{help}");
        assert!(help.contains("[default: 16]"), "{help}");
        assert!(help.contains("--ca-bundle <PATH>"), "{help}");
        assert!(help.contains("[env: AWS_CA_BUNDLE]"), "{help}");
        assert!(!help.contains("--cache-block-size"), "hidden as in Mountpoint release builds");
    }
}
