//! File-system throughput benchmarks: fio-style workloads through a real mount of the release
//! `mount-s3` binary, each next to a raw aws-sdk-s3 baseline measured in the same run.
//!
//! ```text
//! cargo bench --bench fs_throughput                      # everything (~5 min), writes doc/BENCHMARKS.md
//! cargo bench --bench fs_throughput -- seq_read ttfb     # some workloads; prints only
//! cargo bench --bench fs_throughput -- --list            # names and descriptions
//! cargo bench --bench fs_throughput -- ttfb --write-doc  # a subset, written to the doc anyway
//! cargo bench --bench fs_throughput -- --quiet-wait 0    # do not wait for an idle machine
//! cargo bench --bench fs_throughput -- --server garage   # against a real local Garage
//! cargo bench --bench fs_throughput -- --compare /usr/bin/mount-s3  # another mount, same run
//! cargo bench --bench fs_throughput -- --repeat 2      # fewer runs a side (quicker, noisier)
//! FS_BENCH_LIST_OBJECTS=10000 cargo bench --bench fs_throughput -- list  # a smaller listing
//! ```
//!
//! Without `--bench` (which `cargo bench` passes), as under `cargo test --all-targets`, it only
//! runs a quick self-check of its pure parts, so the test suite never starts a benchmark.
//!
//! Before each run it waits (up to 120 s in all, by default) for the machine to be idle, since
//! other processes on a small machine change the numbers more than anything else.
//!
//! Needs root (mounts, dropping the page cache) and /dev/fuse. The S3 server is the in-memory
//! one in this process (`tests/common/mem_server.rs`, 127.0.0.1 only) or, with `--server
//! garage`, a local Garage child process (`tests/common/garage.rs`: found, or built once with
//! `cargo install`); either is seeded with the objects the selected workloads read, as slices of
//! one 1 GiB buffer (`fs_throughput/server.rs`). For each workload it mounts the bucket afresh
//! (`mount-s3 --foreground`, sealed environment, unmounted also on panic), runs the readers (or
//! writers), reads the daemon's CPU time and peak RSS from `/proc`, the server's CPU time and
//! request counts; with `--compare PATH` it does the same with that mount binary (same flags);
//! then it runs the raw baseline in a child process (this binary again, with a hidden flag). Write
//! workloads copy local source files (on tmpfs, made once per run) into new objects; after each
//! run of either side the objects are checked byte for byte at the server and deleted. Workloads
//! are in `fs_throughput/workloads.rs`, the report's format in `fs_throughput/report.rs`. The
//! cache-hit workloads (`--cache` against a local file on the same disk) are apart, in
//! `fs_throughput/cache_hits.rs`; their results are notes of the report.

#[path = "fs_throughput/cache_hits.rs"]
mod cache_hits;
#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "fs_throughput/measure.rs"]
mod measure;
#[path = "fs_throughput/procs.rs"]
mod procs;
#[path = "fs_throughput/raw.rs"]
mod raw;
#[path = "fs_throughput/report.rs"]
mod report;
#[path = "fs_throughput/server.rs"]
mod server;
#[path = "fs_throughput/workloads.rs"]
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mount::{TestMount, binary};
use measure::{Run, Snapshot, peak_rss_kib};
use report::{Row, RunInfo};
use server::Server;
use workloads::Workload;

