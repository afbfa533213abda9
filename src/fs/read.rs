//! [`FileReader`]: the read side of an open file, over the prefetcher ([`crate::fs::prefetch`]).
//!
//! A read plans under the handle's lock (which GETs to issue, which parts hold its bytes),
//! releases the lock, waits for its parts, and copies its bytes out by offset; then it relocks
//! briefly to move the position on. So concurrent reads of one handle (FUSE async reads) never
//! wait on each other's network I/O, and each returns exactly the bytes at its offset. Reads
//! longer than a handle's memory floor (1.125 MiB by default, more than FUSE ever asks) are served
//! in pieces, so a read can always make progress. A failed part fails the read (EIO, or ESTALE if
//! the object changed) and drops the handle's stream; the next read starts afresh.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::client::{ClientError, ClientErrorKind, ObjectClient};
use crate::fs::FsError;
use crate::fs::memory::{Consumer, Reclaim};
use crate::fs::prefetch::Prefetcher;
use crate::fs::prefetch::part::{Part, WaitError};
use crate::fs::prefetch::stream::{Planned, Source, Stream};

pub use crate::fs::prefetch::ObjectVersion;

/// How long a read that could not get even its minimal memory waits before trying again, at
/// most (it is woken earlier by any release).
const MEMORY_RETRY: Duration = Duration::from_millis(10);
/// Attempts at a read whose bytes were trimmed under it (only possible if the stream was reset).
const ATTEMPTS: usize = 3;

struct ReaderState {
    client: Arc<dyn ObjectClient>,
    object: ObjectVersion,
    prefetcher: Arc<Prefetcher>,
    consumer: Consumer,
    stream: Mutex<Stream>,
}

impl ReaderState {
    fn source(&self) -> Source<'_> {
        Source { client: &self.client, object: &self.object, prefetcher: &self.prefetcher, consumer: &self.consumer }
    }
}

impl Reclaim for ReaderState {
    fn reclaim(&self) -> u64 {
        // A handle busy right now (its lock held) is not idle: skip it rather than wait.
        let Ok(mut stream) = self.stream.try_lock() else {
            return 0;
        };
        if !stream.is_idle(self.prefetcher.config().idle_after) {
            return 0;
        }
        let before = self.consumer.held();
        stream.reset();
        drop(stream);
        before.saturating_sub(self.consumer.held())
    }
}

/// Reads one object version for one open file handle.
pub struct FileReader {
    state: Arc<ReaderState>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader").field("object", &self.state.object).finish_non_exhaustive()
    }
}

impl FileReader {
    /// A reader of `object` drawing memory and GET permits from `prefetcher`; nothing is
    /// requested until the first read.
    pub fn new(client: Arc<dyn ObjectClient>, object: ObjectVersion, prefetcher: Arc<Prefetcher>) -> Self {
        let consumer = prefetcher.budget().consumer(prefetcher.config().floor());
        let stream = Mutex::new(Stream::new(prefetcher.config()));
        let state = Arc::new(ReaderState { client, object, prefetcher, consumer, stream });
        let weak: Weak<dyn Reclaim> = Arc::downgrade(&state) as Weak<ReaderState>;
        state.prefetcher.budget().register(weak);
        FileReader { state }
    }

    /// The object version this handle reads.
    pub fn object(&self) -> &ObjectVersion {
        &self.state.object
    }

    /// Bytes of the memory budget this handle holds now.
    pub fn held_bytes(&self) -> u64 {
        self.state.consumer.held()
    }

    /// The handle's prefetch window now, in bytes.
    pub fn window(&self) -> u64 {
        self.state.stream.lock().unwrap().window()
    }

    /// Up to `len` bytes at `offset`; fewer only at the end of the object.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let end = offset.saturating_add(len as u64).min(self.state.object.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let piece = self.state.prefetcher.config().floor();
        if end - offset <= piece {
            return self.read_piece(offset, end).await;
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let to = end.min(at + piece);
            out.extend_from_slice(&self.read_piece(at, to).await?);
            at = to;
        }
        Ok(out.freeze())
    }

    async fn read_piece(&self, offset: u64, end: u64) -> Result<Bytes, FsError> {
        let key = &self.state.object.key;
        let mut record = true;
        for _ in 0..ATTEMPTS {
            let mut guard = self.plan(offset, end, &mut record).await;
            match gather(&guard.planned, offset, end).await {
                Ok((bytes, stalled)) => {
                    guard.finish(end, stalled);
                    return Ok(bytes);
                }
                Err((part, WaitError::Trimmed)) => self.state.stream.lock().unwrap().drop_failed(&part),
                Err((part, WaitError::Failed(failure))) => {
                    self.state.stream.lock().unwrap().drop_failed(&part);
                    return Err(failure.to_fs_error(key));
                }
            }
        }
        let e = ClientError::new(ClientErrorKind::Transient, "GetObject", "data dropped while it was being read");
        Err(FsError::client("read", key, e))
    }

    /// Plans the read, waiting for memory if even its minimal request does not fit now.
    async fn plan(&self, offset: u64, end: u64, record: &mut bool) -> InflightRead<'_> {
        let budget = self.state.prefetcher.budget();
        loop {
            let released = budget.released();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut stream = self.state.stream.lock().unwrap();
                let planned = stream.plan_read(&self.state.source(), offset, end, *record);
                *record = false;
                if let Some(planned) = planned {
                    return InflightRead { state: &self.state, offset, planned, done: false };
                }
            }
            // Only this handle's own parts, still held by its other reads, stand in the way of its
            // floor; they are released as those reads finish.
            let _ = tokio::time::timeout(MEMORY_RETRY, released).await;
        }
    }
}

