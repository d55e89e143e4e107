//! The endpoint layer: the one place a request or session gets its
//! upstream endpoint, whatever its session kind.
//!
//! ```text
//! session kind ─▶ EndpointLayer::pick(target)
//!                   registry affinity (a reconnecting agent's endpoint)
//!                   → balancer over endpoints whose circuit is not open
//!                   → endpoint circuit permit
//!                 ◀─ EndpointGuard ─ acquire (timed) ─▶ pool
//!                   … the kind sends, then tells the guard how it went …
//!                 drop: passive health + circuit outcome recorded
//! ```
//!
//! The kinds (`proxy`, `ws`, `mux_bridge`) never call the balancer, the
//! circuits, passive health or the acquire histogram themselves: they hold
//! an [`EndpointGuard`] and say [`EndpointGuard::answered`],
//! [`EndpointGuard::refused`] or [`EndpointGuard::failed`]. A guard dropped
//! without an outcome (the agent went away first) reports nothing, so a
//! cancelled request never counts against an endpoint (a half-open probe's
//! slot is given back).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agentmux_filters::StatusSet;
use agentmux_filters::circuit_breaker::{CircuitBreaker, CircuitState, Outcome, Permit};
use http::{HeaderMap, StatusCode, header};
use tokio::time::Instant;

use crate::cluster_state::ClusterState;
use crate::config::HashKey;
use crate::error::{Cause, ProxyError};
use crate::metrics::LatencyHistogram;
use crate::pool::{HttpLease, RawLease};
use crate::upstream::{ActiveGuard, Cluster, Endpoint, hash_bytes};

/// Per-endpoint circuits of a route (from its first circuit-breaker
/// filter), aligned with the cluster's endpoints.
#[derive(Clone)]
pub(crate) struct EndpointCircuits {
    pub(crate) circuits: Vec<CircuitBreaker>,
    pub(crate) statuses: StatusSet,
}

/// One route's way to its cluster's endpoints.
pub(crate) struct EndpointLayer {
    cluster: Arc<Cluster>,
    circuits: Option<EndpointCircuits>,
    acquire: LatencyHistogram,
    /// The cross-instance session registry, for affinity, with the route
    /// name its entries carry.
    registry: Option<(Arc<ClusterState>, Arc<str>)>,
}

/// Where a request or session would like to go.
#[derive(Debug, Default)]
pub(crate) struct Target {
    /// The consistent-hash key's hash, when the cluster hashes and the
    /// request carries the key.
    pub(crate) key: Option<u64>,
    /// The agent's session id in the registry (`x-session-id` by
    /// default), when it sent a well-formed one and the route keeps
    /// session affinity.
    pub(crate) session: Option<String>,
}

impl EndpointLayer {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        circuits: Option<EndpointCircuits>,
        acquire: LatencyHistogram,
        registry: Option<(Arc<ClusterState>, Arc<str>)>,
    ) -> Self {
        Self {
            cluster,
            circuits,
            acquire,
            registry,
        }
    }

    /// The cluster behind the layer.
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// What a request asks for: its consistent-hash key and, with
    /// `affinity`, its registry session id.
    pub(crate) fn target(&self, headers: &HeaderMap, client: IpAddr, affinity: bool) -> Target {
        let key = self.cluster.hash_key().and_then(|k| hash_of(k, headers, client));
        let session = match (&self.registry, affinity) {
            (Some((registry, _)), true) => headers
                .get(registry.config().session_header())
                .filter(|v| crate::cluster_state::valid_session_id(v.as_bytes()))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            _ => None,
        };
        Target { key, session }
    }

    /// Picks an endpoint: the one the registry remembers for the agent's
    /// session (when it can take work), else the balancer's choice among
    /// endpoints whose circuit lets requests through. One registry lookup
    /// at most, skipped while Redis is down.
    pub(crate) async fn pick(&self, target: &Target) -> Result<EndpointGuard, ProxyError> {
        if let (Some(id), Some((registry, route))) = (&target.session, &self.registry)
            && registry.connected()
            && let Ok(Some(entry)) = registry.lookup_session(id).await
            && *entry.route == **route
            && let Some(i) = self
                .cluster
                .endpoints()
                .iter()
                .position(|e| e.label() == entry.endpoint)
            && let Some(guard) = self.pick_index(i)
        {
            return Ok(guard);
        }
        self.pick_balanced(target.key)
    }

    /// The endpoint labelled `label` whatever its rotation (drained,
    /// ejected or its circuit open): a session already living there (a
    /// takeover) continues where its state is, as sessions under way on a
    /// drained endpoint do.
    pub(crate) fn pinned(&self, label: &str) -> Option<EndpointGuard> {
        let endpoint = self.cluster.endpoints().iter().find(|e| e.label() == label)?;
        Some(self.guard(endpoint, None))
    }

    fn pick_index(&self, i: usize) -> Option<EndpointGuard> {
        let endpoint = self.cluster.endpoints().get(i)?;
        if endpoint.is_drained() || endpoint.is_ejected() {
            return None;
        }
        let permit = match &self.circuits {
            Some(c) => match c.circuits.get(i) {
                Some(circuit) => Some(circuit.check().ok()?),
                None => None,
            },
            None => None,
        };
        Some(self.guard(endpoint, permit))
    }

    fn pick_balanced(&self, key: Option<u64>) -> Result<EndpointGuard, ProxyError> {
        let Some(c) = &self.circuits else {
            let endpoint = self.cluster.pick(key)?.clone();
            return Ok(self.guard(&endpoint, None));
        };
        let allowed = |i: usize| {
            c.circuits
                .get(i)
                .is_none_or(|circuit| circuit.state() != CircuitState::Open)
        };
        let (i, endpoint) = self
            .cluster
            .pick_where(key, allowed)
            .ok_or_else(|| ProxyError::new(Cause::CircuitOpen, "every endpoint's circuit is open"))?;
        let permit = match c.circuits.get(i).map(CircuitBreaker::check) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => return Err(ProxyError::new(Cause::CircuitOpen, "endpoint circuit is open").with_source(e)),
            None => None,
        };
        Ok(self.guard(&endpoint.clone(), permit))
    }

    fn guard(&self, endpoint: &Arc<Endpoint>, permit: Option<Permit>) -> EndpointGuard {
        EndpointGuard {
            active: Some(endpoint.track()),
            endpoint: endpoint.clone(),
            permit,
            statuses: self.circuits.as_ref().map(|c| c.statuses),
            threshold: self.cluster.config().health.unhealthy_threshold,
            acquire: self.acquire.clone(),
            outcome: None,
        }
    }
}

