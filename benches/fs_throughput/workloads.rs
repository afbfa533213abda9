//! The workloads: what runs through the mount ([`MountJob`]) and the raw-SDK equivalent
//! ([`RawSpec`]), listed in [`all`]. Adding one is a new entry there plus, if needed, a
//! `MountJob` and a `RawSpec` variant.
//!
//! Every object is a slice of one 1 GiB buffer of pseudo-random bytes held by the server, so
//! the data set costs 1 GiB of memory however many objects use it. Readers written here (random
//! reads, first byte) check every byte they get against that buffer; `dd` and `cat` check only
//! sizes and exit codes.
//!
//! Writes ([`MountJob::Write`], [`RawSpec::Upload`]) copy local source files ([`Sources`]: the
//! first 1 GiB and 64 KiB of that same buffer, written once per benchmark run to a temporary
//! directory on tmpfs when there is one) to new keys under a prefix of their own. After each
//! run the harness checks every object written, byte for byte, against the buffer and deletes
//! them ([`check_and_clear`]), so the server holds at most one run's objects.
//!
//! The listing workload ([`MountJob::List`], [`RawSpec::List`]) reads a directory of many empty
//! objects (`FS_BENCH_LIST_OBJECTS`, 100,000 by default) with `ls -l` on a cold mount, against a
//! ListObjectsV2 loop over the same prefix.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::measure::AlignedBuf;
use crate::procs::Children;
use crate::raw::RawSpec;
use crate::server::Server;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

const LARGE: &str = "large/1GiB.bin";
const TTFB: &str = "ttfb/100MiB.bin";
const SMALL_FILES: u64 = 1000;
const SMALL_SIZE: u64 = 64 * KIB;
const LIST_PREFIX: &str = "list/";
/// Objects in the listed directory unless `FS_BENCH_LIST_OBJECTS` says otherwise.
const LIST_OBJECTS: u64 = 100_000;

/// Objects in the listing workload's directory: `FS_BENCH_LIST_OBJECTS`, or [`LIST_OBJECTS`].
pub fn list_objects() -> u64 {
    std::env::var("FS_BENCH_LIST_OBJECTS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(LIST_OBJECTS)
}

fn listed(i: u64) -> String {
    format!("{LIST_PREFIX}obj-{i:06}")
}

fn quarter(i: u64) -> String {
    format!("seq4/256MiB-{i}.bin")
}
fn sixteenth(i: u64) -> String {
    format!("seq16/64MiB-{i:02}.bin")
}
fn small(i: u64) -> String {
    format!("small/file-{i:04}.bin")
}

/// Name of a source file of `size` bytes in [`Sources`]' directory.
fn source_name(size: u64) -> String {
    match size {
        GIB => "1GiB.bin".into(),
        size if size % MIB == 0 => format!("{}MiB.bin", size / MIB),
        size => format!("{}KiB.bin", size / KIB),
    }
}

/// Where the local source files of the write workloads live: on tmpfs when there is one, in a
/// directory of this process's own (the raw child gets the full path on its command line).
pub fn source_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    base.join(format!("fs-bench-sources-{}", std::process::id()))
}

/// The local source files, written once per benchmark run; removed on drop (also on panic).
pub struct Sources {
    dir: PathBuf,
}

impl Sources {
    /// Writes the first `size` bytes of `data` as [`source_name`] for every size in `sizes`,
    /// and for every `(size, files)` in `trees` a directory [`source_tree`] of `files` such files.
    pub fn create(data: &Bytes, sizes: &[u64], trees: &[(u64, u64)]) -> Result<Sources, String> {
        let dir = source_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let sources = Sources { dir };
        let write = |path: &Path, size: u64| {
            std::fs::write(path, &data[..size as usize]).map_err(|e| format!("write {}: {e}", path.display()))
        };
        for &size in sizes {
            write(&sources.dir.join(source_name(size)), size)?;
        }
        for &(size, files) in trees {
            let tree = source_tree(size, files);
            std::fs::create_dir_all(&tree).map_err(|e| format!("mkdir {}: {e}", tree.display()))?;
            for key in write_keys("", 0, files) {
                write(&tree.join(Path::new(&key).file_name().unwrap()), size)?;
            }
        }
        Ok(sources)
    }

