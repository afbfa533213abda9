//! Command lines that must be refused: by clap, by our cross-argument checks, or because a
//! feature is not implemented yet.

use clap::error::ErrorKind;

use super::*;

/// Errors raised by clap itself: malformed values, ranges, conflicts, requirements.
#[test]
fn clap_rejects_bad_values_and_conflicts() {
    use ErrorKind::*;
    let cases: &[(&[&str], ErrorKind, &str)] = &[
        (&[], MissingRequiredArgument, "<BUCKET_NAME>"),
        (&["bucket"], MissingRequiredArgument, "<DIRECTORY>"),
        (&["bucket", "/mnt", "extra"], UnknownArgument, "extra"),
        (&["bucket", "/mnt", "--no-such-flag"], UnknownArgument, "--no-such-flag"),
        (&["ab", "/mnt"], ValueValidation, "3-255 characters"),
        (&["/mnt", "bucket"], ValueValidation, "did you put the directory before the bucket"),
        (&["s3://bucket/logs", "/mnt"], ValueValidation, "try s3://bucket/logs/"),
        (&["s3://arn:aws:s3:::bucket", "/mnt"], ValueValidation, "ARN cannot be used"),
        (&["bucket", "/mnt", "--prefix", "logs"], ValueValidation, "prefix must end in '/': try --prefix logs/"),
        (&["bucket", "/mnt", "--uid", "0"], ValueValidation, "--uid"),
        (&["bucket", "/mnt", "--gid", "0"], ValueValidation, "--gid"),
        (&["bucket", "/mnt", "--uid", "-1"], UnknownArgument, "-1"),
        (&["bucket", "/mnt", "--uid", "4294967296"], ValueValidation, "--uid"),
        (&["bucket", "/mnt", "--dir-mode", "1777"], ValueValidation, "at most 0777"),
        (&["bucket", "/mnt", "--file-mode", "rw-r--r--"], ValueValidation, "octal"),
        (&["bucket", "/mnt", "--max-threads", "0"], ValueValidation, "--max-threads"),
        (&["bucket", "/mnt", "--memory-target", "511"], ValueValidation, "--memory-target"),
        (&["bucket", "/mnt", "--maximum-throughput-gbps", "0"], ValueValidation, "--maximum-throughput-gbps"),
        (&["bucket", "/mnt", "--part-size", "0"], ValueValidation, "--part-size"),
        (&["bucket", "/mnt", "--read-part-size", "x"], ValueValidation, "--read-part-size"),
        (&["bucket", "/mnt", "--part-size", "1", "--read-part-size", "2"], ArgumentConflict, "--part-size"),
        (&["bucket", "/mnt", "--part-size", "1", "--write-part-size", "2"], ArgumentConflict, "--part-size"),
        (&["bucket", "/mnt", "--allow-other", "--allow-root"], ArgumentConflict, "--allow-root"),
        (&["bucket", "/mnt", "--no-log", "--debug"], ArgumentConflict, "--debug"),
        (&["bucket", "/mnt", "--no-log", "-l", "/tmp"], ArgumentConflict, "--log-directory"),
        (&["bucket", "/mnt", "--no-log", "--debug-crt"], ArgumentConflict, "--debug-crt"),
        (&["bucket", "/mnt", "--no-log", "--log-metrics"], ArgumentConflict, "--log-metrics"),
        (&["bucket", "/mnt", "--metadata-ttl", "forever"], ValueValidation, "'indefinite', or 'minimal'"),
        (&["bucket", "/mnt", "--negative-metadata-ttl", "3153600001"], ValueValidation, "use 'indefinite'"),
        (&["bucket", "/mnt", "--max-cache-size", "10"], MissingRequiredArgument, "--cache"),
        (&["bucket", "/mnt", "--cache-block-size", "1024"], MissingRequiredArgument, "--cache"),
        (&["bucket", "/mnt", "--otlp-endpoint", "localhost:4318"], ValueValidation, "http:// or https://"),
        (&["bucket", "/mnt", "--otlp-export-interval", "5"], MissingRequiredArgument, "--otlp-endpoint"),
        (
            &["bucket", "/mnt", "--otlp-endpoint", "http://x", "--otlp-export-interval", "0"],
            ValueValidation,
            "--otlp-export-interval",
        ),
        (&["bucket", "/mnt", "--sse", "aes256"], InvalidValue, "AES256"),
        (&["bucket", "/mnt", "--sse-kms-key-id", "arn:aws:kms:r:1:key/k"], MissingRequiredArgument, "--sse"),
        (&["bucket", "/mnt", "--sse", "aws:kms", "--sse-kms-key-id", "alias/k"], ValueValidation, "KMS key ARN"),
        (&["bucket", "/mnt", "--upload-checksums", "md5"], InvalidValue, "crc64nvme"),
        (&["bucket", "/mnt", "--bucket-type", "express"], InvalidValue, "general-purpose"),
        (&["bucket", "/mnt", "--cache-xz", "x"], ValueValidation, "3-255 characters"),
        (&["bucket", "/mnt", "--metrics-address", "localhost:9464"], ValueValidation, "--metrics-address"),
        (&["bucket", "/mnt", "--metrics-allow-remote"], MissingRequiredArgument, "--metrics-address"),
        (&["bucket", "/mnt", "--cost-per-1k-get", "-1"], UnknownArgument, "-1"),
        (&["bucket", "/mnt", "--cost-per-1k-put", "1e-3"], ValueValidation, "plain number of US dollars"),
        (&["bucket", "/mnt", "--cost-per-1k-delete", "0.0000000001"], ValueValidation, "9 decimal places"),
    ];
    for (args, kind, needle) in cases {
        match parse(args) {
            Err(CliFailure::Clap(err)) => {
                let text = err.to_string();
                assert_eq!(err.kind(), *kind, "{args:?}: {text}");
                assert!(text.contains(needle), "{args:?}: {needle:?} not in {text}");
                assert_eq!(CliFailure::Clap(err).exit_code(), 2, "{args:?}");
            }
            other => panic!("{args:?}: expected a clap error, got {other:?}"),
        }
    }
}

