//! Logging: where log lines go and which ones.
//!
//! Foreground: stdout (and a file with `-l`). Background: a file per run in `-l DIR`
//! (directory 0750, file 0640, `mountpoint-s3-<UTC time>.<6 random chars>.log`, the naming
//! operators' log collectors already know), otherwise syslog (identity `mount-s3`).
//! `MOUNTPOINT_LOG` (tracing filter syntax) overrides the level flags. No credentials are
//! ever logged: the client never formats them.
//!
//! Metric summaries go to the target `mount_s3::metrics`, off unless `--log-metrics` or
//! `--debug`. The filter sits behind a reload handle so SIGUSR2 can cycle it, as in Mountpoint:
//! the starting filter -> debug (SDK and HTTP crates at warn) -> debug everywhere -> trace (SDK
//! at warn) -> trace everywhere -> the starting filter. With `--no-log` SIGUSR2 is ignored.

use std::fs::{DirBuilder, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rand::Rng;
use rand::distributions::Alphanumeric;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LoggingConfig;

/// The filter when neither `MOUNTPOINT_LOG` nor `--debug` says otherwise. fuser logs an ERROR
/// for every reply the kernel no longer wants (the caller was interrupted, or the connection was
/// aborted at shutdown): not a failure of ours, so only `--debug` shows them.
pub const DEFAULT_FILTER: &str = "warn,mount_s3=info,mount_s3::metrics=off,fuser::reply=off";

/// Crates of the AWS SDK and its HTTP stack: what Mountpoint calls the CRT (`--debug-crt`).
const SDK_TARGETS: [&str; 12] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_smithy_http",
    "aws_smithy_types",
    "aws_sdk_s3",
    "aws_config",
    "aws_runtime",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
];

/// `,crate=level` for every SDK crate.
fn sdk_at(level: &str) -> String {
    SDK_TARGETS.iter().map(|target| format!(",{target}={level}")).collect()
}

/// The filter directives for a configuration (before `MOUNTPOINT_LOG`).
pub fn filter_directives(config: &LoggingConfig) -> String {
    if config.no_log {
        return "off".to_string();
    }
    let mut filter = if config.debug { "warn,mount_s3=debug".to_string() } else { "warn,mount_s3=info".to_string() };
    if !config.debug && !config.log_metrics {
        filter.push_str(",mount_s3::metrics=off");
    }
    if !config.debug {
        filter.push_str(",fuser::reply=off");
    }
    if config.debug_crt {
        filter.push_str(&sdk_at("debug"));
    }
    filter
}

/// Upstream Mountpoint's log targets and ours: a `MOUNTPOINT_LOG` written for upstream keeps
/// working. Longest first, since tracing targets match by prefix.
const UPSTREAM_TARGETS: [(&str, &str); 9] = [
    ("mountpoint_s3_fs::metrics", "mount_s3::metrics"),
    ("mountpoint_s3_fs::fuse", "mount_s3::fuse"),
    ("mountpoint_s3_fs::prefetch", "mount_s3::fs::prefetch"),
    ("mountpoint_s3_fs::data_cache", "mount_s3::client::cache"),
    ("mountpoint_s3_fs::upload", "mount_s3::fs::upload"),
    ("mountpoint_s3_fs::superblock", "mount_s3::fs::inode"),
    ("mountpoint_s3_fs", "mount_s3"),
    ("mountpoint_s3_client", "mount_s3::client"),
    ("mountpoint_s3", "mount_s3"),
];

/// Rewrites the targets of a filter written for upstream (`mountpoint_s3*`, and `awscrt*`, its
/// HTTP/SDK layer, which becomes every SDK crate); other directives pass unchanged.
pub fn translate_upstream_targets(filter: &str) -> String {
    let mut out: Vec<String> = vec![];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let target_end = directive.find(['=', '[']).unwrap_or(directive.len());
        let (target, rest) = directive.split_at(target_end);
        let is_level = target.parse::<tracing_subscriber::filter::LevelFilter>().is_ok() && rest.is_empty();
        if is_level {
            out.push(directive.to_string());
        } else if target == "awscrt" || target.starts_with("awscrt::") {
            out.extend(SDK_TARGETS.iter().map(|sdk| format!("{sdk}{rest}")));
        } else if let Some((from, to)) =
            UPSTREAM_TARGETS.iter().find(|(from, _)| target == *from || target.starts_with(&format!("{from}::")))
        {
            out.push(format!("{to}{}{rest}", &target[from.len()..]));
        } else {
            out.push(directive.to_string());
        }
    }
    out.join(",")
}

/// The filters SIGUSR2 steps through, starting from (and returning to) `initial`.
pub fn level_cycle(initial: &str) -> Vec<String> {
    vec![
        initial.to_string(),
        format!("debug{}", sdk_at("warn")),
        "debug".to_string(),
        format!("trace{}", sdk_at("warn")),
        "trace".to_string(),
    ]
}

