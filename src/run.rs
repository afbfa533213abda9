//! The composition root: command line -> client -> core -> FUSE session, and the process around
//! it (daemon hand-off, signals, unmount, exit codes).
//!
//! Exit codes: 0 mounted (or unmounted cleanly), 1 any runtime failure (mount point, bucket
//! probe, mount), 2 bad arguments. Every failure is one line naming the problem and the fix.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::cli;
use crate::client::aws::{AwsClient, AwsClientConfig, mount_hint};
use crate::client::metered::{MeteredClient, metered};
use crate::client::retry::{RetryClient, RetryConfig};
use crate::client::{ObjectClient, S3Operation};
use crate::config::{AccessPolicy, CacheConfig, FuseConfig, MountConfig};
use crate::daemon;
use crate::fs::MetadataTtl;
use crate::fs::S3Filesystem;
use crate::fs::cache::{CachingClient, DiskBlockCache, DiskCacheConfig};
use crate::fs::metacache::journal::{self, Journal, Loaded};
use crate::fuse::FuseAdapter;
use crate::logging;
use crate::metrics;
use crate::notify;

/// Kernel readahead for the mount, so sequential reads arrive as 1 MiB requests.
const READ_AHEAD_KB: u32 = 1024;
/// fuser threads that read requests from /dev/fuse; the work itself runs on tokio tasks.
const MAX_DISPATCH_THREADS: usize = 4;

/// The whole program: parse, then mount in the foreground or hand off to a daemon.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let config = match cli::parse_command_line(args) {
        Ok(config) => config,
        Err(failure) => return failure.exit(),
    };
    let success_message = format!("{} is mounted at {}", config.describe_target(), config.fuse.mount_point.display());
    if !config.foreground && !daemon::is_child() {
        // Catch a bad mount point before starting a daemon at all.
        if let Err(e) = cli::mount_point::check_mount_point(&config.fuse.mount_point) {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
        return daemon::spawn_and_wait(&success_message);
    }
    if daemon::is_child() {
        daemon::detach();
    }
    match serve(config, &success_message) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Mounts and serves until unmounted. Returns the error message of a failed start.
fn serve(config: MountConfig, success_message: &str) -> Result<(), String> {
    cli::mount_point::check_mount_point(&config.fuse.mount_point).map_err(|e| e.to_string())?;
    let mount_point = config
        .fuse
        .mount_point
        .canonicalize()
        .map_err(|e| format!("mount point {} is not usable: {e}", config.fuse.mount_point.display()))?;
    let log_file = logging::init(&config.logging, config.foreground)?;
    if let Some(path) = log_file {
        info!("logging to {}", path.display());
    }
    info!(version = env!("CARGO_PKG_VERSION"), "mount-s3 starting: {}", config.describe_target());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mount-s3-io")
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    let client = runtime
        // One attempt per SDK call: RetryClient owns the retry policy (AWS_MAX_ATTEMPTS).
        .block_on(AwsClient::new(&AwsClientConfig { max_attempts: 1, ..config.client.clone() }))
        .map_err(|e| format!("cannot create the S3 client: {}", mount_hint(&e, &config.client)))?;
    let registry = metrics::global();
    let probe = metered(&registry, S3Operation::ListObjectsV2, &config.prefix, client.probe_bucket(&config.prefix));
    // The probe's error message is already the hint for the user.
    runtime.block_on(probe).map_err(|e| e.message)?;
    // Metered under the retries: each attempt is a request S3 receives (and bills).
    let client = MeteredClient::new(client, registry);
    let retry = RetryConfig { max_attempts: config.client.max_attempts.max(1), ..RetryConfig::default() };
    let client = RetryClient::new(client, retry);
    let disk_cache = match &config.cache {
        Some(cache) => Some(open_disk_cache(cache)?),
        None => None,
    };
    let client: Arc<dyn ObjectClient> = match &disk_cache {
        Some(disk) if disk.is_enabled() => {
            let caching = Arc::new(CachingClient::new(client, disk.clone()));
            let counted = caching.clone();
            metrics::global().watch_cache(move || counted.stats().into());
            caching
        }
        _ => Arc::new(client),
    };

    let mut fs = S3Filesystem::new(client, config.fs.clone());
    if let Some(cache) = &config.cache
        && config.fs.metadata_ttl == MetadataTtl::Indefinite
    {
        match open_journal(cache, &config.bucket, &config.prefix) {
            Ok((journal, loaded)) => {
                info!(
                    entries = loaded.entries.len(),
                    listings = loaded.listings.len(),
                    "metadata loaded from the cache"
                );
                fs = fs.with_journal(journal, loaded);
            }
            Err(e) => warn!("metadata will not persist across mounts: {e}"),
        }
    }
    let fs = Arc::new(fs);
    let metrics = metrics::install(runtime.handle(), &config.metrics, fs.memory_budget().clone())?;
    logging::spawn_level_toggle(runtime.handle());
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone(), mount_point.clone());
    let unmount_at_end = adapter.unmount_at_end();
    let mut session = fuser::Session::new(adapter, &mount_point, &fuse_config(&config.fuse))
        .map_err(|e| format!("failed to mount at {}: {e}", mount_point.display()))?;
    *unmount_at_end.lock().unwrap() = Some(session.unmount_callable());
    raise_read_ahead(&mount_point);
    install_signal_handlers(&runtime, session.unmount_callable(), mount_point.clone(), fs.clone());

    info!("{success_message}");
    // Before the daemon's parent exits, so systemd learns the daemon's pid first.
    notify::ready(success_message);
    if daemon::is_child() {
        daemon::report_ready();
    } else {
        println!("{success_message}");
    }
    let result = session.run();
    notify::stopping();
    info!("file system unmounted, shutting down");
    // Normally every file was closed before the unmount; after a forced one (`umount -f`, an
    // aborted connection) uploads may still be open: end them and say which.
    runtime.block_on(shut_down(&fs));
    fs.flush_metadata();
    if let Some(disk) = &disk_cache {
        runtime.block_on(disk.flush());
    }
    metrics.finish();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(|e| format!("FUSE session failed: {e}"))
}

