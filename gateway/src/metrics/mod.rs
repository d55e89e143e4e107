//! Prometheus metrics: names `agentmux_<subsystem>_<name>_<unit>`, bounded
//! labels (route, cluster, endpoint, status class, cause — never a session
//! id or raw path), and handles cached per route and per filter so the data
//! path bumps an atomic without looking up a label set.
//!
//! Gauges that describe state (pool connections by lifecycle state,
//! endpoint health, circuit state) are filled from snapshots when
//! `/metrics` is scraped rather than kept in step on every change.

mod cluster;
mod filter;
mod histogram;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use cluster::{ClusterStateMetrics, CommandResult};
pub use filter::FilterCounters;
pub(crate) use filter::OpenHook;
pub use histogram::{BOUNDS, BOUNDS_US, BUCKETS, HistogramSnapshot, LATENCY_BOUNDS_SECONDS, LatencyHistogram};

use crate::error::{Cause, Origin};

/// `route` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name.
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    route: String,
    cause: &'static str,
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    route: String,
    /// `upstream` (agent to upstream) or `downstream`.
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    route: String,
    end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    cluster: String,
    endpoint: String,
    pool: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolNameLabels {
    cluster: String,
    endpoint: String,
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    cluster: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MuxEndLabels {
    cluster: String,
    /// `EndReason::kind`: peer_closed, peer_error, protocol, io, timeout, aborted.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FilterLabels {
    pub(crate) filter: String,
    pub(crate) event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CircuitLabels {
    pub(crate) filter: String,
    pub(crate) scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    listener: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutLabels {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    kind: &'static str,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabels {
    severity: &'static str,
}

/// Every metric family of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    request_seconds: Family<RouteLabels, LatencyHistogram>,
    first_byte_seconds: Family<RouteLabels, LatencyHistogram>,
    errors: Family<ErrorLabels, Counter>,
    sessions_active: Family<RouteLabels, Gauge>,
    sessions_ended: Family<EndLabels, Counter>,
    messages: Family<DirLabels, Counter>,
    bytes: Family<DirLabels, Counter>,
    relay_seconds: Family<RouteLabels, LatencyHistogram>,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_opened: Family<PoolNameLabels, Counter>,
    pool_waiters: Family<EndpointLabels, Gauge>,
    acquire_seconds: Family<ClusterLabels, LatencyHistogram>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    pub(crate) filter_events: Family<FilterLabels, Counter>,
    pub(crate) circuit_state: Family<CircuitLabels, Gauge>,
    pub(crate) rate_limit_keys: Family<RouteLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    edge_rejected: Family<EdgeLabels, Counter>,
    connections_cut: Family<CutLabels, Counter>,
    mux_resumes: Family<ClusterLabels, Counter>,
    mux_lost: Family<ClusterLabels, Counter>,
    mux_takeovers: Family<ClusterLabels, Counter>,
    mux_connections: Family<ClusterLabels, Gauge>,
    mux_connection_ends: Family<MuxEndLabels, Counter>,
    alerts_raised: Family<AlertLabels, Counter>,
    alerts_active: Family<SeverityLabels, Gauge>,
    webhooks: Family<ResultLabels, Counter>,
    cluster_state: Option<ClusterStateMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family (those of `[cluster_state]` only with
    /// [`Metrics::with_cluster_state`]).
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Like [`Metrics::new`], plus the `agentmux_cluster_state_*` families
    /// of a gateway that shares state through Redis.
    pub fn with_cluster_state() -> Self {
        Self::build(true)
    }

    fn build(cluster_state: bool) -> Self {
        let mut r = Registry::with_prefix("agentmux");
        let m = Self {
            requests: Family::default(),
            request_seconds: Family::default(),
            first_byte_seconds: Family::default(),
            errors: Family::default(),
            sessions_active: Family::default(),
            sessions_ended: Family::default(),
            messages: Family::default(),
            bytes: Family::default(),
            relay_seconds: Family::default(),
            pool_connections: Family::default(),
            pool_opened: Family::default(),
            pool_waiters: Family::default(),
            acquire_seconds: Family::default(),
            endpoint_healthy: Family::default(),
            filter_events: Family::default(),
            circuit_state: Family::default(),
            rate_limit_keys: Family::default(),
            reloads: Family::default(),
            edge_rejected: Family::default(),
            connections_cut: Family::default(),
            mux_resumes: Family::default(),
            mux_lost: Family::default(),
            mux_takeovers: Family::default(),
            mux_connections: Family::default(),
            mux_connection_ends: Family::default(),
            alerts_raised: Family::default(),
            alerts_active: Family::default(),
            webhooks: Family::default(),
            cluster_state: None,
            registry: Registry::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests answered, by status class",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from request to response headers",
            m.request_seconds.clone(),
        );
        r.register(
            "http_first_byte_seconds",
            "Time from request to the first response body byte",
            m.first_byte_seconds.clone(),
        );
        r.register(
            "errors",
            "Failed requests and sessions by cause and side",
            m.errors.clone(),
        );
        r.register(
            "sessions_active",
            "WebSocket sessions open now",
            m.sessions_active.clone(),
        );
        r.register(
            "sessions_ended",
            "WebSocket sessions ended, by how they ended",
            m.sessions_ended.clone(),
        );
        r.register(
            "ws_messages",
            "WebSocket messages relayed, by direction",
            m.messages.clone(),
        );
        r.register(
            "bytes",
            "Bytes relayed, by direction (upstream = agent to upstream)",
            m.bytes.clone(),
        );
        r.register(
            "ws_relay_seconds",
            "Time from reading a burst of frames to writing it on (one read in 8 is timed)",
            m.relay_seconds.clone(),
        );
        r.register(
            "pool_connections",
            "Upstream connections by lifecycle state",
            m.pool_connections.clone(),
        );
        r.register(
            "pool_connections_opened",
            "Upstream connections a pool opened since it started (a pool rebuilt by a reload starts again)",
            m.pool_opened.clone(),
        );
        r.register(
            "pool_waiters",
            "Acquirers waiting for a pooled connection",
            m.pool_waiters.clone(),
        );
        r.register(
            "pool_acquire_seconds",
            "Time to get a pooled connection",
            m.acquire_seconds.clone(),
        );
        r.register(
            "endpoint_healthy",
            "1 while the endpoint is in rotation, 0 while ejected",
            m.endpoint_healthy.clone(),
        );
        r.register(
            "filter_events",
            "What filters did: rejections, retries, opens, ...",
            m.filter_events.clone(),
        );
        r.register(
            "circuit_state",
            "Circuit state: 0 closed, 1 half-open, 2 open",
            m.circuit_state.clone(),
        );
        r.register(
            "rate_limit_keys",
            "Keys a rate limiter tracks after pruning",
            m.rate_limit_keys.clone(),
        );
        r.register("config_reloads", "Configuration reloads by result", m.reloads.clone());
        r.register(
            "edge_rejected",
            "Requests refused before routing (malformed path or authority, no route, CONNECT), by listener and cause",
            m.edge_rejected.clone(),
        );
        r.register(
            "listener_connections_cut",
            "Agent connections ended by a deadline (head, HTTP/2 preface, idle, TLS handshake), by listener and reason",
            m.connections_cut.clone(),
        );
        r.register(
            "mux_resumes",
            "Mux sessions resumed on another connection",
            m.mux_resumes.clone(),
        );
        r.register(
            "mux_sessions_lost",
            "Mux sessions closed with 1011 because they could not be resumed",
            m.mux_lost.clone(),
        );
        r.register(
            "mux_takeovers",
            "Mux sessions taken over from another gateway instance (whose agent reconnected here)",
            m.mux_takeovers.clone(),
        );
        r.register(
            "mux_connections",
            "Live mux connections to upstreams",
            m.mux_connections.clone(),
        );
        r.register(
            "mux_connection_ends",
            "Mux connections ended, by reason (protocol: the upstream broke agentmux.v1 and was sent ERROR)",
            m.mux_connection_ends.clone(),
        );
        r.register(
            "alerts_raised",
            "Anomaly alerts raised, by kind and severity",
            m.alerts_raised.clone(),
        );
        r.register(
            "alerts_active",
            "Anomaly alerts open now, by severity",
            m.alerts_active.clone(),
        );
        r.register(
            "alert_webhooks",
            "Alert webhook deliveries by result",
            m.webhooks.clone(),
        );
        let cluster_state = cluster_state.then(|| ClusterStateMetrics::register(&mut r));
        Self {
            registry: r,
            cluster_state,
            ..m
        }
    }

    /// The `agentmux_cluster_state_*` handles, when registered.
    pub fn cluster_state(&self) -> Option<&ClusterStateMetrics> {
        self.cluster_state.as_ref()
    }

    /// Cached handles for one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        let status = |class: &'static str| {
            self.requests.get_or_create_owned(&StatusLabels {
                route: route.to_owned(),
                status_class: class,
            })
        };
        let dir = |fam: &Family<DirLabels, Counter>, direction| {
            fam.get_or_create_owned(&DirLabels {
                route: route.to_owned(),
                direction,
            })
        };
        RouteMetrics(Arc::new(RouteHandles {
            name: route.into(),
            status: [
                status("1xx"),
                status("2xx"),
                status("3xx"),
                status("4xx"),
                status("5xx"),
            ],
            request_seconds: self.request_seconds.get_or_create_owned(&labels),
            first_byte_seconds: self.first_byte_seconds.get_or_create_owned(&labels),
            sessions_active: self.sessions_active.get_or_create_owned(&labels),
            messages_up: dir(&self.messages, "upstream"),
            messages_down: dir(&self.messages, "downstream"),
            bytes_up: dir(&self.bytes, "upstream"),
            bytes_down: dir(&self.bytes, "downstream"),
            relay_seconds: self.relay_seconds.get_or_create_owned(&labels),
            errors: self.errors.clone(),
            ended: self.sessions_ended.clone(),
        }))
    }

    /// Cached mux counters of a cluster.
    pub(crate) fn mux(&self, cluster: &str) -> MuxCounters {
        let l = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        MuxCounters {
            resumed: self.mux_resumes.get_or_create_owned(&l),
            lost: self.mux_lost.get_or_create_owned(&l),
            taken_over: self.mux_takeovers.get_or_create_owned(&l),
            connections: self.mux_connections.get_or_create_owned(&l),
            ends: crate::mux::EndReason::KINDS.map(|reason| {
                self.mux_connection_ends.get_or_create_owned(&MuxEndLabels {
                    cluster: cluster.to_owned(),
                    reason,
                })
            }),
        }
    }

    /// The pool-acquire histogram of a cluster.
    pub fn acquire(&self, cluster: &str) -> LatencyHistogram {
        self.acquire_seconds.get_or_create_owned(&ClusterLabels {
            cluster: cluster.to_owned(),
        })
    }

    /// Counts a request refused before it reached a route (rare: looks
    /// the label set up).
    pub fn edge_rejected(&self, listener: &str, cause: Cause) {
        self.edge_rejected
            .get_or_create(&EdgeLabels {
                listener: listener.to_owned(),
                cause: cause.as_str(),
            })
            .inc();
    }

    /// Counts an agent connection ended by a deadline.
    pub(crate) fn connection_cut(&self, listener: &str, reason: &'static str) {
        self.connections_cut
            .get_or_create(&CutLabels {
                listener: listener.to_owned(),
                reason,
            })
            .inc();
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "rejected" },
            })
            .inc();
    }

    /// The counter of alerts raised of one kind and severity (the
    /// analytics engine copies its counts into it).
    pub fn alerts_raised(&self, kind: &'static str, severity: &'static str) -> Counter {
        self.alerts_raised.get_or_create_owned(&AlertLabels { kind, severity })
    }

    /// The gauge of alerts open now of one severity.
    pub fn alerts_active(&self, severity: &'static str) -> Gauge {
        self.alerts_active.get_or_create_owned(&SeverityLabels { severity })
    }

    /// The counter of webhook deliveries with one result.
    pub fn alert_webhooks(&self, result: &'static str) -> Counter {
        self.webhooks.get_or_create_owned(&ResultLabels { result })
    }

    /// Forgets every pool and endpoint gauge before a scrape refills them
    /// (endpoints and clusters come and go with reloads).
    pub fn clear_pool_gauges(&self) {
        self.pool_connections.clear();
        self.pool_opened.clear();
        self.pool_waiters.clear();
        self.endpoint_healthy.clear();
    }

    /// Sets an endpoint's health gauge and acquirers waiting.
    pub fn set_endpoint(&self, cluster: &str, endpoint: &str, healthy: bool, waiters: usize) {
        let el = EndpointLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        self.endpoint_healthy.get_or_create(&el).set(i64::from(healthy));
        self.pool_waiters
            .get_or_create(&el)
            .set(i64::try_from(waiters).unwrap_or(i64::MAX));
    }

    /// Sets how many connections one pool opened so far (from its
    /// snapshot, at a scrape; the family is cleared before each).
    pub fn set_pool_opened(&self, cluster: &str, endpoint: &str, pool: &'static str, opened: u64) {
        let l = PoolNameLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_owned(),
            pool,
        };
        self.pool_opened.get_or_create(&l).inc_by(opened);
    }

    /// Sets the count of one pool's connections in one lifecycle state.
    pub fn set_pool_connections(
        &self,
        cluster: &str,
        endpoint: &str,
        pool: &'static str,
        state: &'static str,
        n: usize,
    ) {
        let l = PoolLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_owned(),
            pool,
            state,
        };
        self.pool_connections
            .get_or_create(&l)
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The exposition in Prometheus text format. State gauges are filled
    /// by their owners first (`Runtime::export_gauges`, the analytics
    /// engine's alert counts): metrics knows names and labels, not the
    /// gateway's structures.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        to_prometheus_text(&out)
    }
}

