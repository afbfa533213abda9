//! End to end: `--log-metrics`, the cost estimate, the Prometheus endpoint, SIGUSR2 and request
//! ids in debug logs, checked against the local server's own request counts.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mount::{TestMount, mount};
use common::s3_server::LocalS3;
use mount_s3::client::S3Operation;

/// The one log file in `dir`.
fn log_text(dir: &Path) -> String {
    let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(&files[0]).unwrap()
}

/// Waits until `dir`'s log contains `needle`.
fn wait_for_log(dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = log_text(dir);
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{needle:?} never logged:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the server holds `key` (uploads finish after close returns).
fn wait_for_object(s3: &LocalS3, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s3.get(key).is_none() {
        assert!(Instant::now() < deadline, "{key} never reached the server");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `$1.5` or `1.5` as trillionths of a dollar.
fn pico_usd(text: &str) -> u128 {
    let text = text.trim_start_matches('$');
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert!(fraction.len() <= 12, "{text}");
    whole.parse::<u128>().unwrap() * 1_000_000_000_000 + format!("{fraction:0<12}").parse::<u128>().unwrap()
}

/// Runs the same workload on a mount: reads, a listing, a write, a delete, a missing file.
///
/// Only keys at the top: s3s-fs answers a HEAD of an implicit directory (`dir` beside
/// `dir/x`) with a 500, which the AWS SDK retries inside one client call, so the server would
/// count attempts the client trait never sees (the documented limit of the metrics).
fn workload(s3: &LocalS3, m: &TestMount) {
    let p = m.path();
    assert_eq!(std::fs::read(p.join("a.txt")).unwrap().len(), 10_000);
    assert_eq!(std::fs::read(p.join("b.txt")).unwrap(), b"bee");
    assert_eq!(std::fs::read(p.join("big.bin")).unwrap().len(), 3 << 20);
    assert_eq!(std::fs::read_dir(p).unwrap().count(), 4);
    std::fs::write(p.join("out.txt"), b"written through the mount").unwrap();
    std::fs::remove_file(p.join("c.txt")).unwrap();
    assert!(std::fs::metadata(p.join("no-such-file")).is_err());
    wait_for_object(s3, "out.txt");
}

fn seed(s3: &LocalS3) {
    s3.put("a.txt", vec![b'a'; 10_000]);
    s3.put("b.txt", b"bee");
    s3.put("c.txt", b"sea");
    s3.put("big.bin", vec![7u8; 3 << 20]);
}

#[test]
fn log_metrics_counts_match_the_server_and_the_cost_is_requests_times_prices() {
    let s3 = LocalS3::start();
    seed(&s3);
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().join("logs");
    let log_arg = log_dir.to_string_lossy().into_owned();
    // --posix-metadata: lookups send a HeadObject, whose 404 for the missing file is counted below.
    let flags = ["--log-metrics", "--allow-delete", "--posix-metadata", "-l", &log_arg];
    let prices = ["--cost-per-1k-get", "1.5", "--cost-per-1k-put", "20", "--cost-per-1k-delete", "300"];
    let m = mount(&s3, &[&flags[..], &prices[..]].concat());
    workload(&s3, &m);
    // One periodic summary (every 5 s) must show the interval's activity.
    wait_for_log(&log_dir, "mount_s3::metrics: s3.request_count[s3_request=GetObject]: ");
    assert!(m.unmount().success());

    let text = log_text(&log_dir);
    let summary = |prefix: &str| -> &str {
        let line = text.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"));
        &line[line.find(prefix).unwrap() + prefix.len()..]
    };
    let counts: BTreeMap<&str, u64> = summary("summary: s3 requests: ")
        .split_whitespace()
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k, v.parse().unwrap())
        })
        .collect();
    let server = s3.request_counts();
    eprintln!("metrics summary: {counts:?}\nserver counts:   {server:?}");
    for op in S3Operation::ALL {
        assert_eq!(counts[op.name()], s3.request_count(op), "{op:?}: summary vs server ({server:?})");
    }
    assert_eq!(counts["total"], s3.total_request_count(), "no request escapes the metrics ({server:?})");
    assert_eq!(counts["billable"], counts["total"], "nothing failed with a 5xx");
    assert!(counts["GetObject"] >= 3 && counts["HeadObject"] >= 1 && counts["ListObjectsV2"] >= 2, "{counts:?}");
    assert_eq!(counts["DeleteObject"], 1);
    assert!(counts["PutObject"] + counts["CompleteMultipartUpload"] >= 1, "{counts:?}");

    // `$X = P PUT/COPY/POST/LIST x $20/1k + G GET/HEAD x $1.5/1k + D DELETE x $300/1k`
    let cost = summary("summary: estimated S3 request cost ");
    let words: Vec<&str> = cost.split_whitespace().collect();
    let class = |op: &[S3Operation]| op.iter().map(|op| s3.request_count(*op)).sum::<u64>();
    use S3Operation::*;
    let put =
        class(&[PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload, CopyObject, ListObjectsV2]);
    let get = class(&[GetObject, HeadObject]);
    let delete = class(&[DeleteObject, AbortMultipartUpload]);
    assert_eq!(words[2..5], [put.to_string().as_str(), "PUT/COPY/POST/LIST", "x"], "{cost}");
    assert_eq!((words[5], words[7], words[8]), ("$20/1k", &*get.to_string(), "GET/HEAD"), "{cost}");
    assert_eq!((words[10], words[12], words[13], words[15]), ("$1.5/1k", &*delete.to_string(), "DELETE", "$300/1k"));
    // Prices per 1,000 requests in nano-dollars are pico-dollars per request.
    let expected =
        u128::from(put) * 20_000_000_000 + u128::from(get) * 1_500_000_000 + u128::from(delete) * 300_000_000_000;
    assert_eq!(pico_usd(words[0]), expected, "{cost}");
    eprintln!("cost line: {cost}");

    assert!(text.contains("summary: s3.errors[code=NotFound]: "), "the missing file's HEAD 404 is counted:\n{text}");
    assert!(text.contains("summary: fuse.request_latency(us)[fuse_request=read]: n="), "{text}");
    let rss: u64 = summary("summary: process.memory_usage(B): ").trim().parse().unwrap();
    assert!(rss > 1 << 20, "{rss}");
    let memory = summary("summary: mem.budget: ");
    assert!(memory.starts_with("rss=") && !memory.contains("unknown") && memory.contains("limit="), "{memory}");
}

