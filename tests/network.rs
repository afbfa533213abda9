//! End to end: how the mount reaches S3. Region discovery through S3's redirect (a bucket
//! played in eu-central-1 by the fault proxy's region front, over s3s-fs); HTTPS with a
//! certificate authority made in the test (`--ca-bundle`, `AWS_CA_BUNDLE`, and the failure
//! without them).

mod common;

use std::time::{Duration, Instant};

use common::fault_proxy::FaultProxy;
use common::mount::TestMount;
use common::s3_server::LocalS3;
use common::tls_front::{TestCa, TlsFront};

const BUCKET_REGION: &str = "eu-central-1";

/// The server's environment without a region: what a user without AWS_REGION or a profile has.
fn env_without_region(s3: &LocalS3) -> Vec<(String, String)> {
    s3.env_vars().into_iter().filter(|(k, _)| k != "AWS_REGION").collect()
}

/// s3s-fs behind a front that plays a bucket in [`BUCKET_REGION`].
fn bucket_elsewhere() -> (LocalS3, FaultProxy) {
    let s3 = LocalS3::start();
    s3.put("hello.txt", b"hello from eu-central-1");
    let proxy = FaultProxy::start(s3.addr, 1);
    proxy.set_bucket_region(Some(BUCKET_REGION));
    (s3, proxy)
}

#[test]
fn without_a_region_the_mount_follows_the_redirect() {
    let (s3, proxy) = bucket_elsewhere();
    let mount = TestMount::new(
        &env_without_region(&s3),
        &s3.bucket,
        &["--endpoint-url", &proxy.endpoint, "--force-path-style"],
    );
    let bytes = std::fs::read(mount.path().join("hello.txt")).unwrap();
    assert_eq!(bytes, b"hello from eu-central-1");
    // One redirect (the mount-time probe), then everything signed for the bucket's region.
    assert_eq!(proxy.stats().faults_named("PermanentRedirect"), 1, "{}", proxy.stats());
    let output = mount.output();
    let switched = format!("is in region {BUCKET_REGION}, not us-east-1: using {BUCKET_REGION}");
    assert_eq!(output.matches(&switched).count(), 1, "{output}");
}

#[test]
fn an_explicit_wrong_region_fails_naming_the_right_one() {
    let (s3, proxy) = bucket_elsewhere();
    let endpoint = ["--endpoint-url", proxy.endpoint.as_str(), "--force-path-style"];
    // --region on the command line, then AWS_REGION in the environment: both are the user's choice.
    let flag = [&endpoint[..], &["--region", "us-west-2"]].concat();
    let env_region = [env_without_region(&s3), vec![("AWS_REGION".into(), "us-west-2".into())]].concat();
    let cases = [(env_without_region(&s3), &flag[..]), (env_region, &endpoint[..])];
    for (env, args) in cases {
        let started = Instant::now();
        let Err(output) = TestMount::try_new(&env, &s3.bucket, args) else {
            panic!("mounted a bucket of {BUCKET_REGION} with us-west-2 ({args:?})");
        };
        assert!(output.starts_with("exited with exit status: 1"), "{output}");
        let hint = format!("is in region {BUCKET_REGION} (PermanentRedirect)");
        assert!(output.contains(&hint) && output.contains(&format!("use --region {BUCKET_REGION}")), "{output}");
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    }
}

/// s3s-fs behind HTTPS with a certificate of a fresh private CA, and that CA's PEM file.
struct Https {
    s3: LocalS3,
    front: TlsFront,
    dir: tempfile::TempDir,
    ca_pem: std::path::PathBuf,
}

