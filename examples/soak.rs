//! Load soak: many concurrent readers and writers on one mount for a while, checking every
//! byte, sampling the daemon's memory. Not a CI test: run it by hand.
//!
//! ```sh
//! cargo build && cargo run --example soak                       # 64 readers, 8 writers, 60 s
//! cargo run --example soak -- --seconds 300 --readers 32 --writers 4 --memory-target 1024 --faults 0.05
//! ```
//!
//! An s3s-fs server runs inside this process on 127.0.0.1 (optionally behind the fault proxy,
//! `--faults SHARE`); the real `mount-s3` binary next to this example (`target/<profile>/`)
//! mounts it with `--memory-target`. Readers read whole seeded objects (256 KiB..16 MiB) and
//! compare SHA-256; writers write new files (1..24 MiB) with `write` + `close`, which must
//! succeed, and each object is compared with what was written at the end. The daemon's VmRSS
//! is sampled from /proc every 100 ms. Exits 1 on any error, wrong byte, or an RSS peak over
//! the memory target. The server's CPU time (this process) is reported beside the daemon's so
//! a reader can tell who was the bottleneck.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::data::{digest, digest_file, pattern};
use common::fault_proxy::{Fault, FaultProxy, Kinds, When};
use common::mount::{TestMount, binary};
use common::s3_server::LocalS3;

struct Options {
    seconds: u64,
    readers: usize,
    writers: usize,
    memory_target_mib: u64,
    faults: f64,
}

fn options() -> Options {
    let mut o = Options { seconds: 60, readers: 64, writers: 8, memory_target_mib: 512, faults: 0.0 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let (name, value) = (pair[0].as_str(), pair.get(1).map(String::as_str).unwrap_or_default());
        match name {
            "--seconds" => o.seconds = parse(name, value),
            "--readers" => o.readers = parse(name, value),
            "--writers" => o.writers = parse(name, value),
            "--memory-target" => o.memory_target_mib = parse(name, value),
            "--faults" => o.faults = parse(name, value),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> T {
    value.parse().unwrap_or_else(|_| panic!("bad value {value:?} for {name}"))
}

/// (VmRSS in bytes, CPU seconds) of process `pid`.
fn usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kib * 1024, ticks / 100.0))
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    written_bytes: AtomicU64,
    errors: AtomicU64,
}

