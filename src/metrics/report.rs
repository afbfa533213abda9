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

use super::histogram::format_micros;
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
    runtime.spawn(report_every(metrics.clone(), REPORT_INTERVAL));
    Ok(MetricsGuard { metrics, prices: config.prices })
}

/// Logs the final summary when the mount ends ([`MetricsGuard::finish`]).
#[derive(Debug)]
pub struct MetricsGuard {
    metrics: Arc<Metrics>,
    prices: RequestPrices,
}

impl MetricsGuard {
    /// Logs the summary of the whole mount, cost estimate included.
    pub fn finish(self) {
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

/// `fuse.requests[op=read]: n=.. errors=.. p50=.. p99=.. max=..` for each active operation.
fn op_lines<'a>(kind: &'a str, ops: &'a [OpSnapshot]) -> impl Iterator<Item = String> + 'a {
    ops.iter().filter(|op| op.requests > 0).map(move |op| {
        format!(
            "{kind}.requests[op={}]: n={} errors={} p50={} p99={} max={}",
            op.name,
            op.requests,
            op.errors,
            format_micros(op.latency.quantile(0.5)),
            format_micros(op.latency.quantile(0.99)),
            format_micros(op.latency.max_micros),
        )
    })
}

/// The lines of one interval (or of the whole mount): only what happened, plus memory.
pub fn interval_lines(s: &Snapshot) -> Vec<String> {
    let mut lines: Vec<String> = op_lines("fuse", &s.fuse).chain(op_lines("s3", &s.s3)).collect();
    if s.bytes_in > 0 || s.bytes_out > 0 {
        lines.push(format!("s3.bytes: in={} out={}", s.bytes_in, s.bytes_out));
    }
    lines.extend(s.errors_by_code.iter().map(|(code, n)| format!("s3.errors[code={code}]: {n}")));
    let cache = &s.cache;
    if cache.hits + cache.misses + cache.evictions > 0 {
        lines.push(format!("cache: hits={} misses={} evictions={}", cache.hits, cache.misses, cache.evictions));
    }
    let m = &s.memory;
    lines.push(format!(
        "process.memory: rss={} reserved={} peak_reserved={} limit={}",
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
        assert_eq!(idle.len(), 1, "{idle:?}");
        assert!(idle[0].starts_with("process.memory: rss="), "{idle:?}");
        m.fuse_request("read", Duration::from_micros(1500), true);
        m.s3_request(S3Operation::GetObject, Duration::from_micros(800), None);
        m.add_bytes_in(4096);
        let lines = interval_lines(&m.snapshot());
        assert_eq!(lines[0], "fuse.requests[op=read]: n=1 errors=0 p50=1.500ms p99=1.500ms max=1.500ms");
        assert_eq!(lines[1], "s3.requests[op=GetObject]: n=1 errors=0 p50=800us p99=800us max=800us");
        assert_eq!(lines[2], "s3.bytes: in=4096 out=0");
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
             DeleteObject=0 CopyObject=0 total=4 billable=4"
        );
        assert_eq!(
            lines.last().unwrap(),
            "summary: estimated S3 request cost $0.0000062 = 1 PUT/COPY/POST/LIST x $0.005/1k + \
             3 GET/HEAD x $0.0004/1k + 0 DELETE x $0/1k"
        );
    }
}