/// GETs `path` from `address` with a plain HTTP/1.1 request; returns (status line, body).
fn http_get(address: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// `127.0.0.1:PORT` of the endpoint, from the mount's "serving metrics at" log line.
fn metrics_address(m: &TestMount) -> String {
    let output = m.output();
    output
        .lines()
        .find_map(|l| l.split("serving metrics at http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address logged:\n{output}"))
        .to_string()
}

#[test]
fn the_prometheus_endpoint_serves_the_same_counts_as_the_server() {
    let s3 = LocalS3::start();
    seed(&s3);
    let m = mount(&s3, &["--metrics-address", "127.0.0.1:0", "--allow-delete"]);
    let address = metrics_address(&m);
    workload(&s3, &m);

    let (status, body) = http_get(&address, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for op in S3Operation::ALL {
        let sample = format!("mount_s3_s3_requests_total{{operation=\"{}\"}} ", op.name());
        let value: u64 = body
            .lines()
            .find_map(|l| l.strip_prefix(&sample))
            .unwrap_or_else(|| panic!("{sample} missing:\n{body}"))
            .parse()
            .unwrap();
        assert_eq!(value, s3.request_count(op), "{op:?}");
    }
    assert!(body.contains("mount_s3_fuse_requests_total{op=\"read\"} "), "{body}");
    assert!(body.contains("# TYPE mount_s3_s3_request_duration_seconds summary"), "{body}");
    assert!(body.lines().any(|l| l.starts_with("mount_s3_process_resident_memory_bytes ")), "{body}");
    let cost = body.lines().find_map(|l| l.strip_prefix("mount_s3_estimated_request_cost_dollars ")).unwrap();
    assert!(pico_usd(cost) > 0, "{cost}");
    assert_eq!(http_get(&address, "/nope").0, "HTTP/1.1 404 Not Found");
    assert!(m.unmount().success());
}

#[test]
fn debug_logs_carry_request_ids_and_sigusr2_cycles_the_level() {
    let s3 = LocalS3::start();
    s3.put("f", b"x");
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().join("logs");
    let log_arg = log_dir.to_string_lossy().into_owned();

    // --debug: a failed request is logged with the server's request id. (--posix-metadata makes
    // lookups send a HeadObject, which fails with 404 for a missing name; by default a lookup is
    // one listing, which does not fail.)
    let m = mount(&s3, &["--debug", "--posix-metadata", "-l", &log_arg]);
    assert!(std::fs::metadata(m.path().join("missing-1")).is_err());
    let text = wait_for_log(&log_dir, "S3 request failed");
    let line = text.lines().find(|l| l.contains("S3 request failed")).unwrap();
    assert!(line.contains("operation=\"HeadObject\"") && line.contains("request_id=\"LOCALS3"), "{line}");
    assert!(line.contains("status=404"), "{line}");
    assert!(m.unmount().success());
    std::fs::remove_dir_all(&log_dir).unwrap();

    // Default level: no debug lines until SIGUSR2; five signals come back to the start.
    let m = mount(&s3, &["--posix-metadata", "-l", &log_arg]);
    let pid = nix::unistd::Pid::from_raw(m.pid() as i32);
    assert!(std::fs::metadata(m.path().join("missing-2")).is_err());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!log_text(&log_dir).contains("S3 request failed"), "no debug lines at the default level");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).unwrap();
    wait_for_log(&log_dir, "SIGUSR2: log filter is now \"debug,");
    assert!(std::fs::metadata(m.path().join("missing-3")).is_err());
    let text = wait_for_log(&log_dir, "S3 request failed");
    assert!(text.lines().any(|l| l.contains("S3 request failed") && l.contains("missing-3")), "{text}");
    for _ in 0..4 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = wait_for_log(
        &log_dir,
        "SIGUSR2: log filter is now \"warn,mount_s3=info,mount_s3::metrics=off,fuser::reply=off\"",
    );
    let steps: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("SIGUSR2: log filter is now ").nth(1))
        .map(|s| s.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["\"debug", "\"debug\"", "\"trace", "\"trace\"", "\"warn"], "{text}");
    let before = log_text(&log_dir).matches("S3 request failed").count();
    assert!(std::fs::metadata(m.path().join("missing-4")).is_err());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(log_text(&log_dir).matches("S3 request failed").count(), before, "back at the default level");
    assert!(m.unmount().success(), "SIGUSR2 never kills the daemon");
}

