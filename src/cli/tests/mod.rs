//! End-to-end tests of the command line: argv in, `MountConfig` or error out.
//!
//! This file covers what is accepted; `rejections.rs` covers what is refused.

mod rejections;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::client::aws::AwsClientConfig;
use crate::config::{AccessPolicy, FuseConfig, LoggingConfig};
use crate::fs::config::{FsConfig, MetadataTtl};
use crate::metrics::MetricsConfig;

const UID: u32 = 1234;
const GID: u32 = 5678;

fn env() -> Environment {
    Environment { uid: UID, gid: GID, aws_max_attempts: None, aws_ca_bundle: None, unstable: Default::default() }
}

/// `mount-s3 <args...>`.
fn parse(args: &[&str]) -> Result<MountConfig, CliFailure> {
    parse_env(args, &env())
}

fn parse_env(args: &[&str], env: &Environment) -> Result<MountConfig, CliFailure> {
    let argv = std::iter::once("mount-s3").chain(args.iter().copied()).map(OsString::from).collect();
    parse_command_line_with(argv, env)
}

/// What `mount-s3 bucket /mnt` produces.
fn default_config() -> MountConfig {
    MountConfig {
        bucket: "bucket".into(),
        cache: None,
        cache_xz: None,
        prefix: String::new(),
        foreground: false,
        client: AwsClientConfig { bucket: "bucket".into(), max_attempts: 10, ..AwsClientConfig::default() },
        fs: FsConfig { uid: UID, gid: GID, ..FsConfig::default() },
        fuse: FuseConfig {
            mount_point: PathBuf::from("/mnt"),
            read_only: false,
            auto_unmount: false,
            access: AccessPolicy::Owner,
            max_threads: 16,
            max_background: None,
            congestion_threshold: None,
            clone_fd: false,
        },
        logging: LoggingConfig::default(),
        metrics: MetricsConfig::default(),
        fstab_style: false,
        maximum_throughput_gbps: None,
        warnings: Vec::new(),
        unstable: Default::default(),
    }
}

fn secs(s: u64) -> MetadataTtl {
    MetadataTtl::Duration(Duration::from_secs(s))
}

#[test]
fn defaults() {
    let config = parse(&["bucket", "/mnt"]).unwrap();
    assert_eq!(config, default_config());
    assert_eq!(config.fs.dir_mode, 0o755);
    assert_eq!(config.fs.file_mode, 0o644);
    assert_eq!(config.fs.read_part_size, 8_388_608);
    assert_eq!(config.fs.write_part_size, 8_388_608);
    assert_eq!(config.fs.metadata_ttl, MetadataTtl::Minimal);
    assert_eq!(config.fs.negative_metadata_ttl, MetadataTtl::Minimal);
}

