//! [`CachingClient`]: an [`ObjectClient`] that serves `If-Match` GETs through the disk cache.
//!
//! A GET claims the flights of its blocks ([`Inflight::claim`]), at most two segments of
//! [`SEGMENT_BLOCKS`] ahead of where its caller reads, so a huge range never holds more than
//! that in memory. The blocks it created are produced by one spawned task, in order: a block with
//! a valid file is read from disk; a block without is fetched together with the following blocks
//! that have no file either, in one block-aligned GET with `If-Match`, whose chunks go to the
//! flights as they arrive and whose complete blocks are queued for writing. The task stops when
//! no request holds its remaining blocks any more. The response body waits on each block's
//! flight in turn and yields its bytes as they come; its ETag is the one asked for, and its
//! object size the one the first block reported (header or GET). Everything else passes through.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::CacheStats;
use super::disk::DiskBlockCache;
use super::flight::{Flight, FlightError, Inflight, Source};
use super::format::{CHUNK_SIZE, ObjectId, block_extent};
use super::shared::SharedCache;
use crate::client::{
    ClientError, ClientErrorKind, ETag, GetObjectResponse, ListPage, ListRequest, ObjectClient, ObjectMeta, PinnedCopy,
    PutOptions, PutResult, RenameOptions, UploadedPart,
};

/// Blocks claimed (and so fetched) at a time by one request; up to two segments are in flight.
const SEGMENT_BLOCKS: u64 = 64;
/// Times a request claims blocks again after their producer gave up on them.
const MAX_RECLAIMS: u32 = 3;
/// Longest wait for queued block writes before reusing a copy's source blocks.
const FLUSH_BEFORE_RELINK: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    joined: AtomicU64,
    bytes_from_cache: AtomicU64,
    bytes_fetched: AtomicU64,
}

#[derive(Debug)]
pub(super) struct Core<C> {
    pub(super) inner: C,
    pub(super) cache: Arc<DiskBlockCache>,
    /// `--cache-xz`: the tier between the disk and the source (`tiers.rs`).
    pub(super) shared: Option<Arc<SharedCache>>,
    pub(super) inflight: Inflight,
    counters: Counters,
}

/// A client serving GETs with `If-Match` from the disk cache, fetching from `inner` what is not.
#[derive(Debug)]
pub struct CachingClient<C: ObjectClient> {
    core: Arc<Core<C>>,
}

impl<C: ObjectClient> CachingClient<C> {
    /// Wraps `inner`; `cache` may be shared with other clients (other buckets).
    pub fn new(inner: C, cache: Arc<DiskBlockCache>) -> Self {
        Self::with_shared(inner, cache, None)
    }

    /// Wraps `inner` with the disk cache (which may be disabled) and the shared cache; both must
    /// use the same block size.
    pub fn with_shared(inner: C, cache: Arc<DiskBlockCache>, shared: Option<Arc<SharedCache>>) -> Self {
        debug_assert!(shared.as_ref().is_none_or(|s| s.block_size() == cache.block_size()));
        let core = Core { inner, cache, shared, inflight: Inflight::default(), counters: Counters::default() };
        CachingClient { core: Arc::new(core) }
    }

    /// The shared cache, if any.
    pub fn shared(&self) -> Option<&Arc<SharedCache>> {
        self.core.shared.as_ref()
    }

    /// The wrapped client.
    pub fn inner(&self) -> &C {
        &self.core.inner
    }

    pub fn cache(&self) -> &Arc<DiskBlockCache> {
        &self.core.cache
    }

    /// Request counters of this client and the store's counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.core.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            joined: get(&c.joined),
            bytes_from_cache: get(&c.bytes_from_cache),
            bytes_fetched: get(&c.bytes_fetched),
            ..self.core.cache.stats()
        }
    }

    /// Blocks being read or fetched right now (for tests).
    #[cfg(test)]
    pub(crate) fn inflight_blocks(&self) -> usize {
        self.core.inflight.len()
    }
}

