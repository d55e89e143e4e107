//! Route stacks: each route's filters, in the order the route lists them,
//! around the route's mode (HTTP forwarding or the WebSocket upgrade).
//!
//! ```text
//! request → filters[0] → filters[1] → ... → mode (forward / upgrade) → pool
//! ```
//!
//! A circuit-breaker filter guards the route's cluster as a layer and, in
//! the mode, each endpoint (an endpoint whose circuit is open is skipped by
//! the balancer). Rate-limit filters with message or session limits also
//! hand those to WebSocket sessions. Filter state lives in [`FilterStates`]
//! so a reload that leaves a filter unchanged keeps its counters, buckets
//! and circuits.

mod body;
mod state;

use std::sync::Arc;

use agentmux_filters::auth::AuthLayer;
use agentmux_filters::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use agentmux_filters::rate_limit::global::GlobalRateLimitLayer;
use agentmux_filters::rate_limit::{KeySource, MessageLimiter, RateLimitLayer, SessionLimiter};
use agentmux_filters::timeout::{ResponseBodyTimeoutLayer, TimeoutLayer};
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

pub(crate) use body::ProxyBody;
pub(crate) use state::{BreakerSet, Built, FilterStates};

use crate::body::{Body, BoxError, boxed};
use crate::config::{Config, Mode, RouteConfig};
use crate::gateway::Sessions;
use crate::metrics::{Metrics, RouteMetrics};
use crate::upstream::Cluster;

/// A route's service, type-erased so stacks of any filter order fit.
pub(crate) type Svc = BoxCloneSyncService<Request<ProxyBody>, Response<Body>, BoxError>;

/// The agent's host as it asked for it, carried to the mode in the
/// request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct RequestHost(pub(crate) Option<String>);

/// Limits a rate-limit filter puts on WebSocket sessions.
#[derive(Clone, Default)]
pub(crate) struct WsLimits {
    pub(crate) sessions: Option<(KeySource, SessionLimiter)>,
    pub(crate) messages: Option<(KeySource, MessageLimiter)>,
}

/// What the mode at the bottom of a stack needs.
pub(crate) struct Terminal {
    pub(crate) route: Arc<RouteConfig>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) metrics: RouteMetrics,
    /// Per-endpoint circuits, aligned with the cluster's endpoints.
    pub(crate) endpoint_circuits: Option<(Vec<CircuitBreaker>, agentmux_filters::StatusSet)>,
    pub(crate) ws: WsLimits,
    pub(crate) sessions: Sessions,
    pub(crate) acquire: crate::metrics::LatencyHistogram,
    /// Count WebSocket messages as they flow (`[telemetry] message_metrics`).
    pub(crate) message_metrics: bool,
}

/// One route, ready to serve.
pub(crate) struct RouteStack {
    pub(crate) terminal: Arc<Terminal>,
    service: Svc,
    /// Buffer request bodies up to this size so retries can resend them.
    pub(crate) replay_limit: Option<usize>,
}

impl RouteStack {
    /// A clone of the route's service for one request.
    pub(crate) fn service(&self) -> Svc {
        self.service.clone()
    }

    /// Builds the stack of `route` over `cluster`.
    pub(crate) fn build(
        route: &RouteConfig,
        cluster: Arc<Cluster>,
        config: &Config,
        states: &FilterStates,
        metrics: &Metrics,
        sessions: &Sessions,
    ) -> Result<Self, String> {
        let mut built = Vec::new();
        for name in &route.filters {
            let fc = config
                .filters
                .get(name)
                .ok_or_else(|| format!("routes.{}: no filter {name}", route.name))?;
            built.push(states.get(name, fc)?);
        }
        let mut ws = WsLimits::default();
        let mut replay_limit = None;
        let mut endpoint_circuits = None;
        for b in &built {
            match &**b {
                Built::RateLimit(r) => {
                    if ws.sessions.is_none() {
                        ws.sessions = r.sessions.clone().map(|s| (r.key.clone(), s));
                    }
                    if ws.messages.is_none() {
                        ws.messages = r.messages.clone().map(|m| (r.key.clone(), m));
                    }
                }
                Built::Retry { max_body, .. } => replay_limit = Some(*max_body),
                Built::Breaker(set) if endpoint_circuits.is_none() => {
                    let circuits = cluster
                        .endpoints()
                        .iter()
                        .map(|e| set.circuit(&format!("endpoint:{}/{}", cluster.name(), e.label())))
                        .collect();
                    endpoint_circuits = Some((circuits, set.statuses));
                }
                _ => {}
            }
        }
        let terminal = Arc::new(Terminal {
            route: Arc::new(route.clone()),
            metrics: metrics.route(&route.name),
            acquire: metrics.acquire(cluster.name()),
            cluster: cluster.clone(),
            endpoint_circuits,
            ws,
            sessions: sessions.clone(),
            message_metrics: config.message_metrics,
        });
        let mut service = mode_service(terminal.clone());
        for b in built.iter().rev() {
            service = wrap(service, b, cluster.name());
        }
        Ok(Self {
            terminal,
            service,
            replay_limit,
        })
    }
}