#[test]
fn default_owner_is_the_effective_user() {
    let config =
        parse_command_line_with(["mount-s3", "bucket", "/mnt"].map(OsString::from).to_vec(), &Environment::current())
            .unwrap();
    assert_eq!(config.fs.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(config.fs.gid, nix::unistd::getegid().as_raw());
}

/// Every supported flag, and what it changes relative to [`default_config`].
#[test]
fn supported_flags_fill_the_config() {
    type Edit = fn(&mut MountConfig);
    let cases: &[(&[&str], Edit)] = &[
        (&["--prefix", "logs/"], |c| {
            c.prefix = "logs/".into();
            c.fs.prefix = "logs/".into();
        }),
        (&["--prefix="], |_| {}),
        (&["--region", "eu-west-1"], |c| c.client.region = Some("eu-west-1".into())),
        (&["--endpoint-url", "http://localhost:9000"], |c| {
            c.client.endpoint_url = Some("http://localhost:9000".into())
        }),
        (&["--force-path-style"], |c| c.client.force_path_style = true),
        (&["--transfer-acceleration"], |c| c.client.transfer_acceleration = true),
        (&["--dual-stack"], |c| c.client.dual_stack = true),
        (&["--requester-pays"], |c| c.client.requester_pays = true),
        (&["--bucket-type", "general-purpose"], |_| {}),
        (&["--bucket-type", "directory"], |c| c.fs.directory_bucket = true),
        (&["--expected-bucket-owner", "111122223333"], |c| {
            c.client.expected_bucket_owner = Some("111122223333".into())
        }),
        (&["--no-sign-request"], |c| c.client.no_sign_request = true),
        (&["--profile", "dev"], |c| c.client.profile = Some("dev".into())),
        (&["--read-only"], |c| {
            c.fs.read_only = true;
            c.fuse.read_only = true;
        }),
        (&["-f"], |c| c.foreground = true),
        (&["--foreground"], |c| c.foreground = true),
        (&["--auto-unmount"], |c| c.fuse.auto_unmount = true),
        (&["--allow-other"], |c| c.fuse.access = AccessPolicy::All),
        (&["--allow-root"], |c| c.fuse.access = AccessPolicy::RootAndOwner),
        (&["--uid", "1", "--gid", "4294967295"], |c| {
            c.fs.uid = 1;
            c.fs.gid = u32::MAX;
        }),
        (&["--dir-mode", "0700", "--file-mode", "600"], |c| {
            c.fs.dir_mode = 0o700;
            c.fs.file_mode = 0o600;
        }),
        (&["--max-threads", "1"], |c| c.fuse.max_threads = 1),
        (&["--maximum-throughput-gbps", "100"], |c| {
            c.maximum_throughput_gbps = Some(100);
            c.fs.max_concurrent_requests = 640;
        }),
        (&["--maximum-throughput-gbps", "1"], |c| {
            c.maximum_throughput_gbps = Some(1);
            c.fs.max_concurrent_requests = 16;
        }),
        (&["--otlp-endpoint", "http://127.0.0.1:4318", "--otlp-export-interval", "5"], |c| {
            c.metrics.otlp = Some(crate::metrics::otlp::OtlpConfig {
                endpoint: "http://127.0.0.1:4318".into(),
                interval: Duration::from_secs(5),
            })
        }),
        (&["--memory-target", "512"], |c| c.fs.memory_target = Some(512 << 20)),
        (&["--part-size", "1048576"], |c| {
            c.fs.read_part_size = 1 << 20;
            c.fs.write_part_size = 1 << 20;
        }),
        (&["--read-part-size", "1"], |c| c.fs.read_part_size = 1),
        (&["--write-part-size", "16777216"], |c| c.fs.write_part_size = 16 << 20),
        (&["--user-agent-prefix", "my-app/1.0"], |c| c.client.user_agent_prefix = Some("my-app/1.0".into())),
        (&["-l", "/var/log/mp"], |c| c.logging.log_directory = Some("/var/log/mp".into())),
        (&["--log-directory=/tmp/l"], |c| c.logging.log_directory = Some("/tmp/l".into())),
        (&["-d"], |c| c.logging.debug = true),
        (&["--debug", "--debug-crt"], |c| {
            c.logging.debug = true;
            c.logging.debug_crt = true;
        }),
        (&["--no-log"], |c| c.logging.no_log = true),
        (&["--log-metrics"], |c| c.logging.log_metrics = true),
        (&["--metrics-address", "127.0.0.1:9464"], |c| c.metrics.address = Some("127.0.0.1:9464".parse().unwrap())),
        (&["--metrics-address", "[::1]:0"], |c| c.metrics.address = Some("[::1]:0".parse().unwrap())),
        (&["--metrics-address", "0.0.0.0:9464", "--metrics-allow-remote"], |c| {
            c.metrics.address = Some("0.0.0.0:9464".parse().unwrap())
        }),
        (&["--cost-per-1k-get", "0.00003", "--cost-per-1k-put", "0.00113", "--cost-per-1k-delete", "1"], |c| {
            c.metrics.prices.get = "0.00003".parse().unwrap();
            c.metrics.prices.put = "0.00113".parse().unwrap();
            c.metrics.prices.delete = "1".parse().unwrap();
        }),
        (&["--metadata-ttl", "minimal", "--negative-metadata-ttl", "minimal"], |_| {}),
        (&["--negative-metadata-ttl", "0"], |_| {}),
    ];
    for (flags, edit) in cases {
        let mut args = vec!["bucket", "/mnt"];
        args.extend_from_slice(flags);
        let mut expected = default_config();
        edit(&mut expected);
        assert_eq!(parse(&args).unwrap_or_else(|e| panic!("{flags:?}: {e}")), expected, "{flags:?}");
    }
}

#[test]
fn upstream_tuning_variables_reach_the_config() {
    let vars = [
        ("UNSTABLE_MOUNTPOINT_MAX_PREFETCH_WINDOW_SIZE", "2147483648"),
        ("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND", "256"),
        ("UNSTABLE_MOUNTPOINT_CLONE_FUSE_FD", "1"),
        ("UNSTABLE_MOUNTPOINT_PID_FILE", "/run/mount-s3.pid"),
    ];
    let tuned =
        Environment { unstable: vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect(), ..env() };
    let config = parse_env(&["bucket", "/mnt"], &tuned).unwrap();
    assert_eq!(config.fs.max_prefetch_window, 2 << 30);
    assert_eq!((config.fuse.max_background, config.fuse.congestion_threshold), (Some(256), None));
    assert!(config.fuse.clone_fd);
    assert_eq!(config.unstable.pid_file.as_deref(), Some(std::path::Path::new("/run/mount-s3.pid")));
    let bad = Environment {
        unstable: [("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND".to_string(), OsString::from("lots"))].into(),
        ..env()
    };
    let err = parse_env(&["bucket", "/mnt"], &bad).unwrap_err().to_string();
    assert!(err.contains("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND=lots is not valid"), "{err}");
}

#[test]
fn bucket_uris_and_arns() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["s3://bucket", "/mnt"], "bucket", ""),
        (&["s3://bucket/", "/mnt"], "bucket", ""),
        (&["s3://bucket/a/b/", "/mnt"], "bucket", "a/b/"),
        (&["s3://bucket/", "/mnt", "--prefix", ""], "bucket", ""),
        (&["s3://bucket/a/", "/mnt", "--prefix="], "bucket", "a/"),
        (&["bucket", "/mnt", "--prefix", "p/"], "bucket", "p/"),
        (
            &["arn:aws:s3:us-east-1:111122223333:accesspoint/ap", "/mnt"],
            "arn:aws:s3:us-east-1:111122223333:accesspoint/ap",
            "",
        ),
    ];
    for (args, bucket, prefix) in cases {
        let config = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!((config.bucket.as_str(), config.prefix.as_str()), (*bucket, *prefix), "{args:?}");
        assert_eq!(config.client.bucket, *bucket);
        assert_eq!(config.fs.prefix, *prefix);
    }
}

