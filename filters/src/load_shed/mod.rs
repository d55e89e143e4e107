//! Load shedding: a bound on the requests a route has in flight.
//!
//! # Where it sits
//!
//! Early in a route's stack (after auth and rate limiting), so that an
//! overloaded route refuses work before it spends any upstream capacity.
//!
//! # How it works
//!
//! Each request takes a slot from a semaphore shared by every clone of the
//! layer. The slot moves from the request into the response body
//! ([`InFlightBody`]) and is released only when the body ends, fails or is
//! dropped: a streaming (SSE) response counts as in flight for as long as
//! it streams, which is the work that actually occupies the upstream. A
//! WebSocket upgrade's `101` has an empty body, so the session itself is not
//! counted here — sessions are bounded by the session limiter and pool.
//!
//! There is no queue: waiting for a slot would only add latency to a route
//! that is already saturated.
//!
//! # How it fails
//!
//! [`Overloaded`] at once when all slots are taken → HTTP 503 / WS 1013.
//! The inner service is not called.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::BoxError;

mod body;
mod error;
mod future;
mod layer;

#[cfg(test)]
mod tests;

pub use body::InFlightBody;
pub use error::Overloaded;
pub use future::ResponseFuture;
pub use layer::{LoadShedLayer, LoadShedParams};

/// Refuses requests beyond the route's in-flight limit with [`Overloaded`].
#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    inner: S,
    shared: LoadShedLayer,
}

impl<S> LoadShed<S> {
    /// Wraps `inner`; the slots are those of `layer` (and all its clones).
    pub fn new(inner: S, layer: LoadShedLayer) -> Self {
        Self { inner, shared: layer }
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

impl<S, B, RB> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<InFlightBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.shared.slots.clone().try_acquire_owned() {
            Ok(permit) => ResponseFuture::new(self.inner.call(req), permit),
            Err(_) => {
                self.shared.metrics.shed();
                ResponseFuture::rejected(Overloaded::new(self.shared.limit))
            }
        }
    }
}
