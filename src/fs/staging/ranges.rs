//! [`RangeSet`]: sorted, disjoint, non-adjacent byte ranges; which bytes of a staged file are on
//! local disk, and which differ from the object they were staged from.

use std::ops::Range;

/// A set of byte offsets kept as sorted, disjoint, non-touching ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Whether the set holds no byte.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many bytes the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Adds `range`, merging with the ranges it overlaps or touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // First range that ends at or after `start` (touching counts), last that starts at or
        // before `end`.
        let first = self.ranges.partition_point(|r| r.end < start);
        let last = self.ranges.partition_point(|r| r.start <= end);
        if first < last {
            start = start.min(self.ranges[first].start);
            end = end.max(self.ranges[last - 1].end);
        }
        self.ranges.splice(first..last, std::iter::once(start..end));
    }

    /// Removes every byte at or after `at`.
    pub fn truncate(&mut self, at: u64) {
        self.ranges.retain(|r| r.start < at);
        if let Some(last) = self.ranges.last_mut() {
            last.end = last.end.min(at);
        }
    }

    /// The parts of `range` that are not in the set, in order.
    pub fn gaps(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut pos = range.start;
        let first = self.ranges.partition_point(|r| r.end <= range.start);
        for r in &self.ranges[first..] {
            if r.start >= range.end {
                break;
            }
            if r.start > pos {
                gaps.push(pos..r.start);
            }
            pos = pos.max(r.end);
        }
        if pos < range.end {
            gaps.push(pos..range.end);
        }
        gaps
    }

    /// Whether every byte of `range` is in the set.
    pub fn contains(&self, range: Range<u64>) -> bool {
        range.is_empty() || self.gaps(range).is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_merges_overlapping_and_touching() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..25);
        assert_eq!(s.ranges(), &[10..25, 30..40]);
        s.insert(5..35);
        assert_eq!(s.ranges(), &[5..40]);
        s.insert(50..50);
        assert_eq!(s.len(), 35);
    }

    #[test]
    fn gaps_and_truncate() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        assert_eq!(s.gaps(0..50), vec![0..10, 20..30, 40..50]);
        assert_eq!(s.gaps(12..18), Vec::<Range<u64>>::new());
        assert_eq!(s.gaps(15..35), vec![20..30]);
        assert!(s.contains(31..39));
        s.truncate(35);
        assert_eq!(s.ranges(), &[10..20, 30..35]);
        s.truncate(30);
        assert_eq!(s.ranges(), &[10..20]);
    }

    proptest! {
        /// The set agrees with a byte map after any inserts and truncations.
        #[test]
        fn agrees_with_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..40, any::<bool>()), 0..30)) {
            let mut s = RangeSet::new();
            let mut bits = [false; 256];
            for (start, len, truncate) in ops {
                if truncate {
                    s.truncate(start);
                    bits[start as usize..].iter_mut().for_each(|b| *b = false);
                } else {
                    s.insert(start..start + len);
                    bits[start as usize..(start + len) as usize].iter_mut().for_each(|b| *b = true);
                }
            }
            for w in s.ranges().windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            for (i, &b) in bits.iter().enumerate() {
                prop_assert_eq!(s.contains(i as u64..i as u64 + 1), b);
            }
            prop_assert_eq!(s.len(), bits.iter().filter(|b| **b).count() as u64);
        }
    }
}
