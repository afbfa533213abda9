//! The prefetch policy as pure functions: how a read relates to what a handle already holds,
//! whether the handle reads sequentially or randomly, which ranged GETs to issue, and how the
//! window grows and shrinks. No I/O, no clocks, no locks: the executor ([`super::stream`]) calls
//! these, and the unit and property tests (`policy/tests.rs`) drive them directly.
//!
//! Vocabulary: a *stream* is the contiguous run of bytes a handle has requested, `held` =
//! `[first byte still kept, end of the last request)`. The *window* is how far past the reader's
//! position requests are kept issued. Requests after a stream's first one end on multiples of the
//! part size, so a sequential read of a file issues the same GETs whatever the window did.

use std::ops::Range;

use super::PrefetchConfig;

/// What the handle holds, as the policy sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamView {
    /// Bytes held or in flight; `None` when the handle holds nothing.
    pub held: Option<Range<u64>>,
    /// End of the furthest read served, kept across a dropped stream (error, idle reclaim).
    pub last_end: Option<u64>,
}

/// How a read at some offset relates to the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing held: start a stream here (first read, or near where a dropped stream was).
    Start,
    /// The read starts inside what is held or in flight.
    Held,
    /// The read starts a little before what is held (out-of-order kernel reads, short backward
    /// seeks): fill the gap in front of the stream.
    Before,
    /// The read starts a little after the end of the stream: extend it through the gap.
    Continue,
    /// Anywhere else: drop the stream and start a new one.
    Seek,
}

/// Classifies a read starting at `offset`.
pub fn classify(view: &StreamView, offset: u64, cfg: &PrefetchConfig) -> Access {
    match &view.held {
        Some(held) if held.contains(&offset) => Access::Held,
        Some(held) if offset < held.start && held.start - offset <= cfg.back_tolerance => Access::Before,
        Some(held) if offset >= held.end && offset - held.end <= cfg.forward_tolerance => Access::Continue,
        Some(_) => Access::Seek,
        None => match view.last_end {
            Some(last) if !near(last, offset, cfg) => Access::Seek,
            _ => Access::Start,
        },
    }
}

fn near(last_end: u64, offset: u64, cfg: &PrefetchConfig) -> bool {
    if offset < last_end { last_end - offset <= cfg.back_tolerance } else { offset - last_end <= cfg.forward_tolerance }
}

/// Sequential or random: far seeks in a row turn speculative prefetching off; a long enough run of
/// forward progress turns it back on. Re-reading the same bytes is not progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessPattern {
    /// Far seeks since the last long sequential run (saturating).
    seeks: u32,
    /// Bytes of forward progress since the last seek or stream start.
    run: u64,
    /// End of the furthest read recorded.
    end: u64,
}

impl AccessPattern {
    /// Records one read of `offset..end` classified as `access`.
    pub fn record(&mut self, access: Access, offset: u64, end: u64, cfg: &PrefetchConfig) {
        match access {
            Access::Seek | Access::Start => {
                if access == Access::Seek {
                    self.seeks = self.seeks.saturating_add(1).min(cfg.random_after_seeks.max(1) * 2);
                }
                self.run = end - offset;
                self.end = end;
            }
            Access::Held | Access::Before | Access::Continue => {
                self.run = self.run.saturating_add(end.saturating_sub(self.end.max(offset)));
                self.end = self.end.max(end);
                if self.run >= cfg.sequential_run {
                    self.seeks = 0;
                }
            }
        }
    }

    /// Random access: fetch only what is asked (rounded up), nothing speculative.
    pub fn is_random(&self, cfg: &PrefetchConfig) -> bool {
        self.seeks >= cfg.random_after_seeks
    }

    /// Whether to issue speculative requests after a read classified as `access`: only in
    /// sequential mode, never on the read that starts a stream (its GET gets the network to
    /// itself), and only once half the first request has been read in sequence (so a lone read
    /// costs no more than the first request).
    pub fn speculate(&self, access: Access, cfg: &PrefetchConfig) -> bool {
        !self.is_random(cfg)
            && matches!(access, Access::Held | Access::Before | Access::Continue)
            && self.run >= cfg.first_request_size / 2
    }
}

