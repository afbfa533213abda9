#!/usr/bin/env bash
# Builds a comparison mount for `cargo bench --bench fs_throughput -- --compare PATH` where the
# released upstream `mount-s3` binary cannot be installed (this machine reaches crates.io, not
# the release bucket): a small launcher, written here, that takes the subset of mount-s3's
# command line the benchmark passes and runs Mountpoint's own file system and CRT client
# (the `mountpoint-s3-fs` crate, pinned, from crates.io) with the defaults upstream's CLI uses
# (metadata TTL minimal, or 60 s with --cache; 8 MiB parts; 16 FUSE threads; 95 % of memory as
# the memory target unless --memory-target). It is built outside this package and never linked
# into mount-s3. Prints the path of the binary.
#
#   scripts/upstream-launcher.sh [DIR]        # default DIR: ~/.cache/mount-s3-upstream-launcher
#
# Needs cmake, clang's libclang and libfuse2's headers (the CRT and upstream's fuser fork build C).
set -euo pipefail
dir="${1:-$HOME/.cache/mount-s3-upstream-launcher}"
version="0.11.0"

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists fuse 2>/dev/null || need_apt+=(libfuse-dev)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
fi

mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "mp-upstream"
version = "$version"
edition = "2021"
publish = false

[dependencies]
mountpoint-s3-fs = "=$version"
mountpoint-s3-client = "=0.22.1"
anyhow = "1"
clap = { version = "4", features = ["derive"] }
nix = { version = "0.29", features = ["user"] }

[profile.release]
debug = "line-tables-only"
TOML
cat > "$dir/src/main.rs" <<'RUST'
//! A launcher for Mountpoint's own file system (the `mountpoint-s3-fs` crate from crates.io,
//! with its CRT client), taking the subset of `mount-s3`'s command line that our benchmark passes.
//! Not part of mount-s3: built outside the repository, only to give the benchmark a comparison
//! column where the released upstream binary cannot be installed.

use anyhow::{Context, Result, bail};
use clap::Parser;
use mountpoint_s3_client::config::AddressingStyle;
use mountpoint_s3_client::user_agent::UserAgent;
use mountpoint_s3_fs::data_cache::{CacheLimit, DataCacheConfig, DiskDataCacheConfig, ManagedCacheDir};
use mountpoint_s3_fs::fs::{CacheConfig, TimeToLive};
use mountpoint_s3_fs::fuse::config::{FuseOptions, FuseSessionConfig, MountPoint};
use mountpoint_s3_fs::logging::{LoggingConfig, init_logging};
use mountpoint_s3_fs::memory::{CandidateSize, PagedPool};
use mountpoint_s3_fs::s3::config::{ClientConfig, MemoryLimitSetting, PartConfig, Region, TargetThroughputSetting};
use mountpoint_s3_fs::s3::{Bucket, Prefix, S3Path, S3Personality};
use mountpoint_s3_fs::{MountpointConfig, Runtime, S3FilesystemConfig, Superblock, SuperblockConfig};

#[derive(Parser, Debug)]
#[clap(version = "0.11.0 (Mountpoint's file system and CRT client: mountpoint-s3-fs 0.11.0 from crates.io, run by a launcher taking mount-s3's flags)")]
struct Args {
    bucket: String,
    mount_point: String,
    #[clap(long)]
    foreground: bool,
    #[clap(long)]
    endpoint_url: Option<String>,
    #[clap(long)]
    force_path_style: bool,
    #[clap(long)]
    region: String,
    #[clap(long)]
    prefix: Option<String>,
    #[clap(long)]
    memory_target: Option<usize>,
    #[clap(long)]
    cache: Option<String>,
    #[clap(long)]
    max_cache_size: Option<usize>,
    #[clap(long)]
    metadata_ttl: Option<String>,
    #[clap(long)]
    allow_delete: bool,
    #[clap(long)]
    allow_overwrite: bool,
    #[clap(long)]
    read_only: bool,
}