fn mode_service(t: Arc<Terminal>) -> Svc {
    let svc = tower::service_fn(move |req: Request<ProxyBody>| {
        let t = t.clone();
        async move {
            let result = match t.route.mode() {
                Mode::Http => crate::proxy::forward(&t, req).await,
                Mode::WebSocket => crate::ws::session(&t, req).await,
                Mode::Mux => crate::mux_bridge::session(&t, req).await,
            };
            result.map_err(BoxError::from)
        }
    });
    BoxCloneSyncService::new(svc)
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

/// An endpoint chosen for one request or session, with its circuit's
/// permit when the route has a circuit breaker.
pub(crate) struct Picked {
    pub(crate) endpoint: Arc<crate::upstream::Endpoint>,
    permit: Option<agentmux_filters::circuit_breaker::Permit>,
    statuses: Option<agentmux_filters::StatusSet>,
}

impl Picked {
    /// Tells the endpoint's circuit how it went: an error, or a status.
    pub(crate) fn record(self, status: Option<http::StatusCode>) {
        use agentmux_filters::circuit_breaker::Outcome;
        if let Some(p) = self.permit {
            let failed = match (status, &self.statuses) {
                (Some(s), Some(set)) => set.contains(s),
                (Some(_), None) => false,
                (None, _) => true,
            };
            p.record(if failed { Outcome::Failure } else { Outcome::Success });
        }
    }
}

impl Terminal {
    /// Picks `preferred` (an endpoint label, from the session registry)
    /// when it is in this cluster and can take work — not drained or
    /// ejected, its circuit not open — else as [`Terminal::pick`] does.
    pub(crate) fn pick_preferring(
        &self,
        preferred: Option<&str>,
        key: Option<u64>,
    ) -> Result<Picked, crate::error::ProxyError> {
        if let Some(label) = preferred
            && let Some(i) = self.cluster.endpoints().iter().position(|e| e.label() == label)
            && let Some(p) = self.pick_index(i)
        {
            return Ok(p);
        }
        self.pick(key)
    }

    fn pick_index(&self, i: usize) -> Option<Picked> {
        let endpoint = self.cluster.endpoints().get(i)?;
        if endpoint.is_drained() || endpoint.is_ejected() {
            return None;
        }
        let (permit, statuses) = match &self.endpoint_circuits {
            None => (None, None),
            Some((circuits, statuses)) => match circuits.get(i) {
                Some(c) => (Some(c.check().ok()?), Some(*statuses)),
                None => (None, Some(*statuses)),
            },
        };
        Some(Picked {
            endpoint: endpoint.clone(),
            permit,
            statuses,
        })
    }

    /// Picks an endpoint: the balancer's choice among endpoints whose
    /// circuit lets requests through. All circuits open → `CircuitOpen`.
    pub(crate) fn pick(&self, key: Option<u64>) -> Result<Picked, crate::error::ProxyError> {
        use crate::error::{Cause, ProxyError};
        let Some((circuits, statuses)) = &self.endpoint_circuits else {
            let endpoint = self.cluster.pick(key)?.clone();
            return Ok(Picked {
                endpoint,
                permit: None,
                statuses: None,
            });
        };
        let allowed = |i: usize| {
            circuits
                .get(i)
                .is_none_or(|c| c.state() != agentmux_filters::circuit_breaker::CircuitState::Open)
        };
        let (i, endpoint) = self
            .cluster
            .pick_where(key, allowed)
            .ok_or_else(|| ProxyError::new(Cause::CircuitOpen, "every endpoint's circuit is open"))?;
        let permit = match circuits.get(i).map(CircuitBreaker::check) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => return Err(ProxyError::new(Cause::CircuitOpen, "endpoint circuit is open").with_source(e)),
            None => None,
        };
        Ok(Picked {
            endpoint: endpoint.clone(),
            permit,
            statuses: Some(*statuses),
        })
    }
}
