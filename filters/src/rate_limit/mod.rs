//! Rate limiting by agent: requests per second (a tower layer), WebSocket
//! messages per second and concurrent sessions (handles the gateway's
//! relay calls).
//!
//! # Where it sits
//!
//! After auth (so [`KeySource::ApiKey`] can key on the
//! [`crate::AgentIdentity`] auth inserted) and before anything that costs
//! upstream work. The WebSocket relay checks [`SessionLimiter`] before the
//! upgrade and [`SessionMessages::admit`] per agent message.
//!
//! # How it works
//!
//! Each limit is a GCRA (generic cell rate algorithm, from `governor`) per
//! [`LimitKey`]: a sustained rate with a burst allowance, a few dozen
//! bytes of state per key, no background task. Keys are keyed hashes
//! of what identifies the agent, so raw API keys are never stored. Key
//! tables prune themselves (see `keyed.rs`) so memory stays bounded under
//! millions of distinct keys. All state sits behind `Arc`: clones of a
//! layer or limiter share it, and a reloaded stack keeps it by reusing the
//! [`RequestLimiter`].
//!
//! A request without its configured key (header missing, no API key) is
//! limited by its client IP instead — leaving the header out never escapes
//! the limit.
//!
//! # How it fails
//!
//! - HTTP: [`RateLimited`] with [`RateLimited::retry_after`] → 429 +
//!   `Retry-After`. The inner service is not called.
//! - WebSocket messages: an excess message is delayed until it conforms; a
//!   session held back for more than `max_delay` in a row fails with
//!   [`MessageRateExceeded`] → close 1008.
//! - Sessions: [`TooManySessions`] → 429 before the upgrade / close 1008.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

use crate::{BoxError, FilterMetrics};

mod error;
pub mod global;
mod key;
mod keyed;
mod layer;
mod message;
mod session;

#[cfg(test)]
mod tests;

pub use crate::future::ResponseFuture;
pub use error::{MessageRateExceeded, MessageScope, RateLimited, TooManySessions};
pub use key::{GlobalKey, KeySource, LimitKey};
pub(crate) use key::{X_API_KEY, presented_api_key};
pub use layer::{RateLimitLayer, RateLimitParams};
pub use message::{Admission, MessageLimitParams, MessageLimiter, SessionMessages};
pub use session::{SessionLimitParams, SessionLimiter, SessionPermit};

use keyed::KeyedGcra;

/// The shared state of a request rate limit: the key source and one GCRA
/// bucket per key. Cheap to clone; clones share the buckets.
#[derive(Clone, Debug)]
pub struct RequestLimiter {
    inner: Arc<LimiterInner>,
}

#[derive(Debug)]
struct LimiterInner {
    key: KeySource,
    gcra: KeyedGcra,
    metrics: Arc<dyn FilterMetrics>,
}

impl RequestLimiter {
    /// A limiter with empty buckets.
    pub fn new(params: RateLimitParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        let gcra = KeyedGcra::new(params.quota, metrics.clone());
        Self {
            inner: Arc::new(LimiterInner {
                key: params.key,
                gcra,
                metrics,
            }),
        }
    }

    /// Admits `req` or says when its key may send again.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), RateLimited> {
        self.check_key(&self.inner.key.key_for(req))
    }

    /// Admits one request for `key` (from [`Self::key_source`]).
    pub fn check_key(&self, key: &LimitKey) -> Result<(), RateLimited> {
        self.inner.gcra.check(key).map_err(|wait| {
            self.inner.metrics.rate_limited();
            RateLimited::new(wait)
        })
    }

    /// What this limiter keys requests by.
    pub fn key_source(&self) -> &KeySource {
        &self.inner.key
    }

    /// How many keys the limiter currently tracks.
    pub fn tracked_keys(&self) -> usize {
        self.inner.gcra.len()
    }

    /// Prunes idle keys now (it also happens on its own as checks arrive).
    pub fn prune(&self) {
        self.inner.gcra.prune();
    }
}

/// Rejects requests over their key's rate with [`RateLimited`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RequestLimiter,
}

impl<S> RateLimit<S> {
    /// Wraps `inner` with `limiter`.
    pub fn new(inner: S, limiter: RequestLimiter) -> Self {
        Self { inner, limiter }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the inner service's: the rate decision is per request
        // (per key), so it is made in `call`.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.limiter.check(&req) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(limited) => ResponseFuture::rejected(limited),
        }
    }
}
