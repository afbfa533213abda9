//! Process metrics: what the mount did, how long it took, and what it cost in S3 requests.
//!
//! One [`Metrics`] registry per process ([`global`]), written by three instruments:
//! - the FUSE adapter times every request it hands to the core ([`Metrics::fuse_request`]);
//! - [`crate::client::metered::MeteredClient`] wraps the S3 client beneath the retry layer and
//!   counts every request, its latency, bytes and error code ([`Metrics::s3_request_sent`],
//!   [`Metrics::s3_request_answered`]): one call is one attempt the server sees;
//! - the data cache's own counters (block hits, misses, evictions) are read through the closure
//!   registered with [`Metrics::watch_cache`] where the cache is built; 0 without a cache.
//!
//! Writers only touch atomics (a mutex guards the error-code map, taken on failures only).
//! Readers take a [`Snapshot`]; the difference of two snapshots is an interval. The rest is
//! presentation: [`report`] logs a summary every 5 s and a final one with the estimated request
//! [`cost`] at unmount, and [`prometheus`] serves the same numbers over HTTP.

pub mod cost;
pub mod histogram;
pub mod otlp;
pub mod prometheus;
pub mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use cost::{CostEstimate, PriceClass, PricePer1k, RequestPrices};
use histogram::{Histogram, HistogramSnapshot};
pub use report::{MetricsConfig, MetricsGuard, install};

use crate::client::{ClientError, S3Operation};
use crate::fs::memory::MemoryBudget;

/// FUSE operations timed separately; anything else is counted as `other`.
pub const FUSE_OPS: [&str; 24] = [
    "lookup",
    "getattr",
    "setattr",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "statfs",
    "mknod",
    "create",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "link",
    "rename",
    "forget",
    "other",
];

/// Counts and latencies of one kind of request.
#[derive(Debug, Default)]
struct OpStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Failed requests S3 does not bill: no HTTP answer at all, or a 5xx.
    unbilled: AtomicU64,
    latency: Histogram,
}