fn main() {
    let o = options();
    if !binary().exists() {
        eprintln!("{} is missing: run `cargo build` first (same profile as this example)", binary().display());
        std::process::exit(2);
    }
    let s3 = LocalS3::start();
    let proxy = (o.faults > 0.0).then(|| FaultProxy::start(s3.addr, 1));
    let endpoint = proxy.as_ref().map_or(s3.endpoint.clone(), |p| p.endpoint.clone());
    let seeded: Vec<(String, [u8; 32], usize)> = (0..48)
        .map(|i| {
            let size = (256 << 10) << (i % 7); // 256 KiB .. 16 MiB
            let data = pattern(size, 7000 + i as u64);
            let key = format!("seed/{i:02}.bin");
            s3.put(&key, &data);
            (key, digest(&data), size)
        })
        .collect();
    let target = o.memory_target_mib.to_string();
    let args = ["--endpoint-url", &endpoint, "--force-path-style", "--region", "us-east-1", "--memory-target", &target];
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
    std::fs::create_dir(m.path().join("written")).expect("mkdir written");
    if let Some(p) = &proxy {
        p.inject(Kinds::ALL, When::Share(o.faults), Fault::mix());
    }
    println!(
        "soak: {} readers, {} writers, {} s, memory target {} MiB, faults {:.0}%, daemon {}",
        o.readers,
        o.writers,
        o.seconds,
        o.memory_target_mib,
        o.faults * 100.0,
        binary().display()
    );

    let counters = Counters::default();
    let stop = AtomicBool::new(false);
    let written: Mutex<Vec<(String, [u8; 32])>> = Mutex::default();
    let peak_rss = AtomicU64::new(0);
    let (_, server_cpu_before) = usage(std::process::id()).unwrap_or_default();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for r in 0..o.readers {
            let (seeded, counters, stop, m) = (&seeded, &counters, &stop, &m);
            scope.spawn(move || {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let (key, want, size) = &seeded[i % seeded.len()];
                    i += 7;
                    match digest_file(&m.path().join(key)) {
                        Ok((got, len)) if got == *want && len == *size as u64 => {
                            counters.reads.fetch_add(1, Ordering::Relaxed);
                            counters.read_bytes.fetch_add(len, Ordering::Relaxed);
                        }
                        Ok(_) => panic!("WRONG DATA read from {key}"),
                        Err(e) => {
                            eprintln!("soak: read {key}: {e}");
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        for w in 0..o.writers {
            let (counters, stop, m, written) = (&counters, &stop, &m, &written);
            scope.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("written/w{w}-{n:04}.bin");
                    let data = pattern(((n as usize * 7 + w) % 24 + 1) << 20, (w as u64) << 32 | n);
                    n += 1;
                    let result = std::fs::File::create(m.path().join(&key)).and_then(|mut f| {
                        for chunk in data.chunks(128 << 10) {
                            f.write_all(chunk)?;
                        }
                        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
                        nix::unistd::close(fd).map_err(std::io::Error::from)
                    });
                    match result {
                        Ok(()) => {
                            counters.writes.fetch_add(1, Ordering::Relaxed);
                            counters.written_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                            written.lock().unwrap().push((key, digest(&data)));
                        }
                        Err(e) => {
                            eprintln!("soak: write {key}: {e}");
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let (stop, peak_rss, counters, m) = (&stop, &peak_rss, &counters, &m);
        scope.spawn(move || {
            let mut last_report = Instant::now();
            while started.elapsed() < Duration::from_secs(o.seconds) {
                if let Some((rss, _)) = usage(m.pid()) {
                    peak_rss.fetch_max(rss, Ordering::Relaxed);
                }
                if last_report.elapsed() >= Duration::from_secs(10) {
                    last_report = Instant::now();
                    println!(
                        "soak: {:>4.0} s: {} reads, {} writes, {} errors, peak RSS {} MiB",
                        started.elapsed().as_secs_f64(),
                        counters.reads.load(Ordering::Relaxed),
                        counters.writes.load(Ordering::Relaxed),
                        counters.errors.load(Ordering::Relaxed),
                        peak_rss.load(Ordering::Relaxed) >> 20
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (_, daemon_cpu) = usage(m.pid()).unwrap_or_default();
    let (_, server_cpu) = usage(std::process::id()).unwrap_or_default();
    if let Some(p) = &proxy {
        p.clear();
    }

    let written = written.into_inner().unwrap();
    let wrong: Vec<&String> = written
        .iter()
        .filter(|(key, d)| s3.get(key).is_none_or(|bytes| digest(&bytes) != *d))
        .map(|(k, _)| k)
        .collect();
    let status = m.unmount();
    let mib = |b: &AtomicU64| b.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
    let peak = peak_rss.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    println!(
        "soak: {elapsed:.0} s: {} reads ({:.0} MiB, {:.1} MiB/s), {} writes ({:.0} MiB, {:.1} MiB/s), {errors} errors",
        counters.reads.load(Ordering::Relaxed),
        mib(&counters.read_bytes),
        mib(&counters.read_bytes) / elapsed,
        counters.writes.load(Ordering::Relaxed),
        mib(&counters.written_bytes),
        mib(&counters.written_bytes) / elapsed
    );
    println!(
        "soak: daemon peak RSS {} MiB (memory target {} MiB), daemon CPU {daemon_cpu:.1} s, server and load CPU {:.1} s",
        peak >> 20,
        o.memory_target_mib,
        server_cpu - server_cpu_before
    );
    if let Some(p) = &proxy {
        println!("soak: proxy: {}", p.stats());
    }
    println!(
        "soak: {} objects written and checked in S3, {} wrong or missing; daemon exit {status}",
        written.len(),
        wrong.len()
    );
    let failed = errors > 0 || !wrong.is_empty() || peak > o.memory_target_mib << 20 || !status.success();
    std::process::exit(i32::from(failed));
}