impl<C: ObjectClient> Core<C> {
    /// Claims blocks `indexes` of `id`, needing the first from byte `first_from` on and the last
    /// up to byte `last_until` (within each block); spawns the production of those nobody else is
    /// producing. `size` is the object size if the request already knows it.
    fn claim(
        self: &Arc<Self>,
        id: &Arc<ObjectId>,
        indexes: Range<u64>,
        size: Option<u64>,
        first_from: u64,
        last_until: u64,
    ) -> Vec<(u64, Arc<Flight>)> {
        let names: Vec<_> = indexes.clone().map(|i| id.block(i)).collect();
        let claims = self.inflight.claim(names.into_iter(), first_from, last_until, self.cache.block_size());
        let mut mine = Vec::new();
        let mut all = Vec::with_capacity(claims.len());
        for (index, (flight, created)) in indexes.zip(claims) {
            if created {
                mine.push((index, flight.clone()));
            } else {
                self.counters.joined.fetch_add(1, Ordering::Relaxed);
            }
            all.push((index, flight));
        }
        if !mine.is_empty() {
            tokio::spawn(produce(self.clone(), id.clone(), mine, size));
        }
        all
    }

    /// Stores a complete block on disk (and, fetched from the source, in the shared cache,
    /// settling this node's lease on it if `leased`), then lets it go from the in-flight map.
    pub(super) fn store(
        self: &Arc<Self>,
        id: &Arc<ObjectId>,
        index: u64,
        object_size: u64,
        flight: &Arc<Flight>,
        leased: bool,
    ) {
        if let Some(shared) = &self.shared
            && flight.source() == Some(Source::Fetch)
        {
            shared.queue_put(id, index, object_size, flight.chunks(), leased);
        }
        let (core, done) = (self.clone(), flight.clone());
        self.cache.queue_write(id, index, object_size, flight.chunks(), move || core.inflight.release(&done));
    }

    /// Ends `flights` that are still open with `error`, and lets them go.
    pub(super) fn fail(&self, flights: &[(u64, Arc<Flight>)], error: FlightError) {
        for (_, f) in flights {
            if !f.is_finished() {
                f.finish(Err(error.clone()));
            }
            self.inflight.release(f);
        }
    }
}

/// Nobody but the producer holds any of these flights.
pub(super) fn unwanted(flights: &[(u64, Arc<Flight>)]) -> bool {
    flights.iter().all(|(_, f)| Arc::strong_count(f) == 1)
}

/// Produces `blocks` (ascending indexes, all created by one request) in order.
async fn produce<C: ObjectClient>(
    core: Arc<Core<C>>,
    id: Arc<ObjectId>,
    blocks: Vec<(u64, Arc<Flight>)>,
    mut known_size: Option<u64>,
) {
    let block_size = core.cache.block_size();
    let mut i = 0;
    while i < blocks.len() {
        if unwanted(&blocks[i..]) {
            return core.fail(&blocks[i..], FlightError::Cancelled);
        }
        let (index, flight) = &blocks[i];
        if let Some(size) = known_size
            && block_extent(*index, block_size, size).is_none()
        {
            // Past the end of the object: nothing to read.
            flight.set_object_size(size);
            flight.finish(Ok(()));
            core.inflight.release(flight);
            i += 1;
            continue;
        }
        // The next block, when this request reads on into it: read ahead while this one is served.
        let next = blocks.get(i + 1).map(|(ix, _)| *ix).filter(|ix| *ix == index + 1 && flight.until >= block_size);
        let (disk_core, disk_id, disk_flight, disk_index) = (core.clone(), id.clone(), flight.clone(), *index);
        let read = move || serve_from_disk(&disk_core, &disk_id, disk_index, known_size, &disk_flight, next);
        match on_this_thread(read).await {
            Served::Miss => {}
            Served::Done(size) => {
                known_size = Some(size);
                i += 1;
                continue;
            }
            Served::Broken(size) => {
                known_size = Some(size);
                refetch(&core, &id, *index, flight, size).await;
                i += 1;
                continue;
            }
        }
        // Fetch this block with the following ones that have no file either, in one GET.
        let following: Vec<u64> = blocks[i + 1..]
            .iter()
            .zip(1..)
            .take_while(|((ix, _), k)| *ix == index + k)
            .map(|((ix, _), _)| *ix)
            .collect();
        let n = 1 + core.cache.count_absent(&id, following).await;
        let got = match &core.shared {
            Some(shared) => super::tiers::produce_run(&core, shared, &id, &blocks[i..i + n], known_size).await,
            None => fetch(&core, &id, &blocks[i..i + n], known_size, false).await,
        };
        if let Some(size) = got {
            known_size = Some(size);
        }
        i += n;
    }
}

