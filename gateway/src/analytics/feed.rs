//! What the dashboard reads: one live [`FeedUpdate`] per tick (sent as an
//! SSE `data:` line by `GET /dashboard/feed`) and a [`History`] of one
//! window (`GET /dashboard/history?window=1h|24h|7d[&scope=…]`).
//!
//! Both are serde structs; field names are the JSON names the page reads
//! (`assets/dashboard/app.js`). Numbers that need data to exist (error
//! rate, latency percentiles) are `null` when there was none, which the
//! charts draw as gaps. Schema version `v` is 1; fields may be added, none
//! renamed without bumping it.

use serde::Serialize;

use super::alert::Alert;
use super::derived::Derived;
use super::engine::{Engine, ScopeState};
use super::forecast::PoolTarget;
use super::point::Point;
use super::recommend::Recommendation;
use super::series::Window;
use super::tick::{LatencySeries, ScopeKey};

/// Schema version of the feed and history JSON.
pub const FEED_VERSION: u32 = 1;

/// Cleared alerts included in each feed update.
const FEED_RECENT_ALERTS: usize = 20;

/// One live update.
#[derive(Clone, Debug, Serialize)]
pub struct FeedUpdate {
    /// Schema version.
    pub v: u32,
    /// The tick second, Unix seconds.
    pub t: u64,
    /// Every scope: global first, then routes, then clusters.
    pub scopes: Vec<ScopeNow>,
    /// Open alerts and the latest cleared ones.
    pub alerts: AlertsView,
    /// Standing recommendations.
    pub recommendations: Vec<Recommendation>,
    /// Pool targets from predictive sizing.
    pub pool_targets: Vec<PoolTarget>,
}

/// Open and recently cleared alerts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AlertsView {
    /// Open, most severe first.
    pub active: Vec<Alert>,
    /// Cleared, newest first.
    pub recent: Vec<Alert>,
}

/// One scope's newest second.
#[derive(Clone, Debug, Serialize)]
pub struct ScopeNow {
    /// `global`, `route:NAME` or `cluster:NAME` (the `scope=` value for
    /// history).
    pub scope: String,
    /// `global`, `route` or `cluster`.
    pub kind: &'static str,
    /// The route or cluster name (empty for global).
    pub name: String,
    /// The newest second, in the same shape as one column of
    /// [`Columns`].
    pub point: PointJson,
    /// Derived figures over the last few minutes.
    pub derived: Derived,
    /// Pool state at the newest second (scopes with a pool).
    pub pool: Option<PoolNow>,
    /// `closed`, `half_open` or `open` (scopes with a circuit).
    pub circuit: Option<&'static str>,
}

/// One point of the charted series.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PointJson {
    /// Start of the interval, Unix seconds.
    pub t: u64,
    /// Mean open sessions.
    pub sessions: f64,
    /// Messages per second.
    pub msg_rate: f64,
    /// Requests plus sessions started per second.
    pub req_rate: f64,
    /// Errors per finished request/session (0..=1).
    pub error_rate: Option<f64>,
    /// Request latency p50, ms.
    pub p50: Option<f64>,
    /// Request latency p95, ms.
    pub p95: Option<f64>,
    /// Request latency p99, ms.
    pub p99: Option<f64>,
    /// WebSocket relay latency p99, ms.
    pub relay_p99: Option<f64>,
    /// Pool acquire wait p95, ms.
    pub acquire_p95: Option<f64>,
    /// Rate-limited per second.
    pub limited_rate: f64,
}

/// Pool state of a scope now.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolNow {
    /// Connections per state (`initializing`, `ready`, `active`, `idle`,
    /// `unhealthy`, `recycling`, `failed`).
    pub states: PoolStates,
    /// Acquirers waiting.
    pub waiters: u32,
    /// `max_connections` × endpoints.
    pub max: u32,
    /// `min_connections` × endpoints.
    pub min: u32,
    /// The sizing target (whole cluster), when one was computed.
    pub target: Option<usize>,
}

