//! Tower layers for agentmux routes: rate limiting, circuit breaking,
//! jittered retries with a budget, timeouts, auth and load shedding.
//!
//! # Where this crate sits
//!
//! The gateway builds one tower stack per route from the route's
//! `[filters.*]` entries, in the order the route lists them. The usual order
//! reads top to bottom like this:
//!
//! ```text
//! auth → rate limit → trace → timeout → retry → circuit breaker → cluster
//! ```
//!
//! Every layer here is generic over `http::Request<B>` and returns
//! `Result<http::Response<RB>, BoxError>`. This crate has no dependency on
//! the gateway: each layer takes a small `*Params` value with a validating
//! constructor (errors are [`InvalidParam`], naming the parameter) and a
//! [`FilterMetrics`] handle already bound to that filter's name.
//!
//! # How filters fail
//!
//! Each filter fails with a specific error noun — [`rate_limit::RateLimited`],
//! [`circuit_breaker::CircuitOpen`], [`timeout::Elapsed`],
//! [`timeout::IdleTimeout`], [`load_shed::Overloaded`],
//! [`auth::Unauthenticated`], [`auth::Forbidden`], ... — boxed as a
//! [`BoxError`] and never flattened into a string, so the gateway's edge can
//! `downcast_ref` the cause and pick the HTTP status or WebSocket close code
//! in one exhaustive `match`.
//!
//! # Request extensions
//!
//! The gateway inserts [`ClientAddr`] and, for mTLS listeners,
//! [`PeerIdentity`] into every request; [`auth`] adds [`AgentIdentity`] for
//! the filters after it (the rate limiter keys on it).
//!
//! # Shared state
//!
//! Layers hold their state behind `Arc`: clones of a layer (and the services
//! it builds) share one limiter, breaker or budget, and a reloaded route stack
//! can keep the state by reusing the layer value.

mod extensions;
mod future;
mod governor_clock;
mod metrics;
mod params;
mod status;

pub mod auth;
pub mod circuit_breaker;
pub mod load_shed;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

#[cfg(test)]
mod test_support;

pub use extensions::{AgentIdentity, ClientAddr, PeerIdentity};
pub use metrics::{AuthRejection, CountingMetrics, FilterMetrics, NoopMetrics, TimeoutKind};
pub use params::InvalidParam;
pub use status::StatusSet;

/// The error type every service in this crate returns.
///
/// Concrete causes stay typed inside the box: downcast with
/// `err.downcast_ref::<rate_limit::RateLimited>()` and friends.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
