//! Unit and property tests of the prefetch policy. [`Model`] executes the policy the way the
//! stream does, with ranges instead of GETs and exact trimming, so whole read sequences can be
//! checked for coverage, request counts and waste.

use proptest::prelude::*;

use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn cfg() -> PrefetchConfig {
    PrefetchConfig::default()
}

/// A list of one request.
fn one(r: Range<u64>) -> Vec<Range<u64>> {
    vec![r]
}

fn view(held: Option<Range<u64>>, last_end: Option<u64>) -> StreamView {
    StreamView { held, last_end }
}

#[test]
fn classify_by_position_relative_to_the_stream() {
    let c = cfg();
    let held = Some(10 * MIB..20 * MIB);
    let cases = [
        (10 * MIB, Access::Held),
        (20 * MIB - 1, Access::Held),
        (9 * MIB, Access::Before),
        (9 * MIB - 1, Access::Seek),
        (20 * MIB, Access::Continue),
        (21 * MIB, Access::Continue),
        (21 * MIB + 1, Access::Seek),
        (0, Access::Seek),
    ];
    for (offset, want) in cases {
        assert_eq!(classify(&view(held.clone(), Some(15 * MIB)), offset, &c), want, "offset {offset}");
    }
    assert_eq!(classify(&view(None, None), 123 * MIB, &c), Access::Start);
    assert_eq!(
        classify(&view(None, Some(5 * MIB)), 5 * MIB + 128 * KIB, &c),
        Access::Start,
        "dropped stream, same place"
    );
    assert_eq!(classify(&view(None, Some(5 * MIB)), 50 * MIB, &c), Access::Seek);
}

#[test]
fn parts_end_on_boundaries_and_are_never_tiny() {
    let c = cfg();
    let first = c.first_request_size;
    assert_eq!(next_part(first, 100 * MIB, &c), first..8 * MIB);
    assert_eq!(next_part(8 * MIB, 100 * MIB, &c), 8 * MIB..16 * MIB);
    assert_eq!(
        next_part(8 * MIB - 10, 100 * MIB, &c),
        8 * MIB - 10..16 * MIB,
        "10 bytes to the boundary: one more part"
    );
    assert_eq!(next_part(96 * MIB, 100 * MIB, &c), 96 * MIB..100 * MIB);
}

#[test]
fn a_stream_starts_with_one_small_request() {
    let c = cfg();
    let d = plan_demand(&view(None, None), Access::Start, 0, 128 * KIB, 100 * MIB, false, &c);
    assert_eq!(d, Demand { reset: false, front: None, back: one(0..c.first_request_size) });
    let d = plan_demand(&view(Some(0..MIB), Some(MIB)), Access::Seek, 50 * MIB, 50 * MIB + 4096, 100 * MIB, true, &c);
    assert_eq!(
        d,
        Demand { reset: true, front: None, back: one(50 * MIB..50 * MIB + 256 * KIB) },
        "random: just the read, rounded"
    );
    let d = plan_demand(&view(None, None), Access::Start, 99 * MIB, 100 * MIB, 100 * MIB, false, &c);
    assert_eq!(d.back, one(99 * MIB..100 * MIB), "never past the end");
}

#[test]
fn gaps_before_and_after_the_stream_are_filled() {
    let c = cfg();
    let v = view(Some(2 * MIB..3 * MIB), Some(3 * MIB));
    let d = plan_demand(&v, Access::Before, 2 * MIB - 100, 2 * MIB + 100, 100 * MIB, false, &c);
    assert_eq!(d, Demand { reset: false, front: Some(2 * MIB - 100..2 * MIB), back: vec![] });
    let d = plan_demand(&v, Access::Continue, 3 * MIB + 512 * KIB, 3 * MIB + 640 * KIB, 100 * MIB, false, &c);
    assert_eq!(d.back, one(3 * MIB..8 * MIB));
    let d = plan_demand(&v, Access::Held, 3 * MIB - 10, 3 * MIB + 10, 100 * MIB, true, &c);
    assert_eq!(d.back, one(3 * MIB..3 * MIB + 256 * KIB));
}

