//! Metrics in the log: a summary of the last interval every 5 s, and a summary of the whole
//! mount with the estimated S3 request cost at unmount.
//!
//! Everything is logged at INFO to the target [`TARGET`] (`mount_s3::metrics`), which the default
//! log filter turns off; `--log-metrics`, `--debug`, a SIGUSR2 toggle or `MOUNTPOINT_LOG` turn it
//! on. The reporter asks the live filter before each summary, so turning metrics on at runtime
//! works. Lines look like Mountpoint's: `name[label=value]: numbers`, one per event, e.g.
//!
//! ```text
//! fuse.requests[op=read]: n=120 errors=0 p50=1.2ms p99=8.1ms max=9.3ms
//! s3.requests[op=GetObject]: n=12 errors=0 p50=4.1ms p99=9.8ms max=9.8ms
//! summary: s3 requests: HeadObject=5 GetObject=3 ... total=13 billable=13
//! summary: estimated S3 request cost $0.0000123 = 4 PUT/COPY/POST/LIST x $0.005/1k + ...
//! ```
//!
//! Within an interval, percentiles and max come from the histogram buckets (within 12.5%).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::{Metrics, OpSnapshot, RequestPrices, Snapshot, global, prometheus};
use crate::fs::memory::MemoryBudget;

/// The log target of metric summaries.
pub const TARGET: &str = "mount_s3::metrics";
/// Time between two periodic summaries (as Mountpoint).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Metric settings from the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `--metrics-address`: serve Prometheus text format at `http://ADDRESS/metrics`.
    pub address: Option<SocketAddr>,
    /// `--cost-per-1k-*`: request prices for the cost estimate.
    pub prices: RequestPrices,
    /// `--otlp-endpoint`: export over OTLP/HTTP.
    pub otlp: Option<super::otlp::OtlpConfig>,
}

/// Starts the periodic reporter (and the Prometheus endpoint, if configured) on `runtime`, and
/// reports `budget`'s use as memory reserved. Fails only if the endpoint cannot listen.
pub fn install(
    runtime: &tokio::runtime::Handle,
    config: &MetricsConfig,
    budget: MemoryBudget,
) -> Result<MetricsGuard, String> {
    let metrics = global();
    metrics.watch_memory(budget);
    if let Some(address) = config.address {
        let listener = std::net::TcpListener::bind(address)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|e| format!("cannot serve metrics on {address}: {e} (check --metrics-address)"))?;
        let bound = listener.local_addr().unwrap_or(address);
        let _entered = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot serve metrics on {address}: {e}"))?;
        runtime.spawn(prometheus::serve(listener, metrics.clone(), config.prices));
        info!(target: prometheus::TARGET, "serving metrics at http://{bound}/metrics");
    }
    let otlp = match &config.otlp {
        Some(otlp) => Some(super::otlp::start(&metrics, otlp)?),
        None => None,
    };
    runtime.spawn(report_every(metrics.clone(), REPORT_INTERVAL));
    Ok(MetricsGuard { metrics, prices: config.prices, otlp })
}

/// Logs the final summary when the mount ends ([`MetricsGuard::finish`]).
#[derive(Debug)]
pub struct MetricsGuard {
    metrics: Arc<Metrics>,
    prices: RequestPrices,
    otlp: Option<super::otlp::OtlpExporter>,
}

impl MetricsGuard {
    /// Logs the summary of the whole mount, cost estimate included.
    pub fn finish(self) {
        if let Some(otlp) = self.otlp {
            otlp.finish();
        }
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        for line in summary_lines(&self.metrics.snapshot(), self.prices) {
            info!(target: TARGET, "{line}");
        }
    }
}

async fn report_every(metrics: Arc<Metrics>, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = metrics.snapshot();
    loop {
        ticker.tick().await;
        let now = metrics.snapshot();
        if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            for line in interval_lines(&now.since(&last)) {
                info!(target: TARGET, "{line}");
            }
        }
        last = now;
    }
}

/// The lines of one active operation, under upstream Mountpoint's metric names (METRICS.md):
/// `fuse.request_latency(us)[fuse_request=read]: n=3: p50=.. avg=.. p90=.. p99=.. max=..` and
/// `fuse.request_errors[fuse_request=read]: 1` for FUSE; `s3.request_count[s3_request=GetObject]: 3`,
/// `s3.request_errors[...]` and `s3.request_first_byte_latency(us)[...]` for S3 (the S3 clock
/// stops when the response headers arrive). Latencies in microseconds, as upstream.
fn op_lines(fuse: bool, op: &OpSnapshot) -> Vec<String> {
    let (kind, label, latency) = if fuse {
        ("fuse", "fuse_request", "request_latency")
    } else {
        ("s3", "s3_request", "request_first_byte_latency")
    };
    let name = op.name;
    let l = &op.latency;
    let avg = l.sum_micros.checked_div(l.count).unwrap_or(0);
    let mut lines = vec![];
    if !fuse {
        lines.push(format!("s3.request_count[s3_request={name}]: {}", op.requests));
    }
    if op.errors > 0 {
        lines.push(format!("{kind}.request_errors[{label}={name}]: {}", op.errors));
    }
    if l.count > 0 {
        lines.push(format!(
            "{kind}.{latency}(us)[{label}={name}]: n={}: p50={} avg={avg} p90={} p99={} max={}",
            l.count,
            l.quantile(0.5),
            l.quantile(0.9),
            l.quantile(0.99),
            l.max_micros,
        ));
    }
    lines
}

