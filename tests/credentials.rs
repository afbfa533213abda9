//! End to end: credentials from the aws-config chain, here a profile's `credential_process`
//! (`--profile`, `AWS_CONFIG_FILE`), against s3s-fs, which checks every signature.
//!
//! The process prints the server's static key pair with a session token (s3s-fs signs it but
//! does not check it) and an `Expiration` a few seconds ahead, and counts its runs in a file:
//! credentials must refresh without a remount while reads go on. When the process fails, or
//! prints a key the server does not know, operations fail with EIO or EACCES, promptly, and the
//! log names the credential source.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mount::TestMount;
use common::s3_server::{self, LocalS3};

/// A credential_process script and its profile, in a temp dir.
struct Helper {
    dir: tempfile::TempDir,
}

impl Helper {
    /// Credentials that expire `ttl_secs` after each run.
    fn new(ttl_secs: u64) -> Helper {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let script = format!(
            r#"#!/bin/sh
n=$(cat {d}/runs 2>/dev/null || echo 0)
echo $((n + 1)) > {d}/runs
if [ -e {d}/fail ]; then echo "credential helper: the vault is unreachable" >&2; exit 1; fi
key={ak}
[ -e {d}/wrong-key ] && key=AKIDNOBODYKNOWS00000
exp=$(date -u -d "+{ttl_secs} seconds" +%Y-%m-%dT%H:%M:%SZ)
printf '{{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "{sk}", "SessionToken": "session-%s", "Expiration": "%s"}}\n' "$key" "$n" "$exp"
"#,
            ak = s3_server::ACCESS_KEY,
            sk = s3_server::SECRET_KEY,
        );
        let path = dir.path().join("creds.sh");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = format!("[profile rotating]\ncredential_process = {}\nregion = us-east-1\n", path.display());
        std::fs::write(dir.path().join("config"), config).unwrap();
        Helper { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Times the process ran.
    fn runs(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("runs")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    fn set(&self, flag: &str) {
        std::fs::write(self.dir.path().join(flag), b"").unwrap();
    }

    /// The daemon's environment: the profile file, a region, no static keys.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_CONFIG_FILE".into(), self.config().display().to_string()),
            ("AWS_REGION".into(), s3_server::REGION.into()),
            ("AWS_MAX_ATTEMPTS".into(), "3".into()),
        ]
    }
}

fn mount(s3: &LocalS3, helper: &Helper) -> Result<TestMount, String> {
    let args = ["--endpoint-url", &s3.endpoint, "--force-path-style", "--profile", "rotating"];
    TestMount::try_new(&helper.env(), &s3.bucket, &args)
}

fn read(dir: &Path, i: usize) -> std::io::Result<Vec<u8>> {
    std::fs::read(dir.join(format!("f{i}")))
}

#[test]
fn temporary_credentials_refresh_without_a_remount() {
    let s3 = LocalS3::start();
    for i in 0..20 {
        s3.put(&format!("f{i}"), format!("data {i}"));
    }
    // The SDK refreshes credentials 5-10 s before they expire.
    let helper = Helper::new(12);
    let m = mount(&s3, &helper).expect("mounts with credential_process");
    let first = helper.runs();
    assert!(first >= 1, "the process gave the first credentials");
    let started = Instant::now();
    let mut reads = 0;
    while helper.runs() < first + 2 {
        assert!(started.elapsed() < Duration::from_secs(40), "credentials were not refreshed ({} runs)", helper.runs());
        let i = reads % 20;
        assert_eq!(read(m.path(), i).expect("reads keep working"), format!("data {i}").as_bytes());
        reads += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "credentials: credential_process ran {} times in {:.1?}; {reads} reads meanwhile, all fine",
        helper.runs(),
        started.elapsed()
    );
    let log = m.output();
    assert!(!log.contains("loading credentials") && !log.contains("credentials from"), "no credentials errors:\n{log}");
}

/// Waits up to 2 s for a log line containing every one of `needles`.
fn log_line(m: &TestMount, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let out = m.output();
        if let Some(line) = out.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no log line with {needles:?}:\n{out}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SOURCE: &str = "profile \"rotating\" in ";

#[test]
fn failing_or_wrong_credentials_give_a_prompt_error_naming_the_source() {
    let s3 = LocalS3::start();
    s3.put("f0", b"x");

    // At mount time: one line naming the problem and the source, quickly.
    for (flag, says) in [("fail", "the vault is unreachable"), ("wrong-key", "denied")] {
        let helper = Helper::new(900);
        helper.set(flag);
        let started = Instant::now();
        let out = mount(&s3, &helper).err().expect("the mount fails");
        let error = out.lines().find(|l| l.starts_with("Error: ")).unwrap_or_else(|| panic!("no error line:\n{out}"));
        println!("credentials: mount with {flag}: {:.1?}: {error}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(error.contains(says) && error.contains(SOURCE), "{error}");
        assert!(!error.contains("could not reach endpoint"), "not a network problem: {error}");
        assert_eq!(error.matches(&s3.bucket).count(), 1, "the hint is given once: {error}");
    }

    // After mounting: credentials that expire at once are asked for again on the next request.
    for flag in ["fail", "wrong-key"] {
        let helper = Helper::new(6);
        let m = mount(&s3, &helper).expect("mounts");
        helper.set(flag);
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        let errno = std::fs::metadata(m.path().join("f0")).err().and_then(|e| e.raw_os_error());
        let took = started.elapsed();
        assert_eq!(errno, Some(libc::EACCES), "{flag}:\n{}", m.output());
        assert!(took < Duration::from_secs(5), "{flag}: {took:?}");
        let line = log_line(&m, &["lookup failed with errno 13", SOURCE]);
        println!("credentials: {flag} after mount: EACCES in {took:.1?}: {line}");
    }
}
