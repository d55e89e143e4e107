//! The sliding failure-rate window, owned by the controller task.

use std::time::Duration;

use tokio::time::Instant;

/// How many buckets the window is split into: the window slides in steps of
/// `window / BUCKETS`.
const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    total: u32,
    failures: u32,
}

/// Request and failure counts over the last `window`, in buckets.
#[derive(Debug)]
pub(super) struct Window {
    buckets: [Bucket; BUCKETS],
    bucket_width: Duration,
    origin: Instant,
    /// The absolute index (since `origin`) of the newest bucket.
    head: u64,
}

impl Window {
    pub(super) fn new(window: Duration, now: Instant) -> Self {
        let width = (window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            buckets: [Bucket::default(); BUCKETS],
            bucket_width: width,
            origin: now,
            head: 0,
        }
    }

    /// Counts one outcome at `now`.
    pub(super) fn record(&mut self, now: Instant, failed: bool) {
        self.advance(now);
        let bucket = &mut self.buckets[(self.head % BUCKETS as u64) as usize];
        bucket.total = bucket.total.saturating_add(1);
        if failed {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }

    /// `(requests, failures)` in the window ending at `now`.
    pub(super) fn totals(&mut self, now: Instant) -> (u32, u32) {
        self.advance(now);
        self.buckets.iter().fold((0, 0), |(t, f), b| {
            (t.saturating_add(b.total), f.saturating_add(b.failures))
        })
    }

    /// Forgets everything (after the circuit closes).
    pub(super) fn reset(&mut self, now: Instant) {
        self.buckets = [Bucket::default(); BUCKETS];
        self.origin = now;
        self.head = 0;
    }

    /// Moves the head to `now`, clearing the buckets it passes.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.origin);
        let index = u64::try_from(elapsed.as_nanos() / self.bucket_width.as_nanos()).unwrap_or(u64::MAX);
        let steps = index.saturating_sub(self.head).min(BUCKETS as u64);
        for step in 1..=steps {
            let slot = (self.head.wrapping_add(step) % BUCKETS as u64) as usize;
            self.buckets[slot] = Bucket::default();
        }
        self.head = self.head.max(index);
    }
}
