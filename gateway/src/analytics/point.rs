//! One stored interval of one scope — a [`Point`] — and the rollup that
//! turns finer points into coarser ones.
//!
//! Points are fixed-size (no heap) so a window's memory is its length times
//! `size_of::<Point>()`. Counters are sums over the interval; gauges keep
//! their time-weighted mean and their maximum; latency keeps count, exact
//! sum and p50/p95/p99 computed from the *merged* bucket counts of the
//! interval (never an average of finer percentiles). The bucket counts
//! themselves travel beside the point while it is being rolled up.

use agentmux_filters::circuit_breaker::CircuitState;

use super::hist::Hist;
use super::tick::{LatencySeries, PoolSample, ScopeSample};

/// Latency of one series over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatStat {
    /// Observations.
    pub count: u32,
    /// Sum of the observations, milliseconds.
    pub sum_ms: f32,
    /// Median, milliseconds (0 when `count` is 0).
    pub p50: f32,
    /// 95th percentile, milliseconds.
    pub p95: f32,
    /// 99th percentile, milliseconds.
    pub p99: f32,
}

impl LatStat {
    fn from_hist(h: &Hist, sum_ms: f32) -> Self {
        let q = |p| h.quantile_ms(p).unwrap_or(0.0) as f32;
        Self {
            count: u32::try_from(h.total()).unwrap_or(u32::MAX),
            sum_ms,
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
        }
    }

    /// Mean latency, milliseconds, or `None` without observations.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| f64::from(self.sum_ms) / f64::from(self.count))
    }
}

/// Counter sums over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// HTTP requests started.
    pub req_started: u32,
    /// HTTP requests completed successfully.
    pub req_completed: u32,
    /// HTTP requests failed (any cause).
    pub req_failed: u32,
    /// Sessions started.
    pub sess_started: u32,
    /// Sessions ended normally.
    pub sess_completed: u32,
    /// Sessions failed (any cause).
    pub sess_failed: u32,
    /// Failures caused by the gateway or upstream (see
    /// [`ScopeSample::errors`]).
    pub errors: u32,
    /// Failures because no pooled connection came free in time.
    pub pool_exhausted: u32,
    /// Rate-limited requests and session opens.
    pub rate_limited: u32,
    /// Retried upstream attempts.
    pub retries: u32,
    /// WebSocket messages relayed.
    pub messages: u64,
    /// Bytes from agents.
    pub bytes_in: u64,
    /// Bytes to agents.
    pub bytes_out: u64,
    /// Time waiting in gateway queues and retry backoff, milliseconds.
    pub queue_wait_ms: f32,
    /// Process CPU time attributed to the scope, milliseconds.
    pub cpu_ms: f32,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        let a = |x: &mut u32, y: u32| *x = x.saturating_add(y);
        a(&mut self.req_started, o.req_started);
        a(&mut self.req_completed, o.req_completed);
        a(&mut self.req_failed, o.req_failed);
        a(&mut self.sess_started, o.sess_started);
        a(&mut self.sess_completed, o.sess_completed);
        a(&mut self.sess_failed, o.sess_failed);
        a(&mut self.errors, o.errors);
        a(&mut self.pool_exhausted, o.pool_exhausted);
        a(&mut self.rate_limited, o.rate_limited);
        a(&mut self.retries, o.retries);
        self.messages = self.messages.saturating_add(o.messages);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.queue_wait_ms += o.queue_wait_ms;
        self.cpu_ms += o.cpu_ms;
    }

    /// Requests and sessions that finished, successfully or not.
    pub fn finished(&self) -> u64 {
        [
            self.req_completed,
            self.req_failed,
            self.sess_completed,
            self.sess_failed,
        ]
        .iter()
        .map(|&n| u64::from(n))
        .sum()
    }

    /// Requests and sessions that finished successfully.
    pub fn completed(&self) -> u64 {
        u64::from(self.req_completed) + u64::from(self.sess_completed)
    }

    /// Units of traffic: requests and sessions started plus messages. Zero
    /// of these for a while is "traffic dropped to zero".
    pub fn traffic(&self) -> u64 {
        u64::from(self.req_started) + u64::from(self.sess_started) + self.messages
    }
}

/// Pool gauges over an interval: time-weighted means and the peak queue.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolPoint {
    /// Mean connection count per state, in [`LifeState::ALL`] order.
    ///
    /// [`LifeState::ALL`]: crate::pool::LifeState::ALL
    pub states: [f32; 7],
    /// Mean number of waiting acquirers.
    pub waiters_mean: f32,
    /// Peak number of waiting acquirers.
    pub waiters_max: u32,
    /// Seconds with pool data (0: the scope has no pool).
    pub secs: u16,
}

impl PoolPoint {
    fn from_sample(p: &PoolSample) -> Self {
        let s = &p.states;
        let states = [
            s.initializing,
            s.ready,
            s.active,
            s.idle,
            s.unhealthy,
            s.recycling,
            s.failed,
        ]
        .map(|n| n as f32);
        Self {
            states,
            waiters_mean: s.waiters as f32,
            waiters_max: u32::try_from(s.waiters).unwrap_or(u32::MAX),
            secs: 1,
        }
    }

    /// Mean open connections (every state but `failed`).
    pub fn open_mean(&self) -> f32 {
        self.states.iter().take(6).sum()
    }

    /// Mean connections in use.
    pub fn active_mean(&self) -> f32 {
        self.states[2]
    }

    /// Mean idle connections (ready and idle: open, not in use).
    pub fn unused_mean(&self) -> f32 {
        self.states[1] + self.states[3]
    }

