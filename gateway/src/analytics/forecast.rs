//! Predictive pool sizing: Holt's linear trend on each cluster's acquire
//! rate and connection demand, turned into a target connection count the
//! gateway passes to [`Pool::set_target_hint`](crate::pool::Pool::set_target_hint).
//!
//! Every `step_secs` (10 s) the sizer takes the step's acquire rate `λ`
//! (acquires per second) and its mean demand `D` (connections in use plus
//! acquirers waiting), and updates two Holt smoothers:
//!
//! ```text
//! level_t = α·x_t + (1−α)·(level_{t−1} + trend_{t−1})
//! trend_t = β·(level_t − level_{t−1}) + (1−β)·trend_{t−1}
//! forecast(h) = level_t + h·trend_t
//! ```
//!
//! The mean hold time comes from Little's law on the connections in use,
//! `W = active / λ` (smoothed). The demand expected `h` steps ahead is
//! `max(forecast_λ(h) · W, forecast_D(h))`, and the target is that times
//! `1 + headroom`, rounded up and clamped to `[min_connections,
//! max_connections]` times the number of endpoints. On a ramp the trend
//! term puts the target ahead of the demand by `h` steps (30 s by default,
//! about the time to open TLS connections with margin).
//!
//! The target grows at once and shrinks slowly: only after the wanted
//! target has stayed lower by more than one shrink step for
//! `shrink_after_steps` steps, and then by at most `shrink_fraction` (at
//! least one connection) per such period, so a dip between bursts does not
//! close warm connections and noise does not make the target wander.
//!
//! The forecast pays only for what was seen: the target never exceeds
//! `(peak + horizon · max(trend, 0)) · (1 + peak_margin)`, where `peak`
//! is the highest per-second demand seen, decaying by half every
//! `peak_half_life_secs` (15 s), and `trend` the demand's Holt trend. A
//! ramp keeps its lead (the trend term), but once a burst is over the
//! target follows the decaying peak down to `min_connections` within a
//! few half-lives instead of holding the burst's connections: Holt's
//! overshoot on a steep rise and the slow shrink above used to keep
//! hundreds of idle upstream connections after a burst of sessions.

use std::sync::Arc;

use serde::Serialize;

use super::tick::PoolSample;

/// Sizing knobs.
#[derive(Clone, Debug)]
pub struct SizingParams {
    /// Seconds per forecasting step (default 10).
    pub step_secs: u32,
    /// Steps to look ahead (default 3).
    pub horizon_steps: f64,
    /// Holt level weight (default 0.5).
    pub alpha: f64,
    /// Holt trend weight (default 0.3).
    pub beta: f64,
    /// Spare capacity over the forecast demand (default 0.25).
    pub headroom: f64,
    /// Steps the target must be wanted lower before shrinking (default 6).
    pub shrink_after_steps: u32,
    /// Largest share of the target closed per shrink (default 0.1).
    pub shrink_fraction: f64,
    /// Spare capacity allowed over the decaying peak demand (default 0.5).
    pub peak_margin: f64,
    /// Half-life of the peak demand the target is bounded by, seconds
    /// (default 15).
    pub peak_half_life_secs: f64,
}

impl Default for SizingParams {
    fn default() -> Self {
        Self {
            step_secs: 10,
            horizon_steps: 3.0,
            alpha: 0.5,
            beta: 0.3,
            headroom: 0.25,
            shrink_after_steps: 6,
            shrink_fraction: 0.1,
            peak_margin: 0.5,
            peak_half_life_secs: 15.0,
        }
    }
}

/// Holt's linear (double exponential) smoothing.
#[derive(Clone, Copy, Debug)]
pub struct Holt {
    alpha: f64,
    beta: f64,
    level: f64,
    trend: f64,
    seen: u32,
}

impl Holt {
    /// A smoother with level weight `alpha` and trend weight `beta`.
    pub fn new(alpha: f64, beta: f64) -> Self {
        Self {
            alpha: alpha.clamp(0.01, 1.0),
            beta: beta.clamp(0.01, 1.0),
            level: 0.0,
            trend: 0.0,
            seen: 0,
        }
    }

    /// Adds one observation.
    pub fn update(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        match self.seen {
            0 => self.level = x,
            1 => {
                self.trend = x - self.level;
                self.level = x;
            }
            _ => {
                let prev = self.level;
                self.level = self.alpha * x + (1.0 - self.alpha) * (self.level + self.trend);
                self.trend = self.beta * (self.level - prev) + (1.0 - self.beta) * self.trend;
            }
        }
        self.seen = self.seen.saturating_add(1);
    }

    /// The trend: change per step.
    pub fn trend(&self) -> f64 {
        self.trend
    }

    /// The value expected `h` steps ahead (never below zero).
    pub fn forecast(&self, h: f64) -> f64 {
        (self.level + h * self.trend).max(0.0)
    }
}

