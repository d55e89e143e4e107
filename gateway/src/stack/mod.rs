//! Route stacks: each route's filters, in the order the route lists them,
//! around the route's session kind (HTTP forwarding, a WebSocket relay, a
//! mux session).
//!
//! ```text
//! request → filters[0] → filters[1] → ... → kind (proxy | ws | mux_bridge)
//!                                             → endpoint layer → pool
//! ```
//!
//! Each kind gets its own small params ([`HttpRoute`], [`WsRoute`],
//! [`MuxRoute`]), built here once per route. A circuit-breaker filter
//! guards the route's cluster as a layer and, through the endpoint layer,
//! each endpoint (an endpoint whose circuit is open is skipped by the
//! balancer). Rate-limit filters with message or session limits hand those
//! to the session kinds. Filter state lives in [`FilterStates`]
//! so a reload that leaves a filter unchanged keeps its counters, buckets
//! and circuits.

mod state;

use std::sync::Arc;

use agentmux_filters::auth::AuthLayer;
use agentmux_filters::circuit_breaker::CircuitBreakerLayer;
use agentmux_filters::rate_limit::RateLimitLayer;
use agentmux_filters::rate_limit::global::GlobalRateLimitLayer;
use agentmux_filters::timeout::{ResponseBodyTimeoutLayer, TimeoutLayer};
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

pub use state::StackError;
pub(crate) use state::{BreakerSet, Built, FilterStates};

use crate::body::{Body, BoxError, ProxyBody, boxed};
use crate::config::{Config, Mode, RouteConfig};
use crate::endpoint::EndpointLayer;
use crate::error::{Cause, ProxyError};
use crate::metrics::{Metrics, RouteMetrics};
use crate::mux_bridge::{MuxCluster, MuxRoute};
use crate::proxy::HttpRoute;
use crate::session::{SessionCtx, SessionLimits};
use crate::upstream::Cluster;
use crate::ws::WsRoute;

/// A route's service, type-erased so stacks of any filter order fit.
pub(crate) type Svc = BoxCloneSyncService<Request<ProxyBody>, Response<Body>, BoxError>;

/// One route, ready to serve.
pub(crate) struct RouteStack {
    service: Svc,
    /// The route's name.
    pub(crate) name: Arc<str>,
    /// Its cluster's pool-acquire histogram (the analytics engine reads it).
    pub(crate) acquire: crate::metrics::LatencyHistogram,
    /// The route's metric handles (the request path counts answers).
    pub(crate) metrics: RouteMetrics,
    /// Keep request bodies up to this size as they stream, so retries can
    /// resend them (a retry filter is on the route).
    pub(crate) replay_limit: Option<usize>,
}

/// What building a route's stack needs besides the route.
pub(crate) struct StackCtx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) states: &'a FilterStates,
    pub(crate) metrics: &'a Metrics,
    pub(crate) sessions: &'a SessionCtx,
}

impl RouteStack {
    /// A clone of the route's service for one request.
    pub(crate) fn service(&self) -> Svc {
        self.service.clone()
    }