/// The live filter and where SIGUSR2 is in [`level_cycle`].
struct LevelControl {
    handle: reload::Handle<EnvFilter, Registry>,
    levels: Vec<String>,
    current: Mutex<usize>,
}

static LEVEL_CONTROL: OnceLock<LevelControl> = OnceLock::new();

/// Moves the live filter to the next step of [`level_cycle`]; returns the new directives, or
/// `None` when logging is off (`--no-log`) or not initialised.
pub fn cycle_level() -> Option<String> {
    let control = LEVEL_CONTROL.get()?;
    let mut current = control.current.lock().unwrap();
    let next = (*current + 1) % control.levels.len();
    let directives = &control.levels[next];
    let filter = EnvFilter::try_new(directives).ok()?;
    if let Err(e) = control.handle.reload(filter) {
        tracing::warn!("cannot change the log filter: {e}");
        return None;
    }
    *current = next;
    Some(directives.clone())
}

/// Listens for SIGUSR2 on `runtime` and cycles the log filter on each one. Installed even with
/// `--no-log`, so that SIGUSR2 never kills the daemon (its default action).
pub fn spawn_level_toggle(runtime: &tokio::runtime::Handle) {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = runtime.enter();
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        tracing::warn!("cannot listen for SIGUSR2; the log level cannot be changed at runtime");
        return;
    };
    runtime.spawn(async move {
        while usr2.recv().await.is_some() {
            if let Some(directives) = cycle_level() {
                tracing::info!("SIGUSR2: log filter is now {directives:?}");
            }
        }
    });
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
    let directives = match std::env::var("MOUNTPOINT_LOG") {
        Ok(filter) => translate_upstream_targets(&filter),
        Err(_) => filter_directives(config),
    };
    let filter =
        EnvFilter::try_new(&directives).map_err(|e| format!("invalid MOUNTPOINT_LOG filter {directives:?}: {e}"))?;
    if config.no_log {
        return Ok(None);
    }
    let (filter, handle) = reload::Layer::new(filter);
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
    let control = LevelControl { handle, levels: level_cycle(&directives), current: Mutex::new(0) };
    let _ = LEVEL_CONTROL.set(control);
    Ok(file_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_log_filters_keep_working() {
        assert_eq!(
            translate_upstream_targets("warn,mountpoint_s3=info,mountpoint_s3_fs::metrics=off"),
            "warn,mount_s3=info,mount_s3::metrics=off"
        );
        assert_eq!(translate_upstream_targets("mountpoint_s3_fs::fuse=debug"), "mount_s3::fuse=debug");
        assert_eq!(translate_upstream_targets("mountpoint_s3_client=trace"), "mount_s3::client=trace");
        assert_eq!(translate_upstream_targets("debug, mount_s3::fs=trace"), "debug,mount_s3::fs=trace");
        let crt = translate_upstream_targets("info,awscrt=debug");
        assert!(crt.starts_with("info,aws_smithy_runtime=debug,") && crt.ends_with(",rustls=debug"), "{crt}");
        assert_eq!(translate_upstream_targets("mountpoint_s3_fs[read]=debug"), "mount_s3[read]=debug");
        // Every translation is a filter tracing accepts.
        for filter in ["warn,mountpoint_s3=info,awscrt=off", "mountpoint_s3_fs::prefetch=trace,error"] {
            assert!(EnvFilter::try_new(translate_upstream_targets(filter)).is_ok(), "{filter}");
        }
    }

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
    fn metrics_are_logged_with_log_metrics_or_debug_only() {
        let enabled = |config: &LoggingConfig| {
            let filter = EnvFilter::try_new(filter_directives(config)).unwrap();
            let subscriber = tracing_subscriber::registry().with(filter);
            tracing::subscriber::with_default(subscriber, || {
                (
                    tracing::enabled!(target: "mount_s3::metrics", tracing::Level::INFO),
                    tracing::enabled!(target: "mount_s3::run", tracing::Level::INFO),
                )
            })
        };
        let mut c = LoggingConfig::default();
        assert_eq!(enabled(&c), (false, true));
        c.log_metrics = true;
        assert_eq!(enabled(&c), (true, true));
        c = LoggingConfig { debug: true, ..LoggingConfig::default() };
        assert_eq!(enabled(&c), (true, true));
    }

    #[test]
    fn sigusr2_cycles_through_debug_and_trace_and_back() {
        let levels = level_cycle(DEFAULT_FILTER);
        assert_eq!(levels.len(), 5);
        assert_eq!(levels[0], DEFAULT_FILTER);
        assert!(levels[1].starts_with("debug,aws_smithy_runtime=warn"), "{}", levels[1]);
        assert_eq!(levels[2], "debug");
        assert!(levels[3].starts_with("trace,") && levels[3].contains("hyper=warn"), "{}", levels[3]);
        assert_eq!(levels[4], "trace");
        for level in &levels {
            EnvFilter::try_new(level).unwrap();
        }
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