impl OpStats {
    fn snapshot(&self, name: &'static str) -> OpSnapshot {
        OpSnapshot {
            name,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            unbilled: self.unbilled.load(Ordering::Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

/// Data-cache counters, cumulative, as the cache reports them to [`Metrics::watch_cache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Blocks served from the cache.
    pub hits: u64,
    /// Blocks the cache did not have.
    pub misses: u64,
    /// Blocks evicted.
    pub evictions: u64,
}

impl From<crate::client::cache::CacheStats> for CacheCounts {
    fn from(stats: crate::client::cache::CacheStats) -> Self {
        CacheCounts { hits: stats.hits, misses: stats.misses, evictions: stats.evictions }
    }
}

/// Reads the cache's counters.
type CacheSource = Box<dyn Fn() -> CacheCounts + Send + Sync>;

/// The registry every instrument writes to.
pub struct Metrics {
    started: Instant,
    fuse: Vec<OpStats>,
    s3: Vec<OpStats>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors_by_code: Mutex<BTreeMap<String, u64>>,
    cache: OnceLock<CacheSource>,
    memory: OnceLock<MemoryBudget>,
    /// Histograms for `--otlp-endpoint`, once export has started.
    otlp: OnceLock<otlp::Instruments>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("uptime", &self.started.elapsed()).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            fuse: FUSE_OPS.iter().map(|_| OpStats::default()).collect(),
            s3: S3Operation::ALL.iter().map(|_| OpStats::default()).collect(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors_by_code: Mutex::default(),
            cache: OnceLock::new(),
            memory: OnceLock::new(),
            otlp: OnceLock::new(),
        }
    }
}

/// The process's registry.
pub fn global() -> Arc<Metrics> {
    static GLOBAL: LazyLock<Arc<Metrics>> = LazyLock::new(Arc::default);
    GLOBAL.clone()
}

/// Position of a FUSE operation in [`FUSE_OPS`] (`other` when unknown).
fn fuse_index(op: &str) -> usize {
    FUSE_OPS.iter().position(|name| *name == op).unwrap_or(FUSE_OPS.len() - 1)
}

/// Position of an S3 operation in [`S3Operation::ALL`].
fn s3_index(op: S3Operation) -> usize {
    op as usize
}

/// The label an S3 error is counted under: the S3 error code when the server sent one, else
/// the kind of failure (`NotFound` for a HEAD 404, which has no body, `Transient`, ...).
pub fn error_label(error: &ClientError) -> String {
    error.code.clone().unwrap_or_else(|| format!("{:?}", error.kind))
}

impl Metrics {
    /// A FUSE request of `op` answered after `elapsed`, successfully or with an errno.
    pub fn fuse_request(&self, op: &str, elapsed: Duration, ok: bool) {
        let index = fuse_index(op);
        let stats = &self.fuse[index];
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        stats.latency.record(elapsed);
        if let Some(otlp) = self.otlp.get() {
            otlp.fuse_request(index, elapsed);
        }
    }

    /// An S3 request of `op` answered after `elapsed`: [`Self::s3_request_sent`] then
    /// [`Self::s3_request_answered`].
    pub fn s3_request(&self, op: S3Operation, elapsed: Duration, error: Option<&ClientError>) {
        self.s3_request_sent(op);
        self.s3_request_answered(op, elapsed, error);
    }

    /// An S3 request of `op` is on its way. Counted now, not when answered: a caller may
    /// abandon a request in flight (a lookup drops its HEAD once the LIST shows a directory),
    /// and S3 still received it.
    pub fn s3_request_sent(&self, op: S3Operation) {
        self.s3[s3_index(op)].requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The answer to a request counted by [`Self::s3_request_sent`], after `elapsed` (for a GET:
    /// when the response headers arrived), successful or `error`.
    pub fn s3_request_answered(&self, op: S3Operation, elapsed: Duration, error: Option<&ClientError>) {
        let stats = &self.s3[s3_index(op)];
        stats.latency.record(elapsed);
        if let Some(otlp) = self.otlp.get() {
            otlp.s3_answered(op, elapsed);
        }
        if let Some(error) = error {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            if error.status.is_none_or(|status| status >= 500) {
                stats.unbilled.fetch_add(1, Ordering::Relaxed);
            }
            self.count_error_label(error);
        }
    }

    /// An S3 response body that failed part way (the request itself was already counted).
    pub fn s3_body_error(&self, error: &ClientError) {
        self.count_error_label(error);
    }

    fn count_error_label(&self, error: &ClientError) {
        *self.errors_by_code.lock().unwrap().entry(error_label(error)).or_insert(0) += 1;
    }

    /// Bytes of object data received from S3.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes of object data sent to S3.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Reports the data cache's counters from now on, read through `source` at each snapshot
    /// (the first source given wins): `run` registers the disk cache's `stats()`.
    pub fn watch_cache(&self, source: impl Fn() -> CacheCounts + Send + Sync + 'static) {
        let _ = self.cache.set(Box::new(source));
    }

    /// Reports the data-buffer budget's use from now on (the first budget given wins).
    pub fn watch_memory(&self, budget: MemoryBudget) {
        let _ = self.memory.set(budget);
    }

    /// Every counter, now.
    pub fn snapshot(&self) -> Snapshot {
        let budget = self.memory.get();
        let cache = self.cache.get().map(|source| source()).unwrap_or_default();
        Snapshot {
            uptime: self.started.elapsed(),
            fuse: FUSE_OPS.iter().zip(&self.fuse).map(|(name, stats)| stats.snapshot(name)).collect(),
            s3: S3Operation::ALL.iter().zip(&self.s3).map(|(op, stats)| stats.snapshot(op.name())).collect(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            errors_by_code: self.errors_by_code.lock().unwrap().clone(),
            cache,
            memory: MemorySnapshot {
                rss: read_rss(),
                reserved: budget.map(MemoryBudget::reserved).unwrap_or_default(),
                peak_reserved: budget.map(MemoryBudget::peak).unwrap_or_default(),
                limit: budget.map(MemoryBudget::limit).unwrap_or_default(),
            },
        }
    }
}

/// One kind of request at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpSnapshot {
    /// `read`, `GetObject`, ...
    pub name: &'static str,
    pub requests: u64,
    pub errors: u64,
    /// Failed requests S3 does not bill (no answer, or 5xx).
    pub unbilled: u64,
    pub latency: HistogramSnapshot,
}

impl OpSnapshot {
    fn since(&self, earlier: &OpSnapshot) -> OpSnapshot {
        OpSnapshot {
            name: self.name,
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            unbilled: self.unbilled.saturating_sub(earlier.unbilled),
            latency: self.latency.since(&earlier.latency),
        }
    }

    /// Requests S3 bills.
    pub fn billable(&self) -> u64 {
        self.requests.saturating_sub(self.unbilled)
    }
}

/// Memory in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySnapshot {
    /// Resident set size from /proc/self/status, if readable.
    pub rss: Option<u64>,
    /// Bytes of the data-buffer budget reserved now, its peak, and its limit.
    pub reserved: u64,
    pub peak_reserved: u64,
    pub limit: u64,
}

/// Every counter at one moment (or, from [`Snapshot::since`], over an interval).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Time since the registry was created (for an interval: the interval's length).
    pub uptime: Duration,
    /// In [`FUSE_OPS`] order.
    pub fuse: Vec<OpSnapshot>,
    /// In [`S3Operation::ALL`] order.
    pub s3: Vec<OpSnapshot>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub cache: CacheCounts,
    /// Memory is a gauge: an interval carries the later value.
    pub memory: MemorySnapshot,
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let ops = |now: &[OpSnapshot], then: &[OpSnapshot]| -> Vec<OpSnapshot> {
            now.iter().zip(then).map(|(a, b)| a.since(b)).collect()
        };
        let mut errors_by_code = self.errors_by_code.clone();
        for (code, n) in errors_by_code.iter_mut() {
            *n = n.saturating_sub(earlier.errors_by_code.get(code).copied().unwrap_or(0));
        }
        errors_by_code.retain(|_, n| *n > 0);
        Snapshot {
            uptime: self.uptime.saturating_sub(earlier.uptime),
            fuse: ops(&self.fuse, &earlier.fuse),
            s3: ops(&self.s3, &earlier.s3),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            errors_by_code,
            cache: CacheCounts {
                hits: self.cache.hits.saturating_sub(earlier.cache.hits),
                misses: self.cache.misses.saturating_sub(earlier.cache.misses),
                evictions: self.cache.evictions.saturating_sub(earlier.cache.evictions),
            },
            memory: self.memory,
        }
    }

    /// Requests of `op`.
    pub fn s3_op(&self, op: S3Operation) -> &OpSnapshot {
        &self.s3[s3_index(op)]
    }

    /// All S3 requests.
    pub fn s3_requests(&self) -> u64 {
        self.s3.iter().map(|op| op.requests).sum()
    }

    /// The billable requests priced at `prices`.
    pub fn cost(&self, prices: RequestPrices) -> CostEstimate {
        CostEstimate::new(prices, S3Operation::ALL.iter().map(|op| (*op, self.s3_op(*op).billable())))
    }
}

/// `VmRSS` of this process, in bytes.
fn read_rss() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmRSS:   1234 kB` line of a /proc/PID/status text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

impl crate::client::metered::RequestSink for Metrics {
    fn s3_request_sent(&self, op: S3Operation) {
        Metrics::s3_request_sent(self, op);
    }
    fn s3_request_answered(&self, op: S3Operation, elapsed: Duration, error: Option<&ClientError>) {
        Metrics::s3_request_answered(self, op, elapsed, error);
    }
    fn s3_body_error(&self, error: &ClientError) {
        Metrics::s3_body_error(self, error);
    }
    fn add_bytes_in(&self, n: u64) {
        Metrics::add_bytes_in(self, n);
    }
    fn add_bytes_out(&self, n: u64) {
        Metrics::add_bytes_out(self, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientErrorKind;

    #[test]
    fn s3_operations_index_in_declaration_order() {
        for (i, op) in S3Operation::ALL.iter().enumerate() {
            assert_eq!(s3_index(*op), i, "{op:?}");
        }
    }

    #[test]
    fn counts_fuse_requests_by_operation() {
        let m = Metrics::default();
        m.fuse_request("read", Duration::from_micros(100), true);
        m.fuse_request("read", Duration::from_micros(300), false);
        m.fuse_request("ioctl", Duration::from_micros(1), true);
        let s = m.snapshot();
        let read = &s.fuse[fuse_index("read")];
        assert_eq!((read.name, read.requests, read.errors, read.latency.count), ("read", 2, 1, 2));
        assert_eq!(s.fuse.last().unwrap().requests, 1, "unknown operations count as other");
    }

    #[test]
    fn counts_s3_requests_errors_and_what_is_billable() {
        let m = Metrics::default();
        let error = |status: Option<u16>, code: Option<&str>, kind| ClientError {
            kind,
            operation: "GetObject",
            code: code.map(str::to_string),
            status,
            request_id: Some("R1".into()),
            message: String::new(),
        };
        m.s3_request(S3Operation::GetObject, Duration::from_millis(2), None);
        m.s3_request(
            S3Operation::GetObject,
            Duration::from_millis(2),
            Some(&error(Some(403), Some("AccessDenied"), ClientErrorKind::AccessDenied)),
        );
        m.s3_request(
            S3Operation::GetObject,
            Duration::from_millis(2),
            Some(&error(Some(503), Some("SlowDown"), ClientErrorKind::Throttled)),
        );
        m.s3_request(
            S3Operation::HeadObject,
            Duration::from_millis(1),
            Some(&error(Some(404), None, ClientErrorKind::NotFound)),
        );
        m.s3_request(
            S3Operation::HeadObject,
            Duration::from_millis(1),
            Some(&error(None, None, ClientErrorKind::Transient)),
        );
        m.add_bytes_in(10);
        m.add_bytes_out(20);
        let s = m.snapshot();
        let get = s.s3_op(S3Operation::GetObject);
        assert_eq!((get.requests, get.errors, get.billable()), (3, 2, 2));
        let head = s.s3_op(S3Operation::HeadObject);
        assert_eq!((head.requests, head.errors, head.billable()), (2, 2, 1));
        assert_eq!(s.s3_requests(), 5);
        let codes: Vec<(&str, u64)> = s.errors_by_code.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(codes, [("AccessDenied", 1), ("NotFound", 1), ("SlowDown", 1), ("Transient", 1)]);
        assert_eq!((s.bytes_in, s.bytes_out), (10, 20));
        assert_eq!(s.cost(RequestPrices::default()).get_requests, 3);
    }

    #[test]
    fn intervals_subtract_counters_and_keep_gauges() {
        let m = Metrics::default();
        m.watch_memory(MemoryBudget::new(1 << 20));
        let cache = Arc::new(Mutex::new(CacheCounts { hits: 1, misses: 0, evictions: 0 }));
        let source = cache.clone();
        m.watch_cache(move || *source.lock().unwrap());
        m.s3_request(S3Operation::ListObjectsV2, Duration::from_millis(1), None);
        let first = m.snapshot();
        m.s3_request(S3Operation::ListObjectsV2, Duration::from_millis(1), None);
        *cache.lock().unwrap() = CacheCounts { hits: 1, misses: 1, evictions: 2 };
        let interval = m.snapshot().since(&first);
        assert_eq!(interval.s3_op(S3Operation::ListObjectsV2).requests, 1);
        assert_eq!(interval.cache, CacheCounts { hits: 0, misses: 1, evictions: 2 });
        assert_eq!(interval.memory.limit, 1 << 20);
        assert!(interval.memory.rss.is_some_and(|rss| rss > 0));
    }

    #[test]
    fn parses_rss() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   2048 kB\nVmSwap: 0 kB\n"), Some(2 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }
}
