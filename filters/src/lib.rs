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
//! # Example: one route's stack, and the edge
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use agentmux_filters::auth::{AuthLayer, AuthParams, Forbidden, Unauthenticated, hash_api_key};
//! use agentmux_filters::circuit_breaker::{BreakerParams, CircuitBreaker, CircuitBreakerLayer, CircuitOpen};
//! use agentmux_filters::load_shed::{LoadShedLayer, LoadShedParams, Overloaded};
//! use agentmux_filters::rate_limit::{RateLimitLayer, RateLimitParams, RateLimited};
//! use agentmux_filters::retry::{Backoff, DefaultClassifier, RetryBudget, RetryBudgetParams, RetryLayer, RetryParams};
//! use agentmux_filters::timeout::{Elapsed, TimeoutLayer, TimeoutParams};
//! use agentmux_filters::{BoxError, FilterMetrics, NoopMetrics};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // The gateway hands each layer a metrics handle bound to its filter.
//! let metrics: Arc<dyn FilterMetrics> = Arc::new(NoopMetrics);
//! let keys = [("ci", hash_api_key("sk-ci-0123456789"))];
//! let backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(1))?;
//! let breaker = CircuitBreaker::new(BreakerParams::default(), metrics.clone());
//!
//! let route = tower::ServiceBuilder::new()
//!     // who is calling
//!     .layer(AuthLayer::new(AuthParams::new(keys, [""; 0])?, metrics.clone()))
//!     // how fast each agent may call, keyed by the key's name
//!     .layer(RateLimitLayer::new(
//!         RateLimitParams::new("api-key".parse()?, 50.0, 100)?,
//!         metrics.clone(),
//!     ))
//!     // how much the route takes on at once (bodies included)
//!     .layer(LoadShedLayer::new(LoadShedParams::new(1024)?, metrics.clone()))
//!     // one deadline for the request and all its retries
//!     .layer(TimeoutLayer::new(TimeoutParams::new(Duration::from_secs(30))?, metrics.clone()))
//!     // jittered retries the budget pays for
//!     .layer(RetryLayer::new(
//!         RetryParams::new(3, backoff)?,
//!         RetryBudget::new(RetryBudgetParams::default()),
//!         DefaultClassifier::new(),
//!         metrics.clone(),
//!     ))
//!     // fail fast while the cluster is down
//!     .layer(CircuitBreakerLayer::new(breaker))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"hi"))))
//!     });
//!
//! let mut req = Request::new(Full::new(Bytes::new()));
//! req.headers_mut().insert("x-api-key", "sk-ci-0123456789".parse()?);
//! let result = route.oneshot(req).await;
//!
//! // The edge: one match over the typed causes.
//! let status = match result {
//!     Ok(res) => res.status(),
//!     Err(e) if e.is::<Unauthenticated>() => StatusCode::UNAUTHORIZED,
//!     Err(e) if e.is::<Forbidden>() => StatusCode::FORBIDDEN,
//!     Err(e) if e.is::<RateLimited>() => StatusCode::TOO_MANY_REQUESTS,
//!     Err(e) if e.is::<CircuitOpen>() || e.is::<Overloaded>() => StatusCode::SERVICE_UNAVAILABLE,
//!     Err(e) if e.is::<Elapsed>() => StatusCode::GATEWAY_TIMEOUT,
//!     Err(_) => StatusCode::BAD_GATEWAY,
//! };
//! assert_eq!(status, StatusCode::OK);
//! # Ok(())
//! # }
//! ```
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
mod assertions;
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
