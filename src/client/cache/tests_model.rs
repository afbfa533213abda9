//! A randomized model test: reads of random ranges interleaved with everything that can happen
//! to a cache (objects replaced, block files damaged or deleted behind its back, restarts) under
//! a small size limit; every read must return exactly the model's bytes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::{KIB, blocks_on_disk, config, files, get, open};
use super::{CacheStats, CachingClient, DiskCacheConfig};
use crate::client::memory::InMemoryClient;
use crate::client::{
    ClientError, ClientErrorKind, ETag, GetObjectResponse, ListPage, ListRequest, ObjectClient, ObjectMeta, PutOptions,
    PutResult, UploadedPart,
};

/// An in-memory bucket that outlives the clients over it (as S3 outlives mounts), optionally
/// trickling GET bodies (each chunk 5 ms after the last).
#[derive(Debug)]
pub(super) struct Bucket {
    pub mem: Arc<InMemoryClient>,
    slow: bool,
}

impl Bucket {
    pub fn slow(mem: InMemoryClient) -> Self {
        Bucket { mem: Arc::new(mem), slow: true }
    }
}

#[tokio::test]
async fn random_operations_never_return_wrong_bytes() {
    for seed in 0..4 {
        run(seed).await;
    }
}

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let bs = 4 * KIB;
    let limit = 10 * (bs + 100);
    let cfg = || DiskCacheConfig { max_size: Some(limit), ..config(dir.path(), bs) };
    let mem = Arc::new(InMemoryClient::new("bucket"));
    let new_client = |cache| CachingClient::new(Bucket { mem: mem.clone(), slow: false }, cache);
    let mut c = new_client(open(cfg()).await);
    let mut seen = CacheStats::default();
    let mut add = |s: CacheStats| {
        seen.hits += s.hits;
        seen.invalid_blocks += s.invalid_blocks;
        seen.evictions += s.evictions;
        seen.blocks_written += s.blocks_written;
    };
    let mut restarts = 0;
    let mut model: BTreeMap<String, (Vec<u8>, ETag)> = BTreeMap::new();
    let replace = |rng: &mut StdRng, model: &mut BTreeMap<String, (Vec<u8>, ETag)>| {
        let key = format!("k{}", rng.gen_range(0..4));
        let bytes: Vec<u8> = (0..rng.gen_range(0..5 * bs)).map(|_| rng.r#gen()).collect();
        let etag = mem.insert(&key, bytes.clone());
        model.insert(key, (bytes, etag));
    };
    while model.len() < 4 {
        replace(&mut rng, &mut model);
    }
    for step in 0..300 {
        let roll = rng.gen_range(0..100);
        if roll < 60 {
            let key = format!("k{}", rng.gen_range(0..4));
            let (bytes, etag) = &model[&key];
            let size = bytes.len() as u64;
            if size == 0 {
                let e = get(&c, &key, 0..1, etag).await.unwrap_err();
                assert_eq!(e.kind, ClientErrorKind::InvalidRange);
                continue;
            }
            let start = rng.gen_range(0..size);
            let end = rng.gen_range(start + 1..=size + 10);
            let got = get(&c, &key, start..end, etag).await.unwrap();
            let want = &bytes[start as usize..end.min(size) as usize];
            assert!(got == want, "seed {seed} step {step}: {key} {start}..{end}");
        } else if roll < 70 {
            replace(&mut rng, &mut model);
        } else if roll < 90 {
            c.cache().flush().await;
            let blocks = files(&dir.path().join("mount-s3-cache/v1"));
            if blocks.is_empty() {
                continue;
            }
            let (path, len) = &blocks[rng.gen_range(0..blocks.len())];
            damage(&mut rng, path, *len);
        } else {
            c.cache().flush().await;
            add(c.stats());
            restarts += 1;
            let cache = Arc::downgrade(c.cache());
            drop(c);
            wait_gone(&cache).await;
            c = new_client(open(cfg()).await);
        }
        c.cache().flush().await;
        let on_disk = blocks_on_disk(dir.path()).1;
        assert!(on_disk <= limit, "seed {seed} step {step}: {on_disk} > {limit}");
    }
    add(c.stats());
    // The run did go through every path it is meant to.
    assert!(restarts > 0 && seen.hits > 50 && seen.invalid_blocks > 0 && seen.evictions > 0, "{seen:?}");
}

/// Flips a byte, truncates, or deletes a block file, as a bad disk or a stray `rm` would.
fn damage(rng: &mut StdRng, path: &Path, len: u64) {
    match rng.gen_range(0..3) {
        0 if len > 0 => {
            let mut bytes = std::fs::read(path).unwrap();
            let at = rng.gen_range(0..bytes.len());
            bytes[at] ^= 1 << rng.gen_range(0..8);
            std::fs::write(path, bytes).unwrap();
        }
        1 => {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(rng.gen_range(0..=len)).unwrap();
        }
        _ => std::fs::remove_file(path).unwrap(),
    }
}

async fn wait_gone<T>(weak: &std::sync::Weak<T>) {
    for _ in 0..1000 {
        if weak.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("still held");
}

#[async_trait]
impl ObjectClient for Bucket {
    fn bucket(&self) -> &str {
        self.mem.bucket()
    }
    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        self.mem.head_object(key).await
    }
    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        let mut response = self.mem.get_object(key, range, if_match).await?;
        if self.slow {
            response.body = Box::pin(response.body.then(|chunk| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                chunk
            }));
        }
        Ok(response)
    }
    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        self.mem.list_objects(request).await
    }
    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError> {
        self.mem.put_object(key, body, options).await
    }
    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError> {
        self.mem.create_multipart_upload(key, options).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        self.mem.upload_part(key, upload_id, part_number, body, options).await
    }
    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        self.mem.complete_multipart_upload(key, upload_id, parts, options).await
    }
    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), ClientError> {
        self.mem.abort_multipart_upload(key, upload_id).await
    }
    async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        self.mem.delete_object(key).await
    }
    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &crate::client::CopyOptions,
    ) -> Result<PutResult, ClientError> {
        self.mem.copy_object(source_key, dest_key, options).await
    }
    #[allow(clippy::too_many_arguments)]
    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        source_key: &str,
        range: std::ops::Range<u64>,
        source_if_match: Option<&ETag>,
    ) -> Result<UploadedPart, ClientError> {
        self.mem.upload_part_copy(key, upload_id, part_number, source_key, range, source_if_match).await
    }

    async fn rename_object(&self, s: &str, d: &str, o: &crate::client::RenameOptions) -> Result<(), ClientError> {
        self.mem.rename_object(s, d, o).await
    }
}
