//! Fixed-bound latency histograms: the bucket layout every latency series in
//! a [`Tick`](super::Tick) uses, merging, and percentiles from bucket counts.
//!
//! One layout for every series (request, first byte, WebSocket relay, pool
//! acquire) keeps merging a plain element-wise sum, so a minute is the sum of
//! its seconds and an hour the sum of its minutes — exactly, with no
//! re-binning error. The bounds run from 50 µs (a relayed WebSocket frame on
//! loopback) to 60 s (a long upstream call), a little finer between 20 and
//! 250 ms where acquire waits and request latencies usually sit.
//!
//! A percentile is interpolated linearly inside the bucket that holds its
//! rank, so it can be off by at most that bucket's width. Anything above
//! 60 s reads as 60 s.

use std::time::Duration;

pub use crate::metrics::{BOUNDS_US, BUCKETS, LATENCY_BOUNDS_SECONDS};

/// Observation counts per bucket. Counts saturate instead of wrapping: a
/// `u32` holds 4.29 × 10⁹ observations, over an hour about 1.2 million per
/// second in a single bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    counts: [u32; BUCKETS],
}

impl Default for Hist {
    fn default() -> Self {
        Self { counts: [0; BUCKETS] }
    }
}

impl Hist {
    /// A histogram with these bucket counts.
    pub fn from_counts(counts: [u32; BUCKETS]) -> Self {
        Self { counts }
    }

    /// The bucket counts.
    pub fn counts(&self) -> &[u32; BUCKETS] {
        &self.counts
    }

    /// Counts one observation.
    pub fn record(&mut self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&b| b < us);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
    }

    /// Adds another histogram's counts (the rollup of two intervals).
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// Removes counts previously merged in (sliding windows).
    pub fn unmerge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_sub(*b);
        }
    }

    /// Total number of observations.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The `q`-quantile (0..=1) in milliseconds, or `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // The rank of the wanted observation, 1-based: p99 of 100 samples
        // is the 99th, of 1 sample the only one.
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut below = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = f64::from(c);
            if c > 0.0 && below + c >= rank {
                return Some(interpolate(i, (rank - below) / c));
            }
            below += c;
        }
        Some(upper_ms(BUCKETS - 2))
    }

    /// The mean from bucket midpoints, used only when no exact sum is known.
    pub fn approx_mean_ms(&self) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let sum: f64 = (0..BUCKETS)
            .map(|i| f64::from(self.counts[i]) * interpolate(i, 0.5))
            .sum();
        Some(sum / total as f64)
    }
}

/// A value `frac` of the way through bucket `i`, in milliseconds.
fn interpolate(i: usize, frac: f64) -> f64 {
    if i + 1 >= BUCKETS {
        // The overflow bucket has no upper bound to interpolate towards.
        return upper_ms(BUCKETS - 2);
    }
    let lo = if i == 0 { 0.0 } else { upper_ms(i - 1) };
    let hi = upper_ms(i);
    lo + (hi - lo) * frac.clamp(0.0, 1.0)
}

fn upper_ms(i: usize) -> f64 {
    BOUNDS_US.get(i).map_or(0.0, |&b| b as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lands_in_inclusive_upper_bound() {
        let mut h = Hist::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(51));
        h.record(Duration::from_secs(61));
        assert_eq!(h.counts()[0], 1);
        assert_eq!(h.counts()[1], 1);
        assert_eq!(h.counts()[BUCKETS - 1], 1);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut h = Hist::default();
        // 100 observations evenly in the (50, 75] ms bucket.
        for i in 0..100 {
            h.record(Duration::from_micros(50_001 + i * 249));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((p50 - 62.5).abs() < 0.01, "{p50}");
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p99 - 74.75).abs() < 0.01, "{p99}");
        assert_eq!(Hist::default().quantile_ms(0.5), None);
    }

    #[test]
    fn merge_then_unmerge_is_identity() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        a.record(Duration::from_millis(3));
        b.record(Duration::from_millis(300));
        let before = a;
        a.merge(&b);
        assert_eq!(a.total(), 2);
        a.unmerge(&b);
        assert_eq!(a, before);
    }

    #[test]
    fn bounds_in_seconds_match_microseconds() {
        assert_eq!(LATENCY_BOUNDS_SECONDS[0], 0.00005);
        assert_eq!(LATENCY_BOUNDS_SECONDS[BUCKETS - 2], 60.0);
    }
}