/// Opens the `--cache` directory (never blocks on scanning it).
fn open_disk_cache(cache: &CacheConfig) -> Result<Arc<DiskBlockCache>, String> {
    let config = DiskCacheConfig {
        max_size: cache.max_size,
        block_size: cache.block_size,
        wipe_at_start: cache.wipe_at_start,
        ..DiskCacheConfig::new(cache.dir.clone())
    };
    let disk = DiskBlockCache::open(config).map_err(|e| format!("cannot use --cache {}: {e}", cache.dir.display()))?;
    if !disk.is_enabled() && cache.max_size != Some(0) {
        warn!("the cache directory {} is not usable; reading from S3 only", cache.dir.display());
    }
    Ok(disk)
}

/// The metadata journal for `--metadata-ttl indefinite` in the cache directory.
fn open_journal(cache: &CacheConfig, bucket: &str, prefix: &str) -> std::io::Result<(Journal, Loaded)> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = cache.dir.join("mount-s3-cache").join("metadata");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    let path = journal::path_for(&dir, bucket, prefix);
    if cache.wipe_at_start {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Journal::open(&path)
}

/// fuser mount options matching Mountpoint's: kernel permission checks, no atime, no
/// devices or setuid, fsname `mountpoint-s3`.
pub fn fuse_config(fuse: &FuseConfig) -> fuser::Config {
    use fuser::MountOption;
    let mut options = vec![
        MountOption::FSName("mountpoint-s3".to_string()),
        MountOption::Subtype("s3".to_string()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.push(if fuse.read_only { MountOption::RO } else { MountOption::RW });
    if fuse.auto_unmount {
        options.push(MountOption::AutoUnmount);
    }
    let acl = match fuse.access {
        AccessPolicy::All => fuser::SessionACL::All,
        AccessPolicy::RootAndOwner => fuser::SessionACL::RootAndOwner,
        // fusermount's auto_unmount needs allow_other; fuser then admits only root and the owner.
        AccessPolicy::Owner if fuse.auto_unmount => fuser::SessionACL::RootAndOwner,
        AccessPolicy::Owner => fuser::SessionACL::Owner,
    };
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = acl;
    config.n_threads = Some(fuse.max_threads.clamp(1, MAX_DISPATCH_THREADS));
    config
}

/// Ends every upload ([`S3Filesystem::shutdown`]) and logs the outcome.
async fn shut_down(fs: &S3Filesystem) {
    let report = fs.shutdown().await;
    if report != crate::fs::ShutdownReport::default() {
        info!(
            "shutdown: {} upload(s) completed, {} aborted ({}), {} file(s) open for reading",
            report.completed.len(),
            report.aborted.len(),
            report.aborted.join(", "),
            report.readers
        );
    }
}

/// SIGINT, SIGTERM and SIGHUP unmount the file system; the session then ends and we exit 0.
/// If files are open the unmount is refused (EBUSY): then closes in progress finish, uploads
/// still open are aborted (each logged), and the FUSE connection is aborted (`MNT_FORCE`), so
/// the process ends instead of waiting for applications that may never close their files.
fn install_signal_handlers(
    runtime: &tokio::runtime::Runtime,
    mut unmounter: fuser::SessionUnmounter,
    mount_point: PathBuf,
    fs: Arc<S3Filesystem>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    runtime.spawn(async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
        else {
            warn!("cannot install signal handlers; unmount with `umount {}`", mount_point.display());
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        info!("received interrupt signal, unmounting {}", mount_point.display());
        notify::stopping();
        let Err(e) = unmounter.unmount() else { return };
        warn!(
            "cannot unmount {} ({e}): files are open; finishing closes in progress, aborting uploads still open",
            mount_point.display()
        );
        shut_down(&fs).await;
        use nix::mount::{MntFlags, umount2};
        // On FUSE, MNT_FORCE aborts the connection: open files fail with ENOTCONN and the
        // session ends. The mount itself may stay busy: detach it.
        if umount2(&mount_point, MntFlags::MNT_FORCE).is_err()
            && let Err(e) = umount2(&mount_point, MntFlags::MNT_DETACH)
        {
            error!("cannot unmount {}: {e}; run `umount {}`", mount_point.display(), mount_point.display());
        }
    });
}

/// Raises the kernel readahead of the new mount through sysfs (best effort).
fn raise_read_ahead(mount_point: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let Some(device) = device_of_mount(&mountinfo, mount_point) else {
        warn!("mount not found in /proc/self/mountinfo; kernel readahead left at its default");
        return;
    };
    let path = format!("/sys/class/bdi/{device}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, READ_AHEAD_KB.to_string()) {
        warn!("cannot raise readahead in {path}: {e}");
    }
}

/// The `maj:min` of the last mount at `mount_point` in a mountinfo text.
fn device_of_mount(mountinfo: &str, mount_point: &Path) -> Option<String> {
    let wanted = mount_point.to_str()?;
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\");
            (point == wanted).then(|| fields.get(2).map(|d| d.to_string())).flatten()
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_device_of_the_newest_mount() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    40 22 0:50 / /mnt/my\\040dir rw - fuse.s3 mountpoint-s3 rw\n\
                    41 22 0:51 / /mnt/my\\040dir rw - fuse.s3 mountpoint-s3 rw\n";
        assert_eq!(device_of_mount(info, Path::new("/mnt/my dir")), Some("0:51".to_string()));
        assert_eq!(device_of_mount(info, Path::new("/mnt/other")), None);
    }

    #[test]
    fn fuse_options_follow_the_flags() {
        let mut fuse = FuseConfig {
            mount_point: "/m".into(),
            read_only: true,
            auto_unmount: false,
            access: AccessPolicy::Owner,
            max_threads: 16,
        };
        let c = fuse_config(&fuse);
        assert!(c.mount_options.contains(&fuser::MountOption::RO));
        assert_eq!(c.acl, fuser::SessionACL::Owner);
        assert_eq!(c.n_threads, Some(MAX_DISPATCH_THREADS));
        fuse.auto_unmount = true;
        fuse.read_only = false;
        let c = fuse_config(&fuse);
        assert!(c.mount_options.contains(&fuser::MountOption::AutoUnmount));
        assert!(c.mount_options.contains(&fuser::MountOption::RW));
        assert_eq!(c.acl, fuser::SessionACL::RootAndOwner);
        fuse.access = AccessPolicy::All;
        assert_eq!(fuse_config(&fuse).acl, fuser::SessionACL::All);
    }
}