/// Fetches the consecutive blocks `run` with one GET; returns the object size if it answered.
/// `leased`: this node holds the shared cache's leases on these blocks.
pub(super) async fn fetch<C: ObjectClient>(
    core: &Arc<Core<C>>,
    id: &Arc<ObjectId>,
    run: &[(u64, Arc<Flight>)],
    known_size: Option<u64>,
    leased: bool,
) -> Option<u64> {
    let block_size = core.cache.block_size();
    let start = run[0].0 * block_size;
    let mut end = (run[run.len() - 1].0 + 1) * block_size;
    if let Some(size) = known_size {
        end = end.min(size);
    }
    for (_, f) in run {
        f.start(Source::Fetch, 0);
    }
    let response = match core.inner.get_object(id.key(), start..end, Some(id.etag())).await {
        Ok(r) => r,
        Err(e) => {
            core.fail(run, FlightError::Client(e));
            return None;
        }
    };
    if response.etag != *id.etag() {
        // A server that ignored If-Match: these bytes are another version.
        let e = ClientError::new(ClientErrorKind::PreconditionFailed, "GetObject", "the object changed");
        core.fail(run, FlightError::Client(e));
        return None;
    }
    let size = response.object_size;
    for (_, f) in run {
        f.set_object_size(size);
    }
    let expected_end = end.min(size);
    let mut body = response.body;
    let (mut at, mut k) = (start, 0usize);
    let failure = loop {
        let mut chunk = match body.next().await {
            None if at == expected_end => break None,
            None => break Some(format!("GET body for {start}..{expected_end} ended at byte {at}")),
            Some(Err(e)) => {
                core.fail(&run[k..], FlightError::Client(e));
                return Some(size);
            }
            Some(Ok(chunk)) => chunk,
        };
        if chunk.len() as u64 > expected_end - at {
            break Some(format!("GET body for {start}..{expected_end} runs past its end"));
        }
        core.counters.bytes_fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        while !chunk.is_empty() {
            let (index, flight) = &run[k];
            let block_end = ((index + 1) * block_size).min(size);
            let take = chunk.len().min((block_end - at) as usize);
            flight.push(chunk.split_to(take));
            at += take as u64;
            if at == block_end {
                // Queued before it is finished, so a reader that saw it finish and then waits
                // for the cache to be flushed waits for this write too.
                core.store(id, *index, size, flight, leased);
                flight.finish(Ok(()));
                core.counters.misses.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        }
        // Stop only between blocks: a started block is finished and stored, never fetched twice.
        if k < run.len() && at == run[k].0 * block_size && unwanted(&run[k..]) {
            // Dropping the body cancels the GET.
            core.fail(&run[k..], FlightError::Cancelled);
            return Some(size);
        }
    };
    match failure {
        Some(message) => {
            let e = ClientError::new(ClientErrorKind::Transient, "GetObject", message);
            core.fail(&run[k..], FlightError::Client(e));
        }
        // Blocks past the end of the object (a range beyond it) have nothing to deliver.
        None => {
            for (_, f) in &run[k..] {
                f.finish(Ok(()));
                core.inflight.release(f);
            }
        }
    }
    Some(size)
}

/// Runs the blocking `read` on this thread where the runtime can hand this worker's other tasks
/// to another thread (the daemon's multi-thread runtime: `block_in_place`), else on a blocking
/// thread. A hit in the page cache is then served without waking another thread: a wake-up
/// and a switch each way cost more than the read itself, and far more on a busy machine.
async fn on_this_thread(read: impl FnOnce() -> Served + Send + 'static) -> Served {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(read),
        _ => tokio::task::spawn_blocking(read).await.unwrap_or(Served::Miss),
    }
}

/// What reading a block from disk gave.
enum Served {
    /// No valid block file: fetch it.
    Miss,
    /// The flight has the bytes its creator needs; the object has this size.
    Done(u64),
    /// The head was valid but a chunk was damaged (the file is removed) or unreadable: the
    /// flight may hold the chunks before it, and the rest must be fetched.
    Broken(u64),
}

