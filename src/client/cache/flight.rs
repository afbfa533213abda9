//! In-flight blocks: one [`Flight`] per block being read from disk or fetched, shared by every
//! request that needs the block, so each block is read or fetched once however many want it.
//!
//! [`Inflight::claim`] looks up or creates the flights for a run of blocks in one step under one
//! lock; the caller produces the flights it created and waits on the others. A flight stays in
//! the map until its producer is done with it, which for a fetched block is after it is on disk:
//! a request arriving in between joins it rather than fetching again. The map holds weak
//! references; a producer whose flights nobody holds any more stops (the requests went away) and
//! marks them [`FlightError::Cancelled`], and a request that joined just then claims them again.
//!
//! A block read from disk is read only as far as its creator needs (`base..until`, on chunk
//! bounds, see `format.rs`): a flight holds bytes from `base`, and one that stopped at `until`
//! short of the block's end ends as cancelled, so a request needing bytes before `base` does
//! not join it and one needing bytes past `until` claims the block again from there. Fetched
//! blocks are always whole (they are stored).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::watch;

use super::format::BlockName;
use crate::client::ClientError;

/// Where a flight's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Disk,
    /// The shared cache bucket (`--cache-xz`).
    Shared,
    Fetch,
}

/// Why a flight ended without its bytes.
#[derive(Clone, Debug)]
pub(crate) enum FlightError {
    Client(ClientError),
    /// Its producer stopped because nobody wanted it.
    Cancelled,
}

#[derive(Debug, Default)]
pub(crate) struct FlightState {
    pub source: Option<Source>,
    /// Known once the block's header was read or its GET answered.
    pub object_size: Option<u64>,
    pub chunks: Vec<Bytes>,
    /// Offset in the block of the first byte of `chunks`: 0 unless read from disk mid-block.
    pub base: u64,
    /// Offset in the block one past the last byte received (`base` + bytes of `chunks`).
    pub filled: u64,
    /// `None` while bytes may still come.
    pub outcome: Option<Result<(), FlightError>>,
}

/// One block being produced.
#[derive(Debug)]
pub(crate) struct Flight {
    pub name: BlockName,
    /// What its creator needs of the block: bytes `from..until` (`until` may pass the block's
    /// end). A disk read serves only these chunks; a fetch, the whole block.
    pub from: u64,
    pub until: u64,
    state: watch::Sender<FlightState>,
}

impl Flight {
    fn new(name: BlockName, from: u64, until: u64) -> Arc<Flight> {
        let state = FlightState { base: from, filled: from, ..FlightState::default() };
        Arc::new(Flight { name, from, until, state: watch::Sender::new(state) })
    }

    /// Sets where the bytes come from, before any is pushed. Bytes from disk start at `base`
    /// (a chunk boundary at or before `from`); any other source delivers the whole block.
    pub fn start(&self, source: Source, base: u64) {
        let base = if source == Source::Disk { base.min(self.from) } else { 0 };
        self.state.send_modify(|s| {
            debug_assert!(s.chunks.is_empty());
            (s.source, s.base, s.filled) = (Some(source), base, base);
        });
    }

    /// First byte (within the block) this flight holds or will hold.
    fn base(&self) -> u64 {
        self.state.borrow().base
    }

    /// Offset in the block one past the last byte pushed.
    pub fn filled(&self) -> u64 {
        self.state.borrow().filled
    }

    pub fn set_object_size(&self, size: u64) {
        self.state.send_modify(|s| s.object_size = Some(size));
    }

    pub fn push(&self, chunk: Bytes) {
        self.state.send_modify(|s| {
            s.filled += chunk.len() as u64;
            s.chunks.push(chunk);
        });
    }

    /// Ends the flight; bytes already pushed stay readable after a failure.
    pub fn finish(&self, outcome: Result<(), FlightError>) {
        self.state.send_modify(|s| s.outcome = Some(outcome));
    }

