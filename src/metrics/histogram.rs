//! [`Histogram`]: a fixed, lock-free latency histogram in microseconds.
//!
//! Buckets are log-linear: below 8 µs one bucket per microsecond, then 8 buckets per power of
//! two, so a bucket is never wider than 1/8 of its lower bound and any reported percentile is
//! within 12.5% of the true value. Values are capped at 2^40 µs (12.7 days); 304 buckets cover
//! that range, 2.4 KiB per histogram. Recording is three relaxed atomic adds and a `fetch_max`:
//! cheap enough for every FUSE request and every S3 request.
//!
//! Readers take a [`HistogramSnapshot`] (plain numbers); the difference of two snapshots is the
//! histogram of the interval between them, which is how the periodic log lines get per-interval
//! percentiles without ever resetting the live counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two (a power of two itself).
const SUB_BUCKETS: u64 = 8;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Largest recorded value + 1, in microseconds.
const CAP_MICROS: u64 = 1 << 40;
/// Number of buckets needed up to [`CAP_MICROS`].
pub const BUCKETS: usize = bucket_of(CAP_MICROS - 1) + 1;

/// Index of the bucket holding `micros` (which must be below [`CAP_MICROS`]).
const fn bucket_of(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros();
    let mantissa = micros >> (exp - SUB_BITS);
    ((exp - SUB_BITS) as u64 * SUB_BUCKETS + mantissa) as usize
}

/// Smallest value that falls in bucket `index`.
const fn lower_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let exp = index / SUB_BUCKETS + SUB_BITS as u64 - 1;
    let mantissa = index % SUB_BUCKETS + SUB_BUCKETS;
    mantissa << (exp - SUB_BITS as u64)
}

/// Largest value that falls in bucket `index`.
fn upper_bound(index: usize) -> u64 {
    lower_bound(index + 1) - 1
}

/// A latency histogram that many threads record into at once.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("count", &self.count.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Histogram {
    /// Records one value.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).min(CAP_MICROS - 1);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// The values recorded so far. Taken while others record, the totals may lag the buckets by
    /// the few values in flight; nothing is ever lost.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            max_micros: self.max_micros.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    buckets: Vec<u64>,
    /// Values recorded.
    pub count: u64,
    /// Sum of all values, in microseconds.
    pub sum_micros: u64,
    /// Largest value ever recorded (not only in an interval), in microseconds.
    pub max_micros: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot { buckets: vec![0; BUCKETS], count: 0, sum_micros: 0, max_micros: 0 }
    }
}

impl HistogramSnapshot {
    /// The values recorded after `earlier` (a snapshot of the same histogram) up to `self`.
    /// The exact maximum of an interval is not kept, so it is estimated from the buckets.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets: Vec<u64> = self.buckets.iter().zip(&earlier.buckets).map(|(a, b)| a.saturating_sub(*b)).collect();
        let max_micros = buckets
            .iter()
            .rposition(|&n| n > 0)
            .map(|index| upper_bound(index).min(self.max_micros))
            .unwrap_or_default();
        HistogramSnapshot {
            buckets,
            count: self.count.saturating_sub(earlier.count),
            sum_micros: self.sum_micros.saturating_sub(earlier.sum_micros),
            max_micros,
        }
    }

    /// The value at quantile `q` (0.0..=1.0), in microseconds: the upper bound of the bucket
    /// holding the value of that rank, never above the maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(index).min(self.max_micros);
            }
        }
        self.max_micros
    }
}

/// `1234` µs as `1.23ms`: three significant digits, unit chosen to fit.
pub fn format_micros(micros: u64) -> String {
    match micros {
        0..=999 => format!("{micros}us"),
        1_000..=999_999 => format!("{:.3}ms", micros as f64 / 1e3),
        _ => format!("{:.3}s", micros as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(BUCKETS, 304);
        for index in 0..BUCKETS - 1 {
            assert_eq!(upper_bound(index) + 1, lower_bound(index + 1), "bucket {index}");
            assert_eq!(bucket_of(lower_bound(index)), index);
            assert_eq!(bucket_of(upper_bound(index)), index);
        }
        assert_eq!(bucket_of(CAP_MICROS - 1), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_is_at_most_an_eighth_of_its_values() {
        for index in SUB_BUCKETS as usize..BUCKETS {
            let (lo, hi) = (lower_bound(index), upper_bound(index));
            assert!((hi - lo + 1) * SUB_BUCKETS <= lo, "bucket {index}: {lo}..={hi}");
        }
    }

    #[test]
    fn quantiles_are_within_an_eighth() {
        let h = Histogram::default();
        for micros in 1..=1000u64 {
            h.record(Duration::from_micros(micros));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max_micros, 1000);
        assert_eq!(s.sum_micros, 500_500);
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = s.quantile(q) as f64;
            assert!(got >= exact && got <= exact * 1.125, "q{q}: {got} vs {exact}");
        }
        assert_eq!(HistogramSnapshot::default().quantile(0.5), 0);
    }

    #[test]
    fn intervals_are_differences_of_snapshots() {
        let h = Histogram::default();
        h.record(Duration::from_millis(100));
        let first = h.snapshot();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(5));
        let interval = h.snapshot().since(&first);
        assert_eq!(interval.count, 2);
        assert_eq!(interval.sum_micros, 8);
        assert_eq!(interval.max_micros, 5, "the interval's max, not the all-time 100 ms");
        assert_eq!(interval.quantile(0.5), 3);
        assert_eq!(h.snapshot().since(&h.snapshot()).count, 0);
    }

    #[test]
    fn huge_values_are_capped() {
        let h = Histogram::default();
        h.record(Duration::from_secs(u64::MAX));
        assert_eq!(h.snapshot().max_micros, CAP_MICROS - 1);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_micros(999), "999us");
        assert_eq!(format_micros(1234), "1.234ms");
        assert_eq!(format_micros(2_500_000), "2.500s");
    }
}