/// Chunks read at once after the first (which is read alone, for the first byte's sake).
const READ_CHUNKS: u64 = 4;

/// Reads from disk the chunks of block `index` its flight's creator needs, checking each, and
/// pushes them into the flight (blocking I/O). The flight ends cancelled if it stopped short of
/// the block's end (another reader needing more claims the block again). It is counted and let
/// go before its last bytes are pushed, so a reader that has all its bytes sees both done.
/// `next`: a block to read ahead (see [`DiskBlockCache::read_ahead`]).
fn serve_from_disk<C: ObjectClient>(
    core: &Core<C>,
    id: &ObjectId,
    index: u64,
    known_size: Option<u64>,
    flight: &Flight,
    next: Option<u64>,
) -> Served {
    let Some(block) = core.cache.open_block(id, index, known_size) else { return Served::Miss };
    let head = &block.head;
    let size = head.object_size;
    // A block is never empty; a request starting past the object's end still reads one chunk
    // (the size it learns makes it fail as it should).
    let first = flight.from.min(head.length - 1) / CHUNK_SIZE;
    let end = flight.until.min(head.length).max(first * CHUNK_SIZE + 1).div_ceil(CHUNK_SIZE);
    flight.start(Source::Disk, first * CHUNK_SIZE);
    flight.set_object_size(size);
    let mut k = first;
    while k < end {
        let to = if k == first { k + 1 } else { (k + READ_CHUNKS).min(end) };
        let Ok(bytes) = block.read_chunks(k..to) else { return Served::Broken(size) };
        if to == end {
            core.counters.hits.fetch_add(1, Ordering::Relaxed);
            core.inflight.release(flight);
        }
        flight.push(bytes);
        if k == first
            && let Some(next) = next
        {
            // After the first chunk, which a reader may be waiting for.
            core.cache.read_ahead(id, next);
        }
        k = to;
    }
    flight.finish(if end == head.chunks() { Ok(()) } else { Err(FlightError::Cancelled) });
    Served::Done(size)
}

/// Fetches block `index` whole, after its file turned out damaged while being served: pushes
/// the bytes the flight does not have yet, and stores the block again.
async fn refetch<C: ObjectClient>(
    core: &Arc<Core<C>>,
    id: &Arc<ObjectId>,
    index: u64,
    flight: &Arc<Flight>,
    size: u64,
) {
    let run = [(index, flight.clone())];
    let Some((start, len)) = block_extent(index, core.cache.block_size(), size) else {
        return core.fail(&run, FlightError::Cancelled);
    };
    let response = match core.inner.get_object(id.key(), start..start + len, Some(id.etag())).await {
        Ok(r) if r.etag == *id.etag() && r.object_size == size => r,
        Ok(_) => {
            let e = ClientError::new(ClientErrorKind::PreconditionFailed, "GetObject", "the object changed");
            return core.fail(&run, FlightError::Client(e));
        }
        Err(e) => return core.fail(&run, FlightError::Client(e)),
    };
    let (mut parts, mut got) = (Vec::new(), 0u64);
    let mut body = response.body;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                got += chunk.len() as u64;
                parts.push(chunk);
            }
            Err(e) => return core.fail(&run, FlightError::Client(e)),
        }
    }
    if got != len {
        let e =
            ClientError::new(ClientErrorKind::Transient, "GetObject", format!("GET body of {got} bytes, not {len}"));
        return core.fail(&run, FlightError::Client(e));
    }
    core.counters.misses.fetch_add(1, Ordering::Relaxed);
    core.counters.bytes_fetched.fetch_add(len, Ordering::Relaxed);
    let mut at = 0u64;
    for part in &parts {
        let filled = flight.filled();
        let part_end = at + part.len() as u64;
        if part_end > filled {
            flight.push(part.slice((filled.max(at) - at) as usize..));
        }
        at = part_end;
    }
    let (core2, done) = (core.clone(), flight.clone());
    core.cache.queue_write(id, index, size, parts, move || core2.inflight.release(&done));
    flight.finish(Ok(()));
}

fn to_client_error(e: FlightError) -> ClientError {
    match e {
        FlightError::Client(e) => e,
        FlightError::Cancelled => {
            ClientError::new(ClientErrorKind::Transient, "GetObject", "cached read abandoned by its producer")
        }
    }
}

