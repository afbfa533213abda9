//! End to end with moto (which stores storage classes and restores): objects in GLACIER and
//! DEEP_ARCHIVE are listed with mode 0000 and cannot be opened (EACCES) until restored, as
//! Mountpoint shows them; GLACIER_IR and restored objects read normally.

mod common;

use std::os::unix::fs::PermissionsExt;

use aws_sdk_s3::types::{RestoreRequest, StorageClass};
use common::TestS3;
use common::moto::MotoServer;
use common::mount::TestMount;

#[test]
fn archived_objects_are_listed_unreadable_until_restored() {
    let s3 = MotoServer::start();
    let client = s3.sdk_client();
    let bucket = s3.bucket().to_string();
    let objects = [
        ("standard", None),
        ("glacier", Some(StorageClass::Glacier)),
        ("deep", Some(StorageClass::DeepArchive)),
        ("instant", Some(StorageClass::GlacierIr)),
        ("restored", Some(StorageClass::Glacier)),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for (key, class) in &objects {
            let body = aws_sdk_s3::primitives::ByteStream::from(format!("data of {key}").into_bytes());
            client
                .put_object()
                .bucket(&bucket)
                .key(*key)
                .body(body)
                .set_storage_class(class.clone())
                .send()
                .await
                .unwrap();
        }
        let restore = RestoreRequest::builder().days(1).build();
        client.restore_object().bucket(&bucket).key("restored").restore_request(restore).send().await.unwrap();
    });
    let args = ["--endpoint-url", s3.endpoint(), "--force-path-style", "--region", "us-east-1"];
    let m = TestMount::new(&s3.env_vars(), s3.bucket(), &args);
    for (key, readable) in
        [("standard", true), ("glacier", false), ("deep", false), ("instant", true), ("restored", true)]
    {
        let path = m.path().join(key);
        let mode = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{key}: {e}")).permissions().mode() & 0o777;
        let read = std::fs::read(&path);
        if readable {
            assert_eq!(mode, 0o644, "{key}");
            assert_eq!(read.unwrap(), format!("data of {key}").into_bytes(), "{key}");
        } else {
            assert_eq!(mode, 0o000, "{key}");
            assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::EACCES), "{key}");
        }
    }
    let mut names: Vec<String> =
        std::fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["deep", "glacier", "instant", "restored", "standard"], "archived objects are listed");
    assert!(m.output().contains("must be restored before it can be read"), "{}", m.output());
}
