//! End to end: `--upload-checksums crc64nvme` against s3s-fs, which validates a CRC64NVME sent
//! with a PutObject and keeps it. Objects land with the right bytes; where the server kept a
//! CRC64NVME it is the one of those bytes, computed here independently.

mod common;

use aws_sdk_s3::types::ChecksumMode;
use common::TestS3;
use common::data::{digest, pattern};
use common::mount::TestMount;
use common::s3_server::LocalS3;

fn crc64nvme_base64(data: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, data);
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

/// The CRC64NVME the server keeps for `key`, if any.
fn stored_crc64nvme(s3: &LocalS3, key: &str) -> Option<String> {
    let sdk = s3.sdk_client();
    let bucket = s3.bucket.clone();
    let key = key.to_string();
    s3.helper().block_on(async move {
        let head = sdk.head_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await;
        head.expect("HeadObject").checksum_crc64_nvme().map(str::to_string)
    })
}

/// s3s-fs refuses parts under 5 MiB (EntityTooSmall), as S3 does.
const PART: usize = 5 * 1024 * 1024;

/// Mounts `s3` with `--upload-checksums checksums` and 5 MiB parts, writes `small` and `large`
/// through it and checks that both landed intact. Returns the mount.
fn write_small_and_large(s3: &LocalS3, checksums: &str, small: &[u8], large: &[u8]) -> TestMount {
    let part = PART.to_string();
    let args = [
        "--endpoint-url",
        &s3.endpoint,
        "--force-path-style",
        "--upload-checksums",
        checksums,
        "--write-part-size",
        &part,
    ];
    let mount = TestMount::new(&s3.env_vars(), &s3.bucket, &args);
    std::fs::write(mount.path().join("small"), small).unwrap();
    std::fs::write(mount.path().join("large"), large).unwrap();
    for (key, data) in [("small", small), ("large", large)] {
        let stored = s3.get(key).map(|b| digest(&b));
        assert!(stored == Some(digest(data)), "{key} did not land intact ({checksums})\n{}", mount.output());
    }
    mount
}

#[test]
fn crc64nvme_uploads_land_with_the_right_bytes_and_checksum() {
    let s3 = LocalS3::start();
    let small = pattern(1000, 1);
    let large = pattern(2 * PART + PART / 2, 2);
    let _mount = write_small_and_large(&s3, "crc64nvme", &small, &large);
    assert_eq!(s3.request_count_by_name("UploadPart"), 3, "{:?}", s3.request_counts());
    // s3s-fs validated and kept the PutObject's checksum; its multipart uploads keep none.
    assert_eq!(stored_crc64nvme(&s3, "small"), Some(crc64nvme_base64(&small)));
    if let Some(stored) = stored_crc64nvme(&s3, "large") {
        assert_eq!(stored, crc64nvme_base64(&large));
    }
}

/// With a checksum in a (signed) header, S3 checks the body against it, so bodies go as
/// `UNSIGNED-PAYLOAD` (no SHA-256 over every byte: a third of a writer's CPU). Without upload
/// checksums the signature is the only check of the body: then it is signed.
#[test]
fn bodies_are_signed_only_when_no_checksum_protects_them() {
    for (checksums, signed) in [("crc32c", false), ("off", true)] {
        let s3 = LocalS3::start();
        let _mount = write_small_and_large(&s3, checksums, &pattern(1000, 3), &pattern(PART + PART / 2, 4));
        let hashes = s3.payload_hashes();
        let ops: Vec<&str> = hashes.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(ops.iter().filter(|op| **op == "UploadPart").count(), 2, "{hashes:?}");
        assert!(ops.contains(&"PutObject"), "{hashes:?}");
        for (op, hash) in &hashes {
            let is_sha = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if signed {
                assert!(is_sha, "{op} with --upload-checksums off must sign its body: {hash:?}");
            } else {
                assert_eq!(hash, "UNSIGNED-PAYLOAD", "{op} with a CRC32C header");
            }
        }
    }
}