#[test]
fn two_far_seeks_make_random_and_a_sequential_run_undoes_it() {
    let c = cfg();
    let k = 128 * KIB;
    let mut p = AccessPattern::default();
    p.record(Access::Start, 0, k, &c);
    p.record(Access::Seek, 50 * MIB, 50 * MIB + k, &c);
    assert!(!p.is_random(&c), "one seek is not a pattern");
    p.record(Access::Held, 50 * MIB + k, 50 * MIB + 2 * k, &c);
    p.record(Access::Seek, 10 * MIB, 10 * MIB + k, &c);
    assert!(p.is_random(&c));
    for _ in 0..20 {
        p.record(Access::Held, 10 * MIB, 10 * MIB + k, &c);
    }
    assert!(p.is_random(&c), "re-reading the same bytes is not progress");
    for i in 1..9 {
        p.record(Access::Continue, 10 * MIB + i * k, 10 * MIB + (i + 1) * k, &c);
    }
    assert!(!p.is_random(&c), "1.125 MiB read in sequence");
}

#[test]
fn window_doubles_after_half_a_window_and_halves_under_pressure() {
    let c = cfg();
    let w0 = initial_window(&c);
    assert_eq!(grow_window(w0, w0 / 2 - 1, &c), w0);
    assert_eq!(grow_window(w0, w0 / 2, &c), 2 * w0);
    assert_eq!(grow_window(100 * MIB, 100 * MIB, &c), c.max_window);
    assert_eq!(shrink_window(c.max_window, &c), c.max_window / 2);
    assert_eq!(shrink_window(w0, &c), w0);
}

#[test]
fn speculation_stops_at_the_window_and_the_end() {
    let c = cfg();
    assert_eq!(
        next_speculative(c.first_request_size, 128 * KIB, initial_window(&c), 100 * MIB, &c),
        Some(c.first_request_size..8 * MIB)
    );
    assert_eq!(next_speculative(8 * MIB, 128 * KIB, initial_window(&c), 100 * MIB, &c), None);
    assert_eq!(next_speculative(100 * MIB, 99 * MIB, c.max_window, 100 * MIB, &c), None);
}

#[test]
fn trimming_keeps_a_retained_window_and_unfinished_reads() {
    let c = cfg();
    assert_eq!(trim_point(10 * MIB, None, &c), 9 * MIB);
    assert_eq!(trim_point(10 * MIB, Some(5 * MIB), &c), 5 * MIB);
    assert_eq!(trim_point(100, None, &c), 0);
}

#[test]
fn the_minimal_request_stays_within_the_floor() {
    let c = cfg();
    let floor = c.floor();
    assert_eq!(minimal_request(0, 4096, 100 * MIB, floor, &c), 0..256 * KIB);
    assert_eq!(minimal_request(0, MIB, 100 * MIB, floor, &c), 0..MIB);
    assert_eq!(minimal_request(0, 4096, 100 * MIB, 64 * KIB, &c), 0..64 * KIB);
}

/// The policy executed on ranges: what the stream does, minus I/O and memory limits.
struct Model {
    cfg: PrefetchConfig,
    size: u64,
    held: Option<Range<u64>>,
    last_end: Option<u64>,
    pattern: AccessPattern,
    window: u64,
    grown_at: u64,
    gets: Vec<Range<u64>>,
    resets: usize,
}

impl Model {
    fn new(cfg: PrefetchConfig, size: u64) -> Self {
        let window = initial_window(&cfg);
        Model {
            cfg,
            size,
            held: None,
            last_end: None,
            pattern: AccessPattern::default(),
            window,
            grown_at: 0,
            gets: vec![],
            resets: 0,
        }
    }

    fn fetched(&self) -> u64 {
        self.gets.iter().map(|r| r.end - r.start).sum()
    }