fn https() -> Https {
    let s3 = LocalS3::start();
    s3.put("hello.txt", b"hello over TLS");
    let ca = TestCa::new("mount-s3 test CA");
    let front = TlsFront::start(s3.addr, &ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = ca.write_pem(dir.path(), "ca.pem");
    Https { s3, front, dir, ca_pem }
}

/// Mounts, reads a file and writes one: both directions through the TLS front.
fn read_and_write(mount: &TestMount, s3: &LocalS3) {
    assert_eq!(std::fs::read(mount.path().join("hello.txt")).unwrap(), b"hello over TLS");
    std::fs::write(mount.path().join("new.txt"), b"written over TLS").unwrap();
    assert_eq!(s3.get("new.txt").as_deref(), Some(&b"written over TLS"[..]));
}

#[test]
fn a_private_ca_is_trusted_with_ca_bundle() {
    let h = https();
    let ca = h.ca_pem.to_str().unwrap();
    let args = ["--endpoint-url", &h.front.endpoint, "--force-path-style", "--ca-bundle", ca];
    let mount = TestMount::new(&h.s3.env_vars(), &h.s3.bucket, &args);
    read_and_write(&mount, &h.s3);
    assert_eq!(h.front.failed_handshakes(), 0);
}

#[test]
fn aws_ca_bundle_is_the_environment_form_of_the_flag() {
    let h = https();
    let env = [h.s3.env_vars(), vec![("AWS_CA_BUNDLE".into(), h.ca_pem.display().to_string())]].concat();
    let mount = TestMount::new(&env, &h.s3.bucket, &["--endpoint-url", &h.front.endpoint, "--force-path-style"]);
    read_and_write(&mount, &h.s3);
}

#[test]
fn an_untrusted_certificate_fails_fast_and_names_the_fix() {
    let h = https();
    let other_ca = TestCa::new("some other CA").write_pem(h.dir.path(), "other.pem");
    let endpoint = ["--endpoint-url", h.front.endpoint.as_str(), "--force-path-style"];
    let with_other = [&endpoint[..], &["--ca-bundle", other_ca.to_str().unwrap()]].concat();
    // The system's trust store, then a bundle that replaces it without our CA in it.
    let cases: [(&[&str], &str); 2] = [
        (&endpoint, "give that CA's PEM file with --ca-bundle PATH (or AWS_CA_BUNDLE)"),
        (&with_other, "not trusted by the CAs in"),
    ];
    for (args, fix) in cases {
        let started = Instant::now();
        let Err(output) = TestMount::try_new(&h.s3.env_vars(), &h.s3.bucket, args) else {
            panic!("mounted through an untrusted certificate ({args:?})");
        };
        let elapsed = started.elapsed();
        assert!(output.starts_with("exited with exit status: 1"), "{output}");
        assert!(output.contains("its TLS certificate is not trusted"), "{output}");
        assert!(output.contains("UnknownIssuer"), "{output}");
        assert!(output.contains(fix), "{output}");
        assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    }
    assert!(h.front.failed_handshakes() >= 2);
}

#[test]
fn an_unusable_ca_bundle_is_refused_at_start() {
    let h = https();
    let bad = h.dir.path().join("bad.pem");
    std::fs::write(&bad, "this is not PEM\n").unwrap();
    let args = ["--endpoint-url", &h.front.endpoint, "--force-path-style", "--ca-bundle", bad.to_str().unwrap()];
    let output = TestMount::try_new(&h.s3.env_vars(), &h.s3.bucket, &args).err().expect("mounted with a bad bundle");
    assert!(output.contains("cannot create the S3 client: the CA bundle"), "{output}");
    assert!(output.contains("holds no PEM certificate"), "{output}");
}

#[test]
fn bind_lo_mounts_and_reads_and_a_missing_interface_is_named() {
    let s3 = LocalS3::start();
    s3.put("hello.txt", b"hello through lo");
    // Twice: requests alternate between the two clients (both bound to lo).
    for binds in [&["--bind", "lo"][..], &["--bind", "lo", "--bind", "lo"]] {
        let args = [&["--endpoint-url", s3.endpoint.as_str(), "--force-path-style"][..], binds].concat();
        let mount = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
        assert_eq!(std::fs::read(mount.path().join("hello.txt")).unwrap(), b"hello through lo", "{binds:?}");
    }
    let args = ["--endpoint-url", &s3.endpoint, "--force-path-style", "--bind", "nosuchnic0"];
    let output = TestMount::try_new(&s3.env_vars(), &s3.bucket, &args).err().expect("mounted with a missing NIC");
    assert!(output.starts_with("exited with exit status: 1"), "{output}");
    assert!(output.contains("--bind nosuchnic0: no such network interface"), "{output}");
    // Sockets really are bound: through any other interface, 127.0.0.1 cannot be reached.
    let other = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name != "lo");
    if let Some(other) = other {
        let args = ["--endpoint-url", &s3.endpoint, "--force-path-style", "--bind", &other];
        let Err(output) = TestMount::try_new(&s3.env_vars(), &s3.bucket, &args) else {
            panic!("reached 127.0.0.1 through {other}");
        };
        assert!(output.contains("could not reach endpoint"), "{output}");
    }
}
