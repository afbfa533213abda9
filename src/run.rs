//! The composition root: command line -> client -> core -> FUSE session, and the process around
//! it (daemon hand-off, signals, unmount, exit codes). The process the user starts becomes the
//! [`supervisor`] (mount point checks, logging, the mount); the worker it starts runs `serve`
//! (client, core, the session on the supervisor's connection).
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
use crate::client::cache::{CacheDir, CachingClient, DiskBlockCache, DiskCacheConfig, SharedCache, SharedCacheConfig};
use crate::client::metered::{MeteredClient, metered};
use crate::client::retry::{RetryClient, RetryConfig};
use crate::client::{ObjectClient, S3Operation};
use crate::config::{AccessPolicy, CacheConfig, FuseConfig, MountConfig};
use crate::daemon;
use crate::fs::MetadataTtl;
use crate::fs::S3Filesystem;
use crate::fs::namespace::metacache::journal::{self, Journal, Loaded};
use crate::fs::rename::intent::{IntentLog, default_state_dir};
use crate::fs::staging::StagingStore;
use crate::fuse::FuseAdapter;
use crate::logging;
use crate::metrics;
use crate::supervisor::{self, handover::Worker};

/// Kernel readahead for the mount, so sequential reads arrive as 1 MiB requests.
const READ_AHEAD_KB: u32 = 1024;
/// fuser threads that read requests from /dev/fuse; the work itself runs on tokio tasks.
const MAX_DISPATCH_THREADS: usize = 4;

