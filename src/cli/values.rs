//! Parsers for single argument values, used as clap `value_parser`s.
//!
//! Each parser checks one value in isolation (a bucket, a prefix, a mode, a TTL) and returns a
//! message that says what is wrong and how to write it instead; clap prefixes it with
//! "invalid value '...' for '--flag'". Checks that need more than one argument live in
//! `config.rs`.

use std::time::Duration;

use clap::ValueEnum;

use crate::fs::config::MetadataTtl;

/// Bucket names, access-point aliases and ARNs are 3 to 255 bytes long.
const BUCKET_LEN: std::ops::RangeInclusive<usize> = 3..=255;

/// Longest finite TTL: 100 years, what Mountpoint calls "indefinite".
pub const MAX_TTL_SECONDS: u64 = MetadataTtl::INDEFINITE.as_secs();

/// The `<BUCKET_NAME>` positional: a plain name (or ARN), or an `s3://` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketArg {
    /// A bucket name, access-point alias or ARN, given as is.
    Name(String),
    /// `s3://bucket[/prefix/]`; `prefix` is empty or ends in `/`.
    Uri { bucket: String, prefix: String },
}

impl BucketArg {
    /// The bucket (or ARN) to send requests to.
    pub fn bucket(&self) -> &str {
        match self {
            BucketArg::Name(name) => name,
            BucketArg::Uri { bucket, .. } => bucket,
        }
    }

    /// The prefix carried by an S3 URI (empty for plain names).
    pub fn uri_prefix(&self) -> &str {
        match self {
            BucketArg::Name(_) => "",
            BucketArg::Uri { prefix, .. } => prefix,
        }
    }

    /// True when the argument was an `s3://` URI.
    pub fn is_uri(&self) -> bool {
        matches!(self, BucketArg::Uri { .. })
    }
}

/// `--bucket-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BucketType {
    // A general purpose bucket.
    GeneralPurpose,
    // A directory bucket (S3 Express One Zone).
    Directory,
}

/// `--upload-checksums`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UploadChecksums {
    // CRC32C of each part, combined into a composite checksum.
    Crc32c,
    // CRC64NVME of the whole object.
    Crc64nvme,
    // No additional checksum.
    Off,
}

/// The values `--sse` accepts.
pub const SSE_VALUES: [&str; 3] = ["aws:kms", "aws:kms:dsse", "AES256"];

