//! The file-system core (prefetcher included) over caching clients: what executors on one node
//! see. The prefetcher checks every part's ETag and object size, so this also shows the caching
//! client answers as S3 would.

use std::ffi::OsStr;
use std::sync::Arc;

use super::tests::{KIB, MIB, client, config, data, gets, open, put};
use crate::fs::namespace::ROOT_INO;
use crate::fs::{FsConfig, S3Filesystem};

async fn read_at(fs: &S3Filesystem, path: &[&str], reads: &[(u64, u32)]) -> Vec<Vec<u8>> {
    let mut ino = ROOT_INO;
    for part in path {
        ino = fs.lookup(ino, OsStr::new(part)).await.unwrap().attr.ino;
    }
    let fh = fs.open(ino, libc::O_RDONLY, 4242).await.unwrap().fh;
    let mut out = Vec::new();
    for (offset, len) in reads {
        out.push(fs.read(fh, *offset, *len).await.unwrap().to_vec());
    }
    fs.release(fh).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_on_one_node_read_a_jar_from_s3_once() {
    let dir = tempfile::tempdir().unwrap();
    let size = 10 * MIB + 4321;
    let jar = data(size, 9);
    let mounts: Vec<_> = [open(config(dir.path(), MIB)).await, open(config(dir.path(), MIB)).await]
        .iter()
        .map(|cache| {
            let c = Arc::new(client(cache, "bucket"));
            put(&c, "jars/app.jar", &jar);
            let fs = S3Filesystem::new(c.clone(), FsConfig::default());
            (c, fs)
        })
        .collect();
    // The first executor reads the whole JAR sequentially, as a copy would.
    let sequential: Vec<(u64, u32)> = (0..size).step_by(128 * KIB as usize).map(|o| (o, 128 * 1024)).collect();
    let got = read_at(&mounts[0].1, &["jars", "app.jar"], &sequential).await.concat();
    assert!(got == jar);
    mounts[0].0.cache().flush().await;
    let first_gets = gets(&mounts[0].0);
    assert!(first_gets > 0);
    // The second reads it as a class loader does: the central directory at the end, then
    // entries here and there, then all of it. Not one GET.
    let mut pattern = vec![(size - 22, 22), (size - 70 * KIB, 64 * 1024), (5 * MIB + 3, 4000), (17, 100_000)];
    pattern.extend(sequential.iter().copied());
    let got = read_at(&mounts[1].1, &["jars", "app.jar"], &pattern).await;
    for ((offset, len), bytes) in pattern.iter().zip(&got) {
        let end = (offset + *len as u64).min(size) as usize;
        assert!(bytes[..] == jar[*offset as usize..end], "read at {offset}");
    }
    assert_eq!(gets(&mounts[1].0), 0);
    assert_eq!(mounts[1].0.stats().misses, 0);
    // And the first, reading again, does not ask either.
    read_at(&mounts[0].1, &["jars", "app.jar"], &sequential).await;
    assert_eq!(gets(&mounts[0].0), first_gets);
}
