//! Logging: where log lines go and which ones.
//!
//! Foreground: stdout (and a file with `-l`). Background: a file per run in `-l DIR`
//! (directory 0750, file 0640, `mountpoint-s3-<UTC time>.<6 random chars>.log`, the naming
//! operators' log collectors already know), otherwise syslog (identity `mount-s3`).
//! `MOUNTPOINT_LOG` (tracing filter syntax) overrides the level flags. No credentials are
//! ever logged: the client never formats them.

use std::fs::{DirBuilder, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::Rng;
use rand::distributions::Alphanumeric;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::LoggingConfig;

/// The filter when neither `MOUNTPOINT_LOG` nor `--debug` says otherwise.
pub const DEFAULT_FILTER: &str = "warn,mount_s3=info";

/// The filter directives for a configuration (before `MOUNTPOINT_LOG`).
pub fn filter_directives(config: &LoggingConfig) -> String {
    if config.no_log {
        return "off".to_string();
    }
    let mut filter = if config.debug { "warn,mount_s3=debug".to_string() } else { DEFAULT_FILTER.to_string() };
    if config.debug_crt {
        filter.push_str(",aws_smithy_runtime=debug,aws_sdk_s3=debug,aws_config=debug,hyper_util=debug");
    }
    filter
}

/// A new log file name for this run.
pub fn log_file_name() -> String {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z"))
        .expect("fixed format");
    let suffix: String = rand::thread_rng().sample_iter(&Alphanumeric).take(6).map(char::from).collect();
    format!("mountpoint-s3-{stamp}.{suffix}.log")
}

fn open_log_file(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    let path = dir.join(log_file_name());
    let file = OpenOptions::new().create(true).append(true).mode(0o640).open(&path)?;
    Ok((path, file))
}

/// Installs the global subscriber. `foreground` adds stdout. Returns the log file path, if any.
pub fn init(config: &LoggingConfig, foreground: bool) -> Result<Option<PathBuf>, String> {
    let directives = std::env::var("MOUNTPOINT_LOG").unwrap_or_else(|_| filter_directives(config));
    let filter =
        EnvFilter::try_new(&directives).map_err(|e| format!("invalid MOUNTPOINT_LOG filter {directives:?}: {e}"))?;
    if config.no_log {
        return Ok(None);
    }
    let mut file_path = None;
    let file_layer = match &config.log_directory {
        Some(dir) => {
            let (path, file) = open_log_file(dir)
                .map_err(|e| format!("cannot create a log file in {}: {e} (check --log-directory)", dir.display()))?;
            file_path = Some(path);
            Some(tracing_subscriber::fmt::layer().with_ansi(false).with_thread_ids(true).with_writer(Mutex::new(file)))
        }
        None => None,
    };
    let stdout_layer = foreground.then(|| {
        tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()).with_writer(std::io::stdout)
    });
    let syslog_layer = if !foreground && config.log_directory.is_none() {
        let identity = c"mount-s3";
        syslog_tracing::Syslog::new(identity, syslog_tracing::Options::LOG_PID, syslog_tracing::Facility::User).map(
            |syslog| {
                tracing_subscriber::fmt::layer().with_ansi(false).without_time().with_writer(BoxMakeWriter::new(syslog))
            },
        )
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stdout_layer)
        .with(syslog_layer)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(file_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_follow_the_flags() {
        let mut c = LoggingConfig::default();
        assert_eq!(filter_directives(&c), DEFAULT_FILTER);
        c.debug = true;
        assert!(filter_directives(&c).contains("mount_s3=debug"));
        c.debug_crt = true;
        assert!(filter_directives(&c).contains("aws_smithy_runtime=debug"));
        c.no_log = true;
        assert_eq!(filter_directives(&c), "off");
    }

    #[test]
    fn log_files_are_named_and_permissioned_like_mountpoint() {
        use std::os::unix::fs::PermissionsExt;
        let name = log_file_name();
        assert!(name.starts_with("mountpoint-s3-") && name.ends_with(".log"), "{name}");
        assert_eq!(name.len(), "mountpoint-s3-2026-01-02T03-04-05Z.abcdef.log".len());
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let (path, _f) = open_log_file(&logs).unwrap();
        assert_eq!(std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777, 0o750);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }
}
