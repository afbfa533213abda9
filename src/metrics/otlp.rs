//! `--otlp-endpoint`: the metrics exported over OTLP/HTTP (protobuf), under upstream
//! Mountpoint's metric names, so dashboards built for it carry over.
//!
//! The OpenTelemetry SDK does the protocol: a periodic reader on its own thread collects every
//! `--otlp-export-interval` seconds (default 60) and posts to `ENDPOINT/v1/metrics` with a
//! blocking HTTP client. Delta temporality, as upstream, unless
//! `EXPERIMENTAL_MOUNTPOINT_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative`.
//!
//! What is exported (all stable names of upstream's METRICS.md we measure):
//! - counters read from the [`Metrics`] registry at each collection (observable):
//!   `s3.request_count` and `s3.request_errors` (label `s3_request`), `fuse.request_errors`
//!   (label `fuse_request`);
//! - the gauge `process.memory_usage` (RSS, bytes);
//! - histograms recorded as requests end (only while exporting): `fuse.request_latency` (µs,
//!   label `fuse_request`), `s3.request_first_byte_latency` (µs, label `s3_request`: until the
//!   response headers) and `s3.request_total_latency` (the same clock for every request but
//!   GetObject, whose body streams on after the headers and has no total here), as base-2
//!   exponential histograms like upstream's.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};

use super::{FUSE_OPS, Metrics};
use crate::client::S3Operation;

/// The environment variable that asks for cumulative temporality.
pub const TEMPORALITY_ENV: &str = "EXPERIMENTAL_MOUNTPOINT_OTLP_METRICS_TEMPORALITY_PREFERENCE";

/// `--otlp-endpoint` and `--otlp-export-interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://` or `https://`); `/v1/metrics` is added if missing.
    pub endpoint: String,
    /// Time between two exports.
    pub interval: Duration,
}

/// The histograms recorded at measurement time, with their label sets made once.
pub(super) struct Instruments {
    fuse_latency: Histogram<u64>,
    s3_first_byte: Histogram<u64>,
    s3_total: Histogram<u64>,
    fuse_labels: Vec<[KeyValue; 1]>,
    s3_labels: Vec<[KeyValue; 1]>,
}

impl Instruments {
    pub(super) fn fuse_request(&self, index: usize, elapsed: Duration) {
        self.fuse_latency.record(micros(elapsed), &self.fuse_labels[index]);
    }

    pub(super) fn s3_answered(&self, op: S3Operation, elapsed: Duration) {
        let labels = &self.s3_labels[op as usize];
        self.s3_first_byte.record(micros(elapsed), labels);
        if op != S3Operation::GetObject {
            self.s3_total.record(micros(elapsed), labels);
        }
    }
}

/// Reads one counter of every operation: (operation name, value).
type ReadCounters = fn(&Metrics) -> Vec<(&'static str, u64)>;

/// (operation name, counter value) for every operation of `stats`.
fn ops(
    names: impl Iterator<Item = &'static str>,
    stats: &[super::OpStats],
    counter: fn(&super::OpStats) -> &std::sync::atomic::AtomicU64,
) -> Vec<(&'static str, u64)> {
    names.zip(stats).map(|(name, s)| (name, counter(s).load(std::sync::atomic::Ordering::Relaxed))).collect()
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// The running exporter; [`OtlpExporter::finish`] sends what is left at unmount.
#[derive(Debug)]
pub struct OtlpExporter {
    provider: SdkMeterProvider,
}

impl OtlpExporter {
    /// Flushes the last interval and stops the reader thread.
    pub fn finish(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("OTLP metrics: final export failed: {e}");
        }
    }
}

/// The URL metrics are posted to: `endpoint` with `/v1/metrics` unless it already ends so.
pub fn metrics_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/metrics") { base.to_string() } else { format!("{base}/v1/metrics") }
}

/// Starts exporting `metrics`. Must be called outside the tokio runtime (the HTTP client is a
/// blocking one, with a runtime of its own).
pub fn start(metrics: &Arc<Metrics>, config: &OtlpConfig) -> Result<OtlpExporter, String> {
    let temporality = match std::env::var(TEMPORALITY_ENV).ok().as_deref().map(str::to_ascii_lowercase) {
        Some(value) if value == "cumulative" => Temporality::Cumulative,
        _ => Temporality::Delta,
    };
    let url = metrics_url(&config.endpoint);
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .with_temporality(temporality)
        .build()
        .map_err(|e| format!("cannot export metrics to {url}: {e} (check --otlp-endpoint)"))?;
    let reader = PeriodicReader::builder(exporter).with_interval(config.interval).build();
    let exponential = |instrument: &Instrument| {
        (instrument.kind() == InstrumentKind::Histogram).then(|| {
            Stream::builder()
                .with_aggregation(Aggregation::Base2ExponentialHistogram {
                    max_size: 160,
                    max_scale: 20,
                    record_min_max: true,
                })
                .build()
                .ok()
        })?
    };
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_view(exponential)
        .with_resource(Resource::builder().with_service_name("mountpoint-s3").build())
        .build();
    let meter = provider.meter("mountpoint-s3");

    // Cumulative counters read from the registry at each collection, one series per operation.
    let counters: [(&'static str, &'static str, ReadCounters); 3] = [
        ("s3.request_count", "s3_request", |m| {
            ops(S3Operation::ALL.iter().map(|op| op.name()), &m.s3, |s| &s.requests)
        }),
        ("s3.request_errors", "s3_request", |m| ops(S3Operation::ALL.iter().map(|op| op.name()), &m.s3, |s| &s.errors)),
        ("fuse.request_errors", "fuse_request", |m| ops(FUSE_OPS.iter().copied(), &m.fuse, |s| &s.errors)),
    ];
    for (name, label, read) in counters {
        let source = metrics.clone();
        meter
            .u64_observable_counter(name)
            .with_callback(move |observer| {
                for (op, n) in read(&source) {
                    observer.observe(n, &[KeyValue::new(label, op)]);
                }
            })
            .build();
    }
    meter
        .u64_observable_gauge("process.memory_usage")
        .with_unit("By")
        .with_callback(|observer| {
            if let Some(rss) = super::read_rss() {
                observer.observe(rss, &[]);
            }
        })
        .build();
    let instruments = Instruments {
        fuse_latency: meter.u64_histogram("fuse.request_latency").with_unit("us").build(),
        s3_first_byte: meter.u64_histogram("s3.request_first_byte_latency").with_unit("us").build(),
        s3_total: meter.u64_histogram("s3.request_total_latency").with_unit("us").build(),
        fuse_labels: FUSE_OPS.iter().map(|op| [KeyValue::new("fuse_request", *op)]).collect(),
        s3_labels: S3Operation::ALL.iter().map(|op| [KeyValue::new("s3_request", op.name())]).collect(),
    };
    if metrics.otlp.set(instruments).is_err() {
        tracing::warn!("OTLP metrics already started; keeping the first exporter");
    }
    tracing::info!("exporting metrics to {url} every {}s", config.interval.as_secs());
    Ok(OtlpExporter { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_path_is_added_once() {
        assert_eq!(metrics_url("http://localhost:4318"), "http://localhost:4318/v1/metrics");
        assert_eq!(metrics_url("http://localhost:4318/"), "http://localhost:4318/v1/metrics");
        assert_eq!(metrics_url("https://c.example/v1/metrics"), "https://c.example/v1/metrics");
        assert_eq!(metrics_url("http://c:4318/otlp"), "http://c:4318/otlp/v1/metrics");
    }
}
