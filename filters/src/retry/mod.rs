//! Retries with exponential backoff, full jitter and a retry budget.
//!
//! # Where it sits
//!
//! Inside the request timeout (one timeout bounds all attempts) and above
//! the circuit breaker and the cluster, so a retry can reach another
//! endpoint and a [`crate::circuit_breaker::CircuitOpen`] can be retried
//! elsewhere if the classifier says so.
//!
//! # How it works
//!
//! - **What is retried** is the [`RetryClassifier`]'s call; the
//!   [`DefaultClassifier`] retries idempotent requests answered with 502,
//!   503 or 504, and any request whose error the gateway marks as "never
//!   sent". A `101` upgrade is a success, so WebSockets are never retried
//!   after it.
//! - **Replay**: before each attempt the request is copied through
//!   [`ReplayableBody::try_clone`]; a body that cannot be copied (streaming,
//!   over the buffer limit) means the request is sent exactly once.
//! - **When**: [`Backoff`] delays — exponential, capped, with full jitter
//!   (uniform in `[0, min(cap, base · 2^n)]`) so that clients that failed
//!   together do not retry together. The gateway reuses [`Backoff`] for
//!   WebSocket and mux connect retries.
//! - **How much**: a [`RetryBudget`] shared by all clones. Every request
//!   deposits `ratio` of a retry and every retry withdraws one, over a
//!   sliding `ttl`, plus a floor of `min_per_sec`. A count limit alone
//!   multiplies load by `max_attempts` exactly when the upstream is failing;
//!   a budget caps the extra load at `ratio` whatever happens, so a down
//!   upstream sees roughly `(1 + ratio)×` its normal traffic, not `3×`.
//!
//! Retries and budget refusals are counted through
//! [`crate::FilterMetrics::retried`] and
//! [`crate::FilterMetrics::budget_exhausted`].
//!
//! # How it fails
//!
//! With the last attempt's result — response or error — unchanged. This
//! filter has no error of its own.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::{BoxError, FilterMetrics};

mod backoff;
mod body;
mod budget;
mod classify;
mod future;
mod layer;

#[cfg(test)]
mod tests;

pub use backoff::Backoff;
pub use body::ReplayableBody;
pub use budget::{RetryBudget, RetryBudgetParams};
pub use classify::{AttemptOutcome, DefaultClassifier, NeverSent, RetryClassifier, is_idempotent};
pub use future::ResponseFuture;
pub use layer::{RetryLayer, RetryParams};

/// State shared by a layer and every service and future it makes.
#[derive(Debug)]
struct Shared<C> {
    max_attempts: u32,
    backoff: Backoff,
    budget: RetryBudget,
    classifier: C,
    metrics: Arc<dyn FilterMetrics>,
}

/// Retries failed requests as the classifier, attempt limit and budget
/// allow.
#[derive(Debug)]
pub struct Retry<S, C = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, C: RetryClassifier> Retry<S, C> {
    /// Wraps `inner`; see [`RetryLayer::new`] for the arguments.
    pub fn new(
        inner: S,
        params: RetryParams,
        budget: RetryBudget,
        classifier: C,
        metrics: Arc<dyn FilterMetrics>,
    ) -> Self {
        tower_layer::Layer::layer(&RetryLayer::new(params, budget, classifier, metrics), inner)
    }
}

impl<S, C> Retry<S, C> {
    fn from_shared(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
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

impl<S, B, RB, C> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayableBody,
    C: RetryClassifier,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Every request pays into the budget, retried or not: the budget is
        // a fraction of all traffic.
        self.shared.budget.deposit();
        let spare = if self.shared.max_attempts > 1 {
            body::clone_request(&req)
        } else {
            None
        };
        if spare.is_none() {
            let future = self.inner.call(req);
            return ResponseFuture::new(future, None, None, self.shared.clone());
        }
        // The ready service takes this call; a fresh clone stays behind for
        // the next one. The future keeps the ready one for its retries.
        let fresh = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, fresh);
        let future = service.call(req);
        ResponseFuture::new(future, Some(service), spare, self.shared.clone())
    }
}
