//! End to end under faults on the wire: the real binary behind a [`FaultProxy`] that fails a
//! share of S3 requests (503 SlowDown, 500 InternalError, resets, lost responses, bodies cut
//! short). Every operation must end with the right bytes or an error the application sees;
//! S3 must only ever hold objects equal to what was written; no upload may be left open.
//!
//! The default variants are sized for CI (about a minute together); `MOUNT_S3_SOAK=1` runs the
//! full ones (200 files of 1 KiB-50 MiB, ~300 MiB in all, and a 1 GiB sequential read).

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::data::{digest, digest_file, hex, pattern};
use common::fault_proxy::{Fault, FaultProxy, Kinds, ProxyStats, RequestKind, When};
use common::mount::TestMount;
use common::s3_server::LocalS3;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Logs every retry and resume of the mount's S3 client (they are counted from the log).
const RETRY_LOG: &str = "warn,mount_s3=info,mount_s3::client::retry=debug";

fn soak() -> bool {
    std::env::var("MOUNT_S3_SOAK").is_ok_and(|v| v == "1")
}

/// The seed of the fault and size generators (`MOUNT_S3_SEED` repeats a run).
fn seed() -> u64 {
    std::env::var("MOUNT_S3_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(6)
}

/// Mounts `s3` through `proxy`, with `extra_env` added to the daemon's environment.
fn mount(s3: &LocalS3, proxy: &FaultProxy, extra_env: &[(&str, &str)], args: &[&str]) -> TestMount {
    let mut env = s3.env_vars();
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut all = vec!["--endpoint-url", &proxy.endpoint, "--force-path-style", "--region", "us-east-1"];
    all.extend_from_slice(args);
    TestMount::new(&env, &s3.bucket, &all)
}

/// How big a soak is.
struct Profile {
    files: usize,
    total: usize,
    largest: usize,
    sequential: usize,
    workers: usize,
}

const CI: Profile = Profile { files: 48, total: 40 << 20, largest: 18 << 20, sequential: 128 << 20, workers: 4 };
const FULL: Profile = Profile { files: 200, total: 300 << 20, largest: 50 << 20, sequential: 1 << 30, workers: 4 };

/// File sizes from 1 KiB to `largest`, log-uniform, scaled so they add up to about `total`;
/// the first few sit on the part-size edges (8 MiB - 1, 8 MiB, 8 MiB + 1).
fn sizes(p: &Profile, rng: &mut StdRng) -> Vec<usize> {
    let (lo, hi) = ((1usize << 10) as f64, p.largest as f64);
    let edges = [(8 << 20) - 1, 8 << 20, (8 << 20) + 1];
    let drawn: Vec<f64> =
        (edges.len()..p.files).map(|_| (lo.ln() + rng.r#gen::<f64>() * (hi / lo).ln()).exp()).collect();
    let budget = p.total.saturating_sub(edges.iter().sum()) as f64;
    let scale = (budget / drawn.iter().sum::<f64>()).min(1.0);
    let mut sizes: Vec<usize> = edges.to_vec();
    sizes.extend(drawn.iter().map(|s| ((s * scale) as usize).clamp(1 << 10, p.largest)));
    sizes
}

/// What happened to one file.
#[derive(Debug)]
struct Outcome {
    name: String,
    size: usize,
    digest: [u8; 32],
    copied: Result<(), String>,
    read_back: Option<Result<(), String>>,
}

/// Log lines of the mount's retry layer: (retries, GET resumes, calls that failed for good).
fn client_retries(log: &str) -> (usize, usize, usize) {
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    (count("retrying after"), count("resuming"), count("failed for good"))
}

/// Multipart uploads the proxy made impossible to finish: their Create reached the server but
/// its answer was lost, so no client can know the upload id (S3 lifecycle rules clean these).
fn orphaned_creates(stats: &ProxyStats) -> u64 {
    ["DropResponse", "Truncate"]
        .iter()
        .map(|f| stats.faults.get(&(RequestKind::CreateUpload, *f)).copied().unwrap_or(0))
        .sum()
}

#[test]
fn copies_and_reads_under_ten_percent_faults_end_with_right_bytes_or_errors() {
    let profile = if soak() { &FULL } else { &CI };
    let s3 = LocalS3::start();
    let proxy = FaultProxy::start(s3.addr, seed());
    let m = mount(&s3, &proxy, &[("MOUNTPOINT_LOG", RETRY_LOG)], &[]);
    let mut rng = StdRng::seed_from_u64(seed());
    let src = tempfile::tempdir().unwrap();
    let dirs = ["a", "b", "b/deeper"];
    for d in dirs {
        std::fs::create_dir_all(src.path().join(d)).unwrap();
        std::fs::create_dir_all(m.path().join(d)).unwrap();
    }
    let mut work = vec![];
    for (i, size) in sizes(profile, &mut rng).into_iter().enumerate() {
        let name = format!("{}/file-{i:03}.bin", dirs[i % dirs.len()]);
        let data = pattern(size, 1000 + i as u64);
        std::fs::write(src.path().join(&name), &data).unwrap();
        work.push(Outcome { name, size, digest: digest(&data), copied: Ok(()), read_back: None });
    }
    let total: usize = work.iter().map(|o| o.size).sum();
    println!("soak: {} files, {} MiB, {} workers, seed {}", work.len(), total >> 20, profile.workers, seed());

    proxy.inject(Kinds::ALL, When::Share(0.10), Fault::mix());
    let started = Instant::now();
    let queue = Mutex::new(work.iter_mut().collect::<Vec<_>>());
    std::thread::scope(|scope| {
        for _ in 0..profile.workers {
            scope.spawn(|| {
                while let Some(o) = queue.lock().unwrap().pop() {
                    let out = Command::new("cp").arg(src.path().join(&o.name)).arg(m.path().join(&o.name)).output();
                    o.copied = match out {
                        Ok(out) if out.status.success() => Ok(()),
                        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
                        Err(e) => Err(format!("cannot run cp: {e}")),
                    };
                }
            });
        }
    });
    let wrote = started.elapsed();

    let started = Instant::now();
    let queue = Mutex::new(work.iter_mut().filter(|o| o.copied.is_ok()).collect::<Vec<_>>());
    std::thread::scope(|scope| {
        for _ in 0..profile.workers {
            scope.spawn(|| {
                while let Some(o) = queue.lock().unwrap().pop() {
                    o.read_back = Some(match digest_file(&m.path().join(&o.name)) {
                        Ok((d, len)) if d == o.digest && len == o.size as u64 => Ok(()),
                        Ok((d, len)) => panic!(
                            "WRONG DATA read back from {}: {len} bytes, sha256 {} (wrote {} bytes, {})",
                            o.name,
                            hex(&d),
                            o.size,
                            hex(&o.digest)
                        ),
                        Err(e) => Err(e.to_string()),
                    });
                }
            });
        }
    });
    let read = started.elapsed();
    let stats = proxy.stats();
    proxy.clear();

    // S3 holds, for every file, exactly its bytes or nothing; nothing else; no open uploads.
    let mut stored = 0;
    for o in &work {
        match s3.get(&o.name) {
            Some(bytes) => {
                assert_eq!(bytes.len(), o.size, "{} in S3 has the wrong size", o.name);
                assert!(digest(&bytes) == o.digest, "{} in S3 differs from what was written", o.name);
                stored += 1;
            }
            None => assert!(o.copied.is_err(), "{} was copied (cp exit 0) but is not in S3", o.name),
        }
    }
    let mut expected: Vec<&str> = work.iter().map(|o| o.name.as_str()).collect();
    expected.sort();
    let unexpected: Vec<String> =
        s3.list_keys("").into_iter().filter(|k| expected.binary_search(&&**k).is_err()).collect();
    assert!(unexpected.is_empty(), "objects nobody wrote: {unexpected:?}");
    let orphans = orphaned_creates(&stats);
    assert_eq!(s3.pending_uploads() as u64, orphans, "multipart uploads left open (beyond {orphans} lost Creates)");

    let copy_errors: Vec<_> = work.iter().filter_map(|o| o.copied.as_ref().err().map(|e| (&o.name, e))).collect();
    let read_errors: Vec<_> =
        work.iter().filter_map(|o| o.read_back.as_ref().and_then(|r| r.as_ref().err()).map(|e| (&o.name, e))).collect();
    let (retries, resumes, gave_up) = client_retries(&m.output());
    println!(
        "soak: {} copies in {wrote:.1?} ({} failed), {} reads in {read:.1?} ({} failed), {stored} objects in S3",
        work.len(),
        copy_errors.len(),
        work.len() - copy_errors.len(),
        read_errors.len()
    );
    println!("soak: proxy: {stats}");
    println!("soak: mount: {retries} retries, {resumes} GET resumes, {gave_up} calls failed for good");
    println!("soak: {orphans} uploads orphaned by lost Create answers, {} open", s3.pending_uploads());
    for line in m.output().lines().filter(|l| l.contains("failed for good") || l.contains("WARN")) {
        println!("soak: mount log: {line}");
    }
    // With 10 attempts per call, 10% faults should essentially never get through to the
    // application: an error here is a bug in how a fault was handled.
    assert!(copy_errors.is_empty() && read_errors.is_empty(), "errors: {copy_errors:?} {read_errors:?}");
    assert!(stats.total_faults() > 0 && retries > 0);
}

#[test]
fn a_long_sequential_read_under_faults_returns_the_object_exactly() {
    let profile = if soak() { &FULL } else { &CI };
    let s3 = LocalS3::start();
    let data = pattern(profile.sequential, 77);
    s3.put("large.bin", &data);
    let want = digest(&data);
    drop(data);
    let proxy = FaultProxy::start(s3.addr, seed() + 1);
    let m = mount(&s3, &proxy, &[("MOUNTPOINT_LOG", RETRY_LOG)], &[]);
    // Big sequential reads are few, large GETs: make sure some of them break mid-body.
    for n in [2, 5] {
        proxy.inject(Kinds::GET, When::Nth(n), vec![Fault::Truncate]);
    }
    proxy.inject(Kinds::GET, When::Share(0.10), Fault::mix());
    let started = Instant::now();
    let (got, len) = digest_file(&m.path().join("large.bin")).expect("read under faults");
    let took = started.elapsed();
    let stats = proxy.stats();
    let (retries, resumes, gave_up) = client_retries(&m.output());
    println!(
        "sequential: {} MiB in {took:.1?} ({:.0} MiB/s); proxy: {stats}; mount: {retries} retries, {resumes} resumes, \
         {gave_up} failed for good",
        len >> 20,
        len as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    assert_eq!(len, profile.sequential as u64);
    assert!(got == want, "WRONG DATA: sha256 {} instead of {}", hex(&got), hex(&want));
    assert!(stats.faults_named("Truncate") >= 2 && resumes >= 2, "bodies were cut short and resumed");
}

#[test]
fn every_lost_answer_is_recovered_end_to_end() {
    let s3 = LocalS3::start();
    let proxy = FaultProxy::start(s3.addr, 1);
    let m = mount(&s3, &proxy, &[], &[]);
    // The server acts on the request; the connection is reset before its answer gets back.
    let cases = [
        (RequestKind::Put, 1 << 20),
        (RequestKind::CreateUpload, 9 << 20),
        (RequestKind::UploadPart, 9 << 20),
        (RequestKind::CompleteUpload, 9 << 20),
    ];
    for (kind, size) in cases {
        proxy.clear();
        proxy.inject(Kinds::only(kind), When::Nth(1), vec![Fault::DropResponse]);
        let name = format!("lost-{kind:?}");
        let data = pattern(size, size as u64);
        std::fs::write(m.path().join(&name), &data).unwrap_or_else(|e| panic!("{name}: {e}\n{}", m.output()));
        assert!(s3.get(&name).is_some_and(|got| got == data), "{name} in S3");
        assert_eq!(
            proxy.stats().faults_named("DropResponse"),
            1 + cases.iter().position(|c| c.0 == kind).unwrap() as u64
        );
    }
    // The upload whose Create answer was lost is unknown to everyone: only a lifecycle rule ends it.
    assert_eq!(s3.pending_uploads(), 1);

    // An upload aborted (a write before the end) whose Abort answer is lost: still no parts left.
    proxy.clear();
    proxy.inject(Kinds::only(RequestKind::AbortUpload), When::Nth(1), vec![Fault::DropResponse]);
    let mut f = std::fs::File::create(m.path().join("aborted")).unwrap();
    std::io::Write::write_all(&mut f, &pattern(9 << 20, 9)).unwrap();
    let wrong = std::os::unix::fs::FileExt::write_all_at(&f, b"x", 1 << 20);
    assert_eq!(wrong.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    drop(f);
    assert!(s3.get("aborted").is_none());
    assert_eq!(s3.pending_uploads(), 1, "the aborted upload is gone");
    assert_eq!(proxy.stats().faults_named("DropResponse"), 5);
    assert!(!m.output().contains("could not abort"), "{}", m.output());
}

#[test]
fn throttled_lookups_are_retried_and_never_become_enoent() {
    let s3 = LocalS3::start();
    s3.put("top.txt", b"top");
    s3.put("dir/inner.txt", b"inner");
    let proxy = FaultProxy::start(s3.addr, 1);
    let m = mount(&s3, &proxy, &[("AWS_MAX_ATTEMPTS", "3")], &[]);
    let errno = |path: &str| std::fs::metadata(m.path().join(path)).err().and_then(|e| e.raw_os_error());

    // The first two HEADs and the first two LISTs are throttled: the third attempts succeed.
    proxy.inject(Kinds::HEAD, When::First(2), vec![Fault::slow_down()]);
    proxy.inject(Kinds::LIST, When::First(2), vec![Fault::slow_down()]);
    assert_eq!(std::fs::metadata(m.path().join("top.txt")).expect("stat after throttling").len(), 3);
    assert_eq!(proxy.stats().faults_named("SlowDown"), 4);
    proxy.clear();

    // Throttled for ever (or failing in other ways): EIO within the retry budget, never ENOENT,
    // for a name that exists, one that does not, a directory, and a listing.
    for fault in [Fault::slow_down(), Fault::internal_error(), Fault::Reset] {
        proxy.inject(Kinds::HEAD | Kinds::LIST, When::Always, vec![fault.clone()]);
        // Past the kernel's entry cache (100 ms for files, 1 s for directories).
        std::thread::sleep(Duration::from_millis(1100));
        for path in ["top.txt", "missing.txt", "dir", "dir/inner.txt"] {
            let started = Instant::now();
            assert_eq!(errno(path), Some(libc::EIO), "stat {path} under {fault:?}");
            assert!(started.elapsed() < Duration::from_secs(10), "stat {path} took {:?}", started.elapsed());
        }
        let listing = std::fs::read_dir(m.path()).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
        assert_eq!(listing.err().and_then(|e| e.raw_os_error()), Some(libc::EIO), "ls under {fault:?}");
        proxy.clear();
    }
    let log = m.output();
    assert!(
        log.lines().any(|l| l.contains("failed for good") && l.contains("SlowDown") && l.contains("FAULTPROXY")),
        "the log names the S3 error code and request id:\n{log}"
    );
    // And it recovers.
    assert_eq!(std::fs::read(m.path().join("dir/inner.txt")).unwrap(), b"inner");
    assert_eq!(errno("missing.txt"), Some(libc::ENOENT));
}

#[test]
fn requests_are_classified_by_method_and_target() {
    let cases = [
        ("GET", "/b/key", RequestKind::Get),
        ("GET", "/b?list-type=2&prefix=a", RequestKind::List),
        ("GET", "/b/?list-type=2", RequestKind::List),
        ("HEAD", "/b/key", RequestKind::Head),
        ("PUT", "/b/key", RequestKind::Put),
        ("PUT", "/b/key?partNumber=3&uploadId=x", RequestKind::UploadPart),
        ("POST", "/b/key?uploads", RequestKind::CreateUpload),
        ("POST", "/b/key?uploadId=x", RequestKind::CompleteUpload),
        ("DELETE", "/b/key?uploadId=x", RequestKind::AbortUpload),
        ("DELETE", "/b/key", RequestKind::Delete),
        ("PUT", "/b", RequestKind::Other),
    ];
    for (method, target, kind) in cases {
        assert_eq!(RequestKind::of(method, target), kind, "{method} {target}");
    }
    assert!(Kinds::MULTIPART.contains(RequestKind::UploadPart));
    assert!(!Kinds::MULTIPART.contains(RequestKind::Put));
    assert!((Kinds::HEAD | Kinds::LIST).contains(RequestKind::List));
}
