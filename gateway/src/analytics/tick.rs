//! The input model: one [`Tick`] per second, built by the gateway from its
//! counters and gauges, carrying one [`ScopeSample`] per scope.
//!
//! Counters arrive as *deltas for the interval since the previous tick*
//! (the producer subtracts two readings of its cumulative counters), gauges
//! as their value at tick time. Keeping the engine on deltas means it never
//! sees the data path's atomics and a restart of the producer costs at most
//! one interval.
//!
//! Scopes are the whole gateway ([`ScopeKey::Global`]), each route and each
//! cluster. A route scope has no pool; a cluster scope carries its pool's
//! state counts summed over its endpoints and its circuit state.

use std::sync::Arc;
use std::time::SystemTime;

use agentmux_filters::circuit_breaker::CircuitState;

use super::hist::{BUCKETS, Hist};
use crate::error::{Cause, Origin};
use crate::pool::PoolSnapshot;

/// Everything the gateway measured during one interval (normally 1 s).
#[derive(Clone, Debug)]
pub struct Tick {
    /// When the interval ended (wall clock). The engine files the tick
    /// under this second; two ticks in one second are merged, a gap of
    /// missing seconds is left as a gap, a tick up to 5 s older than the
    /// newest is ignored, and after a clock step back of more than 5 s the
    /// engine keeps counting from its newest second.
    pub at: SystemTime,
    /// Process CPU time used during the interval, in microseconds (for
    /// cost per task; 0 when not measured).
    pub cpu_us: u64,
    /// One sample per scope. Scopes missing from a tick are treated as
    /// gone and evicted after the engine's `evict_after`.
    pub scopes: Vec<(ScopeKey, ScopeSample)>,
}

/// What a sample describes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKey {
    /// The whole gateway.
    Global,
    /// One route, by name.
    Route(Arc<str>),
    /// One cluster (all its endpoints), by name.
    Cluster(Arc<str>),
}

impl ScopeKey {
    /// A route scope.
    pub fn route(name: &str) -> Self {
        Self::Route(Arc::from(name))
    }

    /// A cluster scope.
    pub fn cluster(name: &str) -> Self {
        Self::Cluster(Arc::from(name))
    }

    /// `"global"`, `"route"` or `"cluster"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Route(_) => "route",
            Self::Cluster(_) => "cluster",
        }
    }

    /// The route or cluster name; empty for the global scope.
    pub fn name(&self) -> &str {
        match self {
            Self::Global => "",
            Self::Route(n) | Self::Cluster(n) => n,
        }
    }

    /// Parses `global`, `route:NAME` or `cluster:NAME` (the form used in
    /// query strings and JSON).
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once(':') {
            None if s == "global" => Some(Self::Global),
            Some(("route", n)) if !n.is_empty() => Some(Self::route(n)),
            Some(("cluster", n)) if !n.is_empty() => Some(Self::cluster(n)),
            _ => None,
        }
    }
}

impl std::fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Route(n) => write!(f, "route:{n}"),
            Self::Cluster(n) => write!(f, "cluster:{n}"),
        }
    }
}

/// One scope's measurements for one interval.
#[derive(Clone, Debug, Default)]
pub struct ScopeSample {
    /// Sessions open at tick time (gauge): WebSocket and mux sessions plus
    /// in-flight HTTP requests.
    pub active_sessions: u32,
    /// HTTP requests (delta).
    pub requests: Flow,
    /// WebSocket / mux sessions (delta).
    pub sessions: Flow,
    /// Failures of requests and sessions by cause (delta; only non-zero
    /// entries needed). Their sum should equal `requests.failed +
    /// sessions.failed`; failures with no cause listed count as errors.
    pub failures: Vec<(Cause, u32)>,
    /// WebSocket messages relayed, both directions (delta).
    pub messages: u64,
    /// Bytes received from agents (delta).
    pub bytes_in: u64,
    /// Bytes sent to agents (delta).
    pub bytes_out: u64,
    /// Requests and session opens refused by a rate limit (delta). They
    /// are also counted in `started` and `failed` (cause `RateLimited`).
    pub rate_limited: u32,
    /// Upstream attempts that were retries (delta).
    pub retries: u32,
    /// Rate-limited counts per agent key, when the limiter reports them
    /// (delta; the producer sends at most a handful of top keys). Empty is
    /// fine: recommendations then speak of the route only.
    pub rate_limited_keys: Vec<(Arc<str>, u32)>,
    /// Latency histograms (deltas).
    pub latency: Latencies,
    /// Time requests spent waiting inside the gateway other than for a
    /// pooled connection, in microseconds (delta): concurrency-limit
    /// queueing, rate-limit delays and retry backoff. 0 when not measured.
    pub queue_wait_us: u64,
    /// The pool, for cluster scopes (and optionally the global one).
    pub pool: Option<PoolSample>,
    /// The circuit state, for cluster scopes.
    pub circuit: Option<CircuitState>,
}