/// Errors raised by our own cross-argument checks, all before unsupported features are refused.
#[test]
fn cross_argument_errors_name_the_fix() {
    let cases: &[(&[&str], CliError)] = &[
        (
            &["s3://bucket/a/", "/mnt", "--prefix", "b/"],
            CliError::PrefixWithUri { bucket: "bucket".into(), prefix: "b/".into() },
        ),
        (
            &["s3://bucket", "/mnt", "--prefix", "b/"],
            CliError::PrefixWithUri { bucket: "bucket".into(), prefix: "b/".into() },
        ),
        (
            &["bucket", "/mnt", "--sse", "AES256", "--sse-kms-key-id", "arn:aws:kms:r:1:key/k"],
            CliError::KmsKeyWithAes256,
        ),
        (
            &["bucket", "/mnt", "--cache-xz", "s3://cache--use1-az4--x-s3/p/"],
            CliError::CacheXzPrefix { bucket: "cache--use1-az4--x-s3".into() },
        ),
        (
            &["bucket", "/mnt", "--metrics-address", "10.0.0.1:9464"],
            CliError::MetricsAddressNotLoopback { address: "10.0.0.1:9464".parse().unwrap() },
        ),
    ];
    for (args, expected) in cases {
        match parse(args) {
            Err(CliFailure::Invalid(err)) => assert_eq!(&err, expected, "{args:?}"),
            other => panic!("{args:?}: expected {expected}, got {other:?}"),
        }
    }
    let message = CliError::PrefixWithUri { bucket: "b".into(), prefix: "p/".into() }.to_string();
    assert!(message.starts_with("explicit prefix option not allowed with S3 URI: "), "{message}");
    assert!(message.contains("s3://b/p/"), "{message}");
}

/// `--incremental-upload` acts on directory buckets (by name or `--bucket-type directory`); on a
/// general purpose bucket it mounts anyway (as Mountpoint does), with a warning and the flag off.
#[test]
fn incremental_upload_acts_on_directory_buckets_only() {
    let config = parse(&["bucket", "/mnt", "--incremental-upload"]).unwrap();
    assert!(!config.fs.incremental_upload && !config.client.head_checksums);
    assert!(
        config.warnings.iter().any(|w| w.contains("--incremental-upload has no effect on bucket")),
        "{:?}",
        config.warnings
    );
    for args in [
        &["name--usw2-az1--x-s3", "/mnt", "--incremental-upload"][..],
        &["bucket", "/mnt", "--incremental-upload", "--bucket-type", "directory"],
    ] {
        let config = parse(args).unwrap();
        assert!(config.fs.incremental_upload && config.fs.directory_bucket, "{args:?}");
    }
    assert!(!parse(&["name--usw2-az1--x-s3", "/mnt"]).unwrap().fs.incremental_upload, "off by default");
}

#[test]
fn fd_mounts_refuse_what_the_caller_of_mount2_decides() {
    assert!(parse(&["bucket", "/dev/fd/3", "--foreground", "--allow-other", "--cache", "/c"]).is_ok());
    for (flags, named) in [
        (&["--read-only"][..], "--read-only"),
        (&["--auto-unmount"], "--auto-unmount"),
        (&["--read-only", "--auto-unmount"], "--read-only, --auto-unmount"),
    ] {
        let mut args = vec!["bucket", "/dev/fd/3"];
        args.extend_from_slice(flags);
        match parse(&args) {
            Err(CliFailure::Invalid(err @ CliError::FdMountOptions { .. })) => {
                let message = err.to_string();
                assert!(message.starts_with(&format!("mount options {named} are ignored")), "{message}");
            }
            other => panic!("{flags:?}: expected a refusal, got {other:?}"),
        }
    }
    // Only /dev/fd/<digits> is an fd mount; anything else is a directory path.
    assert!(parse(&["bucket", "/dev/fd/x", "--read-only"]).is_ok());
}

#[test]
fn validation_comes_before_refusing_features() {
    // A typo next to an unsupported flag reports the typo, as Mountpoint would.
    let err = parse(&["bucket", "/mnt", "--cache", "/c", "--prefix", "p"]).unwrap_err();
    assert!(matches!(err, CliFailure::Clap(_)), "{err}");
    let err = parse(&["s3://bucket/a/", "/mnt", "--cache", "/c", "--prefix", "b/"]).unwrap_err();
    assert!(matches!(err, CliFailure::Invalid(CliError::PrefixWithUri { .. })), "{err}");
}