#[test]
fn the_bucket_type_follows_the_name_unless_given() {
    let cases: &[(&[&str], bool)] = &[
        (&["data--use1-az4--x-s3", "/mnt"], true),
        (&["s3://data--usw2-az1--x-s3/p/", "/mnt"], true),
        (&["ap--use1-az4--xa-s3", "/mnt"], true),
        (&["data", "/mnt"], false),
        (&["data-x-s3", "/mnt"], false),
        (&["data--use1-az4--x-s3", "/mnt", "--bucket-type", "general-purpose"], false),
        (&["data", "/mnt", "--bucket-type", "directory"], true),
    ];
    for (args, directory) in cases {
        let config = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(config.fs.directory_bucket, *directory, "{args:?}");
    }
}

#[test]
fn metadata_ttl_zero_means_minimal_with_a_warning() {
    let config = parse(&["bucket", "/mnt", "--metadata-ttl", "0"]).unwrap();
    assert_eq!(config.fs.metadata_ttl, MetadataTtl::Minimal);
    assert_eq!(config.fs.negative_metadata_ttl, MetadataTtl::Minimal);
    assert_eq!(config.warnings.len(), 1);
    assert!(config.warnings[0].contains("--metadata-ttl minimal"), "{:?}", config.warnings);
    assert!(parse(&["bucket", "/mnt", "--negative-metadata-ttl", "0"]).unwrap().warnings.is_empty());
}