    /// One read; `stalled` says whether the reader had to wait for its bytes.
    fn read(&mut self, offset: u64, end: u64, stalled: bool) {
        let cfg = self.cfg.clone();
        let v = StreamView { held: self.held.clone(), last_end: self.last_end };
        let access = classify(&v, offset, &cfg);
        self.pattern.record(access, offset, end, &cfg);
        let random = self.pattern.is_random(&cfg);
        let d = plan_demand(&v, access, offset, end, self.size, random, &cfg);
        if d.reset {
            self.held = None;
            self.resets += 1;
        }
        if let Some(front) = d.front {
            let held = self.held.as_mut().expect("front only extends a stream");
            assert_eq!(front.end, held.start, "front must end where the stream starts");
            assert!(!front.is_empty());
            held.start = front.start;
            self.gets.push(front);
        }
        for back in d.back {
            assert!(!back.is_empty() && back.end <= self.size, "{back:?}");
            match self.held.as_mut() {
                Some(held) => {
                    assert_eq!(back.start, held.end, "back requests extend the stream without a gap");
                    held.end = back.end;
                }
                None => {
                    assert_eq!(back.start, offset, "a new stream starts at the read");
                    self.held = Some(back.clone());
                    self.last_end = Some(offset);
                    self.grown_at = offset;
                    self.window = initial_window(&cfg);
                }
            }
            self.gets.push(back);
        }
        let held = self.held.clone().expect("a read leaves a stream");
        assert!(held.start <= offset && end <= held.end, "read {offset}..{end} not covered by {held:?}");
        if self.pattern.speculate(access, &cfg) {
            let position = self.last_end.map_or(end, |l| l.max(end));
            while let Some(r) =
                next_speculative(self.held.as_ref().unwrap().end, position, self.window, self.size, &cfg)
            {
                self.held.as_mut().unwrap().end = r.end;
                self.gets.push(r);
            }
        }
        let last = self.last_end.map_or(end, |l| l.max(end));
        self.last_end = Some(last);
        if stalled && !random {
            let grown = grow_window(self.window, last - self.grown_at, &cfg);
            if grown != self.window {
                self.window = grown;
                self.grown_at = last;
            }
        }
        assert!(initial_window(&cfg) <= self.window && self.window <= cfg.max_window);
        let point = trim_point(last, None, &cfg);
        let held = self.held.as_mut().unwrap();
        held.start = held.start.max(point.min(held.end));
    }
}

/// GETs issued for a sequential read must tile `0..size` exactly: nothing twice, nothing wasted.
fn assert_tiles(gets: &[Range<u64>], size: u64) {
    let mut sorted = gets.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut at = 0;
    for r in &sorted {
        assert_eq!(r.start, at, "gap or overlap at {at}: {sorted:?}");
        at = r.end;
    }
    assert_eq!(at, size);
}

/// 128 KiB reads over `size`, with adjacent reads swapped where `swaps` says (kernel async reads).
fn jittered_reads(size: u64, swaps: &[bool]) -> Vec<(u64, u64)> {
    let block = 128 * KIB;
    let mut reads: Vec<(u64, u64)> =
        (0..size.div_ceil(block)).map(|i| (i * block, ((i + 1) * block).min(size))).collect();
    let mut i = 1;
    while i + 1 < reads.len() {
        if swaps[i % swaps.len()] {
            reads.swap(i, i + 1);
            i += 1;
        }
        i += 1;
    }
    reads
}

#[test]
fn sequential_read_of_40_mib_issues_one_get_per_part() {
    let mut m = Model::new(cfg(), 40 * MIB);
    for (offset, end) in jittered_reads(40 * MIB, &[false]) {
        m.read(offset, end, true);
    }
    // The 1.125 MiB first request, the rest of the first 8 MiB part, then 4 parts of 8 MiB.
    assert_eq!(m.gets.len(), 6);
    assert_tiles(&m.gets, 40 * MIB);
    assert_eq!(m.window, 64 * m.cfg.first_request_size, "a reader that always waits doubles its window");
}