    /// Whether they are on tmpfs (so dropping the page cache leaves them in memory).
    pub fn on_tmpfs(&self) -> bool {
        self.dir.starts_with("/dev/shm")
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The local directory of `files` files of `size` bytes that [`Writer::CpR`] copies.
pub fn source_tree(size: u64, files: u64) -> PathBuf {
    source_dir().join(format!("tree-{files}x{}", source_name(size)))
}

/// Source directories (size, files) the `cp -r` workloads in `workloads` need.
pub fn source_trees(workloads: &[Workload]) -> Vec<(u64, u64)> {
    let mut trees: Vec<(u64, u64)> = workloads
        .iter()
        .filter_map(|w| match &w.job {
            MountJob::Write { writer: Writer::CpR, size, files, .. } => Some((*size, *files)),
            _ => None,
        })
        .collect();
    trees.sort_unstable();
    trees.dedup();
    trees
}

/// Source sizes the write workloads in `workloads` need.
pub fn source_sizes(workloads: &[Workload]) -> Vec<u64> {
    let mut sizes: Vec<u64> = workloads
        .iter()
        .filter_map(|w| match &w.job {
            MountJob::Write { size, .. } => Some(*size),
            _ => None,
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// How the mount side writes a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// `dd if=SOURCE of=FILE bs=1M`, one process per file.
    Dd,
    /// `cp SOURCE FILE` in one shell loop over the files.
    Cp,
    /// One `cp -r` of a local directory holding the files (named as the keys' last component)
    /// to the keys' directory, which it creates.
    CpR,
}

/// How the primary result of a workload is expressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// MiB/s (and operations per second).
    Throughput,
    /// Median latency of the samples.
    Latency,
    /// Operations (directory entries) per second; no payload.
    Rate,
}

/// Random reads of `block` bytes at block-aligned offsets of `key`, drawn from `seed`: the
/// mount-side reader and the raw child see the same offsets in the same order.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomReads {
    pub key: String,
    pub size: u64,
    pub block: u64,
    pub duration: Duration,
    pub max_reads: u64,
    pub seed: u64,
}

impl RandomReads {
    /// The offsets, at most `max_reads` of them.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + use<> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let (blocks, block) = (self.size / self.block, self.block);
        (0..self.max_reads).map(move |_| rng.gen_range(0..blocks) * block)
    }
}

/// What runs against the mount.
#[derive(Clone, Debug)]
pub enum MountJob {
    /// One `dd if=FILE of=/dev/null bs=1M` per key, all at once.
    Dd { keys: Vec<(String, u64)> },
    /// [`RandomReads`] with `pread`, through `O_DIRECT` or the page cache (whose pages are
    /// dropped after each read, so no read is served by an earlier one's readahead).
    Random { reads: RandomReads, direct: bool },
    /// `loops` shell loops at once, each `cat`-ing its share of the files to /dev/null.
    Cat { keys: Vec<(String, u64)>, loops: usize },
    /// `samples` times: open (`O_DIRECT`), read the first byte, close.
    FirstByte { key: String, samples: usize },
    /// `files` new files of `size` bytes, copied one after another from the local source of
    /// that size by `writer`, to `PREFIX/<run>.bin` (one file) or `PREFIX/<run>/file-NNNN.bin`,
    /// where `<run>` is new for every run. The directories are made (locally) first.
    Write { writer: Writer, size: u64, files: u64, prefix: String },
    /// `ls -l` of the directory `prefix` (on a fresh mount, caches dropped), which must list
    /// `count` entries.
    List { prefix: String, count: u64 },
}

impl MountJob {
    /// The seeded keys this job reads.
    fn keys(&self) -> Vec<String> {
        match self {
            MountJob::Dd { keys } | MountJob::Cat { keys, .. } => keys.iter().map(|(k, _)| k.clone()).collect(),
            MountJob::Random { reads, .. } => vec![reads.key.clone()],
            MountJob::FirstByte { key, .. } => vec![key.clone()],
            MountJob::Write { .. } => vec![],
            MountJob::List { count, .. } => (0..*count).map(listed).collect(),
        }
    }
}

/// One benchmark: a name to select it, what it does, how to mount, the two sides.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub what: String,
    pub metric: Metric,
    /// Extra `mount-s3` flags.
    pub mount_args: Vec<String>,
    pub job: MountJob,
    /// The raw-SDK equivalent; `None` if there is none worth comparing.
    pub raw: Option<RawSpec>,
    /// Bound on each side's run.
    pub timeout: Duration,
    /// Runs of each side; the report shows the median and the spread.
    pub repeat: usize,
}

