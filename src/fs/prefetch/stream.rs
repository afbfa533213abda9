//! [`Stream`]: one handle's parts and policy state, and the executor of [`super::policy`].
//!
//! Every method runs under the handle's lock and never waits: planning a read issues the GETs
//! it needs (reserving memory first) and hands back the parts to wait on; finishing a read moves
//! the position on, grows the window and trims what is behind. Invariants: `parts` is in offset
//! order and covers `held_start..requested_end` with no gap (a part prepended in front may overlap
//! the trimmed start of the next, so readers take each byte from the first part holding it); the
//! trim point never passes a byte an unfinished read of this handle still needs.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::part::Part;
use super::policy::{self, AccessPattern, StreamView};
use super::{PrefetchConfig, Prefetcher};
use crate::client::ObjectClient;
use crate::fs::memory::{Consumer, Reservation};
use crate::fs::prefetch::ObjectVersion;

/// What a stream needs to issue GETs: the object, the client, and where memory and permits come from.
pub(crate) struct Source<'a> {
    pub client: &'a Arc<dyn ObjectClient>,
    pub object: &'a ObjectVersion,
    pub prefetcher: &'a Prefetcher,
    pub consumer: &'a Consumer,
}

impl Source<'_> {
    fn config(&self) -> &PrefetchConfig {
        self.prefetcher.config()
    }

    fn start(&self, range: Range<u64>, reservation: Reservation) -> Arc<Part> {
        Part::start(range, self.client, self.object, self.prefetcher.requests(), reservation)
    }
}

/// The parts one read waits on, each with the bytes to take from it, in order.
pub(crate) struct Planned {
    pub pieces: Vec<(Arc<Part>, Range<u64>)>,
    /// Identifies the stream the read was planned on; a reset starts a new one.
    pub generation: u64,
}

/// One handle's requested data and access history.
#[derive(Debug)]
pub(crate) struct Stream {
    parts: VecDeque<Arc<Part>>,
    /// First byte still held (the front part's trimmed start).
    held_start: u64,
    window: u64,
    /// Position when the window last grew (or the stream started).
    grown_at: u64,
    pattern: AccessPattern,
    /// End of the furthest read served on this stream (kept when the stream is dropped).
    last_end: Option<u64>,
    /// Offsets of reads planned but not finished.
    inflight: Vec<u64>,
    last_read: Instant,
    generation: u64,
}

impl Stream {
    pub(crate) fn new(cfg: &PrefetchConfig) -> Self {
        Stream {
            parts: VecDeque::new(),
            held_start: 0,
            window: policy::initial_window(cfg),
            grown_at: 0,
            pattern: AccessPattern::default(),
            last_end: None,
            inflight: Vec::new(),
            last_read: Instant::now(),
            generation: 0,
        }
    }

    fn requested_end(&self) -> Option<u64> {
        self.parts.back().map(|p| p.range().end)
    }

    fn view(&self) -> StreamView {
        StreamView { held: self.requested_end().map(|end| self.held_start..end), last_end: self.last_end }
    }

    /// Current window, in bytes.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// Drops every part (cancelling their GETs unless a read still holds them).
    pub(crate) fn reset(&mut self) {
        self.parts.clear();
        self.generation += 1;
    }

    /// Whether nothing is reading and nothing has read for `idle_after`.
    pub(crate) fn is_idle(&self, idle_after: Duration) -> bool {
        self.inflight.is_empty() && self.last_read.elapsed() >= idle_after
    }

