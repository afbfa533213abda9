//! The demo: a local S3 server with demo data, mounted with the real `mount-s3` binary.
//!
//! Run with `./scripts/demo.sh` (builds first), or `cargo run --release --example demo [-- --keep]`
//! after `cargo build --release`. The server runs inside this process on 127.0.0.1; the mount
//! lives under a temp directory and is unmounted at the end (with `--keep`, when you press Enter).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::io::Read;
use std::process::Command;
use std::time::Instant;

use common::mount::{command, force_unmount};
use common::s3_server::LocalS3;

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    println!("== starting a local S3 server on 127.0.0.1");
    let s3 = LocalS3::start();
    println!("   endpoint {}  bucket {}", s3.endpoint, s3.bucket);

    println!("== seeding demo data");
    let large: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("README.txt".into(), b"Welcome to the mount-s3 demo bucket.\nEverything here is an S3 object.\n".to_vec()),
        ("datasets/large-64MiB.bin".into(), large.clone()),
        ("datasets/small/part-0000.csv".into(), b"id,value\n1,alpha\n2,beta\n".to_vec()),
        ("datasets/small/part-0001.csv".into(), b"id,value\n3,gamma\n".to_vec()),
        ("logs/2026/11/21/app.log".into(), b"12:00:00 INFO started\n12:00:01 INFO ready\n".to_vec()),
        (
            "names with spaces/r\u{e9}sum\u{e9} \u{65e5}\u{672c}.txt".into(),
            "unicode and spaces work\n".as_bytes().to_vec(),
        ),
        ("empty-file".into(), vec![]),
    ];
    for (key, data) in &objects {
        s3.put(key, data);
    }
    println!("   {} objects", objects.len());

    let work = tempfile::tempdir().expect("temp dir");
    let mnt = work.path().join("demo-bucket");
    std::fs::create_dir(&mnt).unwrap();
    let args = [
        s3.bucket.clone(),
        mnt.to_string_lossy().into_owned(),
        "--endpoint-url".into(),
        s3.endpoint.clone(),
        "--force-path-style".into(),
        "--region".into(),
        "us-east-1".into(),
    ];
    println!("== mount-s3 {}", args.join(" "));
    let out = command(&s3.env_vars(), work.path()).args(&args).output().expect("run mount-s3");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprintln!("mount failed: {}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }

    println!("== ls -R {}", mnt.display());
    Command::new("ls").arg("-R").arg(&mnt).status().unwrap();
    println!("== cat README.txt");
    Command::new("cat").arg(mnt.join("README.txt")).status().unwrap();
    println!("== reading datasets/large-64MiB.bin through the mount");
    let start = Instant::now();
    let mut read_back = vec![];
    std::fs::File::open(mnt.join("datasets/large-64MiB.bin")).unwrap().read_to_end(&mut read_back).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let same = read_back == large;
    println!(
        "   {} bytes in {:.2} s ({:.0} MiB/s), identical to the object: {}",
        read_back.len(),
        secs,
        read_back.len() as f64 / (1 << 20) as f64 / secs,
        if same { "yes" } else { "NO" }
    );

    if keep {
        println!("== mounted at {}; explore it from another shell. Press Enter to unmount.", mnt.display());
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    println!("== umount {}", mnt.display());
    let ok = Command::new("umount").arg(&mnt).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        force_unmount(&mnt);
    }
    std::process::exit(if same { 0 } else { 1 });
}