    fn add(&mut self, o: &PoolPoint) {
        let (n, m) = (f32::from(self.secs), f32::from(o.secs));
        if m == 0.0 {
            return;
        }
        let w = |a: f32, b: f32| (a * n + b * m) / (n + m);
        for (a, b) in self.states.iter_mut().zip(o.states.iter()) {
            *a = w(*a, *b);
        }
        self.waiters_mean = w(self.waiters_mean, o.waiters_mean);
        self.waiters_max = self.waiters_max.max(o.waiters_max);
        self.secs = self.secs.saturating_add(o.secs);
    }
}

/// One scope over one interval (1 s, 1 min or 1 h).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    /// Start of the interval, Unix seconds.
    pub t: u32,
    /// Seconds of data in the interval (gaps make it less than the step).
    pub secs: u16,
    /// Worst circuit state seen: 0 none, 1 closed, 2 half-open, 3 open.
    pub circuit: u8,
    /// Counter sums.
    pub counts: Counts,
    /// Mean open sessions.
    pub sessions_mean: f32,
    /// Peak open sessions.
    pub sessions_max: u32,
    /// Pool gauges.
    pub pool: PoolPoint,
    /// Latency per [`LatencySeries`], in [`LatencySeries::ALL`] order.
    pub lat: [LatStat; 4],
}

/// Circuit state as stored in [`Point::circuit`], ordered worst-last.
pub(crate) fn circuit_code(c: Option<CircuitState>) -> u8 {
    match c {
        None => 0,
        Some(CircuitState::Closed) => 1,
        Some(CircuitState::HalfOpen) => 2,
        Some(CircuitState::Open) => 3,
    }
}

impl Point {
    /// Latency of one series.
    pub fn latency(&self, s: LatencySeries) -> &LatStat {
        &self.lat[s.index()]
    }

    /// Errors over finished requests and sessions, or `None` if nothing
    /// finished.
    pub fn error_rate(&self) -> Option<f64> {
        let f = self.counts.finished();
        (f > 0).then(|| f64::from(self.counts.errors) / f as f64)
    }

    /// Per-second rate of a count over this interval.
    pub fn rate(&self, n: u64) -> f64 {
        n as f64 / f64::from(self.secs.max(1))
    }
}

/// A point being built from finer ones, with the merged bucket counts its
/// percentiles come from.
#[derive(Clone, Debug)]
pub(crate) struct Acc {
    pub(crate) point: Point,
    pub(crate) hists: [Hist; 4],
}

impl Acc {
    /// One second from a tick's sample; `cpu_ms` is the scope's share.
    pub(crate) fn from_sample(t: u32, s: &ScopeSample, cpu_ms: f32) -> Self {
        let counts = Counts {
            req_started: s.requests.started,
            req_completed: s.requests.completed,
            req_failed: s.requests.failed,
            sess_started: s.sessions.started,
            sess_completed: s.sessions.completed,
            sess_failed: s.sessions.failed,
            errors: s.errors(),
            pool_exhausted: s.pool_exhausted(),
            rate_limited: s.rate_limited,
            retries: s.retries,
            messages: s.messages,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            queue_wait_ms: s.queue_wait_us as f32 / 1000.0,
            cpu_ms,
        };
        let hists = LatencySeries::ALL.map(|k| s.latency.get(k).buckets);
        let sums = LatencySeries::ALL.map(|k| s.latency.get(k).sum_us as f32 / 1000.0);
        let lat = std::array::from_fn(|i| LatStat::from_hist(&hists[i], sums[i]));
        let point = Point {
            t,
            secs: 1,
            circuit: circuit_code(s.circuit),
            counts,
            sessions_mean: s.active_sessions as f32,
            sessions_max: s.active_sessions,
            pool: s.pool.as_ref().map(PoolPoint::from_sample).unwrap_or_default(),
            lat,
        };
        Self { point, hists }
    }

    /// An empty accumulator for the interval starting at `t`.
    pub(crate) fn empty(t: u32) -> Self {
        Self {
            point: Point { t, ..Point::default() },
            hists: [Hist::default(); 4],
        }
    }

    /// Adds a finer interval: counters sum, gauges average by time, peaks
    /// take the max, buckets merge and percentiles are recomputed.
    pub(crate) fn add(&mut self, o: &Acc) {
        let p = &mut self.point;
        let q = &o.point;
        let (n, m) = (f32::from(p.secs), f32::from(q.secs));
        if n + m > 0.0 {
            p.sessions_mean = (p.sessions_mean * n + q.sessions_mean * m) / (n + m);
        }
        p.sessions_max = p.sessions_max.max(q.sessions_max);
        p.circuit = p.circuit.max(q.circuit);
        p.counts.add(&q.counts);
        p.pool.add(&q.pool);
        p.secs = p.secs.saturating_add(q.secs);
        for (i, (h, lat)) in self.hists.iter_mut().zip(p.lat.iter_mut()).enumerate() {
            h.merge(&o.hists[i]);
            *lat = LatStat::from_hist(h, lat.sum_ms + q.lat[i].sum_ms);
        }
    }

    /// Replaces the gauges with a later reading of the same second (two
    /// ticks filed under one second) and adds its counters.
    pub(crate) fn merge_same_second(&mut self, later: &Acc) {
        let secs = self.point.secs;
        let (sessions, smax, pool) = (later.point.sessions_mean, later.point.sessions_max, later.point.pool);
        self.add(later);
        self.point.secs = secs;
        self.point.sessions_mean = sessions;
        self.point.sessions_max = smax;
        self.point.pool = pool;
    }
}
