//! `--metrics-address`: the metrics in Prometheus text format at `http://ADDRESS/metrics`.
//!
//! A deliberately tiny HTTP/1.1 responder on a tokio listener: it reads one request head (at
//! most 8 KiB, within 5 s), answers `GET /metrics` (and `HEAD`), closes the connection, and
//! never reads a body. Counters are cumulative since the mount started; latencies are
//! summaries (p50, p99, sum, count) from the same histograms the log uses. The numbers carry
//! no bucket or key names, but anyone who can reach the port sees the mount's activity, so the
//! command line only accepts a loopback address unless `--metrics-allow-remote` is given.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::{Metrics, OpSnapshot, RequestPrices, Snapshot};

/// Log target of the endpoint's own messages (outside `mount_s3::metrics`, which is off by
/// default, so that "serving metrics at" is always logged).
pub const TARGET: &str = "mount_s3::prometheus";
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Accepts connections forever, answering each on a task of its own.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, prices: RequestPrices) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &metrics, prices).await {
                        debug!(target: TARGET, "metrics request from {peer} failed: {e}");
                    }
                });
            }
            Err(e) => {
                debug!(target: TARGET, "accepting a metrics connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, prices: RequestPrices) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let response = match read {
        Ok(Ok(())) => response_to(&head, || render(&metrics.snapshot(), prices)),
        Ok(Err(e)) => return Err(e),
        Err(_) => http_response("408 Request Timeout", "text/plain", "request timeout\n", false),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The full HTTP response to a request head; `body` renders the metrics when asked for.
fn response_to(head: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => http_response("200 OK", CONTENT_TYPE, &body(), method == "HEAD"),
        ("GET" | "HEAD", "/") => {
            http_response("200 OK", "text/plain", "mount-s3 metrics are at /metrics\n", method == "HEAD")
        }
        ("GET" | "HEAD", _) => http_response("404 Not Found", "text/plain", "not found; try /metrics\n", false),
        _ => http_response("405 Method Not Allowed", "text/plain", "only GET is supported\n", false),
    }
}

fn http_response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition text of a snapshot.
pub fn render(s: &Snapshot, prices: RequestPrices) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let per_op = |ops: &[OpSnapshot], key: &str, value: fn(&OpSnapshot) -> String| {
        ops.iter().map(|op| (format!("{{{key}=\"{}\"}}", op.name), value(op))).collect::<Vec<_>>()
    };
    let latency = |ops: &[OpSnapshot], key: &str| {
        let mut samples = Vec::new();
        for op in ops.iter().filter(|op| op.latency.count > 0) {
            for q in [0.5, 0.99] {
                let seconds = op.latency.quantile(q) as f64 / 1e6;
                samples.push((format!("{{{key}=\"{}\",quantile=\"{q}\"}}", op.name), seconds.to_string()));
            }
        }
        samples
    };
    let sums = |ops: &[OpSnapshot], key: &str| {
        let active = ops.iter().filter(|op| op.latency.count > 0);
        let sum = active
            .clone()
            .map(|op| (format!("_sum{{{key}=\"{}\"}}", op.name), (op.latency.sum_micros as f64 / 1e6).to_string()));
        let count = active.map(|op| (format!("_count{{{key}=\"{}\"}}", op.name), op.latency.count.to_string()));
        sum.chain(count).collect::<Vec<_>>()
    };
    let one = |value: String| vec![(String::new(), value)];

    family(
        "mount_s3_uptime_seconds",
        "gauge",
        "Time since the mount started.",
        one(s.uptime.as_secs_f64().to_string()),
    );
    family(
        "mount_s3_restarts_total",
        "counter",
        "Times the worker serving the mount died or was upgraded and was replaced without unmounting.",
        one(s.restarts.to_string()),
    );
    family(
        "mount_s3_fuse_requests_total",
        "counter",
        "FUSE requests answered, by operation.",
        per_op(&s.fuse, "op", |o| o.requests.to_string()),
    );
    family(
        "mount_s3_fuse_request_errors_total",
        "counter",
        "FUSE requests answered with an error, by operation.",
        per_op(&s.fuse, "op", |o| o.errors.to_string()),
    );
    let mut fuse_latency = latency(&s.fuse, "op");
    fuse_latency.extend(sums(&s.fuse, "op"));
    family(
        "mount_s3_fuse_request_duration_seconds",
        "summary",
        "Time from receiving a FUSE request to answering it.",
        fuse_latency,
    );
    family(
        "mount_s3_s3_requests_total",
        "counter",
        "S3 requests sent, by operation, each retry attempt included.",
        per_op(&s.s3, "operation", |o| o.requests.to_string()),
    );
    family(
        "mount_s3_s3_request_errors_total",
        "counter",
        "S3 requests that failed, by operation.",
        per_op(&s.s3, "operation", |o| o.errors.to_string()),
    );
    let mut s3_latency = latency(&s.s3, "operation");
    s3_latency.extend(sums(&s.s3, "operation"));
    family(
        "mount_s3_s3_request_duration_seconds",
        "summary",
        "S3 request latency (GET: until the response headers).",
        s3_latency,
    );
    let codes =
        s.errors_by_code.iter().map(|(code, n)| (format!("{{code=\"{}\"}}", label(code)), n.to_string())).collect();
    family("mount_s3_s3_errors_total", "counter", "S3 errors by S3 error code (or failure kind).", codes);
    family(
        "mount_s3_s3_received_bytes_total",
        "counter",
        "Object bytes received from S3.",
        one(s.bytes_in.to_string()),
    );
    family("mount_s3_s3_sent_bytes_total", "counter", "Object bytes sent to S3.", one(s.bytes_out.to_string()));
    if let Some(rss) = s.memory.rss {
        family("mount_s3_process_resident_memory_bytes", "gauge", "Resident set size.", one(rss.to_string()));
    }
    family(
        "mount_s3_memory_reserved_bytes",
        "gauge",
        "Data-buffer memory reserved now.",
        one(s.memory.reserved.to_string()),
    );
    family("mount_s3_memory_limit_bytes", "gauge", "Data-buffer memory budget.", one(s.memory.limit.to_string()));
    family("mount_s3_cache_hits_total", "counter", "Blocks served by the data cache.", one(s.cache.hits.to_string()));
    family(
        "mount_s3_cache_misses_total",
        "counter",
        "Blocks the data cache did not have.",
        one(s.cache.misses.to_string()),
    );
    family(
        "mount_s3_cache_evictions_total",
        "counter",
        "Blocks evicted from the data cache.",
        one(s.cache.evictions.to_string()),
    );
    let st = &s.staging;
    for (name, kind, help, value) in [
        ("mount_s3_staging_files", "gauge", "Files staged for modification (--allow-modify).", st.files),
        ("mount_s3_staging_bytes", "gauge", "Local disk bytes held by staged files.", st.bytes),
        ("mount_s3_staging_uploads_total", "counter", "Uploads of modified files that completed.", st.uploads),
        ("mount_s3_staging_sent_bytes_total", "counter", "Bytes of modified files sent to S3.", st.sent),
        ("mount_s3_staging_copied_bytes_total", "counter", "Bytes of modified files copied server-side.", st.copied),
        ("mount_s3_staging_fetched_bytes_total", "counter", "Bytes fetched into staged files.", st.fetched),
        ("mount_s3_staging_conflicts_total", "counter", "Uploads refused: the object changed meanwhile.", st.conflicts),
    ] {
        family(name, kind, help, one(value.to_string()));
    }
    family(
        "mount_s3_estimated_request_cost_dollars",
        "gauge",
        "Estimated S3 request cost so far, at the --cost-per-1k-* prices.",
        one(s.cost(prices).usd()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::S3Operation;

    #[test]
    fn renders_counters_summaries_and_cost() {
        let m = Metrics::default();
        m.s3_request(S3Operation::GetObject, Duration::from_millis(2), None);
        m.fuse_request("read", Duration::from_micros(10), true);
        let text = render(&m.snapshot(), RequestPrices::default());
        for expected in [
            "# TYPE mount_s3_s3_requests_total counter",
            "mount_s3_s3_requests_total{operation=\"GetObject\"} 1",
            "mount_s3_s3_requests_total{operation=\"PutObject\"} 0",
            "mount_s3_fuse_requests_total{op=\"read\"} 1",
            "mount_s3_fuse_request_duration_seconds{op=\"read\",quantile=\"0.5\"} 0.00001",
            "mount_s3_fuse_request_duration_seconds_count{op=\"read\"} 1",
            "mount_s3_s3_request_duration_seconds_sum{operation=\"GetObject\"} 0.002",
            "mount_s3_estimated_request_cost_dollars 0.0000004",
            "# TYPE mount_s3_staging_sent_bytes_total counter",
            "mount_s3_staging_files 0",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected:?} missing:\n{text}");
        }
        assert!(!text.contains("{op=\"lookup\",quantile"), "idle operations have no quantiles");
    }

    #[test]
    fn answers_only_get_metrics() {
        let ok =
            String::from_utf8(response_to(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || "body\n".into())).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 5\r\n") && ok.ends_with("\r\n\r\nbody\n"), "{ok}");
        let head = String::from_utf8(response_to(b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n", || "body\n".into())).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"), "{head}");
        let missing = String::from_utf8(response_to(b"GET /other HTTP/1.1\r\n\r\n", String::new)).unwrap();
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = String::from_utf8(response_to(b"POST /metrics HTTP/1.1\r\n\r\n", String::new)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(String::from_utf8(response_to(b"", String::new)).unwrap().starts_with("HTTP/1.1 405 "));
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
