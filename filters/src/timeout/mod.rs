//! Timeouts: to response headers, and between frames of a streaming body.
//!
//! # Where it sits
//!
//! Outside retry (so one timeout bounds a request and all its retries) and
//! inside auth and rate limiting. Connect timeouts belong to the gateway's
//! pool; [`with_timeout`] gives them the same [`Elapsed`] error.
//!
//! # How it works
//!
//! [`Timeout`] races the inner future against a timer and stops at the
//! response *headers*. That is also all tower-http's `TimeoutLayer` does,
//! and deliberately so: an SSE or chunked stream may legitimately last for
//! hours. Streams are bounded by going quiet instead: [`ResponseBodyTimeout`]
//! wraps the response body in a [`TimeoutBody`], which fails if no frame
//! arrives within the idle duration and restarts its timer on every frame.
//! Timers use tokio's clock, so tests run them with paused time.
//!
//! # How it fails
//!
//! - [`Elapsed`]: no headers in time → HTTP 504 / WS 1011. The inner future
//!   is dropped, which cancels the upstream request.
//! - [`IdleTimeout`]: the body stream ends with this error; the headers are
//!   already out, so the gateway resets the stream.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower_service::Service;

use crate::{BoxError, FilterMetrics};

mod body;
mod error;
mod future;
mod layer;

#[cfg(test)]
mod tests;

pub use body::TimeoutBody;
pub use error::{Elapsed, IdleTimeout};
pub use future::{ResponseBodyFuture, ResponseFuture};
pub use layer::{IdleTimeoutParams, ResponseBodyTimeoutLayer, TimeoutLayer, TimeoutParams};

/// Runs `future` for at most `after`, failing with [`Elapsed`] — for
/// timeouts outside tower, such as upstream connects.
pub async fn with_timeout<F: Future>(after: Duration, future: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(after, future)
        .await
        .map_err(|_| Elapsed::new(after))
}

/// Fails a request with [`Elapsed`] if its response headers take longer
/// than the request timeout.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    params: TimeoutParams,
    metrics: Arc<dyn FilterMetrics>,
}

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, params: TimeoutParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self { inner, params, metrics }
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

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let after = self.params.request();
        ResponseFuture::new(self.inner.call(req), after, self.metrics.clone())
    }
}

/// Wraps response bodies in [`TimeoutBody`], failing streams that go quiet
/// for longer than the idle timeout.
#[derive(Clone, Debug)]
pub struct ResponseBodyTimeout<S> {
    inner: S,
    params: IdleTimeoutParams,
    metrics: Arc<dyn FilterMetrics>,
}

impl<S> ResponseBodyTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, params: IdleTimeoutParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self { inner, params, metrics }
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

impl<S, B, RB> Service<Request<B>> for ResponseBodyTimeout<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TimeoutBody<RB>>;
    type Error = BoxError;
    type Future = ResponseBodyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let idle = self.params.idle();
        ResponseBodyFuture::new(self.inner.call(req), idle, self.metrics.clone())
    }
}
