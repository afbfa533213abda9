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
use crate::client::aws::{AwsClient, AwsClientConfig};
use crate::client::cache::dir::open_private_file;
use crate::client::cache::{CacheDir, CachingClient, DiskBlockCache, DiskCacheConfig};
use crate::client::metered::{MeteredClient, metered};
use crate::client::retry::{RetryClient, RetryConfig};
use crate::client::{ObjectClient, S3Operation};
use crate::config::{AccessPolicy, CacheConfig, FuseConfig, MountConfig};
use crate::daemon;
use crate::fs::MetadataTtl;
use crate::fs::S3Filesystem;
use crate::fs::namespace::metacache::journal::{self, Journal, Loaded};
use crate::fs::rename::intent::{IntentLog, default_state_dir};
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
        // Catch a bad mount point (or descriptor) before starting a daemon at all.
        let checked = match crate::fuse_fd::parse(&config.fuse.mount_point) {
            Some(fd) => crate::fuse_fd::check(fd),
            None => cli::mount_point::check_mount_point(&config.fuse.mount_point).map_err(|e| e.to_string()),
        };
        if let Err(e) = checked {
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
    // An fd mount is adopted first, before anything else in the process opens descriptors.
    let fuse_fd = match crate::fuse_fd::parse(&config.fuse.mount_point) {
        Some(fd) => Some(crate::fuse_fd::adopt(fd)?),
        None => None,
    };
    let mount_point = if fuse_fd.is_some() {
        config.fuse.mount_point.clone()
    } else {
        cli::mount_point::check_mount_point(&config.fuse.mount_point).map_err(|e| e.to_string())?;
        config
            .fuse
            .mount_point
            .canonicalize()
            .map_err(|e| format!("mount point {} is not usable: {e}", config.fuse.mount_point.display()))?
    };
    let log_file = logging::init(&config.logging, config.foreground)?;
    if let Some(path) = log_file {
        info!("logging to {}", path.display());
    }
    info!(version = env!("CARGO_PKG_VERSION"), "mount-s3 starting: {}", config.describe_target());

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.unstable.io_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("mount-s3-io")
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    let mut client = runtime
        // One attempt per SDK call: RetryClient owns the retry policy (AWS_MAX_ATTEMPTS).
        .block_on(AwsClient::new(&AwsClientConfig { max_attempts: 1, ..config.client.clone() }))
        .map_err(|e| format!("cannot create the S3 client: {}", e.message))?;
    let registry = metrics::global();
    let probe = |client: &AwsClient| {
        runtime.block_on(metered(
            &registry,
            S3Operation::ListObjectsV2,
            &config.prefix,
            client.probe_bucket(&config.prefix),
        ))
    };
    let mut probed = probe(&client);
    // A region we only guessed follows S3's redirect to the bucket's region, once.
    if let Err(e) = &probed
        && let Some(region) = client.region_to_follow(e)
    {
        info!("bucket {} is in region {region}, not {}: using {region}", config.bucket, client.region());
        client = client.with_region(&region).map_err(|e| format!("cannot create the S3 client: {}", e.message))?;
        probed = probe(&client);
    }
    // The probe's error message is already the hint for the user.
    probed.map_err(|e| e.message)?;
    let persistent = match &config.cache {
        Some(cache) => runtime.block_on(open_persistent_cache(&config, cache, &client)),
        None => Persistent::default(),
    };
    // Metered under the retries: each attempt is a request S3 receives (and bills).
    let client = MeteredClient::new(client, registry);
    let retry = RetryConfig { max_attempts: config.client.max_attempts.max(1), ..RetryConfig::default() };
    let client = RetryClient::new(client, retry);
    let disk_cache = match &config.cache {
        Some(cache) => Some(open_disk_cache(cache, persistent.dir.clone(), &persistent.namespace)?),
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
    if let Some((journal, loaded)) = persistent.journal {
        if loaded.damaged > 0 {
            warn!(
                damaged = loaded.damaged,
                "damaged lines skipped in the metadata journal; directories will be listed again"
            );
        }
        info!(entries = loaded.entries.len(), listings = loaded.listings.len(), "metadata loaded from the cache");
        fs = fs.with_journal(journal, loaded);
    }
    if config.fs.allow_rename {
        let log = open_rename_intents(persistent.dir.clone(), &config.bucket, &config.prefix)?;
        fs = fs.with_rename_intents(log);
        runtime.block_on(fs.recover_renames());
    }
    let fs = Arc::new(fs);
    let metrics = metrics::install(runtime.handle(), &config.metrics, fs.memory_budget().clone())?;
    logging::spawn_level_toggle(runtime.handle());
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone(), mount_point.clone())
        .with_kernel_queue(config.fuse.max_background, config.fuse.congestion_threshold);
    let unmount_at_end = adapter.unmount_at_end();
    let session = match fuse_fd {
        Some(fd) => {
            // The caller's mount(2) options decide who may use the mount; admit whoever the
            // kernel lets through. Readahead is the caller's too (we have no mountinfo/sysfs).
            let fuse = fuse_config(&config.fuse);
            let session = fuser::Session::from_fd(adapter, fd, fuser::SessionACL::All, fuse)
                .map_err(|e| format!("cannot serve the FUSE connection {}: {e}", mount_point.display()))?;
            install_signal_handlers(&runtime, None, mount_point.clone(), fs.clone());
            session
        }
        None => {
            let mut session = fuser::Session::new(adapter, &mount_point, &fuse_config(&config.fuse))
                .map_err(|e| format!("failed to mount at {}: {e}", mount_point.display()))?;
            *unmount_at_end.lock().unwrap() = Some(session.unmount_callable());
            raise_read_ahead(&mount_point);
            install_signal_handlers(&runtime, Some(session.unmount_callable()), mount_point.clone(), fs.clone());
            session
        }
    };

    if let Some(path) = &config.unstable.pid_file
        && let Err(e) = std::fs::write(path, format!("{}\n", std::process::id()))
    {
        warn!("cannot write the process id to {} (UNSTABLE_MOUNTPOINT_PID_FILE): {e}", path.display());
    }
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

/// The directory where `--allow-rename` makes its intents durable: `rename/` in the checked
/// `--cache` directory, else in the state directory (see [`default_state_dir`]), checked the
/// same way. No durable place is a mount error: a rename must be able to survive a crash.
///
/// [`default_state_dir`]: crate::fs::rename::intent::default_state_dir
fn open_rename_intents(cache: Option<Arc<CacheDir>>, bucket: &str, prefix: &str) -> Result<IntentLog, String> {
    let base = match cache {
        Some(dir) => Ok(dir),
        None => {
            let state = default_state_dir().ok_or(
                "--allow-rename needs a state directory for rename intents: set STATE_DIRECTORY, \
                 XDG_STATE_HOME or HOME, or use --cache",
            )?;
            CacheDir::open(&state).map(Arc::new)
        }
    };
    let opened = base.and_then(|base| Ok((base.subdir("rename")?, base)));
    let (dir, base) = opened.map_err(|e| format!("--allow-rename cannot keep rename intents durable: {e}"))?;
    Ok(IntentLog::new(dir, Some(base), bucket, prefix))
}

/// What of the `--cache` directory this mount may use.
#[derive(Default)]
struct Persistent {
    /// The verified directory; `None`: nothing of it is used.
    dir: Option<Arc<CacheDir>>,
    /// Store and reading identity ([`cache_namespace`]).
    namespace: String,
    /// The metadata journal, with `--metadata-ttl indefinite`.
    journal: Option<(Journal, Loaded)>,
}

/// Opens and checks the `--cache` directory, and the journal with `--metadata-ttl indefinite`.
/// If anything of it fails a check, nothing of it is used: one warning says what and why, and
/// the mount goes on without the persistent cache.
async fn open_persistent_cache(config: &MountConfig, cache: &CacheConfig, client: &AwsClient) -> Persistent {
    let Some(identity) = reading_identity(client, config.unstable.cache_key.as_deref()).await else {
        warn!(
            "the cache directory {} is not used: the credentials could not be resolved to tell whose \
               cached data may be reused; reading from S3 only",
            cache.dir.display()
        );
        return Persistent::default();
    };
    let namespace = cache_namespace(&config.client, client.region(), &identity);
    if cache.max_size == Some(0) && config.fs.metadata_ttl != MetadataTtl::Indefinite {
        return Persistent { namespace, ..Persistent::default() };
    }
    let opened = CacheDir::open(&cache.dir).and_then(|dir| {
        if cache.max_size != Some(0) {
            // The block tree and its counter files pass the checks too, or nothing is used.
            dir.subdir("v1")?;
            for name in ["usage", "members"] {
                open_private_file(&dir.path().join(name), false, &dir.shown().join(name))?;
            }
        }
        let journal = match config.fs.metadata_ttl {
            MetadataTtl::Indefinite => Some(open_journal(&dir, cache, &config.bucket, &config.prefix, &namespace)?),
            _ => None,
        };
        Ok((dir, journal))
    });
    match opened {
        Ok((dir, journal)) => Persistent { dir: Some(Arc::new(dir)), namespace, journal },
        Err(e) => {
            warn!("the cache directory {} is not used: {e}; reading from S3 only", cache.dir.display());
            Persistent::default()
        }
    }
}

/// Who reads: `UNSTABLE_MOUNTPOINT_CACHE_KEY` if set (whoever starts the mount, e.g. the CSI
/// driver per workload, vouches that every mount with this key may read the same objects),
/// else the credentials' identity ([`AwsClient::credential_identity`]).
async fn reading_identity(client: &AwsClient, cache_key: Option<&std::ffi::OsStr>) -> Option<String> {
    use sha2::{Digest, Sha256};
    match cache_key {
        Some(key) => {
            let hash = Sha256::digest(key.as_encoded_bytes());
            Some(format!("cache-key-sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>()))
        }
        None => client.credential_identity().await,
    }
}

/// The namespace of cached blocks and metadata: the store (normalised endpoint URL, or the
/// AWS partition of the region) and the reading identity. Mounts agreeing on it share cached
/// data; any other mount never sees it.
fn cache_namespace(client: &AwsClientConfig, region: &str, identity: &str) -> String {
    let store = match &client.endpoint_url {
        Some(url) => format!("endpoint:{}", normalise_endpoint(url)),
        None => format!("aws:{}", aws_partition(region)),
    };
    format!("store={store}\nidentity={identity}")
}

/// `HTTPS://Host:443/` and `https://host` name the same store.
fn normalise_endpoint(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let mut authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    if let Some(stripped) = authority.strip_suffix(default_port) {
        authority = stripped.to_string();
    }
    let path = path.trim_end_matches('/');
    if path.is_empty() { format!("{scheme}://{authority}") } else { format!("{scheme}://{authority}/{path}") }
}

/// The AWS partition a region belongs to (bucket names are unique within a partition).
fn aws_partition(region: &str) -> &'static str {
    match region {
        r if r.starts_with("cn-") => "aws-cn",
        r if r.starts_with("us-gov-") => "aws-us-gov",
        r if r.starts_with("us-isob-") => "aws-iso-b",
        r if r.starts_with("us-iso-") => "aws-iso",
        r if r.starts_with("eusc-") => "aws-eusc",
        _ => "aws",
    }
}

/// Opens the disk block cache in the verified directory (never blocks on scanning it).
fn open_disk_cache(
    cache: &CacheConfig,
    dir: Option<Arc<CacheDir>>,
    namespace: &str,
) -> Result<Arc<DiskBlockCache>, String> {
    let config = DiskCacheConfig {
        max_size: cache.max_size,
        block_size: cache.block_size,
        wipe_at_start: cache.wipe_at_start,
        namespace: namespace.to_string(),
        ..DiskCacheConfig::new(cache.dir.clone())
    };
    let usable = dir.is_some();
    let disk =
        DiskBlockCache::open_in(config, dir).map_err(|e| format!("cannot use --cache {}: {e}", cache.dir.display()))?;
    if usable && !disk.is_enabled() && cache.max_size != Some(0) {
        warn!("the cache directory {} is not usable; reading from S3 only", cache.dir.display());
    }
    Ok(disk)
}

/// The metadata journal for `--metadata-ttl indefinite` in the verified cache directory, named
/// after the store, reading identity, bucket and prefix.
fn open_journal(
    dir: &CacheDir,
    cache: &CacheConfig,
    bucket: &str,
    prefix: &str,
    namespace: &str,
) -> std::io::Result<(Journal, Loaded)> {
    let metadata = dir.subdir("metadata")?;
    let identity = format!("{namespace}\nbucket={bucket}\nprefix={prefix}");
    let path = journal::path_for(&metadata, bucket, &identity);
    if cache.wipe_at_start {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Journal::open(&path, &dir.show(&path))
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
    config.clone_fd = fuse.clone_fd;
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
///
/// An fd mount (`unmounter` is `None`) belongs to whoever called mount(2): we finish closes in
/// progress, abort open uploads, persist the metadata journal and exit 0; the mount then
/// answers ENOTCONN until its owner unmounts it.
fn install_signal_handlers(
    runtime: &tokio::runtime::Runtime,
    unmounter: Option<fuser::SessionUnmounter>,
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
        notify::stopping();
        let Some(mut unmounter) = unmounter else {
            info!("received interrupt signal; {} is mounted by another process: shutting down", mount_point.display());
            shut_down(&fs).await;
            fs.flush_metadata();
            std::process::exit(0);
        };
        info!("received interrupt signal, unmounting {}", mount_point.display());
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
    fn the_cache_namespace_names_the_store_and_the_identity() {
        let at = |url: Option<&str>| AwsClientConfig { endpoint_url: url.map(str::to_string), ..Default::default() };
        let ns = |url, region, who| cache_namespace(&at(url), region, who);
        let a = ns(Some("http://127.0.0.1:9000"), "us-east-1", "k1");
        assert_eq!(a, ns(Some("HTTP://127.0.0.1:9000/"), "eu-west-1", "k1"), "same endpoint, normalised");
        assert_ne!(a, ns(Some("http://127.0.0.1:9001"), "us-east-1", "k1"), "another endpoint");
        assert_ne!(a, ns(Some("http://127.0.0.1:9000"), "us-east-1", "k2"), "another identity");
        assert_eq!(normalise_endpoint("https://S3.example.com:443/"), "https://s3.example.com");
        assert_eq!(normalise_endpoint("http://h:80/base/"), "http://h/base");
        assert_eq!(ns(None, "us-east-1", "k"), ns(None, "eu-west-1", "k"), "one partition, one bucket namespace");
        assert_ne!(ns(None, "us-east-1", "k"), ns(None, "cn-north-1", "k"));
    }

    #[test]
    fn fuse_options_follow_the_flags() {
        let mut fuse = FuseConfig {
            mount_point: "/m".into(),
            read_only: true,
            auto_unmount: false,
            access: AccessPolicy::Owner,
            max_threads: 16,
            max_background: None,
            congestion_threshold: None,
            clone_fd: false,
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