/// The body of one cached GET: the bytes `pos..end` of the object, block after block.
struct Body<C> {
    core: Arc<Core<C>>,
    id: Arc<ObjectId>,
    /// Claimed blocks from the one holding `pos` on.
    flights: VecDeque<(u64, Arc<Flight>)>,
    pos: u64,
    end: u64,
    /// Object size from the first block; `None` until known.
    size: Option<u64>,
    /// First block not claimed yet, and one past the last block of the range.
    claimed_to: u64,
    last: u64,
    reclaims: u32,
}

impl<C: ObjectClient> Body<C> {
    fn block_size(&self) -> u64 {
        self.core.cache.block_size()
    }

    /// What this request needs of blocks `from..to`: the first from which byte, the last up to
    /// which byte.
    fn needs(&self, from: u64, to: u64) -> (u64, u64) {
        let bs = self.block_size();
        let first_from = self.pos.saturating_sub(from * bs).min(bs);
        let last_until = if to == self.last { self.end - (to - 1) * bs } else { bs };
        (first_from, last_until)
    }

    /// Keeps up to two segments claimed ahead of the reader.
    fn claim_ahead(&mut self) {
        let front = self.pos / self.block_size();
        if self.claimed_to < self.last && self.claimed_to - front <= SEGMENT_BLOCKS {
            let to = (self.claimed_to + SEGMENT_BLOCKS).min(self.last);
            let (first_from, last_until) = self.needs(self.claimed_to, to);
            self.flights.extend(self.core.claim(&self.id, self.claimed_to..to, self.size, first_from, last_until));
            self.claimed_to = to;
        }
    }

    /// After a producer gave up on a block this request still wants: claim what is left again.
    fn reclaim(&mut self) -> Result<(), ClientError> {
        self.reclaims += 1;
        if self.reclaims > MAX_RECLAIMS {
            return Err(to_client_error(FlightError::Cancelled));
        }
        let from = self.pos / self.block_size();
        let (first_from, last_until) = self.needs(from, self.claimed_to);
        self.flights = self.core.claim(&self.id, from..self.claimed_to, self.size, first_from, last_until).into();
        Ok(())
    }

