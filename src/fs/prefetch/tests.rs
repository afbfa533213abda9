//! The prefetcher over the in-memory and fault-injecting clients: exact bytes, exact GET counts,
//! memory bounds, failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;

use super::*;
use crate::client::fault::{Fault, FaultClient, When};
use crate::client::memory::InMemoryClient;
use crate::client::{
    ClientError, ClientErrorKind, ETag, GetObjectResponse, ListPage, ListRequest, ObjectClient, ObjectMeta, PutOptions,
    PutResult, S3Operation, UploadedPart,
};
use crate::fs::read::{FileReader, ObjectVersion};

const K: u64 = 128 * KIB;

/// Small numbers so tests cover many parts with little data: 1 MiB parts, 256 KiB first request
/// (and floor), 512 KiB retained and tolerated either way.
fn small() -> PrefetchConfig {
    PrefetchConfig {
        part_size: MIB,
        first_request_size: 256 * KIB,
        max_window: 4 * MIB,
        retain_behind: 512 * KIB,
        back_tolerance: 512 * KIB,
        forward_tolerance: 512 * KIB,
        random_request_size: 64 * KIB,
        sequential_run: 256 * KIB,
        ..PrefetchConfig::default()
    }
}

fn data(n: u64, seed: u64) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31).wrapping_add(i >> 13).wrapping_add(seed)) as u8).collect()
}

async fn open(client: Arc<dyn ObjectClient>, key: &str, prefetcher: &Arc<Prefetcher>) -> FileReader {
    let meta = client.head_object(key).await.unwrap();
    let object = ObjectVersion { key: key.into(), etag: meta.etag, size: meta.size };
    FileReader::new(client, object, prefetcher.clone())
}

fn bucket(objects: &[(&str, &[u8])]) -> Arc<InMemoryClient> {
    let c = Arc::new(InMemoryClient::new("b"));
    for (k, v) in objects {
        c.insert(k, v.to_vec());
    }
    c
}

/// Lets spawned GET tasks run, so request counters are final.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn read_at(r: &FileReader, offset: u64, len: u64) -> Vec<u8> {
    r.read(offset, len as u32).await.unwrap().to_vec()
}

#[tokio::test]
async fn sequential_40_mib_exact_bytes_and_one_get_per_part() {
    let size = 40 * MIB;
    let bytes = data(size, 1);
    let c = bucket(&[("k", &bytes)]);
    let p = Prefetcher::new(small(), MemoryBudget::new(64 * MIB));
    let r = open(c.clone(), "k", &p).await;
    let mut got = Vec::with_capacity(size as usize);
    while (got.len() as u64) < size {
        got.extend(read_at(&r, got.len() as u64, K).await);
    }
    assert!(r.read(size, 4096).await.unwrap().is_empty(), "EOF");
    assert!(got == bytes, "bytes differ");
    settle().await;
    // 0..256K, 256K..1M, then 39 parts of 1 MiB: each byte fetched once.
    assert_eq!(c.count(S3Operation::GetObject), 41);
    assert!(p.budget().peak() <= 4 * MIB + 2 * MIB, "window + one part + retained, peak {}", p.budget().peak());
    drop(r);
    assert_eq!(p.budget().reserved(), 0, "a closed handle holds nothing");
}

#[tokio::test]
async fn reads_out_of_order_by_128_kib_reuse_the_stream() {
    let size = 8 * MIB;
    let bytes = data(size, 2);
    let c = bucket(&[("k", &bytes)]);
    for (swap_first, gets) in [(false, 9), (true, 10)] {
        c.reset_counts();
        let p = Prefetcher::new(small(), MemoryBudget::new(64 * MIB));
        let r = open(c.clone(), "k", &p).await;
        let mut order: Vec<u64> = (0..size / K).collect();
        // Swap neighbours as FUSE async reads arrive: (1,0)? then (2,3)->(3,2), ...
        let start = if swap_first { 0 } else { 1 };
        for i in (start..order.len() - 1).step_by(2) {
            order.swap(i, i + 1);
        }
        for i in order {
            assert!(read_at(&r, i * K, K).await == bytes[(i * K) as usize..((i + 1) * K) as usize], "block {i}");
        }
        settle().await;
        // 0..256K, 256K..1M, 7 parts; a first read at 128K adds one GET for the 128 KiB before it.
        assert_eq!(c.count(S3Operation::GetObject), gets, "swap_first {swap_first}");
    }
}

