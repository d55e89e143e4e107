//! The global rate-limit layer and its parameters.

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{GlobalLimiter, GlobalRateLimit, LeaseSource};
use crate::rate_limit::KeySource;
use crate::{FilterMetrics, InvalidParam};

/// Validated parameters of a rate limit shared by every gateway instance.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalLimitParams {
    pub(super) limit: Arc<str>,
    pub(super) key: KeySource,
    pub(super) rate: f64,
    pub(super) burst: u32,
    pub(super) lease_window: Duration,
}

impl GlobalLimitParams {
    /// `rate` requests per second per key across all instances (> 0), with
    /// bursts of `burst` (>= 1). `limit` names the shared buckets (the
    /// filter's name). Each instance leases about `lease_window` worth of
    /// its share of the rate at a time (see [`Self::with_lease_window`]).
    pub fn new(limit: &str, key: KeySource, rate: f64, burst: u32) -> Result<Self, InvalidParam> {
        // The same checks as a local limit, with the same parameter names.
        crate::rate_limit::keyed::quota("requests_per_second", rate, "burst", burst)?;
        Ok(Self {
            limit: limit.into(),
            key,
            rate,
            burst,
            lease_window: Duration::from_millis(100),
        })
    }

    /// How much of its share of the rate an instance leases at once,
    /// as time (default 100 ms, within 1 ms..=10 s). Longer windows mean
    /// fewer round trips to the store; shorter ones less skew between
    /// instances whose traffic changes.
    pub fn with_lease_window(mut self, window: Duration) -> Result<Self, InvalidParam> {
        if window < Duration::from_millis(1) || window > Duration::from_secs(10) {
            return Err(InvalidParam::new(
                "lease_window",
                format!("must be within 1ms..=10s (got {window:?})"),
            ));
        }
        self.lease_window = window;
        Ok(self)
    }

    /// What the limit is keyed by.
    pub fn key(&self) -> &KeySource {
        &self.key
    }

    /// Requests per second per key, all instances together.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Cells to lease at once when `instances` share the limit: the
    /// instance's share of the rate over the lease window, at least 1, at
    /// most the burst.
    pub fn lease_size(&self, instances: u32) -> u32 {
        let share = self.rate * self.lease_window.as_secs_f64() / f64::from(instances.max(1));
        (share.ceil() as u32).clamp(1, self.burst)
    }

    /// How long leased cells stay spendable: ten lease windows, at least
    /// one second. Cells not spent by then are dropped (the limit errs
    /// towards admitting less, never more).
    pub fn lease_ttl(&self) -> Duration {
        (self.lease_window * 10).max(Duration::from_secs(1))
    }
}

/// Applies [`GlobalRateLimit`] to a service. Clones share one limiter.
#[derive(Clone, Debug)]
pub struct GlobalRateLimitLayer {
    limiter: GlobalLimiter,
}

impl GlobalRateLimitLayer {
    /// A layer with a fresh limiter over `source`.
    pub fn new(params: GlobalLimitParams, source: Arc<dyn LeaseSource>, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self::from_limiter(GlobalLimiter::new(params, source, metrics))
    }

    /// A layer over an existing limiter (kept across a reload).
    pub fn from_limiter(limiter: GlobalLimiter) -> Self {
        Self { limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &GlobalLimiter {
        &self.limiter
    }
}

impl<S> Layer<S> for GlobalRateLimitLayer {
    type Service = GlobalRateLimit<S>;

    fn layer(&self, inner: S) -> GlobalRateLimit<S> {
        GlobalRateLimit::new(inner, self.limiter.clone())
    }
}