    /// Waits for the object size, from the first block.
    async fn object_size(&mut self) -> Result<u64, ClientError> {
        loop {
            self.claim_ahead();
            let Some((_, first)) = self.flights.front() else {
                return Err(to_client_error(FlightError::Cancelled));
            };
            match first.object_size().await {
                Ok(size) => return Ok(size),
                Err(FlightError::Cancelled) => self.reclaim()?,
                Err(e) => return Err(to_client_error(e)),
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Bytes, ClientError>, Self)> {
        loop {
            if self.pos >= self.end {
                return None;
            }
            self.claim_ahead();
            let bs = self.block_size();
            let (index, flight) = self.flights.front().cloned()?;
            let block_start = index * bs;
            let local_end = self.end.min(block_start + bs) - block_start;
            let read = flight.read_at(self.pos - block_start, local_end).await;
            let result = match read {
                Ok(_) if flight.known_size() != self.size => Err(ClientError::new(
                    ClientErrorKind::PreconditionFailed,
                    "GetObject",
                    format!("cached blocks of {:?} disagree on its size", self.id.key()),
                )),
                Ok(chunk) => Ok(chunk),
                Err(FlightError::Cancelled) => match self.reclaim() {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
                Err(e) => Err(to_client_error(e)),
            };
            return match result {
                Ok(chunk) => {
                    self.pos += chunk.len() as u64;
                    if self.pos == block_start + local_end {
                        self.flights.pop_front();
                    }
                    if matches!(flight.source(), Some(Source::Disk | Source::Shared)) {
                        self.core.counters.bytes_from_cache.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    Some((Ok(chunk), self))
                }
                Err(e) => {
                    // The stream ends after its error.
                    self.pos = self.end;
                    self.flights.clear();
                    Some((Err(e), self))
                }
            };
        }
    }
}

fn invalid_range(range: &Range<u64>, size: u64) -> ClientError {
    ClientError {
        code: Some("InvalidRange".into()),
        status: Some(416),
        ..ClientError::new(ClientErrorKind::InvalidRange, "GetObject", format!("range {range:?} of {size} bytes"))
    }
}

#[async_trait]
impl<C: ObjectClient> ObjectClient for CachingClient<C> {
    fn bucket(&self) -> &str {
        self.core.inner.bucket()
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        self.core.inner.head_object(key).await
    }

    async fn get_object(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<GetObjectResponse, ClientError> {
        let core = &self.core;
        // Without If-Match the caller did not pin a version, so no block can be trusted for it.
        let enabled = core.cache.is_enabled() || core.shared.is_some();
        let Some(etag) = if_match.filter(|_| enabled && range.start < range.end) else {
            return core.inner.get_object(key, range, if_match).await;
        };
        let bs = core.cache.block_size();
        let id = Arc::new(ObjectId::in_namespace(core.cache.namespace(), self.bucket(), key, etag, bs));
        let first = range.start / bs;
        let mut body = Body {
            core: core.clone(),
            id,
            flights: VecDeque::new(),
            pos: range.start,
            end: range.end,
            size: None,
            claimed_to: first,
            last: (range.end - 1) / bs + 1,
            reclaims: 0,
        };
        let size = body.object_size().await?;
        if range.start >= size {
            return Err(invalid_range(&range, size));
        }
        body.size = Some(size);
        body.end = range.end.min(size);
        body.last = body.last.min(size.div_ceil(bs));
        let stream = futures::stream::unfold(body, Body::next);
        Ok(GetObjectResponse { etag: etag.clone(), object_size: size, body: Box::pin(stream) })
    }

    async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, ClientError> {
        self.core.inner.list_objects(request).await
    }

    async fn put_object(&self, key: &str, body: Bytes, options: &PutOptions) -> Result<PutResult, ClientError> {
        self.core.inner.put_object(key, body, options).await
    }

    async fn create_multipart_upload(&self, key: &str, options: &PutOptions) -> Result<String, ClientError> {
        self.core.inner.create_multipart_upload(key, options).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        options: &PutOptions,
    ) -> Result<UploadedPart, ClientError> {
        self.core.inner.upload_part(key, upload_id, part_number, body, options).await
    }

    async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        options: &PutOptions,
    ) -> Result<PutResult, ClientError> {
        self.core.inner.complete_multipart_upload(key, upload_id, parts, options).await
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), ClientError> {
        self.core.inner.abort_multipart_upload(key, upload_id).await
    }

    async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        self.core.inner.delete_object(key).await
    }

    async fn copy_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &crate::client::CopyOptions,
    ) -> Result<PutResult, ClientError> {
        self.core.inner.copy_object(source_key, dest_key, options).await
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
        self.core.inner.upload_part_copy(key, upload_id, part_number, source_key, range, source_if_match).await
    }

    async fn rename_object(
        &self,
        source_key: &str,
        dest_key: &str,
        options: &RenameOptions,
    ) -> Result<(), ClientError> {
        // Blocks are keyed by (key, ETag): a renamed object keeps its ETag, but its cached blocks
        // stay under the old key and simply age out; no stale byte can be served under either.
        self.core.inner.rename_object(source_key, dest_key, options).await
    }

    async fn copied(&self, copies: &[PinnedCopy]) {
        let cache = self.core.cache.clone();
        if !cache.is_enabled() || copies.is_empty() {
            return;
        }
        // Blocks of the sources fetched just before may still be queued for writing; not for
        // long, though: under a steady stream of reads the queue may never be empty.
        let _ = tokio::time::timeout(FLUSH_BEFORE_RELINK, cache.flush()).await;
        let (ns, bs, bucket) = (cache.namespace().to_string(), cache.block_size(), self.bucket().to_string());
        let (objects, copies) = (copies.len(), copies.to_vec());
        let relink = move || {
            let mut blocks = 0;
            for c in &copies {
                let from = ObjectId::in_namespace(&ns, &bucket, &c.source_key, &c.source_etag, bs);
                let to = ObjectId::in_namespace(&ns, &bucket, &c.dest_key, &c.dest_etag, bs);
                blocks += cache.relink(&from, &to, c.size);
            }
            blocks
        };
        let blocks = tokio::task::spawn_blocking(relink).await.unwrap_or(0);
        tracing::debug!(objects, blocks, "cached blocks reused for copies");
    }
}