/// The requests a read needs before it can be served, in stream order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// Drop everything held first.
    pub reset: bool,
    /// Gap to fill in front of the stream (ends where the stream starts).
    pub front: Option<Range<u64>>,
    /// Requests extending the stream's end (or starting a new stream) through the read's end.
    pub back: Vec<Range<u64>>,
}

/// The requests needed to serve `offset..end` (non-empty, within `size`).
pub fn plan_demand(
    view: &StreamView,
    access: Access,
    offset: u64,
    end: u64,
    size: u64,
    random: bool,
    cfg: &PrefetchConfig,
) -> Demand {
    debug_assert!(offset < end && end <= size, "read {offset}..{end} of {size}");
    let held = match (&view.held, access) {
        (Some(held), Access::Held | Access::Before | Access::Continue) => held.clone(),
        _ => {
            return Demand {
                reset: view.held.is_some(),
                front: None,
                back: vec![first_request(offset, end, size, random, cfg)],
            };
        }
    };
    let front = (offset < held.start).then_some(offset..held.start);
    let mut back = vec![];
    let mut at = held.end;
    while at < end {
        let next =
            if random { rounded_request(at, end, size, cfg.random_request_size) } else { next_part(at, size, cfg) };
        at = next.end;
        back.push(next);
    }
    Demand { reset: false, front, back }
}

/// The first request of a stream: small for a fast first byte (1.125 MiB by default), or in
/// random mode just the read rounded up to the random request size.
pub fn first_request(offset: u64, end: u64, size: u64, random: bool, cfg: &PrefetchConfig) -> Range<u64> {
    let want = if random { cfg.random_request_size } else { cfg.first_request_size };
    rounded_request(offset, end, size, want)
}

/// `offset..end` grown to at least `min_len` bytes, within the object.
pub fn rounded_request(offset: u64, end: u64, size: u64, min_len: u64) -> Range<u64> {
    offset..end.max(offset.saturating_add(min_len)).min(size)
}

/// The request that continues a stream at `from`: up to the next part boundary, or the one after
/// when the next is less than half a part away (no tiny requests), never past the object.
pub fn next_part(from: u64, size: u64, cfg: &PrefetchConfig) -> Range<u64> {
    let part = cfg.part_size.max(1);
    let mut end = (from / part + 1) * part;
    if end - from < part / 2 {
        end += part;
    }
    from..end.min(size)
}

/// The next speculative request, if the stream ends less than `window` past `position` (the end
/// of the furthest read).
pub fn next_speculative(
    requested_end: u64,
    position: u64,
    window: u64,
    size: u64,
    cfg: &PrefetchConfig,
) -> Option<Range<u64>> {
    (requested_end < size && requested_end < position.saturating_add(window))
        .then(|| next_part(requested_end, size, cfg))
}

/// The window a new stream starts with.
pub fn initial_window(cfg: &PrefetchConfig) -> u64 {
    cfg.first_request_size.min(cfg.max_window)
}

/// Doubles the window (up to the cap) when the reader waited for data and has read at least half
/// a window since it last grew: it keeps up with the network, so more concurrency helps. A reader
/// slower than the network never waits, so its window stays small.
pub fn grow_window(window: u64, progress_since_growth: u64, cfg: &PrefetchConfig) -> u64 {
    if progress_since_growth >= window / 2 { window.saturating_mul(2).min(cfg.max_window) } else { window }
}

/// Halves the window (not below the initial window) when memory is short.
pub fn shrink_window(window: u64, cfg: &PrefetchConfig) -> u64 {
    (window / 2).max(initial_window(cfg))
}

/// First byte to keep: `retain_behind` bytes before the furthest read, and nothing an unfinished
/// read still needs.
pub fn trim_point(last_end: u64, oldest_inflight: Option<u64>, cfg: &PrefetchConfig) -> u64 {
    last_end.saturating_sub(cfg.retain_behind).min(oldest_inflight.unwrap_or(u64::MAX))
}

/// The request a reader makes when memory is too short for its plan: just its read, rounded up
/// to the random request size, never more than `floor` (its guaranteed minimum) unless the read
/// itself is longer.
pub fn minimal_request(offset: u64, end: u64, size: u64, floor: u64, cfg: &PrefetchConfig) -> Range<u64> {
    let r = rounded_request(offset, end, size, cfg.random_request_size);
    r.start..r.end.min(offset.saturating_add(floor)).max(end)
}

#[cfg(test)]
mod tests;
