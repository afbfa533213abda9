//! Command-line errors, and how the binary reports them.
//!
//! Every message names the fix. Both our own errors and clap's end the process with status 2
//! (Mountpoint's usage-error status, which systemd shows as INVALIDARGUMENT); only `--help` and
//! `--version` exit 0.

use std::fmt;

use super::fstab::FstabError;

/// Exit status for a command line that cannot be used.
pub const USAGE_EXIT_CODE: i32 = 2;

/// A command line that parses but cannot be turned into a [`crate::config::MountConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// An S3 URI carries a prefix and `--prefix` was given too.
    #[error(
        "explicit prefix option not allowed with S3 URI: put the prefix in the URI \
         (s3://{bucket}/{prefix}) or mount s3://{bucket}/ without --prefix"
    )]
    PrefixWithUri { bucket: String, prefix: String },

    /// `--sse-kms-key-id` with `--sse AES256`.
    #[error(
        "--sse-kms-key-id can not be used with --sse AES256: use --sse aws:kms (or aws:kms:dsse), \
         or drop --sse-kms-key-id"
    )]
    KmsKeyWithAes256,

    /// `--cache-xz` given as `s3://bucket/prefix/`.
    #[error("cache-xz argument must not contain a prefix: try --cache-xz {bucket}")]
    CacheXzPrefix { bucket: String },

    /// `--metrics-address` names an address other hosts could reach.
    #[error(
        "--metrics-address {address} is not a loopback address: use 127.0.0.1:{port} (or [::1]:{port}), \
         or add --metrics-allow-remote to serve metrics to other hosts",
        port = address.port()
    )]
    MetricsAddressNotLoopback { address: std::net::SocketAddr },

    /// `--read-only` or `--auto-unmount` with a `/dev/fd/N` mount point: the caller mounted.
    #[error(
        "mount options {options} are ignored with a FUSE fd mount point (/dev/fd/N): the process \
         that mounted /dev/fuse decides them (pass `ro` to mount(2) for read-only); remove {options}"
    )]
    FdMountOptions { options: String },

    /// A tuning environment variable (`UNSTABLE_*`) with a value that does not parse.
    #[error("{name}={value} is not valid: expected {expected}; fix or unset {name}")]
    EnvValue { name: &'static str, value: String, expected: &'static str },

    /// A flag (or flag value) this version does not implement yet.
    #[error("{what} is not supported yet by this version of mount-s3: {fix}")]
    Unsupported {
        /// The flag, or flag and value, as the user wrote it (e.g. "--cache").
        what: &'static str,
        /// What to do instead.
        fix: &'static str,
    },

    /// The fstab-style (`-o`) command line is malformed.
    #[error(transparent)]
    Fstab(#[from] FstabError),
}

/// Why [`super::parse_command_line`] produced no configuration: a help or version request, a
/// clap usage error, or one of our own [`CliError`]s.
#[derive(Debug)]
pub enum CliFailure {
    /// Raised by clap: `--help`, `--version`, or a malformed command line.
    Clap(clap::Error),
    /// Raised by our own validation.
    Invalid(CliError),
}

impl CliFailure {
    /// The process exit status: 0 after `--help`/`--version`, 2 for every error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliFailure::Clap(err) => err.exit_code(),
            CliFailure::Invalid(_) => USAGE_EXIT_CODE,
        }
    }

    /// True for `--help` and `--version`, which are successes.
    pub fn is_success(&self) -> bool {
        self.exit_code() == 0
    }

    /// Writes the message: help and version to stdout, errors to stderr as `error: ...`.
    pub fn print(&self) {
        match self {
            CliFailure::Clap(err) => {
                // Only fails when stdout/stderr is closed, and then there is nobody to tell.
                let _ = err.print();
            }
            CliFailure::Invalid(err) => eprintln!("error: {err}"),
        }
    }

    /// Prints the message and returns the exit status, for `main` to return
    /// (`return failure.exit()`), so that destructors still run.
    pub fn exit(&self) -> std::process::ExitCode {
        self.print();
        // exit_code() is 0 or 2.
        std::process::ExitCode::from(u8::try_from(self.exit_code()).unwrap_or(2))
    }
}

impl fmt::Display for CliFailure {
    /// The text [`Self::print`] writes, without colours.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliFailure::Clap(err) => write!(f, "{}", err.render()),
            CliFailure::Invalid(err) => writeln!(f, "error: {err}"),
        }
    }
}

impl std::error::Error for CliFailure {}

impl From<clap::Error> for CliFailure {
    fn from(err: clap::Error) -> Self {
        CliFailure::Clap(err)
    }
}

impl From<CliError> for CliFailure {
    fn from(err: CliError) -> Self {
        CliFailure::Invalid(err)
    }
}
