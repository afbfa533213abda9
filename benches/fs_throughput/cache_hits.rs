//! Cache-hit workloads (issue 15, item 6): reads of an object already in the `--cache`
//! directory, against the same reads of a local file on the same disk.
//!
//! One mount with `--cache DIR` (DIR under cargo's target tmp dir, which is on the disk, not on
//! tmpfs) reads a 512 MiB object once, byte-checked, to fill the cache; it waits until the
//! cache holds the whole object. The raw side is a local file of the same bytes in the same
//! directory. Then the sides alternate, each run after `sync` and dropping the page cache:
//!
//! - `cache_hit_seq`: `dd bs=1M` of the whole object through the mount, against `dd bs=1M` of
//!   the local file. Target: mount >= 0.9x raw.
//! - `cache_hit_first_byte`: `open` and one 4 KiB `read` (byte-checked) of the cached object,
//!   against the same on the local file. Target: mount under 0.5 ms. Measured twice: cold
//!   (page cache dropped: the block file comes from the disk) and warm (the block file is in
//!   the page cache; a new `open` of a FUSE file still drops the kernel's copy of its pages, so
//!   the daemon serves the read: this is the daemon's own cost).
//!
//! Every mount-side run counts the requests the server saw: a cache hit makes no GetObject. The
//! result is a few notes of the report (its tables are for the mount-against-SDK workloads).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::mount::{TestMount, binary};
use crate::measure;
use crate::server::Server;
use crate::workloads::MIB;

/// The workloads of this module: name and description, as `--list` shows them.
pub const NAMES: [(&str, &str); 2] = [
    ("cache_hit_seq", "512 MiB object in --cache, page cache dropped, `dd bs=1M` vs `dd` of a local file"),
    ("cache_hit_first_byte", "open + 4 KiB read of an object in --cache, page cache dropped, vs a local file"),
];

const KEY: &str = "cache/512MiB.bin";
const SIZE: u64 = 512 * MIB;
const FIRST_READ: usize = 4096;
/// First-byte samples a side (each after dropping the page cache).
const FIRST_BYTE_SAMPLES: usize = 9;

/// Whether `name` is one of [`NAMES`].
pub fn is_cache_hit(name: &str) -> bool {
    NAMES.iter().any(|(n, _)| *n == name)
}

/// Stores the object the cache-hit workloads read (the first 512 MiB of `data`).
pub fn seed(s3: &Server, data: &Bytes) -> Result<(), String> {
    s3.seed(vec![(KEY.to_string(), data.slice(..SIZE as usize))])
}

/// Runs the selected cache-hit workloads (`names`, or both when `names` has none of them),
/// `repeat` sequential runs a side; returns the report's notes. `quiet` waits for an idle
/// machine before each run and returns the cores busy when it started.
pub fn run(s3: &Server, data: &Bytes, names: &[String], repeat: usize, quiet: &mut dyn FnMut() -> f64) -> Vec<String> {
    let wanted = |name: &str| names.is_empty() || names.iter().any(|n| n == name);
    match run_inner(s3, data, wanted("cache_hit_seq"), wanted("cache_hit_first_byte"), repeat, quiet) {
        Ok(notes) => notes,
        Err(e) => vec![format!("Cache-hit workloads failed: {e}")],
    }
}

