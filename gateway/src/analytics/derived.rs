//! Derived figures from the seed's KPIs, computed over a range of stored
//! points, each `None` when the traffic in the range does not give its
//! inputs.
//!
//! - **efficiency** = `completed / (completed + failed)` ×
//!   `(1 − retries / (completed + failed + retries))`: the share of finished
//!   requests and sessions that succeeded, weighted by the share of
//!   upstream attempts that were not redone. 1.0 means everything succeeded
//!   at the first attempt. (The seed's `completed/total × quality`, with
//!   "quality" measured as first-attempt success.)
//! - **coordination overhead** = `(acquire wait + queue wait) / request
//!   time`: the share of request latency spent waiting inside the gateway
//!   — for a pooled connection, in concurrency/rate-limit queues and in
//!   retry backoff — rather than in the upstream. Sums are exact (from the
//!   histograms' sums and `queue_wait_us`). HTTP only: WebSocket sessions
//!   last as long as agents keep them, so their time share means nothing.
//!   The seed's KPI is < 20 %.
//! - **cost per task** = `(cpu_seconds × cpu_core_second +
//!   connection_hours × connection_hour) / completed`: CPU is the process
//!   CPU time of each tick (`Tick::cpu_us`), attributed to routes and
//!   clusters by their share of traffic; connection-hours are the mean open
//!   pooled connections times the range's length (scopes with a pool:
//!   clusters, and the global scope when the producer reports the summed
//!   pool there); tasks are completed requests plus completed sessions.
//!   Rates are configured in [`CostRates`]; both zero (the default) means
//!   "not configured" and the figure is `None`.

use serde::Serialize;

use super::point::Point;
use super::tick::LatencySeries;

/// What a core-second and a connection-hour cost, in any currency.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostRates {
    /// Cost of one CPU core busy for one second (default 0).
    pub cpu_core_second: f64,
    /// Cost of one pooled upstream connection held open for an hour (default 0).
    pub connection_hour: f64,
    /// Currency label shown beside the figure (default "").
    pub currency: String,
}

/// The derived figures over a range.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Derived {
    /// Seconds of data in the range.
    pub secs: u32,
    /// `completed/(completed+failed) × (1 − retries/(completed+failed+
    /// retries))`, 0..=1; `None` when nothing finished.
    pub efficiency: Option<f64>,
    /// `(acquire wait + queue wait) / request time`, 0..=1; `None`
    /// without HTTP requests.
    pub overhead: Option<f64>,
    /// `(CPU s × cpu_core_second + connection-hours × connection_hour) /
    /// completed`; `None` when no rate is set or nothing completed.
    pub cost_per_task: Option<f64>,
    /// Completed requests and sessions in the range.
    pub tasks: u64,
}

/// Computes the figures over `points` (any window, any length).
pub(crate) fn derive<'a>(points: impl Iterator<Item = &'a Point>, rates: &CostRates) -> Derived {
    let mut t = Totals::default();
    for p in points {
        t.add(p);
    }
    let finished = t.completed + t.failed;
    let efficiency = (finished > 0).then(|| {
        let success = t.completed as f64 / finished as f64;
        let attempts = (finished + t.retries) as f64;
        success * (1.0 - t.retries as f64 / attempts)
    });
    let overhead = (t.request_ms > 0.0).then(|| ((t.acquire_ms + t.queue_ms) / t.request_ms).clamp(0.0, 1.0));
    let configured = rates.cpu_core_second > 0.0 || rates.connection_hour > 0.0;
    let cost = t.cpu_ms / 1000.0 * rates.cpu_core_second + t.connection_secs / 3600.0 * rates.connection_hour;
    let cost_per_task = (configured && t.completed > 0).then(|| cost / t.completed as f64);
    Derived {
        secs: t.secs,
        efficiency,
        overhead,
        cost_per_task,
        tasks: t.completed,
    }
}

#[derive(Default)]
struct Totals {
    secs: u32,
    completed: u64,
    failed: u64,
    retries: u64,
    request_ms: f64,
    acquire_ms: f64,
    queue_ms: f64,
    cpu_ms: f64,
    connection_secs: f64,
}

impl Totals {
    fn add(&mut self, p: &Point) {
        let c = &p.counts;
        self.secs += u32::from(p.secs);
        self.completed += c.completed();
        self.failed += u64::from(c.req_failed) + u64::from(c.sess_failed);
        self.retries += u64::from(c.retries);
        self.request_ms += f64::from(p.latency(LatencySeries::Request).sum_ms);
        // Acquire waits of WebSocket sessions are not part of any request
        // time; count only as much acquire wait as requests could contain.
        self.acquire_ms += f64::from(p.latency(LatencySeries::AcquireWait).sum_ms)
            .min(f64::from(p.latency(LatencySeries::Request).sum_ms));
        self.queue_ms += f64::from(c.queue_wait_ms);
        self.cpu_ms += f64::from(c.cpu_ms);
        self.connection_secs += f64::from(p.pool.open_mean()) * f64::from(p.pool.secs);
    }
}