/// Every workload, in run order.
pub fn all() -> Vec<Workload> {
    let seq = |objects: Vec<(String, u64)>, window| RawSpec::Sequential { objects, part: 8 * MIB, window };
    let quarters: Vec<_> = (0..4).map(|i| (quarter(i), 256 * MIB)).collect();
    let sixteenths: Vec<_> = (0..16).map(|i| (sixteenth(i), 64 * MIB)).collect();
    let smalls: Vec<_> = (0..SMALL_FILES).map(|i| (small(i), SMALL_SIZE)).collect();
    let random = RandomReads {
        key: LARGE.into(),
        size: GIB,
        block: 256 * KIB,
        duration: Duration::from_secs(10),
        max_reads: 200_000,
        seed: 0x5eed,
    };
    let minutes = |m: u64| Duration::from_secs(60 * m);
    // Short workloads run 5 times a side, the 10-second random ones and the writes 3 times:
    // about 6 minutes.
    let (short, long) = (5, 3);
    // mount-s3's write defaults: 8 MiB parts, 4 in flight, CRC32C, a single PUT below one part.
    let upload = |size, files, prefix: &str| RawSpec::Upload {
        source: source_dir().join(source_name(size)).display().to_string(),
        size,
        files,
        prefix: prefix.to_string(),
        part: 8 * MIB,
        window: 4,
    };
    let write = |writer, size, files, prefix: &str| MountJob::Write { writer, size, files, prefix: prefix.into() };
    let list_count = list_objects();
    vec![
        Workload {
            name: "seq_read",
            what: "1 reader, 1 GiB object, `dd bs=1M`".into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: MountJob::Dd { keys: vec![(LARGE.into(), GIB)] },
            raw: Some(seq(vec![(LARGE.into(), GIB)], 8)),
            timeout: minutes(2),
            repeat: short,
        },
        Workload {
            name: "seq_read_4t",
            what: "4 readers, 4 objects of 256 MiB, `dd bs=1M`".into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: MountJob::Dd { keys: quarters.clone() },
            raw: Some(seq(quarters, 8)),
            timeout: minutes(2),
            repeat: short,
        },
        Workload {
            name: "rand_read_direct",
            what: "random 256 KiB `pread`s of a 1 GiB object, `O_DIRECT`, 10 s".into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: MountJob::Random { reads: random.clone(), direct: true },
            raw: Some(RawSpec::Random(random.clone())),
            timeout: minutes(1),
            repeat: long,
        },
        Workload {
            name: "rand_read",
            what: "random 256 KiB `pread`s of a 1 GiB object, page cache (dropped after each read), 10 s".into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: MountJob::Random { reads: random.clone(), direct: false },
            raw: Some(RawSpec::Random(random)),
            timeout: minutes(1),
            repeat: long,
        },
        Workload {
            name: "small_files",
            what: "1,000 files of 64 KiB, `cat` each in one shell loop".into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: MountJob::Cat { keys: smalls.clone(), loops: 1 },
            raw: Some(RawSpec::WholeObjects { objects: smalls.clone(), concurrency: 1 }),
            timeout: minutes(2),
            repeat: short,
        },
        Workload {
            name: "small_files_8t",
            what: "1,000 files of 64 KiB, `cat` in 8 parallel shell loops".into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: MountJob::Cat { keys: smalls.clone(), loops: 8 },
            raw: Some(RawSpec::WholeObjects { objects: smalls, concurrency: 8 }),
            timeout: minutes(2),
            repeat: short,
        },
        Workload {
            name: "ttfb",
            what: "time to first byte: open + read 1 byte of a 100 MiB object, 50 times".into(),
            metric: Metric::Latency,
            mount_args: vec![],
            job: MountJob::FirstByte { key: TTFB.into(), samples: 50 },
            raw: Some(RawSpec::FirstByte { key: TTFB.into(), samples: 50 }),
            timeout: minutes(1),
            repeat: short,
        },
        Workload {
            name: "seq_read_16t_mem512",
            what: "16 readers, 16 objects of 64 MiB, `--memory-target 512` (raw: 2 parts in flight each)".into(),
            metric: Metric::Throughput,
            mount_args: vec!["--memory-target".into(), "512".into()],
            job: MountJob::Dd { keys: sixteenths.clone() },
            // 16 readers x 2 parts x 8 MiB = 256 MiB in flight: within the same budget.
            raw: Some(seq(sixteenths, 2)),
            timeout: minutes(2),
            repeat: short,
        },
        Workload {
            name: "list",
            what: format!(
                "cold `ls -l` of a directory of {} objects (raw: ListObjectsV2 loop, 1,000 a page)",
                thousands(list_count)
            ),
            metric: Metric::Rate,
            mount_args: vec![],
            job: MountJob::List { prefix: LIST_PREFIX.into(), count: list_count },
            raw: Some(RawSpec::List { prefix: LIST_PREFIX.into(), count: list_count }),
            timeout: minutes(5),
            repeat: long,
        },
        Workload {
            name: "seq_write",
            what: "1 writer, new 1 GiB object, `dd bs=1M` from a local file (raw: multipart upload, 8 MiB \
                   parts, 4 in flight, CRC32C)"
                .into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: write(Writer::Dd, GIB, 1, "seqwrite"),
            raw: Some(upload(GIB, 1, "seqwrite")),
            timeout: minutes(3),
            repeat: long,
        },
        Workload {
            name: "cp_write",
            what: "1 writer, new 1 GiB object, `cp` of a local file (raw: as `seq_write`)".into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: write(Writer::Cp, GIB, 1, "cpwrite"),
            raw: Some(upload(GIB, 1, "cpwrite")),
            timeout: minutes(3),
            repeat: long,
        },
        Workload {
            name: "small_writes",
            what: "1,000 new files of 64 KiB, one `cp -r` of a local directory of them (raw: one \
                   PutObject each, one at a time)"
                .into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: write(Writer::CpR, SMALL_SIZE, SMALL_FILES, "smallwrite"),
            raw: Some(upload(SMALL_SIZE, SMALL_FILES, "smallwrite")),
            timeout: minutes(3),
            repeat: long,
        },
        Workload {
            name: "small_writes_loop",
            what: "1,000 new files of 64 KiB, `cp` of a local file each in one shell loop (raw: one \
                   PutObject each, one at a time)"
                .into(),
            metric: Metric::Throughput,
            mount_args: vec![],
            job: write(Writer::Cp, SMALL_SIZE, SMALL_FILES, "smallwriteloop"),
            raw: Some(upload(SMALL_SIZE, SMALL_FILES, "smallwriteloop")),
            timeout: minutes(3),
            repeat: long,
        },
    ]
}