#[tokio::test]
async fn backward_seeks_within_the_retained_window_cost_nothing() {
    let size = 8 * MIB;
    let bytes = data(size, 3);
    let c = bucket(&[("k", &bytes)]);
    // A fixed window, so what is requested ahead does not depend on timing.
    let p = Prefetcher::new(PrefetchConfig { max_window: 256 * KIB, ..small() }, MemoryBudget::new(64 * MIB));
    let r = open(c.clone(), "k", &p).await;
    let at = 5 * MIB;
    for i in 0..at / K {
        read_at(&r, i * K, K).await;
    }
    settle().await;
    let gets = c.count(S3Operation::GetObject);
    let slice = |o: u64, l: u64| bytes[o as usize..(o + l) as usize].to_vec();
    assert_eq!(read_at(&r, at - 300 * KIB, 4096).await, slice(at - 300 * KIB, 4096), "retained");
    settle().await;
    assert_eq!(c.count(S3Operation::GetObject), gets);
    // Past the retained window but within the back tolerance: one GET for the gap only.
    assert_eq!(read_at(&r, at - 900 * KIB, K).await, slice(at - 900 * KIB, K));
    settle().await;
    assert_eq!(c.count(S3Operation::GetObject), gets + 1);
    // Far back: a new stream.
    assert_eq!(read_at(&r, 100, K).await, slice(100, K));
    settle().await;
    assert_eq!(c.count(S3Operation::GetObject), gets + 2);
}