fn total_memory() -> usize {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or(4 << 20);
    kib * 1024
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.foreground {
        bail!("this launcher runs in the foreground only");
    }
    let _logging = init_logging(LoggingConfig {
        log_file: None,
        log_to_stdout: true,
        default_filter: std::env::var("MP_LOG").unwrap_or_else(|_| "warn,awscrt=off".into()),
    })?;
    let _metrics = mountpoint_s3_fs::metrics::install(None).map_err(|e| anyhow::anyhow!("{e}"))?;

    // As upstream's CLI: TTL "minimal" unless a cache is given (then 60 s) or a TTL is named.
    let ttl = match args.metadata_ttl.as_deref() {
        Some(s) => s.parse::<TimeToLive>().context("--metadata-ttl")?,
        None if args.cache.is_some() => TimeToLive::Duration(std::time::Duration::from_secs(60)),
        None => TimeToLive::Minimal,
    };
    let cache_config = CacheConfig::new(ttl);
    let (mem_limit, setting) = match args.memory_target {
        Some(mib) => (mib << 20, MemoryLimitSetting::User(mib << 20)),
        None => {
            let m = ((total_memory() as f64) * 0.95) as usize;
            let m = m.max(mountpoint_s3_fs::memory::MINIMUM_MEM_LIMIT);
            (m, MemoryLimitSetting::Default(m))
        }
    };
    let client_config = ClientConfig {
        region: Region::new_user_specified(args.region.clone()),
        endpoint_url: args.endpoint_url.clone(),
        addressing_style: if args.force_path_style { AddressingStyle::Path } else { AddressingStyle::Automatic },
        dual_stack: false,
        transfer_acceleration: false,
        auth_config: Default::default(),
        requester_pays: false,
        expected_bucket_owner: None,
        throughput_target: TargetThroughputSetting::Default,
        bind: None,
        part_config: PartConfig::with_part_size(8 << 20).validate(setting)?,
        user_agent: UserAgent::new(Some("mp-upstream-launcher".into())),
        tls_config: None,
    };
    let pool = PagedPool::config()
        .with_candidate_sizes([CandidateSize::new(client_config.part_config.read_size_bytes)])
        .with_memory_limit(mem_limit)
        .build();
    let client = client_config.create_client(pool.clone(), None).context("create S3 client")?;
    let runtime = Runtime::new(client.event_loop_group());

    let mut fs_config = S3FilesystemConfig {
        cache_config: cache_config.clone(),
        allow_delete: args.allow_delete,
        allow_overwrite: args.allow_overwrite,
        read_only: args.read_only,
        ..Default::default()
    };
    fs_config.uid = nix::unistd::getuid().as_raw();
    fs_config.gid = nix::unistd::getgid().as_raw();
    fs_config.s3_personality = S3Personality::Standard;

    let mut managed = None;
    let disk_cache_config = match &args.cache {
        Some(dir) => {
            let m = ManagedCacheDir::new_from_parent_with_cache_key(dir, None, true).context("cache dir")?;
            let cfg = DiskDataCacheConfig {
                cache_directory: m.as_path_buf(),
                block_size: 1 << 20,
                limit: match args.max_cache_size {
                    Some(mib) => CacheLimit::TotalSize { max_size: mib << 20 },
                    None => CacheLimit::default(),
                },
            };
            managed = Some(m);
            Some(cfg)
        }
        None => None,
    };
    let data_cache = DataCacheConfig { disk_cache_config, express_cache_config: None };

    let fuse_options = FuseOptions {
        read_only: args.read_only,
        allow_other: false,
        allow_root: false,
        auto_unmount: false,
        clone_fd: false,
    };
    let fuse_config = FuseSessionConfig::new(MountPoint::new(&args.mount_point)?, fuse_options, 16)?;
    let s3_path = S3Path::new(
        Bucket::new(args.bucket.clone())?,
        Prefix::new(args.prefix.as_deref().unwrap_or(""))?,
    );
    let superblock = Superblock::new(
        client.clone(),
        s3_path,
        SuperblockConfig { cache_config, s3_personality: S3Personality::Standard },
    );
    let mut session = MountpointConfig::new(fuse_config, fs_config, data_cache)?
        .create_fuse_session(superblock, client, runtime, pool)
        .context("create FUSE session")?;
    if let Some(m) = managed {
        session.run_on_close(Box::new(move || drop(m)));
    }
    eprintln!("bucket {} is mounted at {} (mountpoint-s3-fs 0.11.0)", args.bucket, args.mount_point);
    session.join().context("join")?;
    Ok(())
}
RUST
(cd "$dir" && cargo build --release --quiet >&2)
echo "$dir/target/release/mp-upstream"
