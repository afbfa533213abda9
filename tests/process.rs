//! End to end: the process a user runs. Exit codes, messages, background mode, signals,
//! unmounting, and every way a mount can fail at start (each within 10 s, naming the problem).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mount::{TestMount, command, force_unmount, is_mounted, processes_mentioning, server_args};
use common::s3_server::LocalS3;

/// Runs `mount-s3 args...` to completion in a sealed environment; returns output and duration.
fn run(env: &[(String, String)], args: &[&str]) -> (Output, Duration) {
    let home = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = command(env, home.path()).args(args).output().unwrap();
    (out, start.elapsed())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn background_mount_reports_success_serves_and_exits_on_umount() {
    let s3 = LocalS3::start();
    s3.put("hello.txt", b"hello\n");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("bg-mount");
    std::fs::create_dir(&mnt).unwrap();
    let mut args = vec![s3.bucket.clone(), mnt.to_string_lossy().into_owned()];
    args.extend(server_args(&s3));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, took) = run(&s3.env_vars(), &args);
    let guard = scopeguard(&mnt);
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("bucket {} is mounted at {}", s3.bucket, mnt.display())
    );
    assert!(took < Duration::from_secs(10));
    assert!(is_mounted(&mnt));
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), b"hello\n");
    let daemons = processes_mentioning(mnt.to_str().unwrap());
    assert_eq!(daemons.len(), 1, "one daemon serves the mount");

    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(mnt.to_str().unwrap()).is_empty() {
        assert!(Instant::now() < deadline, "daemon still running after umount");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(guard);
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}
fn scopeguard(p: &std::path::Path) -> Unmount {
    Unmount(p.to_path_buf())
}

#[test]
fn signals_and_external_umount_end_the_daemon_with_exit_0() {
    let s3 = LocalS3::start();
    s3.put("f", b"x");
    let args = server_args(&s3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for signal in [
        Some(nix::sys::signal::Signal::SIGTERM),
        Some(nix::sys::signal::Signal::SIGINT),
        Some(nix::sys::signal::Signal::SIGHUP),
        None,
    ] {
        let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
        assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"x");
        let status = match signal {
            Some(sig) => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.pid() as i32), sig).unwrap();
                let status = m.wait_exit(Duration::from_secs(10)).expect("daemon exits after the signal");
                assert!(!is_mounted(m.path()), "{sig:?} unmounted");
                status
            }
            None => m.unmount(),
        };
        assert!(status.success(), "{signal:?}: {status}");
    }
}

#[test]
fn mount_failures_exit_1_quickly_naming_the_problem() {
    let s3 = LocalS3::start();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let mnt_s = mnt.to_string_lossy().into_owned();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let non_empty = dir.path().join("full");
    std::fs::create_dir(&non_empty).unwrap();
    std::fs::write(non_empty.join("x"), b"x").unwrap();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let good_env = s3.env_vars();
    let bad_secret: Vec<(String, String)> = good_env
        .iter()
        .map(
            |(k, v)| {
                if k == "AWS_SECRET_ACCESS_KEY" { (k.clone(), "wrong-secret".into()) } else { (k.clone(), v.clone()) }
            },
        )
        .collect();
    let server = server_args(&s3);
    let closed = format!("http://127.0.0.1:{closed_port}");
    struct Case<'a> {
        what: &'a str,
        env: &'a [(String, String)],
        bucket: String,
        dir: String,
        endpoint: &'a str,
        expect: &'a [&'a str],
    }
    let cases = [
        Case {
            what: "missing bucket",
            env: &good_env,
            bucket: "no-such-bucket-here".into(),
            dir: mnt_s.clone(),
            endpoint: &server[1],
            expect: &["NoSuchBucket", "no-such-bucket-here"],
        },
        Case {
            what: "wrong credentials",
            env: &bad_secret,
            bucket: s3.bucket.clone(),
            dir: mnt_s.clone(),
            endpoint: &server[1],
            expect: &["credentials"],
        },
        Case {
            what: "unreachable endpoint",
            env: &good_env,
            bucket: s3.bucket.clone(),
            dir: mnt_s.clone(),
            endpoint: &closed,
            expect: &[&closed],
        },
        Case {
            what: "missing directory",
            env: &good_env,
            bucket: s3.bucket.clone(),
            dir: format!("{mnt_s}/nope"),
            endpoint: &server[1],
            expect: &["does not exist"],
        },
        Case {
            what: "not a directory",
            env: &good_env,
            bucket: s3.bucket.clone(),
            dir: file.to_string_lossy().into_owned(),
            endpoint: &server[1],
            expect: &["is not a directory"],
        },
        Case {
            what: "non-empty directory",
            env: &good_env,
            bucket: s3.bucket.clone(),
            dir: non_empty.to_string_lossy().into_owned(),
            endpoint: &server[1],
            expect: &["is not empty"],
        },
    ];
    for foreground in [false, true] {
        for case in &cases {
            let mut args = vec![
                case.bucket.as_str(),
                case.dir.as_str(),
                "--endpoint-url",
                case.endpoint,
                "--force-path-style",
                "--region",
                "us-east-1",
            ];
            if foreground {
                args.push("--foreground");
            }
            let (out, took) = run(case.env, &args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{} (foreground {foreground}): {err}", case.what);
            assert!(took < Duration::from_secs(10), "{} took {took:?}", case.what);
            for needle in case.expect {
                assert!(err.contains(needle), "{}: {needle:?} not in: {err}", case.what);
            }
            assert!(!is_mounted(&mnt), "{}: nothing mounted", case.what);
        }
    }
}