/// `n` with thousands separators: 100,000.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Fills a 1 GiB buffer with pseudo-random bytes and stores in `s3` every object the
/// `workloads` read, as slices of it (the in-memory server keeps the slices; Garage gets
/// PutObjects). Returns the buffer.
pub fn seed(s3: &Server, workloads: &[Workload]) -> Result<Bytes, String> {
    let mut data = vec![0u8; GIB as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for word in data.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    let data = Bytes::from(data);
    let slice = |offset: u64, len: u64| data.slice(offset as usize..(offset + len) as usize);
    let mut all = vec![(LARGE.to_string(), data.clone()), (TTFB.to_string(), slice(0, 100 * MIB))];
    all.extend((0..4).map(|i| (quarter(i), slice(i * 256 * MIB, 256 * MIB))));
    all.extend((0..16).map(|i| (sixteenth(i), slice(i * 64 * MIB, 64 * MIB))));
    all.extend((0..SMALL_FILES).map(|i| (small(i), slice(i * SMALL_SIZE, SMALL_SIZE))));
    let mut wanted: std::collections::HashSet<String> = workloads.iter().flat_map(|w| w.job.keys()).collect();
    let mut objects: Vec<(String, Bytes)> = all.into_iter().filter(|(key, _)| wanted.remove(key)).collect();
    // What is left are the listing's empty objects.
    let mut empty: Vec<String> = wanted.into_iter().collect();
    empty.sort();
    objects.extend(empty.into_iter().map(|key| (key, Bytes::new())));
    s3.seed(objects)?;
    Ok(data)
}

/// What a mount-side job did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub bytes: u64,
    pub ops: u64,
    pub latencies: Vec<Duration>,
}