    /// Ended with all its bytes.
    pub fn succeeded(&self) -> bool {
        matches!(self.state.borrow().outcome, Some(Ok(())))
    }

    pub fn is_finished(&self) -> bool {
        self.state.borrow().outcome.is_some()
    }

    pub fn known_size(&self) -> Option<u64> {
        self.state.borrow().object_size
    }

    pub fn source(&self) -> Option<Source> {
        self.state.borrow().source
    }

    /// The block's bytes, once complete (a fetched flight: from byte 0).
    pub fn chunks(&self) -> Vec<Bytes> {
        let s = self.state.borrow();
        debug_assert_eq!(s.base, 0);
        s.chunks.clone()
    }

    /// Waits for the object size (or the flight's failure).
    pub async fn object_size(&self) -> Result<u64, FlightError> {
        let mut rx = self.state.subscribe();
        let s = rx.wait_for(|s| s.object_size.is_some() || s.outcome.is_some()).await.map_err(|_| cancelled())?;
        match (s.object_size, &s.outcome) {
            (Some(size), _) => Ok(size),
            (None, Some(Err(e))) => Err(e.clone()),
            (None, _) => Err(cancelled()),
        }
    }

    /// Waits until the byte at `pos` (within the block) is in, and returns the bytes from `pos`
    /// up to `end` or the end of the chunk holding `pos`, whichever comes first.
    pub async fn read_at(&self, pos: u64, end: u64) -> Result<Bytes, FlightError> {
        debug_assert!(pos < end);
        let mut rx = self.state.subscribe();
        let s = rx.wait_for(|s| s.filled > pos || s.outcome.is_some()).await.map_err(|_| cancelled())?;
        if pos < s.base {
            // Read from disk from a later chunk on: the caller claims the block afresh.
            return Err(cancelled());
        }
        if s.filled > pos {
            let mut at = s.base;
            for chunk in &s.chunks {
                let chunk_end = at + chunk.len() as u64;
                if chunk_end > pos {
                    return Ok(chunk.slice((pos - at) as usize..(end.min(chunk_end) - at) as usize));
                }
                at = chunk_end;
            }
        }
        match &s.outcome {
            Some(Err(e)) => Err(e.clone()),
            _ => Err(FlightError::Client(ClientError::new(
                crate::client::ClientErrorKind::Transient,
                "GetObject",
                format!("cached block ended at byte {} before byte {pos}", s.filled),
            ))),
        }
    }
}

fn cancelled() -> FlightError {
    FlightError::Cancelled
}

/// The flights of one caching client, by block.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    map: Mutex<HashMap<BlockName, Weak<Flight>>>,
}

impl Inflight {
    /// The flights for `names`, in order, each with whether the caller created it (and so must
    /// produce it) or joined one already under way. The caller needs the first block from byte
    /// `first_from` on and the last up to byte `last_until` (exclusive; within the block), the
    /// others whole (`block_size`).
    pub fn claim(
        &self,
        names: impl ExactSizeIterator<Item = BlockName>,
        first_from: u64,
        last_until: u64,
        block_size: u64,
    ) -> Vec<(Arc<Flight>, bool)> {
        let mut map = self.map.lock().unwrap();
        let n = names.len();
        names
            .enumerate()
            .map(|(i, name)| {
                let from = if i == 0 { first_from } else { 0 };
                let until = if i + 1 == n { last_until } else { block_size };
                // A cancelled flight is as good as none: its producer is gone. One holding bytes
                // only from after `from` on is of no use either.
                if let Some(f) = map.get(&name).and_then(Weak::upgrade)
                    && !matches!(f.state.borrow().outcome, Some(Err(FlightError::Cancelled)))
                    && f.base() <= from
                {
                    return (f, false);
                }
                let f = Flight::new(name, from, until);
                map.insert(name, Arc::downgrade(&f));
                (f, true)
            })
            .collect()
    }

