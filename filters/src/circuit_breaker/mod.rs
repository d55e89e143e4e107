//! Circuit breaking per cluster and per endpoint.
//!
//! # Where it sits
//!
//! Innermost in a route's stack, just above the cluster (so retries see
//! [`CircuitOpen`] and can move on), and once per endpoint inside the load
//! balancer. The gateway creates one [`CircuitBreaker`] per cluster and one
//! per endpoint and also uses the handle directly, outside tower, for
//! WebSocket and mux connects: `breaker.check()?` → connect →
//! `permit.record(..)`.
//!
//! # How it works
//!
//! - **Closed**: requests pass. The circuit opens after
//!   `consecutive_failures` failures in a row, or when the failure rate over
//!   a sliding `window` reaches `failure_rate` once the window holds
//!   `min_requests` requests.
//! - **Open**: requests fail fast with [`CircuitOpen`]. After the open
//!   duration — `open_duration`, doubled for each failed probe in a row,
//!   capped at `max_open_duration`, jittered down by up to 25% so breakers
//!   that opened together do not probe together — it goes half-open.
//! - **HalfOpen**: `half_open_probes` requests pass as probes; others fail
//!   fast. If every probe succeeds the circuit closes (and the backoff
//!   resets); one failed probe reopens it.
//!
//! The state machine lives in **one task** that owns it (`controller.rs`).
//! The request path never locks or waits: [`CircuitBreaker::check`] reads
//! the gate, an atomic word the controller publishes (state, probe slots
//! and an epoch), and [`Permit::record`] sends the outcome over a bounded
//! channel with `try_send`. When that channel is full the outcome is
//! dropped and counted ([`CircuitBreaker::dropped_outcomes`]): losing a
//! sample is better than blocking a request on a controller. Outcomes are
//! tagged with the epoch their permit came from, so a slow request admitted
//! before the circuit opened cannot close it later. Observers read
//! [`CircuitBreaker::state`] or [`CircuitBreaker::subscribe`].
//!
//! A dropped [`Permit`] counts as neither success nor failure (see its
//! docs). The tower layer classifies a response at its headers: an `Err` or
//! a status in the failure set (default 502, 503, 504) is a failure; a body
//! that fails later is not seen by the breaker.
//!
//! # How it fails
//!
//! [`CircuitOpen`] → HTTP 503 / WebSocket 1013. The inner service is not
//! called.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::{BoxError, StatusSet};

mod controller;
mod error;
mod future;
mod gate;
mod handle;
mod layer;
mod params;
mod window;

#[cfg(test)]
mod tests;

pub use error::CircuitOpen;
pub use future::ResponseFuture;
pub use handle::{CircuitBreaker, Outcome, Permit};
pub use layer::CircuitBreakerLayer;
pub use params::BreakerParams;

/// The state of a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CircuitState {
    /// Requests pass; outcomes are counted.
    Closed = 0,
    /// Requests fail fast.
    Open = 1,
    /// A few probe requests pass; their outcome decides.
    HalfOpen = 2,
}

impl CircuitState {
    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// A lowercase name for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Fails fast with [`CircuitOpen`] while the breaker is open, and reports
/// every outcome to it.
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
    failures: StatusSet,
}

impl<S> CircuitBreakerService<S> {
    /// Wraps `inner`; responses with a status in `failures` count as
    /// failures.
    pub fn new(inner: S, breaker: CircuitBreaker, failures: StatusSet) -> Self {
        Self {
            inner,
            breaker,
            failures,
        }
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

impl<S, B, RB> Service<Request<B>> for CircuitBreakerService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The gate is checked per request in `call`: an open circuit must
        // fail requests fast, not make callers wait for readiness.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.breaker.check() {
            Ok(permit) => ResponseFuture::new(self.inner.call(req), permit, self.failures),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
