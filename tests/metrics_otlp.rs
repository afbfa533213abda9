//! End to end: `--otlp-endpoint` sends OTLP/HTTP protobuf metrics under upstream's names. The
//! test runs a collector on 127.0.0.1 that decodes every export, and checks the numbers against
//! the local S3 server's own request counts.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mount::TestMount;
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use prost::Message;

/// One decoded export: the request path and content type, and every data point flattened to
/// (metric name, label value, value): sums and gauges give their value, histograms their count.
#[derive(Debug, Clone)]
struct Export {
    path: String,
    content_type: String,
    points: Vec<(String, String, f64)>,
}

/// A minimal OTLP/HTTP collector: HTTP/1.1 with Content-Length bodies, keep-alive, 200 answers.
#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Collector {
    fn start() -> (Collector, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let shared = collector.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(stream));
            }
        });
        (collector, endpoint)
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request = ExportMetricsServiceRequest::decode(body.as_slice()).expect("an OTLP metrics request");
            self.exports.lock().unwrap().push(Export { path, content_type, points: flatten(&request) });
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            writer.write_all(answer.as_bytes()).unwrap();
        }
    }

    fn exports(&self) -> Vec<Export> {
        self.exports.lock().unwrap().clone()
    }

    /// The sum over every export of `metric`'s points labelled `label`.
    fn total(&self, metric: &str, label: &str) -> f64 {
        let exports = self.exports();
        let points = exports.iter().flat_map(|e| e.points.iter());
        points.filter(|(m, l, _)| m == metric && l == label).map(|(_, _, v)| v).sum()
    }
}

fn flatten(request: &ExportMetricsServiceRequest) -> Vec<(String, String, f64)> {
    let mut points = vec![];
    let label = |attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        attributes
            .iter()
            .find_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let number = |value: &Option<number_data_point::Value>| match value {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => 0.0,
    };
    for metric in request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics) {
        let name = metric.name.clone();
        match &metric.data {
            Some(Data::Sum(sum)) => {
                points.extend(sum.data_points.iter().map(|p| (name.clone(), label(&p.attributes), number(&p.value))))
            }
            Some(Data::Gauge(gauge)) => {
                points.extend(gauge.data_points.iter().map(|p| (name.clone(), label(&p.attributes), number(&p.value))))
            }
            Some(Data::ExponentialHistogram(h)) => {
                points.extend(h.data_points.iter().map(|p| (name.clone(), label(&p.attributes), p.count as f64)))
            }
            Some(Data::Histogram(h)) => {
                points.extend(h.data_points.iter().map(|p| (name.clone(), label(&p.attributes), p.count as f64)))
            }
            _ => {}
        }
    }
    points
}

#[test]
fn otlp_export_carries_upstream_metric_names_and_the_servers_request_counts() {
    let s3 = LocalS3::start();
    let data = vec![7u8; 300_000];
    // At the root: a lookup of a directory may drop its HEAD before the server sees it, and
    // the server's counts would then be lower than the requests the mount sent.
    s3.put("data.bin", &data);
    let (collector, endpoint) = Collector::start();
    let args = [
        "--endpoint-url",
        &s3.endpoint,
        "--force-path-style",
        "--region",
        "us-east-1",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-export-interval",
        "1",
    ];
    let mount = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
    assert_eq!(std::fs::read(mount.path().join("data.bin")).unwrap(), data);
    assert!(std::fs::metadata(mount.path().join("missing")).is_err());

    // Periodic exports arrive while mounted (every second here).
    let deadline = Instant::now() + Duration::from_secs(15);
    while collector.total("fuse.request_latency", "read") < 1.0 {
        assert!(Instant::now() < deadline, "no read latency exported: {:#?}", collector.exports());
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = mount.unmount();
    assert!(status.success());

    let exports = collector.exports();
    assert!(exports.iter().all(|e| e.path == "/v1/metrics"), "{exports:?}");
    assert!(exports.iter().all(|e| e.content_type == "application/x-protobuf"), "{exports:?}");
    let names: BTreeMap<&str, usize> =
        exports.iter().flat_map(|e| &e.points).fold(BTreeMap::new(), |mut names, (name, _, _)| {
            *names.entry(name.as_str()).or_default() += 1;
            names
        });
    for name in [
        "fuse.request_latency",
        "fuse.request_errors",
        "s3.request_count",
        "s3.request_errors",
        "s3.request_first_byte_latency",
        "process.memory_usage",
    ] {
        assert!(names.contains_key(name), "{name} never exported: {names:?}");
    }
    // Delta temporality: the exported counts add up to exactly what the server received from the
    // mount, the final export at unmount included. The lookup of `missing` failed with ENOENT.
    for op in [S3Operation::GetObject, S3Operation::HeadObject, S3Operation::ListObjectsV2] {
        let exported = collector.total("s3.request_count", op.name());
        assert!(s3.request_count(op) > 0, "{}", op.name());
        assert_eq!(exported, s3.request_count(op) as f64, "{}", op.name());
    }
    assert!(collector.total("fuse.request_errors", "lookup") >= 1.0, "{names:?}");
    let rss = exports.iter().flat_map(|e| &e.points).find(|(n, _, _)| n == "process.memory_usage").unwrap().2;
    assert!(rss > 1_000_000.0, "RSS {rss}");
}