/// Runs `job` against the mount at `mnt`, bounded by `timeout`. `large` is the 1 GiB buffer
/// (every object's bytes are in it at offset 0 for the keys read by in-process readers).
/// In-process readers run on a thread of their own: if the daemon hangs they are abandoned
/// (the caller's unmount then fails their reads) instead of hanging the benchmark.
pub fn run_mount_job(job: &MountJob, mnt: &Path, large: &Bytes, timeout: Duration) -> Result<Outcome, String> {
    match job {
        MountJob::Dd { keys } => dd_readers(mnt, keys, timeout),
        MountJob::Cat { keys, loops } => cat_loops(mnt, keys, *loops, timeout),
        MountJob::Random { reads, direct } => {
            let (reads, direct, path, large) = (reads.clone(), *direct, mnt.join(&reads.key), large.clone());
            on_thread(timeout, move || random_reads(&path, &reads, direct, &large))
        }
        MountJob::FirstByte { key, samples } => {
            let (path, samples, first) = (mnt.join(key), *samples, large[0]);
            on_thread(timeout, move || first_bytes(&path, samples, first))
        }
        MountJob::Write { writer, size, files, prefix } => {
            static RUN: AtomicU64 = AtomicU64::new(0);
            let run = RUN.fetch_add(1, Ordering::Relaxed);
            write_files(mnt, *writer, *size, &write_keys(prefix, run, *files), timeout)
        }
        MountJob::List { prefix, count } => list_dir(&mnt.join(prefix), *count, timeout),
    }
}

/// `ls -l DIR`: one line per entry after the "total" line; all `count` must be there.
fn list_dir(dir: &Path, count: u64, timeout: Duration) -> Result<Outcome, String> {
    let mut children = Children::default();
    let mut ls = Command::new("ls");
    ls.arg("-l").arg(dir);
    children.spawn(ls)?;
    let finished = children.wait_all(timeout)?.pop().expect("one child");
    if !finished.status.success() {
        return Err(format!("ls -l: {}: {}", finished.status, finished.stderr.trim()));
    }
    let entries = finished.stdout.lines().filter(|l| !l.starts_with("total ")).count() as u64;
    if entries != count {
        return Err(format!("ls -l listed {entries} entries, expected {count}"));
    }
    Ok(Outcome { bytes: 0, ops: entries, latencies: vec![] })
}

/// The keys of one run's `files` files under `prefix`.
pub fn write_keys(prefix: &str, run: u64, files: u64) -> Vec<String> {
    match files {
        1 => vec![format!("{prefix}/{run}.bin")],
        n => (0..n).map(|i| format!("{prefix}/{run}/file-{i:04}.bin")).collect(),
    }
}

/// Before a run, outside its timing: reads the job's source file, so that it comes from the page
/// cache (a no-op on tmpfs, which dropping the cache does not touch).
pub fn prepare(job: &MountJob) -> Result<(), String> {
    if let MountJob::Write { size, .. } = job {
        let path = source_dir().join(source_name(*size));
        let mut file = std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        std::io::copy(&mut file, &mut std::io::sink()).map_err(|e| format!("read {}: {e}", path.display()))?;
    }
    Ok(())
}

