//! What a run costs, read from `/proc`: CPU time of a process (`utime + stime` of
//! `/proc/<pid>/stat`, all its threads), its peak RSS (`VmHWM` of `/proc/<pid>/status`), the
//! whole machine's busy time (`/proc/stat`), and the server's threads (via `MemS3`).
//!
//! The same readings serve the daemon (read by this process) and the raw-SDK child (which reads
//! its own files and reports them), so the two sides are measured the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::mem_server::{clock_ticks_per_second, stat_cpu_ticks};
use crate::server::Server;

/// `pid` and every process below it: a mount is a supervisor and the worker it runs (issue
/// 16), and the worker does the work, so the daemon is measured as the whole tree.
fn process_tree(pid: &str) -> Vec<String> {
    let parent_of = |p: &str| -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // Field 4, after the parenthesised command name (which may hold spaces).
        stat.rsplit_once(')')?.1.split_whitespace().nth(1).map(str::to_string)
    };
    let all: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    let pids: Vec<(String, Option<String>)> =
        all.into_iter().filter(|p| p.bytes().all(|b| b.is_ascii_digit())).map(|p| (p.clone(), parent_of(&p))).collect();
    let mut tree = vec![pid.to_string()];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i].clone();
        tree.extend(pids.iter().filter(|(_, pp)| pp.as_deref() == Some(parent.as_str())).map(|(p, _)| p.clone()));
        i += 1;
    }
    tree
}

/// CPU seconds (user + system, every thread) process `pid` and the processes below it have
/// used so far; `None` if `pid` is gone.
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let ticks = |p: &str| -> Option<u64> { stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?) };
    let own = ticks(pid)?;
    let below: u64 = process_tree(pid).iter().skip(1).filter_map(|p| ticks(p)).sum();
    Some((own + below) as f64 / clock_ticks_per_second())
}

/// Peak resident set size (`VmHWM`, KiB) of the largest process of `pid`'s tree (the worker's).
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    let hwm = |p: &str| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    process_tree(pid).iter().filter_map(|p| hwm(p)).max()
}

/// CPU seconds of this process (every thread, the server's included) and of the children it
/// has reaped (`utime + stime + cutime + cstime`): the benchmark's own share of the machine.
pub fn harness_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or("");
    // after_name starts at field 3, so fields 14..=17 are at indexes 11..=14.
    let ticks: u64 = after_name.split_whitespace().skip(11).take(4).filter_map(|v| v.parse::<u64>().ok()).sum();
    ticks as f64 / clock_ticks_per_second()
}

/// Busy and total jiffies of all CPUs together (first line of `/proc/stat`; idle and iowait
/// are not busy).
pub fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU seconds all CPUs were busy between two [`machine_jiffies`] readings.
pub fn machine_cpu_seconds(before: (u64, u64), after: (u64, u64)) -> f64 {
    after.0.saturating_sub(before.0) as f64 / clock_ticks_per_second()
}

/// Waits until the machine has been nearly idle (under a quarter of a core) for half a second,
/// or until `budget` (which it uses up) is spent. Returns the cores busy in the last half second.
pub fn wait_for_quiet(budget: &mut Duration) -> f64 {
    loop {
        let (start, before) = (std::time::Instant::now(), machine_jiffies());
        std::thread::sleep(Duration::from_millis(500));
        let elapsed = start.elapsed();
        let busy = machine_cpu_seconds(before, machine_jiffies()) / elapsed.as_secs_f64();
        *budget = budget.saturating_sub(elapsed);
        if busy < 0.25 || budget.is_zero() {
            return busy;
        }
    }
}

/// CPUs of this machine.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Readings at one instant; two of them give a run's costs.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    client_cpu_s: Option<f64>,
    server_cpu_s: f64,
    harness_cpu_s: f64,
    machine: (u64, u64),
}

impl Snapshot {
    /// Reads the client process `pid` (if any), the server and the machine.
    pub fn take(client_pid: Option<&str>, s3: &Server) -> Snapshot {
        Snapshot {
            client_cpu_s: client_pid.and_then(process_cpu_seconds),
            server_cpu_s: s3.server_cpu_seconds(),
            harness_cpu_s: harness_cpu_seconds(),
            machine: machine_jiffies(),
        }
    }
}