/// Parses `<BUCKET_NAME>`: a bucket name, an ARN, or `s3://bucket[/prefix/]`.
pub fn parse_bucket(arg: &str) -> Result<BucketArg, String> {
    let Some(rest) = arg.strip_prefix("s3://") else {
        check_bucket_name(arg)?;
        return Ok(BucketArg::Name(arg.to_owned()));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.starts_with("arn:") {
        return Err(format!(
            "an ARN cannot be used inside an s3:// URI: pass it on its own ({bucket}), with --prefix for a prefix"
        ));
    }
    check_bucket_name(bucket)?;
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return Err(format!("the prefix in an S3 URI must end in '/': try s3://{bucket}/{prefix}/"));
    }
    Ok(BucketArg::Uri { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
}

/// A bucket name, access-point alias or ARN: 3-255 bytes of letters, digits, `.`, `-` and `_`,
/// or anything starting with `arn:` (the endpoint resolver judges ARNs).
fn check_bucket_name(name: &str) -> Result<(), String> {
    if !BUCKET_LEN.contains(&name.len()) {
        return Err(format!(
            "bucket names must be 3-255 characters long (this one has {}): check the bucket name",
            name.len()
        ));
    }
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if plain || name.starts_with("arn:") {
        return Ok(());
    }
    let hint = if name.contains('/') {
        " (did you put the directory before the bucket? the usage is mount-s3 BUCKET_NAME DIRECTORY)"
    } else {
        ""
    };
    Err(format!(
        "a bucket must be a name made of letters, digits, '.', '-' and '_', an ARN (arn:...), \
         or an S3 URI (s3://bucket/prefix/){hint}"
    ))
}

/// Parses `--prefix`: empty, or ending in `/`.
pub fn parse_prefix(arg: &str) -> Result<String, String> {
    if arg.is_empty() || arg.ends_with('/') {
        Ok(arg.to_owned())
    } else {
        Err(format!("prefix must end in '/': try --prefix {arg}/"))
    }
}

/// Parses `--dir-mode` / `--file-mode`: octal permission bits, at most 0777.
pub fn parse_mode(arg: &str) -> Result<u16, String> {
    let mode = u16::from_str_radix(arg, 8)
        .map_err(|_| "must be an octal number of permission bits, such as 0755 or 0644".to_owned())?;
    if mode > 0o777 {
        return Err(format!(
            "only user/group/other permissions are supported (at most 0777): try {:04o}",
            mode & 0o777
        ));
    }
    Ok(mode)
}

/// Parses `--metadata-ttl` / `--negative-metadata-ttl`: seconds, `indefinite` or `minimal`.
///
/// `0` comes back as `Duration(0)`; the caller maps it to `Minimal` (with a warning for
/// `--metadata-ttl`), as Mountpoint does.
pub fn parse_ttl(arg: &str) -> Result<MetadataTtl, String> {
    match arg {
        "minimal" => return Ok(MetadataTtl::Minimal),
        "indefinite" => return Ok(MetadataTtl::Indefinite),
        _ => {}
    }
    let seconds: u64 =
        arg.parse().map_err(|_| "TTL must be a whole number of seconds, or 'indefinite', or 'minimal'".to_owned())?;
    if seconds > MAX_TTL_SECONDS {
        return Err(format!("TTL must not be greater than {MAX_TTL_SECONDS}s (~100 years): use 'indefinite' instead"));
    }
    Ok(MetadataTtl::Duration(Duration::from_secs(seconds)))
}

/// Parses `--sse-kms-key-id`: only a KMS key ARN (`arn:...:key/...`) is accepted.
pub fn parse_kms_key_arn(arg: &str) -> Result<String, String> {
    if arg.starts_with("arn:") && arg.contains(":key") {
        Ok(arg.to_owned())
    } else {
        Err("must be a KMS key ARN such as arn:aws:kms:REGION:ACCOUNT:key/KEY_ID \
             (key IDs, aliases and alias ARNs are not accepted)"
            .to_owned())
    }
}

/// Parses `--otlp-endpoint`: an `http://` or `https://` URL.
pub fn parse_otlp_endpoint(arg: &str) -> Result<String, String> {
    if arg.starts_with("http://") || arg.starts_with("https://") {
        Ok(arg.to_owned())
    } else {
        Err(format!("the OTLP endpoint must start with http:// or https://: try http://{arg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> BucketArg {
        BucketArg::Name(s.to_owned())
    }

    fn uri(bucket: &str, prefix: &str) -> BucketArg {
        BucketArg::Uri { bucket: bucket.to_owned(), prefix: prefix.to_owned() }
    }

    #[test]
    fn bucket_arguments() {
        let long = "a".repeat(255);
        let too_long = "a".repeat(256);
        let ok: &[(&str, BucketArg)] = &[
            ("test-bucket", name("test-bucket")),
            ("test-123.buc_ket", name("test-123.buc_ket")),
            ("abc", name("abc")),
            (&long, name(&long)),
            (
                "my-ap-hrzrlukc5m36ft7okagglf3gmwluquse1b-s3alias",
                name("my-ap-hrzrlukc5m36ft7okagglf3gmwluquse1b-s3alias"),
            ),
            (
                "arn:aws:s3::00000000:accesspoint/s3-bucket-test.mrap",
                name("arn:aws:s3::00000000:accesspoint/s3-bucket-test.mrap"),
            ),
            (
                "arn:aws:s3-outposts:us-east-1:555555555555:outpost/o-id/accesspoint/ap",
                name("arn:aws:s3-outposts:us-east-1:555555555555:outpost/o-id/accesspoint/ap"),
            ),
            ("s3://test-bucket", uri("test-bucket", "")),
            ("s3://test-bucket/", uri("test-bucket", "")),
            ("s3://test-bucket/prefix/", uri("test-bucket", "prefix/")),
            ("s3://test-bucket/a/b#c/", uri("test-bucket", "a/b#c/")),
        ];
        for (arg, expected) in ok {
            assert_eq!(parse_bucket(arg).as_ref(), Ok(expected), "{arg}");
        }
        let bad: &[(&str, &str)] = &[
            ("ab", "3-255 characters"),
            (&too_long, "3-255 characters"),
            ("~/mnt", "did you put the directory before the bucket"),
            ("##############", "letters, digits"),
            ("bucket/", "did you put the directory"),
            ("s3://a", "3-255 characters"),
            ("s3://", "3-255 characters"),
            ("s3://[][][][]", "letters, digits"),
            ("s3://test-bucket/foo", "try s3://test-bucket/foo/"),
            ("s3://arn:aws:s3:::bucket", "ARN cannot be used inside an s3:// URI"),
            ("s3://arn:aws:s3:::bucket/prefix/", "ARN cannot be used"),
        ];
        for (arg, needle) in bad {
            let err = parse_bucket(arg).expect_err(arg);
            assert!(err.contains(needle), "{arg}: {err}");
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["", "a/", "logs/2024/", "/"] {
            assert_eq!(parse_prefix(ok), Ok(ok.to_owned()));
        }
        assert_eq!(parse_prefix("logs"), Err("prefix must end in '/': try --prefix logs/".to_owned()));
    }

    #[test]
    fn modes() {
        let cases: &[(&str, Result<u16, &str>)] = &[
            ("0755", Ok(0o755)),
            ("755", Ok(0o755)),
            ("0", Ok(0)),
            ("777", Ok(0o777)),
            ("0644", Ok(0o644)),
            ("1777", Err("at most 0777): try 0777")),
            ("4755", Err("try 0755")),
            ("0o755", Err("octal number")),
            ("888", Err("octal number")),
            ("", Err("octal number")),
            ("rwx", Err("octal number")),
        ];
        for (arg, expected) in cases {
            match (parse_mode(arg), expected) {
                (Ok(mode), Ok(want)) => assert_eq!(mode, *want, "{arg}"),
                (Err(err), Err(needle)) => assert!(err.contains(needle), "{arg}: {err}"),
                (got, want) => panic!("{arg}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn ttls() {
        let secs = |s| Ok(MetadataTtl::Duration(Duration::from_secs(s)));
        let cases: &[(&str, Result<MetadataTtl, &str>)] = &[
            ("minimal", Ok(MetadataTtl::Minimal)),
            ("indefinite", Ok(MetadataTtl::Indefinite)),
            ("0", secs(0)),
            ("60", secs(60)),
            ("3153600000", secs(3_153_600_000)),
            ("3153600001", Err("use 'indefinite'")),
            ("18446744073709551616", Err("whole number of seconds")),
            ("-1", Err("whole number of seconds")),
            ("1.5", Err("whole number of seconds")),
            ("Minimal", Err("whole number of seconds")),
            ("60s", Err("whole number of seconds")),
            ("", Err("whole number of seconds")),
        ];
        for (arg, expected) in cases {
            match (parse_ttl(arg), expected) {
                (Ok(ttl), Ok(want)) => assert_eq!(ttl, *want, "{arg}"),
                (Err(err), Err(needle)) => assert!(err.contains(needle), "{arg}: {err}"),
                (got, want) => panic!("{arg}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn kms_key_arns() {
        let ok = ["arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"];
        let bad =
            ["1234abcd-12ab-34cd-56ef-1234567890ab", "alias/my-key", "arn:aws:kms:us-east-1:111122223333:alias/my-key"];
        for arg in ok {
            assert_eq!(parse_kms_key_arn(arg), Ok(arg.to_owned()));
        }
        for arg in bad {
            assert!(parse_kms_key_arn(arg).unwrap_err().contains("KMS key ARN"), "{arg}");
        }
    }

    #[test]
    fn otlp_endpoints() {
        for ok in ["http://localhost:4318", "https://collector.example.com/v1/metrics"] {
            assert_eq!(parse_otlp_endpoint(ok), Ok(ok.to_owned()));
        }
        for bad in ["localhost:4318", "ftp://x", "HTTP://x", ""] {
            assert!(parse_otlp_endpoint(bad).unwrap_err().contains("http:// or https://"), "{bad}");
        }
    }
}