#[test]
fn a_directory_already_mounted_is_refused() {
    let s3 = LocalS3::start();
    let args = server_args(&s3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
    let mut again = vec![s3.bucket.as_str(), m.path().to_str().unwrap()];
    again.extend(&args);
    let (out, _) = run(&s3.env_vars(), &again);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is already mounted"), "{}", stderr(&out));
}

#[test]
fn bad_arguments_exit_2_with_a_message_naming_the_fix() {
    let cases: &[(&[&str], &str)] = &[
        (&["bkt", "/tmp", "--prefix", "no-slash"], "--prefix"),
        (&["bkt", "/tmp", "--uid", "abc"], "--uid"),
        (&["bkt", "/tmp", "--file-mode", "999"], "--file-mode"),
        (&["bkt", "/tmp", "--allow-other", "--allow-root"], "--allow-root"),
        (&["bkt", "/tmp", "--max-threads", "0"], "--max-threads"),
        (&["bkt", "/tmp", "--no-such-flag"], "--no-such-flag"),
        (&["bkt"], "DIRECTORY"),
        (&["Invalid_Bucket!", "/tmp"], "bucket"),
        (&["bkt", "/tmp", "--cache-xz", "cache--use1-az4--x-s3"], "not supported yet"),
    ];
    for (args, needle) in cases {
        let (out, took) = run(&[], args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {needle:?} not in {}", stderr(&out));
        assert!(took < Duration::from_secs(5));
    }
    let (out, _) = run(&[], &["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mount-s3 "));
    let (out, _) = run(&[], &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in [
        "Bucket options",
        "AWS credentials options",
        "Mount options",
        "Client options",
        "Logging options",
        "Caching options",
    ] {
        assert!(help.contains(heading), "--help lacks {heading}");
    }
}

#[test]
fn logs_go_to_a_file_per_run_with_no_secrets() {
    let s3 = LocalS3::start();
    s3.put("f", b"x");
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().join("logs");
    let mut args = server_args(&s3);
    args.extend(["--log-directory".into(), log_dir.to_string_lossy().into_owned(), "--debug".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
    let _ = std::fs::read(m.path().join("f")).unwrap();
    let _ = std::fs::metadata(m.path().join("missing"));
    assert!(m.unmount().success());
    let files: Vec<_> = std::fs::read_dir(&log_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("is mounted at"), "{text}");
    let secret = s3.env_vars().into_iter().find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY").unwrap().1;
    assert!(!text.contains(&secret), "the secret key must never be logged");
}

#[test]
fn upstream_tuning_variables_reach_the_kernel_and_the_pid_file() {
    use std::os::unix::fs::MetadataExt;
    let s3 = LocalS3::start();
    s3.put("a.txt", b"a");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("mount-s3.pid");
    let mut env = s3.env_vars();
    env.push(("UNSTABLE_MOUNTPOINT_PID_FILE".into(), pid_file.display().to_string()));
    env.push(("UNSTABLE_MOUNTPOINT_MAX_BACKGROUND".into(), "24".into()));
    env.push(("UNSTABLE_MOUNTPOINT_CONGESTION_THRESHOLD".into(), "10".into()));
    env.push(("UNSTABLE_CRT_EVENTLOOP_THREADS".into(), "2".into()));
    let args = server_args(&s3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mount = TestMount::new(&env, &s3.bucket, &args);
    assert_eq!(std::fs::read(mount.path().join("a.txt")).unwrap(), b"a");
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), mount.pid().to_string());
    // The FUSE connection's number is the minor device number of the mount.
    let dev = std::fs::metadata(mount.path()).unwrap().dev();
    let connection = format!("/sys/fs/fuse/connections/{}", nix::sys::stat::minor(dev));
    // fusectl is not always mounted; as root the test mounts it, and unmounts what it mounted.
    let mounted_fusectl = !std::path::Path::new(&connection).exists()
        && Command::new("mount")
            .args(["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"])
            .status()
            .is_ok_and(|s| s.success());
    let read = |name: &str| std::fs::read_to_string(format!("{connection}/{name}")).ok().map(|v| v.trim().to_string());
    let limits = (read("max_background"), read("congestion_threshold"));
    if mounted_fusectl {
        force_unmount(std::path::Path::new("/sys/fs/fuse/connections"));
    }
    if limits.0.is_some() {
        assert_eq!(limits, (Some("24".to_string()), Some("10".to_string())));
    }
    assert!(mount.unmount().success());
}