/// The lines of one interval (or of the whole mount): only what happened, plus memory.
pub fn interval_lines(s: &Snapshot) -> Vec<String> {
    let active = |ops: &[OpSnapshot]| ops.iter().filter(|op| op.requests > 0).cloned().collect::<Vec<_>>();
    let mut lines: Vec<String> = active(&s.fuse).iter().flat_map(|op| op_lines(true, op)).collect();
    lines.extend(active(&s.s3).iter().flat_map(|op| op_lines(false, op)));
    if s.bytes_in > 0 || s.bytes_out > 0 {
        lines.push(format!("s3.bytes: in={} out={}", s.bytes_in, s.bytes_out));
    }
    lines.extend(s.errors_by_code.iter().map(|(code, n)| format!("s3.errors[code={code}]: {n}")));
    let cache = &s.cache;
    if cache.hits + cache.misses + cache.evictions > 0 {
        lines.push(format!("cache: hits={} misses={} evictions={}", cache.hits, cache.misses, cache.evictions));
    }
    let m = &s.memory;
    if let Some(rss) = m.rss {
        lines.push(format!("process.memory_usage(B): {rss}"));
    }
    lines.push(format!(
        "mem.budget: rss={} reserved={} peak_reserved={} limit={}",
        m.rss.map(mib).unwrap_or_else(|| "unknown".into()),
        mib(m.reserved),
        mib(m.peak_reserved),
        mib(m.limit)
    ));
    lines
}

/// The summary of a whole mount: totals, every S3 operation's count, and the cost estimate.
pub fn summary_lines(total: &Snapshot, prices: RequestPrices) -> Vec<String> {
    let mut lines = vec![format!("summary: mounted for {:.1}s", total.uptime.as_secs_f64())];
    lines.extend(interval_lines(total).into_iter().map(|line| format!("summary: {line}")));
    let counts: Vec<String> = total.s3.iter().map(|op| format!("{}={}", op.name, op.requests)).collect();
    let billable: u64 = total.s3.iter().map(OpSnapshot::billable).sum();
    lines.push(format!("summary: s3 requests: {} total={} billable={billable}", counts.join(" "), total.s3_requests()));
    lines.push(format!("summary: estimated S3 request cost {}", total.cost(prices)));
    lines
}

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::S3Operation;

    #[test]
    fn interval_lines_show_only_activity() {
        let m = Metrics::default();
        let idle = interval_lines(&m.snapshot());
        assert!(idle.iter().all(|l| l.starts_with("process.memory_usage(B): ") || l.starts_with("mem.budget: rss=")));
        m.fuse_request("read", Duration::from_micros(1500), true);
        m.fuse_request("lookup", Duration::from_micros(100), false);
        m.s3_request(S3Operation::GetObject, Duration::from_micros(800), None);
        m.add_bytes_in(4096);
        let lines = interval_lines(&m.snapshot());
        assert_eq!(lines[0], "fuse.request_errors[fuse_request=lookup]: 1");
        assert_eq!(
            lines[1],
            "fuse.request_latency(us)[fuse_request=lookup]: n=1: p50=100 avg=100 p90=100 p99=100 max=100"
        );
        assert_eq!(
            lines[2],
            "fuse.request_latency(us)[fuse_request=read]: n=1: p50=1500 avg=1500 p90=1500 p99=1500 max=1500"
        );
        assert_eq!(lines[3], "s3.request_count[s3_request=GetObject]: 1");
        assert_eq!(
            lines[4],
            "s3.request_first_byte_latency(us)[s3_request=GetObject]: n=1: p50=800 avg=800 p90=800 p99=800 max=800"
        );
        assert_eq!(lines[5], "s3.bytes: in=4096 out=0");
    }

    #[test]
    fn the_summary_lists_every_operation_and_prices_them() {
        let m = Metrics::default();
        for _ in 0..3 {
            m.s3_request(S3Operation::GetObject, Duration::from_millis(1), None);
        }
        m.s3_request(S3Operation::PutObject, Duration::from_millis(1), None);
        let lines = summary_lines(&m.snapshot(), RequestPrices::default());
        let requests = &lines[lines.len() - 2];
        assert_eq!(
            requests,
            "summary: s3 requests: HeadObject=0 GetObject=3 ListObjectsV2=0 PutObject=1 \
             CreateMultipartUpload=0 UploadPart=0 CompleteMultipartUpload=0 AbortMultipartUpload=0 \
             DeleteObject=0 CopyObject=0 UploadPartCopy=0 RenameObject=0 total=4 billable=4"
        );
        assert_eq!(
            lines.last().unwrap(),
            "summary: estimated S3 request cost $0.0000062 = 1 PUT/COPY/POST/LIST x $0.005/1k + \
             3 GET/HEAD x $0.0004/1k + 0 DELETE x $0/1k"
        );
    }
}