    /// Builds the stack of `route` over `cluster` (and its mux
    /// connections, for a mux route).
    pub(crate) fn build(
        route: &RouteConfig,
        cluster: Arc<Cluster>,
        mux: Option<Arc<MuxCluster>>,
        ctx: &StackCtx<'_>,
    ) -> Result<Self, StackError> {
        let mut built = Vec::new();
        for name in &route.filters {
            let fc = ctx.config.filters.get(name).ok_or_else(|| StackError::NoFilter {
                route: route.name.clone(),
                filter: name.clone(),
            })?;
            built.push(ctx.states.get(name, fc)?);
        }
        // What the filters hand to the session kind besides wrapping it: a
        // rate limit's session and message limiters, a retry's body bound,
        // a breaker's per-endpoint circuits.
        let mut limits = SessionLimits::default();
        let mut replay_limit = None;
        let mut circuits = None;
        for b in &built {
            match &**b {
                Built::RateLimit(r) => {
                    if limits.sessions.is_none() {
                        limits.sessions = r.sessions.clone().map(|s| (r.key.clone(), s));
                    }
                    if limits.messages.is_none() {
                        limits.messages = r.messages.clone().map(|m| (r.key.clone(), m));
                    }
                }
                Built::Retry { max_body, .. } => replay_limit = Some(*max_body),
                Built::Breaker(set) if circuits.is_none() => circuits = Some(set.endpoint_circuits(&cluster)),
                _ => {}
            }
        }
        let metrics = ctx.metrics.route(&route.name);
        let registry = ctx.sessions.registry.clone().map(|r| (r, route.name.clone()));
        let endpoints = EndpointLayer::new(cluster.clone(), circuits, ctx.metrics.acquire(cluster.name()), registry);
        let kind = match route.mode() {
            Mode::Http => Kind::Http(Arc::new(HttpRoute {
                endpoints,
                request_timeout: route.request_timeout,
                first_byte: metrics.first_byte_seconds.clone(),
            })),
            Mode::WebSocket => Kind::WebSocket(Arc::new(WsRoute {
                name: route.name.clone(),
                endpoints,
                limits,
                relay: crate::ws::relay::RelayParams::for_route(&route.websocket),
                handshake_timeout: route.websocket.handshake_timeout,
                sessions: ctx.sessions.clone(),
                metrics: metrics.clone(),
                message_metrics: ctx.config.message_metrics,
            })),
            Mode::Mux => Kind::Mux(Arc::new(MuxRoute {
                name: route.name.clone(),
                endpoints,
                mux: mux.ok_or_else(|| StackError::NoMux {
                    route: route.name.clone(),
                })?,
                limits,
                max_message: route.websocket.max_message_bytes,
                keepalive: route.websocket.keepalive_interval,
                handshake_timeout: route.websocket.handshake_timeout,
                window_bytes: cluster.config().mux.window_bytes,
                sessions: ctx.sessions.clone(),
                metrics: metrics.clone(),
            })),
        };
        let mut service = kind.into_service();
        for b in built.iter().rev() {
            service = wrap(service, b, cluster.name());
        }
        Ok(Self {
            service,
            name: route.name.clone(),
            acquire: ctx.metrics.acquire(cluster.name()),
            metrics,
            replay_limit,
        })
    }
}

/// The session kind at the bottom of a route's stack, with its params.
#[derive(Clone)]
enum Kind {
    Http(Arc<HttpRoute>),
    WebSocket(Arc<WsRoute>),
    Mux(Arc<MuxRoute>),
}

impl Kind {
    fn into_service(self) -> Svc {
        let svc = tower::service_fn(move |req: Request<ProxyBody>| {
            let kind = self.clone();
            async move {
                let result = match &kind {
                    // An HTTP/2 WebSocket stream has nothing to forward as a
                    // request (an HTTP/1.1 upgrade here is a plain request:
                    // the edge took its `Upgrade` off).
                    Self::Http(_) if crate::session::upgrade::is_extended_connect(&req) => Err(ProxyError::new(
                        Cause::UnsupportedProtocol,
                        "this route takes no WebSocket sessions",
                    )),
                    Self::Http(r) => crate::proxy::forward(r, req).await,
                    Self::WebSocket(r) => crate::ws::session(r, req).await,
                    Self::Mux(r) => crate::mux_bridge::session(r, req).await,
                };
                result.map_err(BoxError::from)
            }
        });
        BoxCloneSyncService::new(svc)
    }
}

/// Puts one filter around `svc`.
fn wrap(svc: Svc, built: &Built, cluster: &str) -> Svc {
    match built {
        Built::RateLimit(r) => match (&r.requests, &r.global) {
            (Some(l), _) => BoxCloneSyncService::new(RateLimitLayer::from_limiter(l.clone()).layer(svc)),
            (None, Some(g)) => BoxCloneSyncService::new(GlobalRateLimitLayer::from_limiter(g.clone()).layer(svc)),
            (None, None) => svc,
        },
        Built::Breaker(set) => {
            let layer = CircuitBreakerLayer::new(set.circuit(&format!("cluster:{cluster}")))
                .with_failure_statuses(set.statuses);
            BoxCloneSyncService::new(layer.layer(svc))
        }
        Built::Retry { layer, .. } => BoxCloneSyncService::new(layer.clone().layer(svc)),
        Built::Timeout { request, idle, metrics } => {
            let mut s = svc;
            if let Some(i) = idle {
                let l = ResponseBodyTimeoutLayer::new(*i, metrics.clone());
                s = BoxCloneSyncService::new(l.layer(s).map_response(|r| r.map(boxed)));
            }
            if let Some(r) = request {
                s = BoxCloneSyncService::new(TimeoutLayer::new(*r, metrics.clone()).layer(s));
            }
            s
        }
        Built::Auth(layer) => BoxCloneSyncService::new(AuthLayer::clone(layer).layer(svc)),
        Built::LoadShed(layer) => BoxCloneSyncService::new(layer.clone().layer(svc).map_response(|r| r.map(boxed))),
    }
}