/// Connection counts per state.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PoolStates {
    /// Connecting.
    pub initializing: f64,
    /// Available, recently used.
    pub ready: f64,
    /// In use.
    pub active: f64,
    /// Available, unused for a while.
    pub idle: f64,
    /// In use on an ejected endpoint.
    pub unhealthy: f64,
    /// Draining before close.
    pub recycling: f64,
    /// Failed warm-up slots.
    pub failed: f64,
}

impl PoolStates {
    fn from_means(s: &[f32; 7]) -> Self {
        let f = |i: usize| f64::from(s[i]);
        Self {
            initializing: f(0),
            ready: f(1),
            active: f(2),
            idle: f(3),
            unhealthy: f(4),
            recycling: f(5),
            failed: f(6),
        }
    }
}

fn lat(p: &Point, s: LatencySeries, pick: fn(&super::point::LatStat) -> f32) -> Option<f64> {
    let l = p.latency(s);
    (l.count > 0).then(|| f64::from(pick(l)))
}

impl PointJson {
    /// The charted values of a stored point.
    pub fn from_point(p: &Point) -> Self {
        let c = &p.counts;
        Self {
            t: u64::from(p.t),
            sessions: f64::from(p.sessions_mean),
            msg_rate: p.rate(c.messages),
            req_rate: p.rate(u64::from(c.req_started) + u64::from(c.sess_started)),
            error_rate: p.error_rate(),
            p50: lat(p, LatencySeries::Request, |l| l.p50),
            p95: lat(p, LatencySeries::Request, |l| l.p95),
            p99: lat(p, LatencySeries::Request, |l| l.p99),
            relay_p99: lat(p, LatencySeries::WsRelay, |l| l.p99),
            acquire_p95: lat(p, LatencySeries::AcquireWait, |l| l.p95),
            limited_rate: p.rate(u64::from(c.rate_limited)),
        }
    }
}

/// Builds the live update from the engine's state.
pub fn feed_update(engine: &Engine) -> FeedUpdate {
    let targets = engine.pool_targets();
    let scopes = engine
        .scope_states()
        .map(|(k, s)| scope_now(engine, k, s, &targets))
        .collect();
    let mut recent = engine.alerts_recent();
    recent.truncate(FEED_RECENT_ALERTS);
    FeedUpdate {
        v: FEED_VERSION,
        t: engine.now(),
        scopes,
        alerts: AlertsView {
            active: engine.alerts_active(),
            recent,
        },
        recommendations: engine.recommendations().to_vec(),
        pool_targets: targets,
    }
}

fn scope_now(engine: &Engine, key: &ScopeKey, s: &ScopeState, targets: &[PoolTarget]) -> ScopeNow {
    let latest = s.series.latest().copied().unwrap_or_default();
    let pool = s.pool.map(|p| {
        let n = p.endpoints.max(1);
        PoolNow {
            states: PoolStates::from_means(&latest.pool.states),
            waiters: latest.pool.waiters_max,
            max: p.max_connections.saturating_mul(n),
            min: p.min_connections.saturating_mul(n),
            target: targets
                .iter()
                .find(|t| *t.cluster == *key.name() && matches!(key, ScopeKey::Cluster(_)))
                .map(|t| t.total),
        }
    });
    ScopeNow {
        scope: key.to_string(),
        kind: key.kind(),
        name: key.name().to_owned(),
        point: PointJson::from_point(&latest),
        derived: engine.derived(key).unwrap_or_default(),
        pool,
        circuit: s.circuit.map(|c| c.as_str()),
    }
}

/// One window of one scope, as columns (the layout uPlot takes).
#[derive(Clone, Debug, Serialize)]
pub struct History {
    /// Schema version.
    pub v: u32,
    /// `1h`, `24h` or `7d`.
    pub window: &'static str,
    /// Seconds per point.
    pub step_s: u32,
    /// The scope of `series`.
    pub scope: String,
    /// The scope's series.
    pub series: Columns,
    /// Pool states over the same window, one entry per scope with a pool.
    pub pools: Vec<PoolColumns>,
}

