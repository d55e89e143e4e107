//! A keyed GCRA limiter whose key table stays bounded.
//!
//! Governor's keyed limiters keep one entry per key ever seen. Under a flood
//! of distinct keys (spoofed headers, many IPs) that is unbounded memory, so
//! every check counts itself and, every [`PRUNE_EVERY_CHECKS`] checks or
//! [`PRUNE_INTERVAL`] of time (whichever comes first), one caller runs
//! `retain_recent` + `shrink_to_fit`: entries whose bucket is full again are
//! indistinguishable from absent ones and go. The table then holds at most
//! the keys seen since the last prune plus the keys still inside their burst
//! window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::key::{LimitKey, PreHashed};
use crate::FilterMetrics;
use crate::governor_clock::TokioClock;

/// Prune after this many checks even if the interval has not passed, which
/// bounds the table under a flood of distinct keys.
pub(crate) const PRUNE_EVERY_CHECKS: u64 = 16 * 1024;

/// Prune at least this often while checks arrive.
pub(crate) const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

type Limiter = RateLimiter<LimitKey, DashMapStateStore<LimitKey, PreHashed>, TokioClock, NoOpMiddleware<Nanos>>;

/// A keyed GCRA limiter with self-pruning.
#[derive(Debug)]
pub(crate) struct KeyedGcra {
    limiter: Limiter,
    clock: TokioClock,
    checks: AtomicU64,
    next_prune: AtomicU64,
    pruning: AtomicBool,
    metrics: Arc<dyn FilterMetrics>,
}

impl KeyedGcra {
    pub(crate) fn new(quota: Quota, metrics: Arc<dyn FilterMetrics>) -> Self {
        let clock = TokioClock::new();
        Self {
            limiter: RateLimiter::dashmap_with_clock_and_hasher(quota, clock, PreHashed),
            clock,
            checks: AtomicU64::new(0),
            next_prune: AtomicU64::new(nanos(PRUNE_INTERVAL)),
            pruning: AtomicBool::new(false),
            metrics,
        }
    }

    /// Admits one cell for `key`, or says how long until one would conform.
    pub(crate) fn check(&self, key: &LimitKey) -> Result<(), Duration> {
        let result = self
            .limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()));
        self.maybe_prune();
        result
    }

    /// The number of keys in the table.
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Drops every key whose bucket is full again and releases the memory.
    pub(crate) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.metrics.rate_limit_keys(self.limiter.len());
    }

    fn maybe_prune(&self) {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.clock.now().as_u64();
        let due = checks.is_multiple_of(PRUNE_EVERY_CHECKS) || now >= self.next_prune.load(Ordering::Relaxed);
        // One pruner at a time; the others carry on without waiting.
        if !due || self.pruning.swap(true, Ordering::Acquire) {
            return;
        }
        self.next_prune
            .store(now.saturating_add(nanos(PRUNE_INTERVAL)), Ordering::Relaxed);
        self.prune();
        self.pruning.store(false, Ordering::Release);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A GCRA quota of `rate` cells per second with bursts of `burst`, checked
/// and named after the config parameters `rate_param` and `burst_param`.
pub(crate) fn quota(
    rate_param: &'static str,
    rate: f64,
    burst_param: &'static str,
    burst: u32,
) -> Result<Quota, crate::InvalidParam> {
    use crate::InvalidParam;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(InvalidParam::new(rate_param, format!("must be > 0 (got {rate})")));
    }
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .filter(|p| !p.is_zero())
        .ok_or_else(|| InvalidParam::new(rate_param, format!("is out of range (got {rate})")))?;
    let burst =
        std::num::NonZeroU32::new(burst).ok_or_else(|| InvalidParam::new(burst_param, "must be >= 1 (got 0)"))?;
    let quota = Quota::with_period(period)
        .ok_or_else(|| InvalidParam::new(rate_param, format!("is out of range (got {rate})")))?;
    Ok(quota.allow_burst(burst))
}