#[test]
fn sigusr2_does_not_kill_a_mount_without_logs() {
    let s3 = LocalS3::start();
    s3.put("f", b"x");
    let mut m = mount(&s3, &["--no-log"]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.pid() as i32), nix::sys::signal::Signal::SIGUSR2).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(m.wait_exit(Duration::ZERO).is_none(), "still running");
    assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"x");
    assert!(m.unmount().success());
}

/// The client is metered beneath its retries: every attempt is a request the server received,
/// and is counted. Here each GET body stops after 1000 bytes, so reading 5000 bytes takes a GET
/// and four resumes from where the body stopped.
#[test]
fn every_retry_attempt_is_counted() {
    let s3 = LocalS3::start();
    s3.put("f.bin", vec![9u8; 5000]);
    let m = mount(&s3, &["--metrics-address", "127.0.0.1:0"]);
    let address = metrics_address(&m);
    s3.truncate_get_bodies(Some(1000));
    assert_eq!(std::fs::read(m.path().join("f.bin")).unwrap(), vec![9u8; 5000]);
    s3.truncate_get_bodies(None);
    let (_, body) = http_get(&address, "/metrics");
    let counted = |op: S3Operation| -> u64 {
        let sample = format!("mount_s3_s3_requests_total{{operation=\"{}\"}} ", op.name());
        body.lines().find_map(|l| l.strip_prefix(&sample)).unwrap().parse().unwrap()
    };
    assert_eq!(s3.request_count(S3Operation::GetObject), 5, "{:?}", s3.request_counts());
    for op in S3Operation::ALL {
        assert_eq!(counted(op), s3.request_count(op), "{op:?}");
    }
    assert!(body.contains("mount_s3_s3_errors_total{code=\"Transient\"} 4"), "{body}");
    assert!(m.unmount().success());
}

/// With `--cache`, the summary reports the disk cache's block hits and misses, and a second
/// read of a file costs no GET.
#[test]
fn the_summary_reports_disk_cache_hits() {
    let s3 = LocalS3::start();
    s3.put("big.bin", vec![3u8; 3 << 20]);
    let dir = tempfile::tempdir().unwrap();
    let (cache, log_dir) = (dir.path().join("cache"), dir.path().join("logs"));
    let (cache_arg, log_arg) = (cache.to_string_lossy().into_owned(), log_dir.to_string_lossy().into_owned());
    let m = mount(&s3, &["--cache", &cache_arg, "--log-metrics", "-l", &log_arg]);
    assert_eq!(std::fs::read(m.path().join("big.bin")).unwrap().len(), 3 << 20);
    let gets = s3.request_count(S3Operation::GetObject);
    assert_eq!(std::fs::read(m.path().join("big.bin")).unwrap().len(), 3 << 20);
    assert_eq!(s3.request_count(S3Operation::GetObject), gets, "the second read came from the disk cache");
    assert!(m.unmount().success());
    let text = log_text(&log_dir);
    let line = text.lines().find_map(|l| l.split("summary: cache: ").nth(1)).unwrap_or_else(|| panic!("{text}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap().parse().unwrap()
    };
    eprintln!("cache summary: {line}");
    assert_eq!(field("misses"), 3, "3 blocks of 1 MiB fetched once: {line}");
    assert!(field("hits") >= 3, "then read from disk: {line}");
    assert!(text.contains(&format!("GetObject={gets} ")), "{text}");
}