fn run_inner(
    s3: &Server,
    data: &Bytes,
    seq: bool,
    first_byte: bool,
    repeat: usize,
    quiet: &mut dyn FnMut() -> f64,
) -> Result<Vec<String>, String> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    let dir = tempfile::tempdir_in(&base).map_err(|e| format!("temp dir in {}: {e}", base.display()))?;
    let (cache_dir, local) = (dir.path().join("cache"), dir.path().join("local-512MiB.bin"));
    std::fs::create_dir(&cache_dir).map_err(|e| e.to_string())?;
    let expected = data.slice(..SIZE as usize);
    std::fs::write(&local, &expected).map_err(|e| format!("write {}: {e}", local.display()))?;
    let mut notes = vec![];
    if on_tmpfs(dir.path()) {
        notes.push(format!("Cache-hit workloads: {} is on tmpfs, not a disk.", dir.path().display()));
    }

    let cache_arg = cache_dir.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["--endpoint-url", s3.endpoint(), "--force-path-style", "--region", s3.region()];
    args.extend(["--cache", &cache_arg, "--max-cache-size", "1024"]);
    let mount = TestMount::try_new_binary(&binary(), &s3.env_vars(), s3.bucket(), &args)
        .map_err(|out| format!("mount failed: {}", crate::tail(&out)))?;
    let cached = mount.path().join(KEY);
    let result = (|| {
        prime(&cached, &expected, &cache_dir)?;
        let mut busy: f64 = 0.0;
        if seq {
            let (mut mounts, mut raws, mut gets) = (vec![], vec![], 0);
            for _ in 0..repeat {
                busy = busy.max(quiet());
                s3.reset_counts();
                mounts.push(dd(&cached)?);
                gets += s3.request_counts().values().sum::<u64>();
                busy = busy.max(quiet());
                raws.push(dd(&local)?);
                eprintln!(
                    "   seq   mount {:>7.1} MiB/s  local {:>7.1} MiB/s",
                    mib_s(*mounts.last().unwrap()),
                    mib_s(*raws.last().unwrap())
                );
            }
            notes.push(seq_note(&mounts, &raws, gets));
        }
        if first_byte {
            for cold in [true, false] {
                let (mut mounts, mut raws, mut requests) = (vec![], vec![], 0);
                for _ in 0..FIRST_BYTE_SAMPLES {
                    busy = busy.max(quiet());
                    s3.reset_counts();
                    mounts.push(first_read(&cached, &expected, cold)?);
                    requests += s3.request_counts().values().sum::<u64>();
                    raws.push(first_read(&local, &expected, cold)?);
                }
                notes.push(first_byte_note(&mut mounts, &mut raws, requests, cold));
            }
        }
        if busy >= 0.25 {
            notes
                .push(format!("Cache-hit workloads: some runs started with the machine busy (up to {busy:.2} cores)."));
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = crate::unmount(mount) {
        notes.push(format!("Cache-hit workloads: {e}"));
    }
    result?;
    Ok(notes)
}

/// Reads the object once through the mount (checking its bytes), then waits until the cache
/// directory holds at least the object's size (blocks may be written after the read returns).
fn prime(cached: &Path, expected: &Bytes, cache_dir: &Path) -> Result<(), String> {
    let got = std::fs::read(cached).map_err(|e| format!("prime {}: {e}", cached.display()))?;
    if got != expected.as_ref() {
        return Err(format!("prime: {} differs from the object ({} bytes read)", cached.display(), got.len()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir_bytes(cache_dir) < SIZE {
        if Instant::now() > deadline {
            return Err(format!("cache holds only {} MiB after priming", dir_bytes(cache_dir) / MIB));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn on_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// `dd bs=1M` of `path` after dropping the page cache; the wall time of the whole `dd`.
fn dd(path: &Path) -> Result<Duration, String> {
    measure::drop_caches()?;
    let mut cmd = Command::new("dd");
    cmd.arg(format!("if={}", path.display())).args(["of=/dev/null", "bs=1M"]);
    let start = Instant::now();
    let out = cmd.output().map_err(|e| format!("dd: {e}"))?;
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.contains(&format!("{SIZE} bytes")) {
        return Err(format!("dd {}: {} {}", path.display(), out.status, stderr.trim()));
    }
    Ok(wall)
}

/// Time from `open` to the end of the first 4 KiB `read` of `path`; `cold`: page cache dropped
/// first.
fn first_read(path: &Path, expected: &Bytes, cold: bool) -> Result<Duration, String> {
    if cold {
        measure::drop_caches()?;
    }
    let mut buf = [0u8; FIRST_READ];
    let start = Instant::now();
    let mut file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let n = file.read(&mut buf).map_err(|e| format!("read {}: {e}", path.display()))?;
    let took = start.elapsed();
    if n == 0 || buf[..n] != expected[..n] {
        return Err(format!("first read of {}: wrong bytes ({n} read)", path.display()));
    }
    Ok(took)
}

fn mib_s(wall: Duration) -> f64 {
    (SIZE / MIB) as f64 / wall.as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn seq_note(mounts: &[Duration], raws: &[Duration], requests: u64) -> String {
    let mut m: Vec<f64> = mounts.iter().map(|w| mib_s(*w)).collect();
    let mut r: Vec<f64> = raws.iter().map(|w| mib_s(*w)).collect();
    let mut ratios: Vec<f64> = m.iter().zip(&r).map(|(m, r)| m / r).collect();
    let range = |v: &[f64]| {
        format!("[{:.0}-{:.0}]", v.iter().copied().fold(f64::MAX, f64::min), v.iter().copied().fold(0.0, f64::max))
    };
    let (m_range, r_range) = (range(&m), range(&r));
    let ratio = median(&mut ratios);
    format!(
        "`cache_hit_seq` target mount >= 0.9x local `dd` of the same disk: mount {:.0} MiB/s {m_range}, local file {:.0} \
         MiB/s {r_range}, paired ratio {ratio:.2} (median of {}), {}; {requests} S3 request(s) during the mount's reads.",
        median(&mut m),
        median(&mut r),
        ratios.len(),
        if ratio >= 0.9 { "met" } else { "NOT met" },
    )
}

fn first_byte_note(mounts: &mut [Duration], raws: &mut [Duration], requests: u64, cold: bool) -> String {
    mounts.sort();
    raws.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (m, r) = (ms(mounts[mounts.len() / 2]), ms(raws[raws.len() / 2]));
    format!(
        "`cache_hit_first_byte` ({}) target under 0.5 ms: open + 4 KiB read of the cached object {m:.2} ms (median of {}, \
         {:.2}-{:.2}), of the local file {r:.2} ms ({:.2}-{:.2}), {}; {requests} S3 request(s) during the mount's reads.",
        if cold { "page cache dropped" } else { "block file in the page cache" },
        mounts.len(),
        ms(mounts[0]),
        ms(mounts[mounts.len() - 1]),
        ms(raws[0]),
        ms(raws[raws.len() - 1]),
        if m < 0.5 { "met" } else { "NOT met" },
    )
}