/// Starts and ends of one kind of unit of work during the interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Begun.
    pub started: u32,
    /// Finished successfully.
    pub completed: u32,
    /// Finished with an error (any cause).
    pub failed: u32,
}

/// Histogram deltas for the four latency series of a scope.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latencies {
    /// Request start to end of the response (HTTP).
    pub request: LatencySample,
    /// Request start to the first response byte (HTTP, streaming).
    pub first_byte: LatencySample,
    /// Receipt of a WebSocket message to its write on the other side.
    pub ws_relay: LatencySample,
    /// Time spent waiting for a pooled connection.
    pub acquire_wait: LatencySample,
}

/// Which latency series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LatencySeries {
    /// [`Latencies::request`].
    Request,
    /// [`Latencies::first_byte`].
    FirstByte,
    /// [`Latencies::ws_relay`].
    WsRelay,
    /// [`Latencies::acquire_wait`].
    AcquireWait,
}

impl LatencySeries {
    /// All series, in storage order.
    pub const ALL: [LatencySeries; 4] = [Self::Request, Self::FirstByte, Self::WsRelay, Self::AcquireWait];

    /// A short label for JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::FirstByte => "first_byte",
            Self::WsRelay => "ws_relay",
            Self::AcquireWait => "acquire_wait",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Request => 0,
            Self::FirstByte => 1,
            Self::WsRelay => 2,
            Self::AcquireWait => 3,
        }
    }
}

impl Latencies {
    /// The series by kind.
    pub fn get(&self, s: LatencySeries) -> &LatencySample {
        match s {
            LatencySeries::Request => &self.request,
            LatencySeries::FirstByte => &self.first_byte,
            LatencySeries::WsRelay => &self.ws_relay,
            LatencySeries::AcquireWait => &self.acquire_wait,
        }
    }

    /// The series by kind, mutably (for producers filling one at a time).
    pub fn get_mut(&mut self, s: LatencySeries) -> &mut LatencySample {
        match s {
            LatencySeries::Request => &mut self.request,
            LatencySeries::FirstByte => &mut self.first_byte,
            LatencySeries::WsRelay => &mut self.ws_relay,
            LatencySeries::AcquireWait => &mut self.acquire_wait,
        }
    }
}

/// Bucket-count deltas over [`BOUNDS_US`](super::BOUNDS_US) plus the exact
/// sum of the observations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySample {
    /// Observations per bucket.
    pub buckets: Hist,
    /// Sum of the observed durations, in microseconds.
    pub sum_us: u64,
}

impl LatencySample {
    /// A sample from raw bucket counts and a sum.
    pub fn new(counts: [u32; BUCKETS], sum_us: u64) -> Self {
        Self {
            buckets: Hist::from_counts(counts),
            sum_us,
        }
    }

    /// Counts one observation (for producers that observe directly, and
    /// for tests).
    pub fn record(&mut self, d: std::time::Duration) {
        self.buckets.record(d);
        self.sum_us = self
            .sum_us
            .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// The delta between two cumulative readings (`self` the newer one).
    /// Buckets that went backwards (a reset) count as zero.
    pub fn since(&self, earlier: &LatencySample) -> LatencySample {
        let mut buckets = self.buckets;
        buckets.unmerge(&earlier.buckets);
        LatencySample {
            buckets,
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.total()
    }

    /// Adds another sample's observations (scopes that sum routes).
    pub fn merge(&mut self, other: &LatencySample) {
        self.buckets.merge(&other.buckets);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// A pool's state for one interval (cluster scopes: summed over the
/// cluster's endpoint pools).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolSample {
    /// Connection counts by state and waiters, summed over endpoints.
    pub states: PoolSnapshot,
    /// Number of endpoint pools summed into `states`.
    pub endpoints: u32,
    /// `min_connections` of each endpoint pool.
    pub min_connections: u32,
    /// `max_connections` of each endpoint pool.
    pub max_connections: u32,
}

impl ScopeSample {
    /// Failures caused by the gateway or the upstream — what the error
    /// rate counts. Failures the agent caused (bad request, auth, rate
    /// limit, no route) are excluded: they say nothing about the service.
    pub fn errors(&self) -> u32 {
        let failed = self.requests.failed.saturating_add(self.sessions.failed);
        let listed: u32 = self.failures.iter().map(|(_, n)| *n).sum();
        let downstream: u32 = self
            .failures
            .iter()
            .filter(|(c, _)| c.mapping().2 == Origin::Downstream)
            .map(|(_, n)| *n)
            .sum();
        // Failures without a listed cause count as errors: better a false
        // alarm than a silent one.
        let unlisted = failed.saturating_sub(listed);
        listed.saturating_sub(downstream).saturating_add(unlisted)
    }

    /// Failures with cause [`Cause::PoolExhausted`].
    pub fn pool_exhausted(&self) -> u32 {
        self.failures
            .iter()
            .filter(|(c, _)| *c == Cause::PoolExhausted)
            .map(|(_, n)| *n)
            .sum()
    }
}