/// How the endpoint did, as a session kind saw it.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// It answered with this status, after `latency` if known: healthy
    /// unless 5xx; the circuit judges the status.
    Answered(StatusCode, Option<Duration>),
    /// It answered, but refused (a WebSocket upgrade or mux session): alive
    /// for passive health, a failure for the circuit.
    Refused,
    /// No usable answer (connect, I/O, timeout): a failure for both.
    Failed,
}

/// The endpoint chosen for one request or session (see the module docs).
pub(crate) struct EndpointGuard {
    endpoint: Arc<Endpoint>,
    /// Counts the request or session in flight (least-connections, p2c);
    /// taken by whatever outlives the guard (a streaming body, a relay).
    active: Option<ActiveGuard>,
    permit: Option<Permit>,
    statuses: Option<StatusSet>,
    threshold: u32,
    acquire: LatencyHistogram,
    outcome: Option<Verdict>,
}

impl EndpointGuard {
    /// The endpoint.
    pub(crate) fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The endpoint's in-flight count, for what lives longer than the
    /// guard (the response body, the session's relay).
    pub(crate) fn take_active(&mut self) -> Option<ActiveGuard> {
        self.active.take()
    }

    /// The endpoint answered (see [`Verdict::Answered`]).
    pub(crate) fn answered(&mut self, status: StatusCode, latency: Option<Duration>) {
        self.outcome = Some(Verdict::Answered(status, latency));
    }

    /// The endpoint refused a session (see [`Verdict::Refused`]).
    pub(crate) fn refused(&mut self) {
        self.outcome = Some(Verdict::Refused);
    }

    /// No usable answer from the endpoint.
    pub(crate) fn failed(&mut self) {
        self.outcome = Some(Verdict::Failed);
    }

    /// Nothing is to be said about the endpoint after all (the agent was
    /// at fault): nothing is recorded.
    pub(crate) fn forget(&mut self) {
        self.outcome = None;
    }

    /// Records the time since `started` as one pool acquire.
    pub(crate) fn acquired(&self, started: Instant) {
        self.acquire.observe(started.elapsed());
    }

    /// An HTTP connection from the endpoint's pool, the wait timed; a
    /// failure is the endpoint's.
    pub(crate) async fn acquire_http(&mut self, fresh: bool) -> Result<HttpLease, ProxyError> {
        let started = Instant::now();
        let result = match self.endpoint.http.as_ref() {
            Some(pool) if fresh => pool.acquire_fresh_http().await,
            Some(pool) => pool.acquire_http().await,
            None => return Err(no_pool("HTTP")),
        };
        self.timed(started, result)
    }

    /// A connected transport for a WebSocket upgrade, the wait timed.
    pub(crate) async fn acquire_raw(&mut self, fresh: bool) -> Result<RawLease, ProxyError> {
        let started = Instant::now();
        let result = match self.endpoint.raw.as_ref() {
            Some(pool) => pool.acquire_raw(fresh).await,
            None => return Err(no_pool("WebSocket")),
        };
        self.timed(started, result)
    }

    fn timed<L>(&mut self, started: Instant, result: Result<L, crate::pool::AcquireError>) -> Result<L, ProxyError> {
        match result {
            Ok(lease) => {
                self.acquired(started);
                Ok(lease)
            }
            Err(e) => {
                self.failed();
                Err(e.into())
            }
        }
    }
}

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        let (alive, latency, status) = match self.outcome {
            None => return,
            Some(Verdict::Answered(s, latency)) => (!s.is_server_error(), latency, Some(s)),
            Some(Verdict::Refused) => (true, None, None),
            Some(Verdict::Failed) => (false, None, None),
        };
        self.endpoint.report(alive, latency, self.threshold);
        if let Some(p) = self.permit.take() {
            let failed = match (status, &self.statuses) {
                (Some(s), Some(set)) => set.contains(s),
                (Some(_), None) => false,
                (None, _) => true,
            };
            p.record(if failed { Outcome::Failure } else { Outcome::Success });
        }
    }
}

fn no_pool(kind: &str) -> ProxyError {
    ProxyError::new(Cause::Internal, format!("cluster has no {kind} pool"))
}

/// The session key's hash for consistent hashing; `None` when the request
/// does not carry the key (the balancer then spreads it).
fn hash_of(key: &HashKey, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(hash_bytes(client.to_string().as_bytes())),
        HashKey::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| hash_bytes(v.as_bytes())),
    }
}