fn origin_label(cause: Cause) -> &'static str {
    match cause.mapping().2 {
        Origin::Upstream => "upstream",
        Origin::Downstream => "downstream",
        Origin::Internal => "internal",
    }
}

/// prometheus-client writes OpenMetrics, where a counter's metadata names
/// the family (`x`) and its samples `x_total`; the classic text format wants
/// the metadata on `x_total` too, and has no `# EOF`.
fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 256);
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{kind}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Cached metric handles of one route, shared: every request and session
/// of the route holds one, and a clone is one reference count (the
/// handles themselves are a dozen `Arc`s, 152 bytes, that each session
/// kept a copy of).
#[derive(Clone, Debug)]
pub struct RouteMetrics(Arc<RouteHandles>);

impl std::ops::Deref for RouteMetrics {
    type Target = RouteHandles;

    fn deref(&self) -> &RouteHandles {
        &self.0
    }
}

/// The handles behind a [`RouteMetrics`].
#[derive(Debug)]
pub struct RouteHandles {
    name: Arc<str>,
    status: [Counter; 5],
    /// Time to response headers.
    pub request_seconds: LatencyHistogram,
    /// Time to the first body byte.
    pub first_byte_seconds: LatencyHistogram,
    /// WebSocket sessions open.
    pub sessions_active: Gauge,
    /// Messages agent → upstream.
    pub messages_up: Counter,
    /// Messages upstream → agent.
    pub messages_down: Counter,
    /// Bytes agent → upstream.
    pub bytes_up: Counter,
    /// Bytes upstream → agent.
    pub bytes_down: Counter,
    /// Relay burst latency.
    pub relay_seconds: LatencyHistogram,
    errors: Family<ErrorLabels, Counter>,
    ended: Family<EndLabels, Counter>,
}