/// After a write run, of either side: every object under the workload's prefix must be one of
/// `files` objects whose bytes are the first `size` bytes of `large`; all are then deleted.
pub fn check_and_clear(s3: &Server, job: &MountJob, large: &Bytes) -> Result<(), String> {
    let MountJob::Write { size, files, prefix, .. } = job else { return Ok(()) };
    let keys = s3.list_keys(&format!("{prefix}/"));
    let mut problems = Vec::new();
    if keys.len() as u64 != *files {
        problems.push(format!("{} objects under {prefix}/, expected {files}", keys.len()));
    }
    let expected = &large[..*size as usize];
    for key in &keys {
        match s3.get(key) {
            Some(data) if data.len() as u64 != *size => problems.push(format!("{key}: {} bytes", data.len())),
            Some(data) if data[..] != *expected => problems.push(format!("{key}: wrong bytes")),
            Some(_) => {}
            None => problems.push(format!("{key}: gone")),
        }
    }
    s3.delete(&keys)?;
    if let Some(left) = s3.leftover(&format!("{prefix}/")) {
        problems.push(left);
    }
    match problems.first() {
        None => Ok(()),
        Some(first) => Err(format!("written objects: {first} ({} problem(s))", problems.len())),
    }
}

fn write_files(mnt: &Path, writer: Writer, size: u64, keys: &[String], timeout: Duration) -> Result<Outcome, String> {
    let source = source_dir().join(source_name(size));
    let paths: Vec<PathBuf> = keys.iter().map(|k| mnt.join(k)).collect();
    let mut dirs: Vec<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
    dirs.dedup();
    if writer == Writer::CpR {
        // `cp -r` makes the files' directory itself: only its parent exists.
        dirs = dirs.iter().filter_map(|d| d.parent()).collect();
        dirs.dedup();
    }
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    }
    let mut children = Children::default();
    match writer {
        Writer::Dd => {
            for path in &paths {
                let mut dd = Command::new("dd");
                dd.arg(format!("if={}", source.display())).arg(format!("of={}", path.display())).arg("bs=1M");
                children.spawn(dd)?;
            }
        }
        Writer::Cp => {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(r#"src=$1; shift; for f in "$@"; do cp -- "$src" "$f" || exit 1; done"#).arg("sh");
            sh.arg(&source).args(&paths);
            children.spawn(sh)?;
        }
        Writer::CpR => {
            let dest = paths.first().and_then(|p| p.parent()).ok_or("no files to copy")?;
            if paths.iter().any(|p| p.parent() != Some(dest)) {
                return Err("cp -r writes files of one directory".into());
            }
            let mut cp = Command::new("cp");
            cp.arg("-r").arg("--").arg(source_tree(size, keys.len() as u64)).arg(dest);
            children.spawn(cp)?;
        }
    }
    for finished in children.wait_all(timeout)? {
        if !finished.status.success() {
            return Err(format!("{writer:?}: {}: {}", finished.status, finished.stderr.trim()));
        }
    }
    // close() returned: each upload is complete (mount-s3 completes it on flush).
    Ok(Outcome { bytes: size * keys.len() as u64, ops: keys.len() as u64, latencies: vec![] })
}

/// The same `cp` loop (or `cp -r`) into a local directory on tmpfs: what the copy costs by
/// itself, fork and exec included. Files per second.
pub fn local_cp_rate(job: &MountJob) -> Result<f64, String> {
    let MountJob::Write { writer, size, files, .. } = job else { return Err("not a write".into()) };
    let builder = tempfile::Builder::new().prefix("fs-bench-").to_owned();
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { builder.tempdir_in(shm) } else { builder.tempdir() };
    let dir = dir.map_err(|e| format!("temp dir: {e}"))?;
    let keys = write_keys("local", 0, *files);
    let start = Instant::now();
    let outcome = write_files(dir.path(), *writer, *size, &keys, Duration::from_secs(60))?;
    Ok(outcome.ops as f64 / start.elapsed().as_secs_f64())
}

fn on_thread<F>(timeout: Duration, f: F) -> Result<Outcome, String>
where
    F: FnOnce() -> Result<Outcome, String> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).unwrap_or_else(|_| Err(format!("reader still running after {timeout:?}")))
}

fn dd_readers(mnt: &Path, keys: &[(String, u64)], timeout: Duration) -> Result<Outcome, String> {
    let mut children = Children::default();
    for (key, _) in keys {
        let mut dd = Command::new("dd");
        dd.arg(format!("if={}", mnt.join(key).display())).arg("of=/dev/null").arg("bs=1M");
        children.spawn(dd)?;
    }
    let mut outcome = Outcome::default();
    for ((key, size), finished) in keys.iter().zip(children.wait_all(timeout)?) {
        // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, ..."
        let copied = finished.stderr.lines().find(|l| l.contains(" copied")).and_then(|l| l.split(' ').next());
        let copied: u64 = copied.and_then(|n| n.parse().ok()).unwrap_or(0);
        if !finished.status.success() || copied != *size {
            return Err(format!("dd {key}: {} after {copied} bytes: {}", finished.status, finished.stderr.trim()));
        }
        outcome.bytes += copied;
        outcome.ops += 1;
    }
    Ok(outcome)
}