/// A planned read; tells the stream when it is over, however it ends.
struct InflightRead<'a> {
    state: &'a ReaderState,
    offset: u64,
    planned: Planned,
    done: bool,
}

impl InflightRead<'_> {
    fn finish(&mut self, end: u64, stalled: bool) {
        let cfg = self.state.prefetcher.config();
        let mut stream = self.state.stream.lock().unwrap();
        stream.finish_read(self.offset, end, stalled, self.planned.generation, cfg);
        self.done = true;
    }
}

impl Drop for InflightRead<'_> {
    fn drop(&mut self) {
        if !self.done {
            let cfg = self.state.prefetcher.config();
            self.state.stream.lock().unwrap().abandon_read(self.offset, cfg);
        }
    }
}

/// Waits for the planned parts in order and assembles `offset..end`; also says whether any wait
/// was needed.
async fn gather(planned: &Planned, offset: u64, end: u64) -> Result<(Bytes, bool), (Arc<Part>, WaitError)> {
    let mut stalled = false;
    let mut slices = Vec::new();
    for (part, range) in &planned.pieces {
        let (got, waited) = part.read(range.start, range.end).await.map_err(|e| (part.clone(), e))?;
        stalled |= waited;
        slices.extend(got);
    }
    let data = match slices.len() {
        1 => slices.pop().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity((end - offset) as usize);
            slices.iter().for_each(|s| out.extend_from_slice(s));
            out.freeze()
        }
    };
    if data.len() as u64 != end - offset {
        let part = planned.pieces.last().map(|(p, _)| p.clone()).expect("a non-empty read has parts");
        return Err((part, WaitError::Trimmed));
    }
    Ok((data, stalled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::S3Operation;
    use crate::client::memory::InMemoryClient;
    use crate::fs::memory::MemoryBudget;
    use crate::fs::prefetch::PrefetchConfig;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn reader(c: &Arc<InMemoryClient>, key: &str, data: &[u8]) -> FileReader {
        c.insert(key, data.to_vec());
        let meta = c.head_object(key).await.unwrap();
        let prefetcher = Prefetcher::new(PrefetchConfig::default(), MemoryBudget::new(1 << 30));
        FileReader::new(c.clone(), ObjectVersion { key: key.into(), etag: meta.etag, size: meta.size }, prefetcher)
    }

    #[tokio::test]
    async fn sequential_reads_use_one_get_per_part_and_return_exact_bytes() {
        let c = Arc::new(InMemoryClient::new("b"));
        let data = pattern(3 * 1024 * 1024 + 17);
        let r = reader(&c, "k", &data).await;
        let mut got = vec![];
        let mut off = 0u64;
        loop {
            let b = r.read(off, 128 * 1024).await.unwrap();
            if b.is_empty() {
                break;
            }
            off += b.len() as u64;
            got.extend_from_slice(&b);
        }
        assert_eq!(got, data);
        // The 1.125 MiB first request, then the rest up to the first 8 MiB part boundary (the end).
        assert_eq!(c.count(S3Operation::GetObject), 2);
    }

    #[tokio::test]
    async fn out_of_order_and_short_backward_reads_reuse_the_stream() {
        let c = Arc::new(InMemoryClient::new("b"));
        let data = pattern(4 * 1024 * 1024);
        let r = reader(&c, "k", &data).await;
        let k = 128 * 1024usize;
        for (off, len) in [(0, k), (2 * k, k), (k, k), (3 * k, k), (0, 10), (5 * k + 3, 1000)] {
            assert_eq!(r.read(off as u64, len as u32).await.unwrap(), &data[off..off + len], "read at {off}");
        }
        // All within the first request; under half of it read, so nothing speculative yet.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(c.count(S3Operation::GetObject), 1);
        // A far jump starts a new GET.
        let far = 4 * 1024 * 1024 - 5;
        assert_eq!(r.read(far as u64, 100).await.unwrap(), &data[far..]);
        assert_eq!(c.count(S3Operation::GetObject), 2);
        assert_eq!(r.read(4 * 1024 * 1024, 100).await.unwrap().len(), 0, "EOF");
    }

    #[tokio::test]
    async fn a_replaced_object_is_estale_never_new_bytes() {
        let c = Arc::new(InMemoryClient::new("b"));
        let r = reader(&c, "k", b"old contents").await;
        c.insert("k", "new contents");
        let e = r.read(0, 4).await.unwrap_err();
        assert_eq!(e.errno(), libc::ESTALE);
        c.remove("k");
        assert_eq!(r.read(0, 4).await.unwrap_err().errno(), libc::ESTALE);
    }
}