impl RouteMetrics {
    /// Counts an answered request by status class.
    pub fn status(&self, status: http::StatusCode) {
        let i = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.status[i].inc();
    }

    /// Requests answered so far, by status class 1xx..5xx.
    pub fn answered(&self) -> [u64; 5] {
        self.status.each_ref().map(Counter::get)
    }

    /// Failures of one cause so far (0 when none happened).
    pub fn errors_of(&self, cause: Cause) -> u64 {
        let origin = origin_label(cause);
        self.errors
            .get(&ErrorLabels {
                route: self.name.to_string(),
                cause: cause.as_str(),
                origin,
            })
            .map_or(0, |c| c.get())
    }

    /// Sessions ended so far: `(closed cleanly, ended otherwise)`.
    pub fn sessions_ended(&self) -> (u64, u64) {
        let mut ok = 0;
        let mut failed = 0;
        for end in crate::error::SessionOutcome::LABELS {
            let n = self
                .ended
                .get(&EndLabels {
                    route: self.name.to_string(),
                    end,
                })
                .map_or(0, |c| c.get());
            if end == "closed" || end == "agent_gone" {
                ok += n
            } else {
                failed += n
            }
        }
        (ok, failed)
    }

    /// Counts a failure (rare: looks the label set up).
    pub fn error(&self, cause: Cause) {
        let origin = origin_label(cause);
        self.errors
            .get_or_create(&ErrorLabels {
                route: self.name.to_string(),
                cause: cause.as_str(),
                origin,
            })
            .inc();
    }

    /// Counts an ended session.
    pub fn session_ended(&self, end: &'static str) {
        self.ended
            .get_or_create(&EndLabels {
                route: self.name.to_string(),
                end,
            })
            .inc();
    }
}

/// Cached mux counters of one cluster.
#[derive(Clone, Debug)]
pub(crate) struct MuxCounters {
    pub(crate) resumed: Counter,
    pub(crate) lost: Counter,
    pub(crate) taken_over: Counter,
    pub(crate) connections: Gauge,
    /// Connection ends, one per [`EndReason::KINDS`](crate::mux::EndReason::KINDS) entry.
    pub(crate) ends: [Counter; 6],
}

impl MuxCounters {
    /// Counts a mux connection's end by its reason.
    pub(crate) fn ended(&self, reason: &crate::mux::EndReason) {
        let kind = reason.kind();
        if let Some(i) = crate::mux::EndReason::KINDS.iter().position(|k| *k == kind) {
            self.ends[i].inc();
        }
    }
}