/// The same `cat` loops over local copies of the files in a temporary directory (on tmpfs when
/// there is one): what the loops cost by themselves, fork and exec included. Files per second.
pub fn local_cat_rate(s3: &Server, keys: &[(String, u64)], loops: usize) -> Result<f64, String> {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("fs-bench-").to_owned();
    let dir = if shm.is_dir() { builder.tempdir_in(shm) } else { builder.tempdir() };
    let dir = dir.map_err(|e| format!("temp dir: {e}"))?;
    for (key, _) in keys {
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().expect("a parent")).map_err(|e| format!("mkdir: {e}"))?;
        let data = s3.get(key).ok_or_else(|| format!("no object {key}"))?;
        std::fs::write(&path, &data).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let start = Instant::now();
    let outcome = cat_loops(dir.path(), keys, loops, Duration::from_secs(60))?;
    Ok(outcome.ops as f64 / start.elapsed().as_secs_f64())
}

fn cat_loops(mnt: &Path, keys: &[(String, u64)], loops: usize, timeout: Duration) -> Result<Outcome, String> {
    let mut children = Children::default();
    for share in 0..loops {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(r#"for f in "$@"; do cat -- "$f" || exit 1; done > /dev/null"#).arg("sh");
        sh.args(keys.iter().skip(share).step_by(loops).map(|(key, _)| mnt.join(key)));
        children.spawn(sh)?;
    }
    for finished in children.wait_all(timeout)? {
        if !finished.status.success() {
            return Err(format!("cat loop: {}: {}", finished.status, finished.stderr.trim()));
        }
    }
    Ok(Outcome { bytes: keys.iter().map(|(_, size)| size).sum(), ops: keys.len() as u64, latencies: vec![] })
}

fn open(path: &Path, direct: bool) -> Result<std::fs::File, String> {
    let mut options = OpenOptions::new();
    options.read(true);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path).map_err(|e| format!("open {}: {e}", path.display()))
}

fn random_reads(path: &Path, reads: &RandomReads, direct: bool, large: &Bytes) -> Result<Outcome, String> {
    let file = open(path, direct)?;
    let mut buf = AlignedBuf::new(reads.block as usize);
    let buf = buf.as_mut_slice();
    let start = Instant::now();
    let mut outcome = Outcome::default();
    for offset in reads.offsets() {
        if start.elapsed() >= reads.duration {
            break;
        }
        file.read_exact_at(buf, offset).map_err(|e| format!("pread at {offset}: {e}"))?;
        if buf[..] != large[offset as usize..(offset + reads.block) as usize] {
            return Err(format!("wrong bytes at offset {offset}"));
        }
        if !direct {
            // The whole 1 GiB would otherwise end up cached and later reads would be page-cache
            // hits; like fio on a 100 GiB file, each read must go to the file system.
            posix_fadvise(file.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
                .map_err(|e| format!("posix_fadvise: {e}"))?;
        }
        outcome.bytes += reads.block;
        outcome.ops += 1;
    }
    Ok(outcome)
}

fn first_bytes(path: &Path, samples: usize, expected: u8) -> Result<Outcome, String> {
    let mut buf = AlignedBuf::new(AlignedBuf::ALIGN);
    let mut outcome = Outcome::default();
    for _ in 0..samples {
        let start = Instant::now();
        let file = open(path, true)?;
        let n = file.read_at(&mut buf.as_mut_slice()[..1], 0).map_err(|e| format!("read: {e}"))?;
        outcome.latencies.push(start.elapsed());
        drop(file);
        if n != 1 || buf.as_mut_slice()[0] != expected {
            return Err(format!("first byte: read {n} bytes, value {}", buf.as_mut_slice()[0]));
        }
        outcome.bytes += 1;
        outcome.ops += 1;
    }
    Ok(outcome)
}