    /// Forgets `flight`, if the map still points to it.
    pub fn release(&self, flight: &Flight) {
        let mut map = self.map.lock().unwrap();
        if map.get(&flight.name).is_some_and(|w| std::ptr::eq(w.as_ptr(), flight)) {
            map.remove(&flight.name);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: u64) -> BlockName {
        BlockName { hash: [1; 32], index: i }
    }

    fn claim<const N: usize>(inflight: &Inflight, names: [BlockName; N]) -> Vec<(Arc<Flight>, bool)> {
        inflight.claim(names.into_iter(), 0, 100, 100)
    }

    #[tokio::test]
    async fn readers_get_bytes_as_they_arrive_and_joiners_share_the_flight() {
        let inflight = Inflight::default();
        let claims = claim(&inflight, [name(0), name(1)]);
        assert!(claims.iter().all(|(_, created)| *created));
        let joined = claim(&inflight, [name(1), name(2)]);
        assert!(!joined[0].1 && joined[1].1);
        assert!(Arc::ptr_eq(&claims[1].0, &joined[0].0));
        let f = claims[0].0.clone();
        let reader = tokio::spawn({
            let f = f.clone();
            async move { (f.read_at(0, 10).await.unwrap(), f.read_at(3, 10).await.unwrap()) }
        });
        f.set_object_size(10);
        f.push(Bytes::from_static(b"abc"));
        f.push(Bytes::from_static(b"defghij"));
        f.finish(Ok(()));
        let (a, b) = reader.await.unwrap();
        assert_eq!((&a[..], &b[..]), (&b"abc"[..], &b"defghij"[..]));
        assert_eq!(&f.read_at(4, 6).await.unwrap()[..], b"ef");
        assert_eq!(f.object_size().await.unwrap(), 10);
        inflight.release(&f);
        assert_eq!(inflight.len(), 2);
    }

    #[tokio::test]
    async fn a_cancelled_or_dropped_flight_is_claimed_afresh() {
        let inflight = Inflight::default();
        let (f, _) = claim(&inflight, [name(0)]).pop().unwrap();
        f.finish(Err(FlightError::Cancelled));
        let (g, created) = claim(&inflight, [name(0)]).pop().unwrap();
        assert!(created && !Arc::ptr_eq(&f, &g));
        assert!(matches!(f.read_at(0, 1).await, Err(FlightError::Cancelled)));
        drop(g);
        assert!(claim(&inflight, [name(0)])[0].1, "nobody held it");
        inflight.release(&f);
        assert_eq!(inflight.len(), 1, "release only removes the flight it names");
    }

    #[tokio::test]
    async fn a_flight_read_from_mid_block_is_joined_only_from_its_base_on() {
        let inflight = Inflight::default();
        let (f, created) = inflight.claim([name(0)].into_iter(), 50, 100, 100).pop().unwrap();
        assert!(created);
        f.start(Source::Disk, 40);
        f.set_object_size(1000);
        assert!(!inflight.claim([name(0)].into_iter(), 60, 100, 100)[0].1, "needs bytes it will have");
        let (g, created) = inflight.claim([name(0)].into_iter(), 10, 100, 100).pop().unwrap();
        assert!(created && !Arc::ptr_eq(&f, &g), "needs bytes before its base");
        f.push(Bytes::from_static(b"0123456789"));
        assert_eq!(f.filled(), 50);
        assert_eq!(&f.read_at(42, 45).await.unwrap()[..], b"234");
        assert!(matches!(f.read_at(39, 45).await, Err(FlightError::Cancelled)));
        // Stopped short of what another reader needs: that reader claims the block again.
        f.finish(Err(FlightError::Cancelled));
        assert!(matches!(f.read_at(50, 60).await, Err(FlightError::Cancelled)));
        inflight.release(&f);
        // A fetch delivers the whole block whatever its creator needed.
        g.start(Source::Fetch, 10);
        g.push(Bytes::from_static(b"abc"));
        assert_eq!(&g.read_at(0, 2).await.unwrap()[..], b"ab");
    }
}