/// Series as parallel arrays; index `i` of each is the point at `t[i]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Columns {
    /// Unix seconds.
    pub t: Vec<u64>,
    /// See [`PointJson`] for each field.
    pub sessions: Vec<f64>,
    /// Messages per second.
    pub msg_rate: Vec<f64>,
    /// Requests plus sessions started per second.
    pub req_rate: Vec<f64>,
    /// Errors per finished request/session.
    pub error_rate: Vec<Option<f64>>,
    /// Request latency p50, ms.
    pub p50: Vec<Option<f64>>,
    /// Request latency p95, ms.
    pub p95: Vec<Option<f64>>,
    /// Request latency p99, ms.
    pub p99: Vec<Option<f64>>,
    /// WebSocket relay p99, ms.
    pub relay_p99: Vec<Option<f64>>,
    /// Acquire wait p95, ms.
    pub acquire_p95: Vec<Option<f64>>,
    /// Rate-limited per second.
    pub limited_rate: Vec<f64>,
}

impl Columns {
    fn push(&mut self, p: PointJson) {
        self.t.push(p.t);
        self.sessions.push(p.sessions);
        self.msg_rate.push(p.msg_rate);
        self.req_rate.push(p.req_rate);
        self.error_rate.push(p.error_rate);
        self.p50.push(p.p50);
        self.p95.push(p.p95);
        self.p99.push(p.p99);
        self.relay_p99.push(p.relay_p99);
        self.acquire_p95.push(p.acquire_p95);
        self.limited_rate.push(p.limited_rate);
    }
}

/// Pool state means of one scope over a window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolColumns {
    /// `cluster:NAME` (or `global`).
    pub scope: String,
    /// Unix seconds.
    pub t: Vec<u64>,
    /// Mean connections per state, one array per state name.
    pub states: PoolStateColumns,
    /// Peak waiters.
    pub waiters: Vec<u32>,
    /// Worst circuit state: 0 none, 1 closed, 2 half-open, 3 open.
    pub circuit: Vec<u8>,
}

/// One array per pool state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolStateColumns {
    /// Connecting.
    pub initializing: Vec<f64>,
    /// Available, recently used.
    pub ready: Vec<f64>,
    /// In use.
    pub active: Vec<f64>,
    /// Available, unused for a while.
    pub idle: Vec<f64>,
    /// In use on an ejected endpoint.
    pub unhealthy: Vec<f64>,
    /// Draining.
    pub recycling: Vec<f64>,
    /// Failed warm-up slots.
    pub failed: Vec<f64>,
}

impl PoolColumns {
    fn push(&mut self, p: &Point) {
        let s = PoolStates::from_means(&p.pool.states);
        let c = &mut self.states;
        self.t.push(u64::from(p.t));
        c.initializing.push(s.initializing);
        c.ready.push(s.ready);
        c.active.push(s.active);
        c.idle.push(s.idle);
        c.unhealthy.push(s.unhealthy);
        c.recycling.push(s.recycling);
        c.failed.push(s.failed);
        self.waiters.push(p.pool.waiters_max);
        self.circuit.push(p.circuit);
    }
}

/// Builds a window of history for `scope` (default: global), plus the
/// pool columns of every scope with a pool. `None` if the scope is
/// unknown.
pub fn history(engine: &Engine, window: Window, scope: Option<&ScopeKey>) -> Option<History> {
    let key = scope.cloned().unwrap_or(ScopeKey::Global);
    let mut series = Columns::default();
    match engine.scope(&key) {
        Some(s) => {
            for p in s.series.window(window).iter() {
                series.push(PointJson::from_point(p));
            }
        }
        // Before the first tick the global scope has no points yet; it
        // exists all the same (a dashboard opened at start must not 404).
        None if matches!(key, ScopeKey::Global) => {}
        None => return None,
    }
    let pools = engine
        .scope_states()
        .filter(|(_, st)| st.pool.is_some())
        .map(|(k, st)| {
            let mut cols = PoolColumns {
                scope: k.to_string(),
                ..PoolColumns::default()
            };
            st.series.window(window).iter().for_each(|p| cols.push(p));
            cols
        })
        .collect();
    Some(History {
        v: FEED_VERSION,
        window: window.as_str(),
        step_s: window.step_secs(),
        scope: key.to_string(),
        series,
        pools,
    })
}
