//! The request rate-limit layer and its parameters.

use std::sync::Arc;

use tower_layer::Layer;

use super::{KeySource, RateLimit, RequestLimiter};
use crate::{FilterMetrics, InvalidParam};

/// Validated parameters of a request rate limit.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitParams {
    pub(super) key: KeySource,
    pub(super) requests_per_second: f64,
    pub(super) burst: u32,
    pub(super) quota: governor::Quota,
}

impl RateLimitParams {
    /// `requests_per_second` per key (fractions allowed, must be > 0) with
    /// bursts of up to `burst` requests (>= 1).
    pub fn new(key: KeySource, requests_per_second: f64, burst: u32) -> Result<Self, InvalidParam> {
        let quota = super::keyed::quota("requests_per_second", requests_per_second, "burst", burst)?;
        Ok(Self {
            key,
            requests_per_second,
            burst,
            quota,
        })
    }

    /// What the limit is keyed by.
    pub fn key(&self) -> &KeySource {
        &self.key
    }

    /// The sustained rate per key.
    pub fn requests_per_second(&self) -> f64 {
        self.requests_per_second
    }

    /// The burst size per key.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// Applies [`RateLimit`] to a service. Clones share one limiter.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RequestLimiter,
}

impl RateLimitLayer {
    /// A layer with a fresh limiter.
    pub fn new(params: RateLimitParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self::from_limiter(RequestLimiter::new(params, metrics))
    }

    /// A layer over an existing limiter, e.g. to keep per-key state across a
    /// config reload that did not change this filter.
    pub fn from_limiter(limiter: RequestLimiter) -> Self {
        Self { limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RequestLimiter {
        &self.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::new(inner, self.limiter.clone())
    }
}