struct Options {
    list: bool,
    write_doc: Option<bool>,
    quiet_wait: Duration,
    server: server::Kind,
    compare: Option<PathBuf>,
    repeat: Option<usize>,
    names: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        list: false,
        write_doc: None,
        quiet_wait: Duration::from_secs(120),
        server: server::Kind::Memory,
        compare: None,
        repeat: None,
        names: vec![],
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo adds --bench to every bench target it runs.
            "--bench" => {}
            "--list" => options.list = true,
            "--write-doc" => options.write_doc = Some(true),
            "--no-doc" => options.write_doc = Some(false),
            "--quiet-wait" => {
                let secs = args.next().and_then(|s| s.parse().ok()).ok_or("--quiet-wait needs seconds")?;
                options.quiet_wait = Duration::from_secs(secs);
            }
            "--server" => {
                options.server = match args.next().map(String::as_str) {
                    Some("memory") => server::Kind::Memory,
                    Some("garage") => server::Kind::Garage,
                    _ => return Err("--server needs memory or garage".into()),
                }
            }
            "--repeat" => {
                let n = args.next().and_then(|s| s.parse().ok()).filter(|n| *n > 0);
                options.repeat = Some(n.ok_or("--repeat needs a number of runs (1 or more)")?);
            }
            "--compare" => {
                let path = PathBuf::from(args.next().ok_or("--compare needs the path of a mount binary")?);
                if !path.is_file() {
                    return Err(format!("--compare {}: no such file", path.display()));
                }
                options.compare = Some(path);
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            name => options.names.push(name.to_string()),
        }
    }
    Ok(options)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == raw::CHILD_FLAG) {
        raw::child_main(&args[i + 1..]);
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !args.iter().any(|a| a == "--bench") {
        self_check();
        return;
    }
    let options = parse_options(&args).unwrap_or_else(|e| exit_with(&e));
    let all = workloads::all();
    if options.list {
        for w in &all {
            println!("{:<22} {}", w.name, w.what);
        }
        for (name, what) in cache_hits::NAMES {
            println!("{name:<22} {what}");
        }
        return;
    }
    for name in &options.names {
        if !all.iter().any(|w| w.name == name) && !cache_hits::is_cache_hit(name) {
            let names: Vec<&str> = all.iter().map(|w| w.name).collect();
            exit_with(&format!("unknown workload {name:?}; known: {}", names.join(", ")));
        }
    }
    let full = options.names.is_empty();
    let mut selected: Vec<Workload> =
        all.into_iter().filter(|w| full || options.names.iter().any(|n| n == w.name)).collect();
    if let Some(repeat) = options.repeat {
        selected.iter_mut().for_each(|w| w.repeat = repeat);
    }

    let started = Instant::now();
    let s3 = Server::start(options.server).unwrap_or_else(|e| exit_with(&e));
    eprintln!("seeding the server ({})", s3.endpoint());
    let data = workloads::seed(&s3, &selected).unwrap_or_else(|e| exit_with(&e));
    let cache_names: Vec<String> = options.names.iter().filter(|n| cache_hits::is_cache_hit(n)).cloned().collect();
    let cache_hit_run = full || !cache_names.is_empty();
    if cache_hit_run {
        cache_hits::seed(&s3, &data).unwrap_or_else(|e| exit_with(&e));
    }
    eprintln!("   ({:.0} s)", started.elapsed().as_secs_f64());
    let mut notes = Vec::new();
    let source_sizes = workloads::source_sizes(&selected);
    let sources = (!source_sizes.is_empty()).then(|| {
        let trees = workloads::source_trees(&selected);
        let sources = workloads::Sources::create(&data, &source_sizes, &trees).unwrap_or_else(|e| exit_with(&e));
        if !sources.on_tmpfs() {
            notes.push("Write sources are not on tmpfs (no /dev/shm): each run reads its source once first.".into());
        }
        sources
    });
    let mut rows = Vec::new();
    let mut quiet_budget = options.quiet_wait;
    for w in selected {
        let t = Instant::now();
        eprintln!("== {}: {}", w.name, w.what);
        if let workloads::MountJob::Cat { keys, loops } = &w.job {
            match workloads::local_cat_rate(&s3, keys, *loops) {
                Ok(rate) => notes.push(format!(
                    "`{}`: the same `cat` loops over local tmpfs files run at {rate:.0} files/s: the loops' own \
                     ceiling (a fork and exec per file).",
                    w.name
                )),
                Err(e) => notes.push(format!("`{}`: local `cat` baseline failed: {e}", w.name)),
            }
        }
        if let workloads::MountJob::Write {
            writer: writer @ (workloads::Writer::Cp | workloads::Writer::CpR),
            files: 2..,
            ..
        } = &w.job
        {
            let what = match writer {
                workloads::Writer::CpR => {
                    "`cp -r` into a local tmpfs directory runs at {rate} files/s: the copy's own \
                                           ceiling"
                }
                _ => {
                    "`cp` loop into a local tmpfs directory runs at {rate} files/s: the loop's own ceiling (a fork \
                      and exec per file)"
                }
            };
            match workloads::local_cp_rate(&w.job) {
                Ok(rate) => {
                    notes.push(format!("`{}`: the same {}.", w.name, what.replace("{rate}", &format!("{rate:.0}"))))
                }
                Err(e) => notes.push(format!("`{}`: local `cp` baseline failed: {e}", w.name)),
            }
        }
        // Every run starts on an idle machine if the waiting budget allows; busy starts are noted.
        let mut busy_starts = Vec::new();
        let mut quiet = |busy_starts: &mut Vec<f64>| {
            let busy = measure::wait_for_quiet(&mut quiet_budget);
            if busy >= 0.25 {
                busy_starts.push(busy);
            }
        };
        // The two sides alternate, so a slow spell on the machine hits both.
        let (mut mounts, mut others, mut raws) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..w.repeat {
            quiet(&mut busy_starts);
            let run = mount_side(&binary(), &s3, &w, &data, &mut notes);
            mounts.push(log("mount", settle(&s3, &w, &data, run)));
            if let Some(other) = &options.compare {
                quiet(&mut busy_starts);
                let run = mount_side(other, &s3, &w, &data, &mut notes);
                others.push(log("other", settle(&s3, &w, &data, run)));
            }
            if let Some(spec) = &w.raw {
                quiet(&mut busy_starts);
                let run = raw::run(&s3, spec, w.timeout);
                raws.push(log("raw", settle(&s3, &w, &data, run)));
            }
        }
        if let Some(most) = busy_starts.iter().copied().reduce(f64::max) {
            notes.push(format!(
                "`{}`: {} run(s) started with the machine busy (up to {most:.2} cores): the waiting budget was spent.",
                w.name,
                busy_starts.len()
            ));
        }
        eprintln!("   ({:.0} s)", t.elapsed().as_secs_f64());
        rows.push(Row::new(w, mounts, others, raws));
    }
    notes.extend(report::targets(&rows));
    if cache_hit_run {
        eprintln!("== cache hits: {}", cache_names.join(", "));
        let repeat = options.repeat.unwrap_or(3);
        notes.extend(cache_hits::run(&s3, &data, &cache_names, repeat, &mut || {
            measure::wait_for_quiet(&mut quiet_budget)
        }));
    }
    if !full {
        let mut names: Vec<&str> = rows.iter().map(|r| r.workload.name).collect();
        names.extend(cache_names.iter().map(String::as_str));
        notes.push(format!("Only these workloads were run: {}.", names.join(", ")));
    }
    notes.push(format!("Whole run took {:.0} s.", started.elapsed().as_secs_f64()));
    drop(sources);

    let info = run_info(&args, &s3, options.compare.as_deref(), notes);
    let doc = report::render(&info, &rows);
    println!("{doc}");
    if options.write_doc.unwrap_or(full) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("doc/BENCHMARKS.md");
        std::fs::write(&path, &doc).unwrap_or_else(|e| exit_with(&format!("write {}: {e}", path.display())));
        eprintln!("wrote {}", path.display());
    }
}