/// The whole program: parse, then mount in the foreground or hand off to a daemon; in a
/// worker process ([`supervisor`]), serve the supervisor's connection.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let config = match cli::parse_command_line(args) {
        Ok(config) => config,
        Err(failure) => return failure.exit(),
    };
    if supervisor::handover::is_worker() {
        return worker(config);
    }
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
    match plan(&config, success_message) {
        Ok(plan) => supervisor::run(plan),
        Err(message) => {
            error!("{message}");
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The supervisor's part of a mount: the mount point (or descriptor) checked, logging set up.
fn plan(config: &MountConfig, success_message: String) -> Result<supervisor::Plan, String> {
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
    let log_file = logging::init(&config.logging, config.foreground, None)?;
    if let Some(path) = &log_file {
        info!("logging to {}", path.display());
    }
    info!(version = env!("CARGO_PKG_VERSION"), "mount-s3 starting: {}", config.describe_target());
    let mut fuse = fuse_config(&config.fuse);
    if fuse_fd.is_some() {
        // The caller's mount(2) options decide who may use the mount; admit whoever the
        // kernel lets through. Readahead is the caller's too (we have no mountinfo/sysfs).
        fuse.acl = fuser::SessionACL::All;
    }
    let read_ahead_at = (fuse_fd.is_none()).then(|| mount_point.clone());
    Ok(supervisor::Plan {
        mount_point,
        fd: fuse_fd,
        fuse,
        kernel_queue: crate::fuse::kernel_queue(config.fuse.max_background, config.fuse.congestion_threshold),
        success_message,
        pid_file: config.unstable.pid_file.clone(),
        log_file,
        after_mount: Box::new(move || {
            if let Some(point) = read_ahead_at {
                raise_read_ahead(&point);
            }
        }),
    })
}

/// A worker process: serve the supervisor's connection until it ends.
fn worker(config: MountConfig) -> ExitCode {
    let worker = match Worker::from_env() {
        Ok(worker) => worker,
        Err(message) => {
            eprintln!("Error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match serve(config, worker) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the supervisor's connection until it ends. Returns the error message of a failed start.
fn serve(config: MountConfig, mut worker: Worker) -> Result<(), String> {
    let mount_point = worker.mount_point.clone();
    logging::init(&config.logging, config.foreground, worker.log_file.as_deref())?;
    match &worker.reason {
        None => info!(version = env!("CARGO_PKG_VERSION"), "mount-s3 worker starting"),
        Some(reason) => {
            info!(
                version = env!("CARGO_PKG_VERSION"),
                restarts = worker.restarts,
                "mount-s3 worker starting after: {reason}"
            )
        }
    }

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
    let region = client.region().to_string();
    // Metered under the retries: each attempt is a request S3 receives (and bills).
    let client = MeteredClient::new(client, registry);
    let retry = RetryConfig { max_attempts: config.client.max_attempts.max(1), ..RetryConfig::default() };
    let client = RetryClient::new(client, retry);
    let disk_cache = match &config.cache {
        Some(cache) => Some(open_disk_cache(cache, persistent.dir.clone(), &persistent.namespace)?),
        None => None,
    };
    let shared = match &config.cache_xz {
        Some(xz) => Some(runtime.block_on(open_shared_cache(&config, xz, &region))?),
        None => None,
    };
    let client: Arc<dyn ObjectClient> = match (&disk_cache, &shared) {
        (Some(disk), None) if disk.is_enabled() => {
            let caching = Arc::new(CachingClient::new(client, disk.clone()));
            let counted = caching.clone();
            metrics::global().watch_cache(move || counted.stats().into());
            caching
        }
        (_, Some(shared)) => {
            // Local disk first when there is one; else a disabled disk tier.
            let disk = match &disk_cache {
                Some(disk) => disk.clone(),
                None => no_disk_cache(shared.block_size())?,
            };
            let caching = Arc::new(CachingClient::with_shared(client, disk, Some(shared.clone())));
            let (counted, shared) = (caching.clone(), shared.clone());
            // Hits from either tier; misses are blocks fetched from the source.
            metrics::global().watch_cache(move || {
                let mut counts: metrics::CacheCounts = counted.stats().into();
                counts.hits += shared.stats().hits;
                counts
            });
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
    if config.fs.allow_modify {
        fs = fs.with_staging(open_staging(&config)?);
    }
    if config.fs.allow_rename {
        let log = open_rename_intents(persistent.dir.clone(), &config.bucket, &config.prefix)?;
        fs = fs.with_rename_intents(log);
        runtime.block_on(fs.recover_renames());
    }
    let (fs, inherited_uploads) = match &worker.state_dir {
        Some(dir) => resume_from(fs, &dir.join("state")),
        None => (fs, Vec::new()),
    };
    let fs = Arc::new(fs);
    if !inherited_uploads.is_empty() {
        let fs = fs.clone();
        runtime.spawn(async move { fs.abort_inherited_uploads(inherited_uploads).await });
    }
    let metrics = metrics::install(runtime.handle(), &config.metrics, fs.memory_budget().clone())?;
    logging::spawn_level_toggle(runtime.handle());
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone())
        .with_kernel_queue(config.fuse.max_background, config.fuse.congestion_threshold);
    let mut fuse = fuse_config(&config.fuse);
    if crate::fuse_fd::parse(&config.fuse.mount_point).is_some() {
        fuse.acl = fuser::SessionACL::All;
    }
    let acl = fuse.acl;
    let session = worker.session(adapter, acl, fuse)?;
    install_signal_handlers(&runtime, mount_point.clone(), fs.clone());
    metrics::global().set_restarts(worker.restarts);
    worker.report_ready();
    if daemon::is_child() {
        // The background parent has gone: its pipes are not ours to write to.
        daemon::silence();
    }
    let result = session.run();
    info!("file system unmounted, shutting down");
    // Normally every file was closed before the unmount; after a forced one (`umount -f`, an
    // aborted connection) uploads may still be open: end them and say which.
    runtime.block_on(shut_down(&fs));
    fs.flush_metadata();
    if let Some(disk) = &disk_cache {
        runtime.block_on(disk.flush());
    }
    if let Some(shared) = &shared {
        runtime.block_on(shared.flush(SHARED_FLUSH_TIMEOUT));
        info!(bucket = shared.bucket(), stats = ?shared.stats(), "shared cache");
    }
    metrics.finish();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(|e| format!("FUSE session failed: {e}"))
}

/// Takes back what the previous worker recorded in `path` ([`crate::fs::resume`]) and records
/// from now on. A state that cannot be read or written is logged, and the mount goes on
/// without it (only a later restart would be worse off).
fn resume_from(fs: S3Filesystem, path: &Path) -> (S3Filesystem, Vec<(String, String)>) {
    use crate::fs::resume::{ResumeLog, Saved};
    let saved = Saved::load(path).unwrap_or_else(|e| {
        warn!("cannot read the state the previous worker left in {}: {e}", path.display());
        Saved::default()
    });
    match ResumeLog::create(path, &saved) {
        Ok(log) => fs.resumed(Arc::new(log), saved),
        Err(e) => {
            warn!(
                "cannot record state in {}: {e}; a restarted worker will not know this mount's open files",
                path.display()
            );
            (fs, Vec::new())
        }
    }
}

/// The staging directory of `--allow-modify`: `--cache DIR/mount-s3-cache/staging`, else
/// `$TMPDIR/mount-s3-<euid>/mount-s3-cache/staging`, checked as the cache directory is. What dead
/// mounts left there is discarded (and logged) now; staging counters go to the metrics.
fn open_staging(config: &MountConfig) -> Result<Arc<StagingStore>, String> {
    let (dir, max_size) = match &config.cache {
        Some(cache) => (cache.dir.clone(), cache.max_size.filter(|&m| m > 0)),
        None => (std::env::temp_dir().join(format!("mount-s3-{}", nix::unistd::geteuid())), None),
    };
    let opened = CacheDir::open(&dir).and_then(|base| {
        let root = base.subdir("staging")?;
        let shown = base.shown().join("staging");
        let (store, abandoned) = StagingStore::open(root, shown, &config.bucket, max_size)?;
        Ok((store.with_anchor(Arc::new(base)), abandoned))
    });
    let (store, abandoned) =
        opened.map_err(|e| format!("cannot use the staging directory {} for --allow-modify: {e}", dir.display()))?;
    if !abandoned.discarded.is_empty() || abandoned.unreadable > 0 {
        info!(
            discarded = abandoned.discarded.len(),
            unreadable = abandoned.unreadable,
            "staged files left by mounts that ended were discarded"
        );
    }
    let budget = store.budget().clone();
    metrics::global().watch_staging(move || {
        let stats = budget.stats();
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        metrics::StagingCounts {
            files: budget.staged_files(),
            bytes: budget.used(),
            uploads: load(&stats.uploads),
            sent: load(&stats.sent),
            copied: load(&stats.copied),
            fetched: load(&stats.fetched),
            conflicts: load(&stats.conflicts),
        }
    });
    Ok(Arc::new(store))
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

/// Longest wait at unmount for blocks still being written to the shared cache.
const SHARED_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The shared cache on the `--cache-xz` bucket, checked as Mountpoint does: one PUT of the
/// cache's metadata object, which fails the mount if the bucket cannot be written. The cache
/// client is the mount's client settings on the other bucket, in the region the mount uses, with
/// two attempts per request (a cache request that fails is a miss, not an error).
async fn open_shared_cache(
    config: &MountConfig,
    xz: &crate::config::CacheXzConfig,
    region: &str,
) -> Result<Arc<SharedCache>, String> {
    let client_config = AwsClientConfig {
        bucket: xz.bucket.clone(),
        region: Some(region.to_string()),
        max_attempts: 2,
        ..config.client.clone()
    };
    let client = AwsClient::new(&client_config)
        .await
        .map_err(|e| format!("cannot create the S3 client for --cache-xz {}: {}", xz.bucket, e.message))?;
    let shared = SharedCacheConfig {
        sse: config.fs.sse.clone(),
        sse_kms_key_id: config.fs.sse_kms_key_id.clone(),
        ..SharedCacheConfig::new(&config.bucket, xz.block_size)
    };
    let cache = Arc::new(SharedCache::new(Arc::new(client), shared));
    cache
        .validate()
        .await
        .map_err(|e| format!("cannot use --cache-xz {}: writing the cache's metadata object failed: {e}", xz.bucket))?;
    info!(bucket = xz.bucket, block_size = xz.block_size, "shared cache in use");
    Ok(cache)
}

/// A disk tier that stores nothing, for `--cache-xz` without `--cache`.
fn no_disk_cache(block_size: u64) -> Result<Arc<DiskBlockCache>, String> {
    let config = DiskCacheConfig { max_size: Some(0), block_size, ..DiskCacheConfig::new("/nonexistent") };
    DiskBlockCache::open_in(config, None).map_err(|e| format!("cannot use --cache-xz: {e}"))
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

/// SIGINT, SIGTERM and SIGHUP (from the supervisor, which unmounts: [`supervisor`]) end the
/// worker: closes in progress finish, uploads still open are aborted (each logged), the
/// metadata journal is persisted, and the worker exits 0.
fn install_signal_handlers(runtime: &tokio::runtime::Runtime, mount_point: PathBuf, fs: Arc<S3Filesystem>) {
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
        info!("worker: shutting down");
        shut_down(&fs).await;
        // The closes that waited for those uploads get their answers before we go.
        if !crate::fuse::closes_answered(std::time::Duration::from_secs(5)).await {
            warn!("shutdown: some close() calls were still unanswered after 5 s");
        }
        fs.flush_metadata();
        std::process::exit(0);
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
