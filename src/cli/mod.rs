//! The command line: Mountpoint for Amazon S3's `mount-s3` interface, turned into a
//! [`MountConfig`].
//!
//! Users swap Mountpoint's binary for ours, so the surface is Mountpoint's, flag for flag: names,
//! defaults, environment variables, validation and conflicts. The data flows in three steps:
//!
//! 1. `fstab`: `mount-s3 BUCKET DIR -o OPTS` (as run by mount(8)) is rewritten into flags;
//! 2. `args`: clap parses and checks each value (`values` holds the parsers);
//! 3. `config`: checks spanning several flags, refusal of features not implemented yet (one
//!    table, never a silent no-op), and defaults taken from the environment.
//!
//! Every failure exits with status 2 (clap's usage errors and ours alike); `--help` and
//! `--version` exit 0. [`check_mount_point`] is separate: it runs at mount time and its failures
//! are runtime errors (status 1).
//!
//! Nothing here imports fuser or the AWS SDK.

mod args;
mod config;
mod error;
pub mod fstab;
pub mod mount_point;
pub mod unstable;
mod values;

#[cfg(test)]
mod tests;

use std::ffi::OsString;

use clap::Parser;

pub use args::{CliArgs, DEFAULT_PART_SIZE, full_version};
pub use config::{DEFAULT_MAX_ATTEMPTS, Environment};
pub use error::{CliError, CliFailure, USAGE_EXIT_CODE};
pub use fstab::FstabError;
pub use mount_point::{MountPointError, check_mount_point};
pub use values::{BucketArg, BucketType, UploadChecksums};

use crate::config::MountConfig;

/// Parses a full argv (program name first) into a mount configuration.
///
/// Prints to stderr the fstab notice when the fstab form is detected, and any warnings (which
/// also stay in [`MountConfig::warnings`]). On failure, [`CliFailure::exit`] prints the message
/// and returns the exit status for `main` to return.
pub fn parse_command_line(args: impl IntoIterator<Item = OsString>) -> Result<MountConfig, CliFailure> {
    let args: Vec<OsString> = args.into_iter().collect();
    if fstab::is_fstab_style(&args) {
        eprintln!("{}", fstab::FSTAB_NOTICE);
    }
    let config = parse_command_line_with(args, &Environment::current())?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(config)
}

/// [`parse_command_line`] with an explicit environment and without printing anything.
pub fn parse_command_line_with(args: Vec<OsString>, env: &Environment) -> Result<MountConfig, CliFailure> {
    let fstab_style = fstab::is_fstab_style(&args);
    let args = if fstab_style { fstab::rewrite(&args).map_err(CliError::from)? } else { args };
    let mut config = CliArgs::try_parse_from(args)?.into_config_with(env)?;
    if fstab_style {
        // mount(8) waits for the helper to exit, so an fstab mount must daemonize.
        config.foreground = false;
        config.fstab_style = true;
    }
    Ok(config)
}