#[test]
fn a_slow_reader_keeps_a_small_window() {
    let mut m = Model::new(cfg(), 200 * MIB);
    for (offset, end) in jittered_reads(200 * MIB, &[false]) {
        m.read(offset, end, false);
        let ahead = m.held.as_ref().unwrap().end - end;
        assert!(ahead <= initial_window(&m.cfg) + 12 * MIB, "{ahead} bytes requested ahead at {end}");
    }
    assert_eq!(m.window, initial_window(&m.cfg));
}

#[test]
fn random_reads_stop_speculating_after_two_seeks() {
    let c = cfg();
    let mut m = Model::new(c.clone(), 1024 * MIB);
    let offsets = [700, 13, 450, 900, 77, 300, 512, 5].map(|i| i * MIB + 4096);
    for (i, offset) in offsets.into_iter().enumerate() {
        let before = (m.gets.len(), m.fetched());
        m.read(offset, offset + 128 * KIB, true);
        m.read(offset + 128 * KIB, offset + 256 * KIB, true);
        let (gets, bytes) = (m.gets.len() - before.0, m.fetched() - before.1);
        assert_eq!(gets, 1, "read {i}");
        let want = if i < 2 { c.first_request_size } else { 256 * KIB };
        assert_eq!(bytes, want, "read {i}");
    }
}

proptest! {
    #[test]
    fn next_part_is_aligned_and_bounded(from in 0u64..1 << 40, extra in 1u64..1 << 30, part in 1u64..64 * MIB) {
        let c = PrefetchConfig { part_size: part, ..cfg() };
        let size = from + extra;
        let r = next_part(from, size, &c);
        prop_assert_eq!(r.start, from);
        prop_assert!(r.end > from && r.end <= size);
        prop_assert!(r.end == size || r.end.is_multiple_of(part));
        prop_assert!(r.end - r.start < part + part / 2 + 1);
        prop_assert!(r.end == size || r.end - r.start >= part / 2);
    }

    #[test]
    fn sequential_reads_with_kernel_jitter_tile_the_file(
        size in 1u64..48 * MIB,
        swaps in prop::collection::vec(any::<bool>(), 1..16),
        part_kib in 64u64..16 * 1024,
        stalls in any::<bool>(),
    ) {
        let c = PrefetchConfig { part_size: part_kib * KIB, ..cfg() };
        let mut m = Model::new(c.clone(), size);
        for (offset, end) in jittered_reads(size, &swaps) {
            m.read(offset, end, stalls);
        }
        prop_assert_eq!(m.resets, 0);
        assert_tiles(&m.gets, size);
        prop_assert!(m.gets.len() as u64 <= 2 + size / (c.part_size / 2).max(1));
    }

    #[test]
    fn random_reads_cost_at_most_two_gets_and_one_first_window_of_waste(
        slots in prop::collection::vec(0u64..256, 1..40),
        reversed in prop::collection::vec(any::<bool>(), 1..40),
    ) {
        let c = cfg();
        let mut m = Model::new(c.clone(), 1024 * MIB);
        for (i, slot) in slots.iter().enumerate() {
            // Slots 4 MiB apart, 256 KiB reads split in two as the kernel does, in either order.
            let offset = slot * 4 * MIB + 4096;
            let before = (m.gets.len(), m.fetched());
            let halves = [(offset, offset + 128 * KIB), (offset + 128 * KIB, offset + 256 * KIB)];
            let order = if reversed[i % reversed.len()] { [1, 0] } else { [0, 1] };
            for h in order {
                m.read(halves[h].0, halves[h].1, true);
            }
            prop_assert!(m.gets.len() - before.0 <= 2);
            prop_assert!(m.fetched() - before.1 <= 256 * KIB + c.first_request_size);
        }
    }

    #[test]
    fn any_read_sequence_is_covered_by_gapless_streams(
        reads in prop::collection::vec((0u64..64 * MIB, 1u64..2 * MIB, any::<bool>()), 1..60),
    ) {
        let size = 64 * MIB;
        let mut m = Model::new(cfg(), size);
        for (offset, len, stalled) in reads {
            let end = (offset + len).min(size);
            if offset < end {
                // `read` asserts coverage, contiguity and window bounds.
                m.read(offset, end, stalled);
            }
        }
    }
}
