//! End to end on moto (which answers an If-Match GET with 412): with a metadata TTL, a file
//! another client replaced reads ESTALE once, and the 412 that proved it stale makes the next
//! open read the new object, instead of every reopen failing until the TTL expires.

mod common;

use common::TestS3;
use common::moto::MotoServer;
use common::mount::TestMount;

/// Looks `f.txt` up (its metadata is now cached for the TTL), replaces it behind the mount's
/// back with longer contents, then reads it: ESTALE at most once, then the new bytes.
fn replaced_file_reads_new_bytes_after_one_estale(extra: &[&str]) {
    let s3 = MotoServer::start();
    s3.put("dir/f.txt", b"old contents");
    s3.put("dir/other", b"o");
    let mut args = vec!["--endpoint-url", s3.endpoint(), "--force-path-style", "--region", "us-east-1"];
    args.extend_from_slice(extra);
    let m = TestMount::new(&s3.env_vars(), s3.bucket(), &args);
    let path = m.path().join("dir/f.txt");
    assert_eq!(std::fs::read_dir(m.path().join("dir")).unwrap().count(), 2);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 12);

    let new = b"the new contents, longer than the old ones";
    s3.put("dir/f.txt", new);
    let mut estale = 0;
    let read = loop {
        match std::fs::read(&path) {
            Ok(bytes) => break bytes,
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) && estale == 0 => estale += 1,
            Err(e) => panic!("read after {estale} ESTALE: {e}\n{}", m.output()),
        }
    };
    assert_eq!(read, new, "{extra:?}: the reopen reads the new object, whole");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), new.len() as u64);
    assert_eq!(std::fs::read(&path).unwrap(), new);
}

#[test]
fn with_a_metadata_ttl_a_reopen_reads_the_replaced_object() {
    replaced_file_reads_new_bytes_after_one_estale(&["--metadata-ttl", "60"]);
}

#[test]
fn with_a_cache_and_indefinite_metadata_a_reopen_reads_the_replaced_object() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    let args = ["--cache", cache_dir.to_str().unwrap(), "--metadata-ttl", "indefinite"];
    replaced_file_reads_new_bytes_after_one_estale(&args);
}
