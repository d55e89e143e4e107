//! A lock-free latency histogram with fixed buckets that Prometheus can
//! scrape and the analytics engine can read bucket by bucket.
//!
//! prometheus-client's own histogram does not expose its buckets, and the
//! dashboard needs per-second percentiles from bucket deltas; one
//! `fetch_add` per observation keeps the hot path as cheap as theirs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

// The one bucket layout of every latency series, shared with the
// analytics engine (which merges bucket counts: one layout keeps that a
// plain element-wise sum). From 50 µs (a relayed WebSocket frame on
// loopback) to 60 s (a long upstream call), finer between 20 and 250 ms.

/// Number of buckets: the finite bounds plus one overflow bucket.
pub const BUCKETS: usize = 24;

/// Upper bounds (inclusive) of the finite buckets, in microseconds. Bucket
/// `i` counts observations `v` with `BOUNDS_US[i-1] < v <= BOUNDS_US[i]`;
/// the last bucket (index 23) counts everything above 60 s.
pub const BOUNDS_US: [u64; BUCKETS - 1] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 35_000, 50_000, 75_000, 100_000, 150_000, 250_000, 500_000,
    750_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// The same bounds in seconds, for building Prometheus histograms whose
/// buckets line up with ours (`prometheus_client::metrics::histogram::
/// Histogram::new(LATENCY_BOUNDS_SECONDS.into_iter())`), so a tick's deltas
/// are a subtraction of two scrapes.
pub const LATENCY_BOUNDS_SECONDS: [f64; BUCKETS - 1] = {
    let mut out = [0.0; BUCKETS - 1];
    let mut i = 0;
    while i < BUCKETS - 1 {
        out[i] = BOUNDS_US[i] as f64 / 1e6;
        i += 1;
    }
    out
};

/// Bucket upper bounds in seconds (the last bucket is +Inf), so a
/// per-second delta of a scrape is exactly what the analytics engine ingests.
pub const BOUNDS: [f64; BUCKETS - 1] = LATENCY_BOUNDS_SECONDS;

const BOUNDS_NS: [u64; BUCKETS - 1] = {
    let mut out = [0u64; BUCKETS - 1];
    let mut i = 0;
    while i < out.len() {
        out[i] = BOUNDS_US[i] * 1000;
        i += 1;
    }
    out
};

/// A latency histogram; clones share counts.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// A copy of the counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Count per bucket (not cumulative), aligned with [`BOUNDS`] + Inf.
    pub buckets: [u64; BUCKETS],
    /// Sum of observations in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Counts since `earlier`.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut d = HistogramSnapshot::default();
        for (i, b) in d.buckets.iter_mut().enumerate() {
            *b = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        d.sum_ns = self.sum_ns.saturating_sub(earlier.sum_ns);
        d
    }

    /// The `q` quantile (0..=1) as the upper bound of the bucket holding
    /// it; `None` with no observations.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                let secs = BOUNDS.get(i).copied().unwrap_or(BOUNDS[BOUNDS.len() - 1] * 2.0);
                return Some(Duration::from_secs_f64(secs));
            }
        }
        None
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        for (i, b) in s.buckets.iter_mut().enumerate() {
            *b = self.inner.buckets[i].load(Ordering::Relaxed);
        }
        s.sum_ns = self.inner.sum_ns.load(Ordering::Relaxed);
        s
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = self.snapshot();
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(s.buckets.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(s.sum_ns as f64 / 1e9, s.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[6], 1);
        assert_eq!(s.buckets[BUCKETS - 1], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(100)));
        assert_eq!(s.quantile(0.75), Some(Duration::from_millis(5)));
    }
}
