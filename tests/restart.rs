//! End to end: the supervisor keeps the mount while the worker serving it dies or is replaced.
//!
//! - A SIGKILLed worker is replaced: the mount stays, the supervisor (the pid the user has)
//!   stays, `ls` and new opens work, the log says why the worker was restarted, and `umount`
//!   still ends everything with exit 0.
//! - SIGUSR1 replaces the worker with the binary on disk (upgrade in place).
//! - A crash loop (workers dying again and again) gives up: the mount is unmounted, exit 1.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{TestMount, is_mounted};
use common::s3_server::LocalS3;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn args(endpoint: &str) -> Vec<&str> {
    vec!["--endpoint-url", endpoint, "--force-path-style", "--region", "us-east-1"]
}

/// Waits until `done` holds, polling, or panics with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The supervisor's children: its worker, if one runs.
fn workers(supervisor: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The one worker of `supervisor`, once it runs (and is not `not`).
fn worker_other_than(supervisor: u32, not: Option<u32>) -> u32 {
    let mut found = 0;
    wait_for(Duration::from_secs(20), "a worker", || {
        found = workers(supervisor).into_iter().find(|w| Some(*w) != not).unwrap_or(0);
        found != 0
    });
    found
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).expect("signal");
}

/// Waits until `log` contains `needle` `times` times.
fn wait_for_log(m: &TestMount, needle: &str, times: usize) {
    wait_for(Duration::from_secs(30), needle, || m.output().matches(needle).count() >= times);
}

fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_killed_worker_is_replaced_without_unmounting() {
    let s3 = LocalS3::start();
    s3.put("before.txt", b"before");
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &args(&s3.endpoint));
    assert_eq!(std::fs::read(m.path().join("before.txt")).unwrap(), b"before");
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);

    signal(first, Signal::SIGKILL);
    wait_for_log(&m, "killed by SIGKILL", 1);
    s3.put("after.txt", b"after");
    assert_eq!(ls(m.path()), ["after.txt", "before.txt"], "ls works after the restart");
    assert_eq!(std::fs::read(m.path().join("after.txt")).unwrap(), b"after", "a new open works");
    let second = worker_other_than(supervisor, Some(first));
    assert!(is_mounted(m.path()));
    assert!(m.wait_exit(Duration::from_millis(10)).is_none(), "the supervisor lives on");
    let log = m.output();
    assert!(log.contains("restarting it (restart 1)"), "{log}");
    assert!(log.contains(&format!("worker {second} serves")), "the new worker says it serves:\n{log}");

    let status = m.unmount();
    assert_eq!(status.code(), Some(0), "umount still ends everything");
    assert!(workers(supervisor).is_empty());
}

#[test]
fn sigusr1_replaces_the_worker_with_the_binary_on_disk() {
    let s3 = LocalS3::start();
    s3.put("a.txt", b"a");
    let m = TestMount::new(&s3.env_vars(), &s3.bucket, &args(&s3.endpoint));
    let supervisor = m.pid();
    let first = worker_other_than(supervisor, None);
    signal(supervisor, Signal::SIGUSR1);
    let second = worker_other_than(supervisor, Some(first));
    wait_for_log(&m, &format!("worker {second} serves"), 1);
    let log = m.output();
    assert!(log.contains(&format!("upgrade: replacing worker {first}")), "{log}");
    assert!(!log.contains("restarting it"), "an upgrade is not a crash:\n{log}");
    assert_eq!(ls(m.path()), ["a.txt"]);
    assert_eq!(m.unmount().code(), Some(0));
}

#[test]
fn a_crash_loop_gives_up_and_unmounts() {
    let s3 = LocalS3::start();
    let mut m = TestMount::new(&s3.env_vars(), &s3.bucket, &args(&s3.endpoint));
    let supervisor = m.pid();
    let mut last = None;
    for _ in 0..6 {
        let worker = worker_other_than(supervisor, last);
        signal(worker, Signal::SIGKILL);
        last = Some(worker);
    }
    let status = m.wait_exit(Duration::from_secs(30)).expect("the supervisor gives up");
    assert_eq!(status.code(), Some(1));
    let log = m.output();
    assert!(log.contains("died 6 times within 60s"), "{log}");
    assert!(log.contains("giving up, unmounting"), "{log}");
    assert!(!is_mounted(m.path()), "a crash loop ends in a clean unmount");
    assert!(Command::new("ls").arg(m.path()).status().unwrap().success(), "the mount point is a plain directory again");
}
