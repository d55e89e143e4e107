//! Authentication per route: API keys (stored hashed) or mTLS identities.
//!
//! # Where it sits
//!
//! First in a route's stack: nothing upstream of it should spend work on an
//! unauthenticated request. On success it inserts [`crate::AgentIdentity`]
//! (the *name* of the matching key, or the peer identity) for the filters
//! after it — the rate limiter keyed by `api-key` uses it — and removes the
//! verified API key header so the gateway's keys never reach an upstream.
//! The WebSocket path calls [`Authenticator::authenticate`] (or
//! [`Authenticator::admit_parts`]) before the upgrade with the same result
//! type.
//!
//! # How it works
//!
//! Keys are configured as `sha256:<hex>` ([`hash_api_key`] makes one; the
//! CLI exposes it as `agentmux hash-key`), so the config file never holds a
//! usable key. A presented key (`Authorization: Bearer <k>` or
//! `x-api-key: <k>`) is hashed and compared against every configured hash
//! in constant time with `subtle`, selecting the match without branching,
//! so timing reveals neither which key matched nor how close a guess came.
//! mTLS identities come from [`crate::PeerIdentity`], which the gateway only
//! inserts for verified certificates, and are checked against an
//! allow-list. Either credential suffices.
//!
//! # How it fails
//!
//! - [`Unauthenticated`] (no usable credential) → HTTP 401 / WS 1008.
//! - [`Forbidden`] (unknown key, identity not allowed) → HTTP 403 / WS 1008.
//!
//! The inner service is not called.

use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

use crate::BoxError;

mod authenticator;
mod error;
mod keys;
mod layer;
mod params;

#[cfg(test)]
mod tests;

pub use crate::future::ResponseFuture;
pub use authenticator::Authenticator;
pub use error::{AuthError, Forbidden, Unauthenticated};
pub use keys::{ApiKeyHash, hash_api_key};
pub use layer::AuthLayer;
pub use params::AuthParams;

/// Rejects requests without accepted credentials.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S> Auth<S> {
    /// Wraps `inner` with `authenticator`.
    pub fn new(inner: S, authenticator: Authenticator) -> Self {
        Self { inner, authenticator }
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

impl<S, B> Service<Request<B>> for Auth<S>
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.authenticator.admit(&mut req) {
            Ok(_) => ResponseFuture::inner(self.inner.call(req)),
            Err(rejected) => ResponseFuture::rejected(rejected.into_box_error()),
        }
    }
}