#[tokio::test]
async fn random_256k_reads_cost_at_most_two_gets_each_and_waste_at_most_a_first_window() {
    let size = 64 * MIB;
    let bytes = data(size, 4);
    let inner = InMemoryClient::new("b");
    inner.insert("k", bytes.clone());
    let c = Arc::new(FaultClient::new(inner, 0));
    let cfg = PrefetchConfig::default();
    let p = Prefetcher::new(cfg.clone(), MemoryBudget::new(256 * MIB));
    let r = open(c.clone(), "k", &p).await;
    // Slots 2 MiB apart (beyond the 1 MiB tolerances), visited in a scrambled order.
    let slots: Vec<u64> = (0..32).map(|i| (i * 13) % 32).collect();
    for (n, slot) in slots.iter().enumerate() {
        let offset = slot * 2 * MIB + 4096;
        let (gets, fetched) = (c.calls(S3Operation::GetObject), c.get_bytes_requested());
        // The kernel splits a 256 KiB read in two 128 KiB reads, sent together.
        let halves = join_all([r.read(offset, K as u32), r.read(offset + K, K as u32)]).await;
        let got: Vec<u8> = halves.into_iter().flat_map(|h| h.unwrap().to_vec()).collect();
        assert!(got == bytes[offset as usize..(offset + 2 * K) as usize], "read {n}");
        settle().await;
        let (gets, fetched) = (c.calls(S3Operation::GetObject) - gets, c.get_bytes_requested() - fetched);
        assert!(gets <= 2, "read {n}: {gets} GETs");
        assert!(fetched <= 2 * K + cfg.first_request_size, "read {n}: {fetched} bytes fetched");
        if n >= 2 {
            assert!(fetched <= 3 * K, "read {n} in random mode: {fetched} bytes fetched");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_under_a_tight_budget_stay_within_budget_plus_one_floor_each() {
    let readers = 8u64;
    let size = 6 * MIB;
    let objects: Vec<(String, Vec<u8>)> = (0..readers).map(|i| (format!("k{i}"), data(size, 10 + i))).collect();
    let pairs: Vec<(&str, &[u8])> = objects.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    let c = bucket(&pairs);
    let cfg = small();
    // Less than a part per reader, and a few parts per reader.
    for limit in [MIB, 3 * MIB] {
        let p = Prefetcher::new(cfg.clone(), MemoryBudget::new(limit));
        let tasks = objects.iter().map(|(key, bytes)| {
            let (c, p, key, bytes) = (c.clone(), p.clone(), key.clone(), bytes.clone());
            tokio::spawn(async move {
                let r = open(c, &key, &p).await;
                let mut at = 0;
                while at < size {
                    // Two reads in flight, as FUSE async reads.
                    let pair = join_all([r.read(at, K as u32), r.read(at + K, K as u32)]).await;
                    for got in pair {
                        let got = got.unwrap();
                        assert!(got == bytes[at as usize..at as usize + got.len()], "{key} at {at}");
                        at += got.len() as u64;
                    }
                }
            })
        });
        for t in join_all(tasks).await {
            t.unwrap();
        }
        let peak = p.budget().peak();
        assert!(peak > limit / 2, "the budget was in use: peak {peak}");
        assert!(peak <= limit + readers * cfg.floor(), "peak {peak} over {limit} + {readers} floors");
        assert_eq!(p.budget().reserved(), 0);
    }
}

#[tokio::test]
async fn with_no_budget_left_a_reader_still_progresses_within_its_floor() {
    let size = 3 * MIB;
    let bytes = data(size, 12);
    let c = bucket(&[("k", &bytes)]);
    let p = Prefetcher::new(small(), MemoryBudget::new(8 * MIB));
    let hog = p.budget().try_reserve(8 * MIB).unwrap();
    let r = open(c.clone(), "k", &p).await;
    let mut got = Vec::new();
    while (got.len() as u64) < size {
        got.extend(read_at(&r, got.len() as u64, K).await);
        assert!(r.held_bytes() <= p.config().floor(), "held {}", r.held_bytes());
    }
    assert!(got == bytes);
    assert_eq!(p.budget().peak(), 8 * MIB + p.config().floor());
    // Only floor-sized GETs: one per 256 KiB.
    assert_eq!(c.count(S3Operation::GetObject), size / (256 * KIB));
    drop(hog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_reads_of_one_handle_get_exact_bytes() {
    let size = 6 * MIB;
    let bytes = data(size, 5);
    let c = bucket(&[("k", &bytes)]);
    let p = Prefetcher::new(small(), MemoryBudget::new(64 * MIB));
    let r = Arc::new(open(c.clone(), "k", &p).await);
    for window in (0..size / K).collect::<Vec<_>>().chunks(8) {
        let reads = window.iter().rev().map(|&i| {
            let r = r.clone();
            async move { (i, r.read(i * K, K as u32).await.unwrap()) }
        });
        for (i, got) in join_all(reads).await {
            assert!(got == bytes[(i * K) as usize..((i + 1) * K) as usize], "block {i}");
        }
    }
}

#[tokio::test]
async fn an_idle_handle_gives_its_memory_back_when_another_needs_it() {
    let bytes = data(8 * MIB, 6);
    let c = bucket(&[("a", &bytes), ("b", &bytes)]);
    let cfg = PrefetchConfig { idle_after: Duration::from_millis(10), ..small() };
    let p = Prefetcher::new(cfg, MemoryBudget::new(4 * MIB));
    let a = open(c.clone(), "a", &p).await;
    for i in 0..8 {
        read_at(&a, i * K, K).await;
    }
    assert!(a.held_bytes() > 0);
    // Everything else in the budget is taken: b's prefetch can only come from idle handles.
    let hog = p.budget().try_reserve(p.budget().available()).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b = open(c.clone(), "b", &p).await;
    for i in 0..8 {
        assert_eq!(read_at(&b, i * K, K).await, bytes[(i * K) as usize..((i + 1) * K) as usize]);
    }
    assert_eq!(a.held_bytes(), 0, "the idle handle was asked to give back its data");
    assert!(b.held_bytes() > b_floor(&p), "b got more than its floor");
    drop(hog);
    // a picks up where it stopped, with a fresh stream.
    assert_eq!(read_at(&a, 8 * K, K).await, bytes[(8 * K) as usize..(9 * K) as usize]);
}

fn b_floor(p: &Prefetcher) -> u64 {
    p.config().floor()
}

#[tokio::test]
async fn a_body_cut_mid_part_fails_the_read_with_eio_and_the_next_read_recovers() {
    let size = 4 * MIB;
    let bytes = data(size, 7);
    let inner = InMemoryClient::new("b");
    inner.insert("k", bytes.clone());
    let c = Arc::new(FaultClient::new(inner, 0));
    let p = Prefetcher::new(small(), MemoryBudget::new(64 * MIB));
    let r = open(c.clone(), "k", &p).await;
    // The second GET (256K..1M) stops after 100 KiB.
    c.cut_get_body(When::Nth(1 + 1), 100 * KIB);
    let mut got = Vec::new();
    let mut failures = 0;
    while (got.len() as u64) < size {
        match r.read(got.len() as u64, K as u32).await {
            Ok(b) => got.extend_from_slice(&b),
            Err(e) => {
                assert_eq!(e.errno(), libc::EIO);
                assert_eq!(got.len() as u64, 256 * KIB, "the failure is reported where the bytes stop");
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 1, "the read after the failure recovered");
    assert!(got == bytes, "never wrong bytes");
    assert_eq!(c.bodies_cut(), 1);
}

#[tokio::test]
async fn random_faults_give_errors_or_exact_bytes_never_wrong_ones() {
    let size = 6 * MIB;
    let bytes = data(size, 8);
    let inner = InMemoryClient::new("b");
    inner.insert("k", bytes.clone());
    let c = Arc::new(FaultClient::new(inner, 99));
    c.fail_share(S3Operation::GetObject, 0.2, ClientErrorKind::Throttled);
    c.inject(S3Operation::GetObject, When::Share(0.2), Fault::CutBody { after: 300 * KIB });
    let p = Prefetcher::new(small(), MemoryBudget::new(64 * MIB));
    let r = open(c.clone(), "k", &p).await;
    let mut got = Vec::new();
    let mut errors = 0;
    while (got.len() as u64) < size {
        match r.read(got.len() as u64, K as u32).await {
            Ok(b) => got.extend_from_slice(&b),
            Err(e) => {
                assert_eq!(e.errno(), libc::EIO);
                errors += 1;
                assert!(errors < 200, "no progress");
            }
        }
    }
    assert!(got == bytes);
    assert!(errors > 0 && c.injected(S3Operation::GetObject) > 0);
}

#[tokio::test]
async fn a_server_ignoring_if_match_is_caught_by_the_etag_check() {
    let c = Arc::new(FaultClient::new(InMemoryClient::new("b"), 0));
    c.inner().insert("k", data(MIB, 9));
    let p = Prefetcher::new(small(), MemoryBudget::new(64 * MIB));
    let r = open(c.clone(), "k", &p).await;
    c.inner().insert("k", data(MIB, 10));
    c.inject(S3Operation::GetObject, When::Always, Fault::IgnoreIfMatch);
    assert_eq!(r.read(0, 4096).await.unwrap_err().errno(), libc::ESTALE);
    c.clear();
    assert_eq!(r.read(0, 4096).await.unwrap_err().errno(), libc::ESTALE, "If-Match: 412");
}

/// Counts GETs in progress (from call to end of body) to check the cap on concurrency.
#[derive(Debug)]
struct Gauge {
    inner: InMemoryClient,
    now: Arc<AtomicU64>,
    max: AtomicU64,
}

#[async_trait]
impl ObjectClient for Gauge {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        self.inner.head_object(key).await
    }
    async fn get_object(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        m: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut response = self.inner.get_object(key, range, m).await?;
        let gauge = self.now.clone();
        let done = futures::stream::once(async move {
            gauge.fetch_sub(1, Ordering::SeqCst);
            Err(ClientError::new(ClientErrorKind::Other, "GetObject", "sentinel"))
        });
        // The sentinel runs when the body is drained; the part never polls past the end of it.
        response.body =
            Box::pin(futures::StreamExt::chain(response.body, futures::StreamExt::filter(done, |_| async { false })));
        Ok(response)
    }
    async fn list_objects(&self, r: &ListRequest) -> Result<ListPage, ClientError> {
        self.inner.list_objects(r).await
    }
    async fn put_object(&self, k: &str, b: bytes::Bytes, o: &PutOptions) -> Result<PutResult, ClientError> {
        self.inner.put_object(k, b, o).await
    }
    async fn create_multipart_upload(&self, k: &str, o: &PutOptions) -> Result<String, ClientError> {
        self.inner.create_multipart_upload(k, o).await
    }
    async fn upload_part(
        &self,
        k: &str,
        u: &str,
        n: u32,
        b: bytes::Bytes,
        o: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        self.inner.upload_part(k, u, n, b, o).await
    }
    async fn complete_multipart_upload(
        &self,
        k: &str,
        u: &str,
        p: &[UploadedPart],
        o: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        self.inner.complete_multipart_upload(k, u, p, o).await
    }
    async fn abort_multipart_upload(&self, k: &str, u: &str) -> Result<(), ClientError> {
        self.inner.abort_multipart_upload(k, u).await
    }
    async fn delete_object(&self, k: &str) -> Result<(), ClientError> {
        self.inner.delete_object(k).await
    }
    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &crate::client::CopyOptions,
    ) -> Result<PutResult, ClientError> {
        self.inner.copy_object(source_key, dest_key, options).await
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
        self.inner.upload_part_copy(key, upload_id, part_number, source_key, range, source_if_match).await
    }

    async fn rename_object(&self, s: &str, d: &str, o: &crate::client::RenameOptions) -> Result<(), ClientError> {
        self.inner.rename_object(s, d, o).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_in_flight_never_exceed_the_cap() {
    let inner = InMemoryClient::new("b");
    let bytes = data(16 * MIB, 11);
    for i in 0..4 {
        inner.insert(&format!("k{i}"), bytes.clone());
    }
    let gauge = Arc::new(Gauge { inner, now: Arc::default(), max: AtomicU64::new(0) });
    let cfg = PrefetchConfig { max_concurrent_requests: 3, max_window: 16 * MIB, ..small() };
    let p = Prefetcher::new(cfg, MemoryBudget::new(256 * MIB));
    let tasks = (0..4).map(|i| {
        let (gauge, p, bytes) = (gauge.clone(), p.clone(), bytes.clone());
        tokio::spawn(async move {
            let r = open(gauge, &format!("k{i}"), &p).await;
            for b in 0..16 * MIB / K {
                assert!(read_at(&r, b * K, K).await == bytes[(b * K) as usize..((b + 1) * K) as usize]);
            }
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
    let max = gauge.max.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "{max} GETs in flight at most");
}