/// `--cache-xz` names the cache bucket (a name or `s3://bucket/`), with the block size of
/// `--cache-block-size`.
#[test]
fn cache_xz_gives_the_bucket_and_block_size() {
    let config = parse(&["bucket", "/mnt", "--cache-xz", "s3://cache--use1-az4--x-s3/"]).unwrap();
    let xz = config.cache_xz.unwrap();
    assert_eq!((xz.bucket.as_str(), xz.block_size), ("cache--use1-az4--x-s3", 1024 * 1024));
    let config = parse(&["bucket", "/mnt", "--cache-xz", "general-cache", "--cache-block-size", "256"]).unwrap();
    let xz = config.cache_xz.unwrap();
    assert_eq!((xz.bucket.as_str(), xz.block_size), ("general-cache", 256 * 1024));
    assert!(config.cache.is_none());
}

/// TTL resolution, checked below the unsupported-feature gate so that it stays right for the day
/// caching lands.
#[test]
fn ttl_defaults_follow_mountpoint() {
    use clap::Parser;
    let cases: &[(&[&str], MetadataTtl, MetadataTtl)] = &[
        (&[], MetadataTtl::Minimal, MetadataTtl::Minimal),
        (&["--cache", "/c"], secs(60), secs(60)),
        (&["--cache-xz", "cache--use1-az4--x-s3"], secs(60), secs(60)),
        (&["--cache", "/c", "--metadata-ttl", "minimal"], MetadataTtl::Minimal, MetadataTtl::Minimal),
        (&["--metadata-ttl", "300"], secs(300), secs(300)),
        (&["--metadata-ttl", "indefinite"], MetadataTtl::Indefinite, MetadataTtl::Indefinite),
        (&["--metadata-ttl", "300", "--negative-metadata-ttl", "minimal"], secs(300), MetadataTtl::Minimal),
        (&["--metadata-ttl", "300", "--negative-metadata-ttl", "0"], secs(300), MetadataTtl::Minimal),
        (&["--negative-metadata-ttl", "7"], MetadataTtl::Minimal, secs(7)),
    ];
    for (flags, metadata, negative) in cases {
        let argv = ["mount-s3", "bucket", "/mnt"].iter().chain(flags.iter()).copied();
        let args = CliArgs::try_parse_from(argv).unwrap();
        let config = args.build(&env(), 10);
        assert_eq!((config.fs.metadata_ttl, config.fs.negative_metadata_ttl), (*metadata, *negative), "{flags:?}");
    }
}

#[test]
fn ca_bundle_comes_from_the_flag_else_aws_ca_bundle() {
    let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
        (&[], None, None),
        (&[], Some(""), None),
        (&[], Some("/etc/ssl/corp.pem"), Some("/etc/ssl/corp.pem")),
        (&["--ca-bundle", "/flag.pem"], Some("/etc/ssl/corp.pem"), Some("/flag.pem")),
        (&["--ca-bundle", "/flag.pem"], None, Some("/flag.pem")),
    ];
    for (flags, variable, expected) in cases {
        let env = Environment { aws_ca_bundle: variable.map(OsString::from), ..env() };
        let args = [&["bucket", "/mnt"][..], flags].concat();
        let config = parse_env(&args, &env).unwrap();
        assert_eq!(config.client.ca_bundle.as_deref(), expected.map(std::path::Path::new), "{flags:?} {variable:?}");
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }
}