    /// Plans the read `offset..end` (non-empty, within the object): issues the GETs it needs and
    /// the speculative ones the window allows. `None` when memory is too short even for this
    /// read's minimal request (the stream has been dropped; retry once memory is released).
    /// `record` is false on retries, so one read counts once in the access pattern.
    pub(crate) fn plan_read(&mut self, src: &Source<'_>, offset: u64, end: u64, record: bool) -> Option<Planned> {
        let cfg = src.config();
        let size = src.object.size;
        self.last_read = Instant::now();
        let view = self.view();
        let access = policy::classify(&view, offset, cfg);
        if record {
            self.pattern.record(access, offset, end, cfg);
        }
        let random = self.pattern.is_random(cfg);
        let demand = policy::plan_demand(&view, access, offset, end, size, random, cfg);
        if demand.reset {
            self.reset();
        }
        let ranges: Vec<Range<u64>> = demand.front.iter().chain(&demand.back).cloned().collect();
        let reservations: Option<Vec<Reservation>> =
            ranges.iter().map(|r| src.consumer.try_reserve(r.end - r.start)).collect();
        match reservations {
            Some(reservations) => {
                if self.parts.is_empty() {
                    self.begin(offset, cfg);
                }
                for (range, reservation) in ranges.into_iter().zip(reservations) {
                    let part = src.start(range.clone(), reservation);
                    if demand.front.as_ref() == Some(&range) {
                        self.held_start = range.start;
                        self.parts.push_front(part);
                    } else {
                        self.parts.push_back(part);
                    }
                }
            }
            None => {
                // Memory is short: shed this stream (its bytes come back as other reads of the
                // handle let go of them), ask idle handles for theirs, and take just this read.
                self.reset();
                src.prefetcher.budget().reclaim_idle();
                // The whole floor if this handle's other reads have let go of theirs, else the read.
                let floor = src.consumer.floor();
                let (range, reservation) = [
                    policy::rounded_request(offset, end, size, floor),
                    policy::minimal_request(offset, end, size, floor, cfg),
                ]
                .into_iter()
                .find_map(|r| src.consumer.try_reserve(r.end - r.start).map(|res| (r, res)))?;
                self.begin(offset, cfg);
                self.parts.push_back(src.start(range, reservation));
            }
        }
        if self.pattern.speculate(access, cfg) {
            self.top_up(src, self.last_end.map_or(end, |l| l.max(end)));
        }
        self.inflight.push(offset);
        Some(Planned { pieces: self.pieces(offset, end), generation: self.generation })
    }

    /// Starts a new stream at `offset`.
    fn begin(&mut self, offset: u64, cfg: &PrefetchConfig) {
        self.held_start = offset;
        self.last_end = Some(offset);
        self.grown_at = offset;
        self.window = policy::initial_window(cfg);
    }

    /// Issues speculative parts while the stream ends less than a window past `position`.
    fn top_up(&mut self, src: &Source<'_>, position: u64) {
        let cfg = src.config();
        let mut reclaimed = false;
        while let Some(requested_end) = self.requested_end() {
            let Some(range) = policy::next_speculative(requested_end, position, self.window, src.object.size, cfg)
            else {
                break;
            };
            match src.consumer.try_reserve_shared(range.end - range.start) {
                Some(reservation) => self.parts.push_back(src.start(range, reservation)),
                None if !reclaimed && src.prefetcher.budget().reclaim_idle() > 0 => reclaimed = true,
                None => {
                    self.window = policy::shrink_window(self.window, cfg);
                    break;
                }
            }
        }
    }

    /// Which part serves each byte of `offset..end`: the first one holding it.
    fn pieces(&self, offset: u64, end: u64) -> Vec<(Arc<Part>, Range<u64>)> {
        let mut at = offset;
        let mut out = Vec::new();
        for part in &self.parts {
            let r = part.range();
            if at >= end || r.start >= end {
                break;
            }
            if r.end <= at {
                continue;
            }
            let to = r.end.min(end);
            out.push((part.clone(), at.max(r.start)..to));
            at = to;
        }
        debug_assert_eq!(at, end, "parts do not cover {offset}..{end}");
        out
    }

    /// Records that the read at `offset` ended without being served (error or cancellation).
    pub(crate) fn abandon_read(&mut self, offset: u64, cfg: &PrefetchConfig) {
        self.remove_inflight(offset);
        self.trim(cfg);
    }

    /// Records a served read: moves the position on, grows the window if the reader waited, and
    /// trims what is now too far behind.
    pub(crate) fn finish_read(&mut self, offset: u64, end: u64, stalled: bool, generation: u64, cfg: &PrefetchConfig) {
        self.remove_inflight(offset);
        if generation == self.generation {
            let last = self.last_end.map_or(end, |l| l.max(end));
            self.last_end = Some(last);
            if stalled && !self.pattern.is_random(cfg) {
                let grown = policy::grow_window(self.window, last.saturating_sub(self.grown_at), cfg);
                if grown != self.window {
                    self.window = grown;
                    self.grown_at = last;
                }
            }
        }
        self.trim(cfg);
    }

    /// Drops the stream if `part` (which failed) is still part of it.
    pub(crate) fn drop_failed(&mut self, part: &Arc<Part>) {
        if self.parts.iter().any(|p| Arc::ptr_eq(p, part)) {
            self.reset();
        }
    }

    fn remove_inflight(&mut self, offset: u64) {
        if let Some(i) = self.inflight.iter().position(|&o| o == offset) {
            self.inflight.swap_remove(i);
        }
    }

    fn trim(&mut self, cfg: &PrefetchConfig) {
        let Some(last) = self.last_end else { return };
        let point = policy::trim_point(last, self.inflight.iter().min().copied(), cfg);
        while self.parts.front().is_some_and(|p| p.range().end <= point) {
            self.parts.pop_front();
        }
        if let Some(front) = self.parts.front() {
            self.held_start = front.trim_to(point).max(self.held_start);
        }
    }
}
