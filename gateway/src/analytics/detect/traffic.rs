//! Detectors for load: message rate, traffic dropping to zero, and pool
//! exhaustion.

use super::DetectParams;
use super::rules::Eval;
use super::seasonal;
use super::stats::{Bits, Ewma, FAST};
use super::tracker::Level;
use crate::analytics::alert::Severity;
use crate::analytics::hist::Hist;
use crate::analytics::point::Point;
use crate::analytics::series::ScopeSeries;

/// Message rate, both ways: a runaway agent loop and a stall both matter.
///
/// Baseline: EWMA mean and variance of messages per second. The 30-second
/// mean is compared with a band of `sigma` standard errors (at least the
/// Poisson one, `sqrt(μ/30)`), at least `message_rel` of the baseline and
/// at least 5 messages/s; then with the seasonal band (see
/// [`seasonal`]). Below `message_min_rate` the detector stays silent:
/// a few messages a second are all noise, and silence is the traffic-drop
/// detector's business.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MessageRule {
    rate: Ewma,
}

impl MessageRule {
    pub(crate) fn new(p: &DetectParams) -> Self {
        Self {
            rate: Ewma::new(p.baseline_alpha),
        }
    }

    pub(crate) fn learn(&mut self, messages: u64) {
        self.rate.update(messages as f64);
    }

    pub(crate) fn rebase(&mut self, rate: f64) {
        self.rate.rebase(rate);
    }

    pub(crate) fn eval(&self, window_sum: u64, series: &ScopeSeries, now: u32, p: &DetectParams) -> Eval {
        let x = window_sum as f64 / FAST as f64;
        let mu = self.rate.mean();
        if self.rate.samples() < p.warmup_secs || mu < p.message_min_rate {
            return Eval::new(Level::Normal, x, mu);
        }
        let se = (self.rate.std() / (FAST as f64).sqrt()).max((mu / FAST as f64).sqrt());
        let dev = (x - mu).abs();
        let raise = (p.sigma * se).max(p.message_rel * mu).max(5.0);
        let clear = (3.0 * se).max(p.message_rel / 2.0 * mu);
        let mut level = if dev >= raise {
            Level::Raise(Severity::Warning)
        } else if dev > clear {
            Level::Elevated
        } else {
            Level::Normal
        };
        if level != Level::Normal {
            let seasonal = seasonal::expected(series, now, |pt: &Point| pt.counts.messages as f64);
            if seasonal.is_some_and(|s| seasonal::within(x, s, p.message_rel, 5.0)) {
                level = Level::Normal;
            }
        }
        Eval::new(level, x, mu)
    }
}

/// Traffic (requests and sessions started, messages) stopping where it
/// normally flows.
///
/// With a baseline of μ events per second, `n` silent seconds in a row
/// happen by chance with probability `e^(−μn)`; the detector waits for
/// `n = 14/μ` (chance below one in a million), at least 10 s and at most
/// 50 s so it still alerts within a minute. Below `drop_min_rate` (0.3/s)
/// one minute of silence is not evidence of anything and it stays quiet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropRule {
    rate: Ewma,
    zero_run: u32,
}

impl DropRule {
    pub(crate) fn new(p: &DetectParams) -> Self {
        Self {
            rate: Ewma::new(p.baseline_alpha),
            zero_run: 0,
        }
    }

    pub(crate) fn observe(&mut self, traffic: u64) {
        self.zero_run = if traffic == 0 {
            self.zero_run.saturating_add(1)
        } else {
            0
        };
    }

    /// True while the current second is part of a silent run.
    pub(crate) fn silent(&self) -> bool {
        self.zero_run > 0
    }

    pub(crate) fn learn(&mut self, traffic: u64) {
        self.rate.update(traffic as f64);
    }

    pub(crate) fn rebase(&mut self) {
        self.rate.rebase(0.0);
    }

    pub(crate) fn eval(&self, series: &ScopeSeries, now: u32, p: &DetectParams) -> Eval {
        let mu = self.rate.mean();
        let run = f64::from(self.zero_run);
        if self.rate.samples() < p.warmup_secs || mu < p.drop_min_rate {
            return Eval::new(Level::Normal, run, mu);
        }
        let need = (14.0 / mu).ceil().clamp(10.0, 50.0);
        let level = if run >= need {
            let usual = seasonal::expected(series, now, |pt: &Point| pt.counts.traffic() as f64);
            if usual.is_some_and(|b| b.hi < p.drop_min_rate) {
                // This hour is normally quiet: silence is expected.
                Level::Normal
            } else {
                Level::Raise(Severity::Critical)
            }
        } else if run > 0.0 {
            Level::Elevated
        } else {
            Level::Normal
        };
        Eval::new(level, run, mu)
    }
}

/// Pool exhaustion: a rule, not a baseline — any queueing for connections
/// is worth knowing about, however usual it has become.
///
/// - critical: an acquire timed out (cause `pool_exhausted`) in the last
///   30 s;
/// - warning: acquirers waited in at least 10 of the last 15 s, or the
///   30-second acquire-wait p95 is at least `acquire_warn_ms` (with at
///   least 20 acquires);
/// - clear: no waiters for 15 s and the p95 under half the threshold.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PoolRule {
    waiting: Bits,
}

impl PoolRule {
    pub(crate) fn observe(&mut self, waiters: usize) {
        self.waiting.push(waiters > 0);
    }

    pub(crate) fn eval(&self, acquire: &Hist, exhausted: u64, p: &DetectParams) -> Eval {
        let busy = self.waiting.count_last(15);
        let p95 = if acquire.total() >= 20 {
            acquire.quantile_ms(0.95).unwrap_or(0.0)
        } else {
            0.0
        };
        let level = if exhausted > 0 {
            Level::Raise(Severity::Critical)
        } else if busy >= 10 || p95 >= p.acquire_warn_ms {
            Level::Raise(Severity::Warning)
        } else if busy == 0 && p95 < p.acquire_warn_ms / 2.0 {
            Level::Normal
        } else {
            Level::Elevated
        };
        let mut e = Eval::new(level, p95, p.acquire_warn_ms);
        e.extra = (f64::from(busy), exhausted as f64);
        e
    }
}