#[test]
fn aws_max_attempts() {
    // (value, attempts, warned)
    let cases: &[(Option<&str>, u32, bool)] = &[
        (None, 10, false),
        (Some("3"), 3, false),
        (Some(" 5 "), 5, false),
        (Some("1"), 1, false),
        (Some("0"), 10, true),
        (Some("-1"), 10, true),
        (Some("ten"), 10, true),
        (Some(""), 10, true),
    ];
    for (value, attempts, warned) in cases {
        let env = Environment { aws_max_attempts: value.map(OsString::from), ..env() };
        let config = parse_env(&["bucket", "/mnt"], &env).unwrap();
        assert_eq!(config.client.max_attempts, *attempts, "{value:?}");
        assert_eq!(config.warnings.len(), usize::from(*warned), "{value:?}: {:?}", config.warnings);
        if let Some(warning) = config.warnings.first() {
            let expected = format!("ignoring AWS_MAX_ATTEMPTS='{}'", value.unwrap());
            assert!(warning.starts_with(&expected) && warning.contains("using 10 attempts"), "{warning}");
        }
    }
}

#[test]
fn fstab_style_command_lines() {
    let config = parse(&["s3://bucket/p/", "/mnt", "-o", "_netdev,nosuid,nodev,rw,nofail,allow-other,uid=7"]).unwrap();
    let mut expected = default_config();
    expected.prefix = "p/".into();
    expected.fs.prefix = "p/".into();
    expected.fs.uid = 7;
    expected.fuse.access = AccessPolicy::All;
    expected.fstab_style = true;
    assert_eq!(config, expected);

    let config =
        parse(&["/usr/bin/mount-s3#bucket", "/mnt", "-o", "ro,prefix=foo/bar\\,baz/,x-systemd.automount"]).unwrap();
    assert_eq!((config.bucket.as_str(), config.prefix.as_str()), ("bucket", "foo/bar,baz/"));
    assert!(config.fs.read_only && config.fuse.read_only && config.fstab_style && !config.foreground);

    let config =
        parse(&["bucket", "/mnt", "-o", "rw,log-metrics,metrics-address=127.0.0.1:0,cost-per-1k-get=1"]).unwrap();
    assert!(config.logging.log_metrics);
    assert_eq!(config.metrics.address, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(config.metrics.prices.get.nano_usd(), 1_000_000_000);

    let errors: &[(&[&str], &str)] = &[
        (&["bucket", "/mnt", "-o", "ro,rw"], "'ro' and 'rw'"),
        (&["bucket", "/mnt", "-o", "foreground"], "always run in the background"),
        (&["bucket", "/mnt", "-o", "--uid=2"], "write it as 'uid=2'"),
        (&["bucket", "/mnt", "-o", "typo"], "--typo"),
        (&["bucket", "/mnt", "-o", "metrics-address=0.0.0.0:80"], "--metrics-allow-remote"),
        (&["s3://bucket/p/", "/mnt", "-o", "prefix=q/"], "explicit prefix option not allowed with S3 URI"),
        (&["s3://bucket/p", "/mnt", "-o", "ro"], "try s3://bucket/p/"),
        (&["sm", "/mnt", "-o", "ro"], "3-255 characters"),
    ];
    for (args, needle) in errors {
        let err = parse(args).unwrap_err();
        assert!(err.to_string().contains(needle), "{args:?}: {err}");
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
    // Six arguments is not the fstab shape: `-o` is then an unknown short flag.
    assert!(matches!(parse(&["bucket", "/mnt", "-o", "ro", "-f"]), Err(CliFailure::Clap(_))));
}

#[test]
fn help_and_version_exit_zero_and_errors_exit_two() {
    let help = parse(&["--help"]).unwrap_err();
    assert_eq!(help.exit_code(), 0);
    assert!(help.is_success());
    assert!(help.to_string().contains("Usage: mount-s3 [OPTIONS] <BUCKET_NAME> <DIRECTORY>"), "{help}");
    assert!(help.to_string().contains("-o <OPTIONS>"), "fstab form documented: {help}");

    for flag in ["--version", "-V"] {
        let version = parse(&[flag]).unwrap_err();
        assert_eq!(version.exit_code(), 0);
        assert_eq!(version.to_string().trim_end(), format!("mount-s3 {}", full_version()));
    }

    let clap_error = parse(&["bucket"]).unwrap_err();
    assert_eq!(clap_error.exit_code(), 2);
    assert!(clap_error.to_string().starts_with("error: "), "{clap_error}");

    let ours = parse(&["bucket", "/mnt", "--sse", "AES256", "--sse-kms-key-id", "arn:aws:kms:r:1:key/k"]).unwrap_err();
    assert_eq!(ours.exit_code(), 2);
    assert!(!ours.is_success());
    assert!(ours.to_string().starts_with("error: --sse-kms-key-id can not be used with --sse AES256"), "{ours}");
}

#[test]
fn write_flags_fill_the_file_system_config() {
    let config = parse(&[
        "bucket",
        "/mnt",
        "--allow-delete",
        "--allow-overwrite",
        "--allow-modify",
        "--storage-class",
        "STANDARD_IA",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        "arn:aws:kms:us-east-1:111122223333:key/k",
        "--upload-checksums",
        "off",
        "--infer-content-type",
        "--posix-metadata",
        "--write-part-size",
        "5242880",
    ])
    .unwrap();
    let fs = config.fs;
    assert!(fs.allow_delete && fs.allow_overwrite && fs.allow_modify && fs.infer_content_type && fs.posix_metadata);
    assert!(!parse(&["bucket", "/mnt"]).unwrap().fs.allow_modify, "off by default");
    assert!(!fs.upload_checksums);
    assert_eq!(fs.storage_class.as_deref(), Some("STANDARD_IA"));
    assert_eq!(fs.sse.as_deref(), Some("aws:kms"));
    assert_eq!(fs.sse_kms_key_id.as_deref(), Some("arn:aws:kms:us-east-1:111122223333:key/k"));
    assert_eq!(fs.write_part_size, 5 << 20);
    assert!(parse(&["bucket", "/mnt"]).unwrap().fs.upload_checksums, "crc32c by default");
    assert!(!parse(&["bucket", "/mnt"]).unwrap().fs.posix_metadata, "Mountpoint's fixed attributes by default");
}

#[test]
fn cache_flags_fill_the_cache_config_and_the_default_ttl() {
    let config =
        parse(&["bucket", "/mnt", "--cache", "/var/cache/s3", "--max-cache-size", "100", "--cache-wipe-at-start"])
            .unwrap();
    let cache = config.cache.unwrap();
    assert_eq!(cache.dir, PathBuf::from("/var/cache/s3"));
    assert_eq!(cache.max_size, Some(100 << 20));
    assert_eq!(cache.block_size, 1 << 20);
    assert!(cache.wipe_at_start);
    assert_eq!(config.fs.metadata_ttl, MetadataTtl::Duration(std::time::Duration::from_secs(60)));
    let spark = parse(&["bucket", "/mnt", "--metadata-ttl", "indefinite", "--cache", "/tmp/mountpoint-cache"]).unwrap();
    assert_eq!(spark.fs.metadata_ttl, MetadataTtl::Indefinite);
    assert_eq!(spark.cache.unwrap().max_size, None, "default: keep 5% free");
    assert!(parse(&["bucket", "/mnt", "--cache-wipe-at-start"]).is_err(), "needs --cache");
}

#[test]
fn bind_interfaces_reach_the_client_in_order() {
    let config = parse_env(&["bucket", "/mnt", "--bind", "lo", "--bind", "eth1"], &env()).unwrap();
    assert_eq!(config.client.bind, ["lo", "eth1"]);
    assert!(parse_env(&["bucket", "/mnt"], &env()).unwrap().client.bind.is_empty());
}
