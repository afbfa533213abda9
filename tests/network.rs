//! End to end: how the mount reaches S3. Region discovery through S3's redirect (a bucket
//! played in eu-central-1 by the fault proxy's region front, over s3s-fs).

mod common;

use std::time::{Duration, Instant};

use common::fault_proxy::FaultProxy;
use common::mount::TestMount;
use common::s3_server::LocalS3;

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