/// What one side (the mount, or the raw SDK client) did in one workload, and what it cost.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Payload bytes the application got (or, for writes, gave).
    pub bytes: u64,
    /// Operations completed: reads, files, samples.
    pub ops: u64,
    /// Wall time of the workload.
    pub wall: Duration,
    /// Per-sample latencies, for latency workloads.
    pub latencies: Vec<Duration>,
    /// CPU seconds of the client process (the daemon, or the raw child) during the workload.
    pub client_cpu_s: f64,
    /// Peak RSS of the client process, KiB (its whole life: start-up included).
    pub client_peak_kib: u64,
    /// CPU seconds of the server's threads during the workload.
    pub server_cpu_s: f64,
    /// CPU seconds of the readers: `dd`/`cat` processes or reader threads of the benchmark
    /// (mount side only; the raw client is its own reader).
    pub reader_cpu_s: f64,
    /// CPU seconds the whole machine was busy (all processes, ours or not).
    pub machine_cpu_s: f64,
    /// S3 requests by operation name, counted by the server.
    pub requests: BTreeMap<String, u64>,
    /// What went wrong, if anything (the numbers are then partial).
    pub error: Option<String>,
}

impl Run {
    /// Fills the costs from two snapshots around the workload. The client's CPU is taken from
    /// them only if they saw it (the raw child reports its own). With `readers`, what the
    /// benchmark process and its reaped children used besides the server (when `in_process`)
    /// is the readers'.
    pub fn set_costs(&mut self, before: &Snapshot, after: &Snapshot, readers: bool, in_process: bool) {
        if let (Some(a), Some(b)) = (before.client_cpu_s, after.client_cpu_s) {
            self.client_cpu_s = (b - a).max(0.0);
        }
        self.server_cpu_s = (after.server_cpu_s - before.server_cpu_s).max(0.0);
        if readers {
            let server = if in_process { self.server_cpu_s } else { 0.0 };
            self.reader_cpu_s = (after.harness_cpu_s - before.harness_cpu_s - server).max(0.0);
        }
        self.machine_cpu_s = machine_cpu_seconds(before.machine, after.machine);
    }

    /// CPU seconds used by everything else on the machine (other users' processes, and the
    /// kernel's work not charged to a process): noise, from this benchmark's point of view.
    pub fn other_cpu_s(&self) -> f64 {
        (self.machine_cpu_s - self.client_cpu_s - self.server_cpu_s - self.reader_cpu_s).max(0.0)
    }

    /// MiB per second of wall time.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Operations per second of wall time.
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// GiB moved (for per-GiB costs).
    pub fn gib(&self) -> f64 {
        self.bytes as f64 / (1u64 << 30) as f64
    }

    /// Latency percentile `p` (0..=100), nearest rank.
    pub fn latency_percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
    }

    /// Average cores used by `cpu_s` CPU seconds over the run.
    pub fn cores(&self, cpu_s: f64) -> f64 {
        cpu_s / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Flushes dirty pages and drops the page cache, dentries and inodes (needs root). Returns
/// why it could not, if it could not.
pub fn drop_caches() -> Result<(), String> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("could not drop the page cache: {e}"))
}

/// A buffer at a 4096-byte aligned address, as `O_DIRECT` needs, without `unsafe`: an
/// over-allocated `Vec` and the aligned window inside it.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Alignment of [`AlignedBuf`] addresses.
    pub const ALIGN: usize = 4096;

    /// `len` zeroed bytes starting at an address that is a multiple of [`Self::ALIGN`].
    pub fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + Self::ALIGN];
        let start = (Self::ALIGN - storage.as_ptr() as usize % Self::ALIGN) % Self::ALIGN;
        AlignedBuf { storage, start, len }
    }

    /// The aligned bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Description of this machine: CPUs and model, memory, kernel.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} CPUs ({model}), {:.1} GiB memory, Linux {}", cpus(), mem_kib as f64 / (1 << 20) as f64, kernel.trim())
}