/// What `cargo test --all-targets` runs instead of the benchmark: the pure parts, in a moment.
fn self_check() {
    let all = workloads::all();
    for w in &all {
        assert!(!cache_hits::is_cache_hit(w.name), "{} is taken by a cache-hit workload", w.name);
        if let Some(spec) = &w.raw {
            assert_eq!(raw::RawSpec::from_args(&spec.to_args()).as_ref(), Ok(spec), "{}", w.name);
        }
    }
    let run = |mib: u64| Run { bytes: mib << 20, ops: 1, wall: Duration::from_secs(1), ..Run::default() };
    let (mounts, raws) = ([200, 100, 300], [400, 400, 800]);
    let rows: Vec<Row> =
        all.into_iter().map(|w| Row::new(w, mounts.map(run).to_vec(), vec![], raws.map(run).to_vec())).collect();
    let info = RunInfo {
        command: String::new(),
        date: String::new(),
        commit: String::new(),
        machine: String::new(),
        binary: String::new(),
        other: None,
        server: String::new(),
        notes: vec![],
    };
    let doc = report::render(&info, &rows);
    // Median 200 of [100-300]; raw median 400; paired ratios 0.5, 0.25, 0.375 -> 0.375.
    let row = "| `seq_read` | 1 reader, 1 GiB object, `dd bs=1M` | 200 MiB/s [100-300] | 400 MiB/s [400-800] | 0.38 |";
    assert!(doc.contains(row), "{doc}");
    // With a third side: its column and the paired ratios other/raw and mount/other.
    let w = workloads::all().into_iter().next().expect("a workload");
    let others = [100, 100, 100];
    let row = Row::new(w, mounts.map(run).to_vec(), others.map(run).to_vec(), raws.map(run).to_vec());
    let doc = report::render(&info, &[row]);
    let row = "| 200 MiB/s [100-300] | 100 MiB/s [100-100] | 400 MiB/s [400-800] | 0.38 | 0.25 | 2.00 |";
    assert!(doc.contains(row), "{doc}");
    let metrics = "api_s3_request_counter{api_endpoint=\"GetObject\"} 3\napi_s3_request_counter{api_endpoint=\"GetObject\",x=\"y\"} 2\n";
    assert_eq!(common::garage::parse_request_counts(metrics).get("GetObject"), Some(&5));
    println!("fs_throughput: self-check passed; run the benchmark with `cargo bench --bench fs_throughput`");
}

/// After a run of any side of a write workload: checks the objects written and deletes them,
/// and checks no unfinished multipart upload was left behind (a failed check fails the run).
fn settle(s3: &Server, w: &Workload, data: &Bytes, mut run: Run) -> Run {
    let checked = workloads::check_and_clear(s3, &w.job, data);
    if run.error.is_none() {
        run.error = checked.err();
    }
    run
}