/// The connection count the forecast wants for one cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolTarget {
    /// The cluster.
    pub cluster: String,
    /// Connections wanted over the whole cluster.
    pub total: usize,
    /// What to pass to each endpoint's `Pool::set_target_hint`:
    /// `ceil(total / endpoints)` clamped to `[min, max]_connections`.
    pub per_endpoint: usize,
    /// Forecast acquires per second at the horizon.
    pub forecast_rate: f64,
    /// Smoothed mean hold time of a connection, milliseconds.
    pub hold_ms: f64,
    /// Forecast connection demand at the horizon, before headroom.
    pub demand: f64,
}

/// The sizer of one cluster.
#[derive(Clone, Debug)]
pub(crate) struct PoolSizer {
    step_start: Option<u32>,
    acquires: u64,
    active_sum: f64,
    demand_sum: f64,
    secs: u32,
    rate: Holt,
    demand: Holt,
    hold_s: Option<f64>,
    current: Option<usize>,
    lower_steps: u32,
    /// The highest per-second demand seen, decaying (see the module docs).
    peak: f64,
}

impl PoolSizer {
    pub(crate) fn new(p: &SizingParams) -> Self {
        Self {
            step_start: None,
            acquires: 0,
            active_sum: 0.0,
            demand_sum: 0.0,
            secs: 0,
            rate: Holt::new(p.alpha, p.beta),
            demand: Holt::new(p.alpha, p.beta),
            hold_s: None,
            current: None,
            lower_steps: 0,
            peak: 0.0,
        }
    }

    /// Feeds one second; returns a target at the end of each step.
    pub(crate) fn observe(
        &mut self,
        cluster: &Arc<str>,
        t: u32,
        acquires: u64,
        pool: &PoolSample,
        p: &SizingParams,
    ) -> Option<PoolTarget> {
        let start = *self.step_start.get_or_insert(t);
        self.acquires += acquires;
        let active = pool.states.active as f64;
        self.active_sum += active;
        let demand = active + pool.states.waiters as f64;
        self.demand_sum += demand;
        let decay = 0.5f64.powf(1.0 / p.peak_half_life_secs.max(1.0));
        self.peak = (self.peak * decay).max(demand);
        self.secs += 1;
        if t.saturating_sub(start) + 1 < p.step_secs.max(1) {
            return None;
        }
        let target = self.step(cluster, pool, p);
        self.step_start = None;
        (self.acquires, self.active_sum, self.demand_sum, self.secs) = (0, 0.0, 0.0, 0);
        Some(target)
    }

    fn step(&mut self, cluster: &Arc<str>, pool: &PoolSample, p: &SizingParams) -> PoolTarget {
        let secs = f64::from(self.secs.max(1));
        let rate = self.acquires as f64 / secs;
        let active = self.active_sum / secs;
        if rate > 0.0 && active > 0.0 {
            // Little's law on the connections in use: W = L / λ.
            let w = active / rate;
            self.hold_s = Some(self.hold_s.map_or(w, |h| 0.7 * h + 0.3 * w));
        }
        self.rate.update(rate);
        self.demand.update(self.demand_sum / secs);
        let forecast_rate = self.rate.forecast(p.horizon_steps);
        let hold = self.hold_s.unwrap_or(0.0);
        let demand = (forecast_rate * hold).max(self.demand.forecast(p.horizon_steps));
        let n = pool.endpoints.max(1) as usize;
        let lo = pool.min_connections as usize * n;
        let hi = (pool.max_connections as usize * n).max(lo);
        // Never more than the decaying peak (plus the trend's lead) allows.
        let seen = self.peak + p.horizon_steps * self.demand.trend().max(0.0);
        let cap = ((seen * (1.0 + p.peak_margin)).ceil() as usize).max(lo);
        let wanted = ((demand * (1.0 + p.headroom)).ceil() as usize).clamp(lo, hi).min(cap);
        let total = self.settle(wanted, p).min(cap).clamp(lo, hi);
        self.current = Some(total);
        PoolTarget {
            cluster: cluster.to_string(),
            total,
            per_endpoint: total
                .div_ceil(n)
                .clamp(pool.min_connections as usize, pool.max_connections as usize),
            forecast_rate,
            hold_ms: hold * 1000.0,
            demand,
        }
    }

    /// Grow at once, shrink slowly.
    fn settle(&mut self, wanted: usize, p: &SizingParams) -> usize {
        let cur = self.current.unwrap_or(wanted);
        let next = if wanted >= cur {
            self.lower_steps = 0;
            wanted
        } else {
            let cut = ((cur as f64 * p.shrink_fraction).ceil() as usize).max(1);
            // A gap smaller than one shrink step is noise, not a trend: it
            // neither shrinks the pool nor counts towards shrinking.
            if wanted + cut > cur {
                self.lower_steps = 0;
                return cur;
            }
            self.lower_steps += 1;
            if self.lower_steps >= p.shrink_after_steps {
                self.lower_steps = 0;
                wanted.max(cur - cut)
            } else {
                cur
            }
        };
        self.current = Some(next);
        next
    }
}