/// Prints one run's headline numbers as it finishes.
fn log(side: &str, run: Run) -> Run {
    let error = run.error.as_deref().map(|e| format!(" ERROR {e}")).unwrap_or_default();
    eprintln!(
        "   {side:<5} {:>8.1} MiB/s {:>8.1} ops/s  cpu {:.2} s  peak {} MiB  server {:.2} s  others {:.2} s{error}",
        run.mib_per_s(),
        run.ops_per_s(),
        run.client_cpu_s,
        run.client_peak_kib / 1024,
        run.server_cpu_s,
        run.other_cpu_s(),
    );
    run
}

fn exit_with(message: &str) -> ! {
    eprintln!("fs_throughput: {message}");
    std::process::exit(2)
}

/// Mounts afresh with `program`, runs the workload's readers, measures, unmounts.
fn mount_side(program: &Path, s3: &Server, w: &Workload, data: &Bytes, notes: &mut Vec<String>) -> Run {
    if let Err(e) = measure::drop_caches()
        && !notes.contains(&e)
    {
        notes.push(e);
    }
    let mut args: Vec<&str> = vec!["--endpoint-url", s3.endpoint(), "--force-path-style", "--region", s3.region()];
    args.extend(w.mount_args.iter().map(String::as_str));
    let mount = match TestMount::try_new_binary(program, &s3.env_vars(), s3.bucket(), &args) {
        Ok(mount) => mount,
        Err(output) => return Run { error: Some(format!("mount failed: {}", tail(&output))), ..Run::default() },
    };
    let pid = mount.pid().to_string();
    if let Err(e) = workloads::prepare(&w.job) {
        return Run { error: Some(e), ..Run::default() };
    }
    s3.reset_counts();
    let before = Snapshot::take(Some(&pid), s3);
    let start = Instant::now();
    let result = workloads::run_mount_job(&w.job, mount.path(), data, w.timeout);
    let wall = start.elapsed();
    let after = Snapshot::take(Some(&pid), s3);
    let mut run =
        Run { wall, client_peak_kib: peak_rss_kib(&pid).unwrap_or(0), requests: s3.request_counts(), ..Run::default() };
    run.set_costs(&before, &after, true, s3.in_process());
    match result {
        Ok(outcome) => (run.bytes, run.ops, run.latencies) = (outcome.bytes, outcome.ops, outcome.latencies),
        Err(e) => run.error = Some(e),
    }
    if let Err(e) = unmount(mount) {
        notes.push(format!("`{}`: {e}", w.name));
    }
    run
}

/// Unmounts and checks the daemon exits cleanly; the mount's drop guard cleans up otherwise.
fn unmount(mut mount: TestMount) -> Result<(), String> {
    let umount = Command::new("umount").arg(mount.path()).stderr(std::process::Stdio::null()).status();
    let unmounted = umount.is_ok_and(|s| s.success());
    if !unmounted {
        return Err("umount failed; forced".into());
    }
    match mount.wait_exit(Duration::from_secs(10)) {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("daemon exited with {status}: {}", tail(&mount.output()))),
        None => Err("daemon did not exit within 10 s of umount; killed".into()),
    }
}

fn tail(output: &str) -> String {
    output.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ")
}

fn run_info(args: &[String], s3: &Server, other: Option<&Path>, notes: Vec<String>) -> RunInfo {
    let user_args: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "--bench").collect();
    let mut command = "cargo bench --bench fs_throughput".to_string();
    if !user_args.is_empty() {
        command = format!("{command} -- {}", user_args.join(" "));
    }
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(env!("CARGO_MANIFEST_DIR")).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let dirty = git(&["status", "--porcelain", "--", ".", ":!doc/BENCHMARKS.md"]).is_some_and(|s| !s.is_empty());
    let commit = match git(&["log", "-1", "--format=%h (%s)"]) {
        Some(c) if dirty => format!("{c}, with uncommitted changes"),
        Some(c) => c,
        None => "unknown".into(),
    };
    let source = git(&["log", "-1", "--format=%h (%s)", "--", "src", "Cargo.lock"]);
    let version_of = |program: &Path| {
        let out = Command::new(program).arg("--version").output().ok();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    };
    let version = version_of(&binary());
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    RunInfo {
        command,
        date: time::OffsetDateTime::now_utc().format(&format).unwrap_or_default(),
        commit,
        machine: measure::machine_description(),
        binary: format!(
            "`{}` ({version}), built by cargo's bench profile (release settings) from the source of {}",
            binary().display(),
            source.unwrap_or_else(|| "an unknown commit".into())
        ),
        other: other.map(|p| format!("`{}` ({})", p.display(), version_of(p))),
        server: s3.describe(),
        notes,
    }
}
