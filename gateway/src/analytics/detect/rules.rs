//! Detectors for service quality: error rate and latency p99.
//!
//! Both compare the last 30 seconds with a slow EWMA baseline and answer a
//! [`Level`]. The raise threshold is the larger of a statistical band
//! (`sigma` standard deviations) and a minimum effect size, so a quiet,
//! very stable series cannot alert on a change nobody would care about.

use super::DetectParams;
use super::stats::Ewma;
use super::tracker::Level;
use crate::analytics::alert::Severity;
use crate::analytics::hist::Hist;

/// A detector's answer with the numbers behind it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Eval {
    pub(crate) level: Level,
    /// The fast-window value.
    pub(crate) value: f64,
    /// The expected value.
    pub(crate) baseline: f64,
    /// Kind-specific detail for the message.
    pub(crate) extra: (f64, f64),
}

impl Eval {
    pub(crate) fn new(level: Level, value: f64, baseline: f64) -> Self {
        Self {
            level,
            value,
            baseline,
            extra: (0.0, 0.0),
        }
    }
}

/// Error rate: errors over finished requests and sessions.
///
/// The baseline is the ratio of two EWMA sums (errors and finished per
/// second), which weighs busy seconds more than idle ones. The band is the
/// binomial standard error of the 30-second proportion, `sqrt(μ(1−μ)/n)`,
/// so it widens by itself when traffic is thin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorRule {
    errors: Ewma,
    finished: Ewma,
}

impl ErrorRule {
    pub(crate) fn new(p: &DetectParams) -> Self {
        Self {
            errors: Ewma::new(p.baseline_alpha),
            finished: Ewma::new(p.baseline_alpha),
        }
    }

    pub(crate) fn learn(&mut self, errors: u64, finished: u64) {
        self.errors.update(errors as f64);
        self.finished.update(finished as f64);
    }

    fn baseline(&self, p: &DetectParams) -> Option<f64> {
        let warm = self.finished.samples() >= p.warmup_secs && self.finished.mean() > 0.0;
        warm.then(|| (self.errors.mean() / self.finished.mean()).clamp(0.0, 1.0))
    }

    /// `errors` and `finished` are the fast-window sums.
    pub(crate) fn eval(&self, errors: u64, finished: u64, p: &DetectParams) -> Eval {
        let rate = if finished > 0 {
            errors as f64 / finished as f64
        } else {
            0.0
        };
        if finished < p.error_min_volume {
            return Eval::new(Level::Normal, rate, 0.0);
        }
        let Some(mu) = self.baseline(p) else {
            // No baseline yet: only a blatant failure rate is worth a page.
            let level = if rate >= p.error_cold_critical {
                Level::Raise(Severity::Critical)
            } else {
                Level::Normal
            };
            return Eval::new(level, rate, 0.0);
        };
        let se = (mu.max(1e-3) * (1.0 - mu) / finished as f64).sqrt();
        let raise = (mu + p.sigma * se).max(mu + p.error_min_delta);
        let clear = (mu + 2.0 * se).max(mu + p.error_min_delta / 2.0);
        let level = if rate >= raise {
            let critical = rate - mu >= p.error_critical_delta;
            Level::Raise(if critical {
                Severity::Critical
            } else {
                Severity::Warning
            })
        } else if rate > clear {
            Level::Elevated
        } else {
            Level::Normal
        };
        Eval::new(level, rate, mu)
    }
}

/// Latency p99 of one series.
///
/// The baseline is an EWMA (mean and variance) of the logarithm of the
/// 30-second p99, so "twice as slow" means the same at 2 ms and at 2 s.
/// Raising needs the p99 to exceed the baseline by `sigma` deviations *and*
/// by the ratio `latency_ratio` *and* by `latency_min_ms`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LatencyRule {
    log_p99: Ewma,
}

impl LatencyRule {
    pub(crate) fn new(p: &DetectParams) -> Self {
        Self {
            log_p99: Ewma::new(p.baseline_alpha),
        }
    }

    fn p99(h: &Hist, p: &DetectParams) -> Option<f64> {
        if h.total() < p.latency_min_volume {
            return None;
        }
        h.quantile_ms(0.99).map(|x| x.max(0.01))
    }

    pub(crate) fn learn(&mut self, window: &Hist, p: &DetectParams) {
        if let Some(x) = Self::p99(window, p) {
            self.log_p99.update(x.ln());
        }
    }

    pub(crate) fn rebase(&mut self, value_ms: f64) {
        self.log_p99.rebase(value_ms.max(0.01).ln());
    }

    pub(crate) fn eval(&self, window: &Hist, p: &DetectParams) -> Eval {
        let Some(x) = Self::p99(window, p) else {
            return Eval::new(Level::Normal, 0.0, 0.0);
        };
        if self.log_p99.samples() < p.warmup_secs {
            return Eval::new(Level::Normal, x, 0.0);
        }
        let mu = self.log_p99.mean();
        let base = mu.exp();
        let sd = self.log_p99.std();
        let up = x.ln() - mu;
        let big_enough = x - base >= p.latency_min_ms;
        let level = if up >= (p.sigma * sd).max(p.latency_ratio.ln()) && big_enough {
            let critical = x >= p.latency_critical_ratio * base;
            Level::Raise(if critical {
                Severity::Critical
            } else {
                Severity::Warning
            })
        } else if up > (2.0 * sd).max(((1.0 + p.latency_ratio) / 2.0).ln()) && big_enough {
            Level::Elevated
        } else {
            Level::Normal
        };
        Eval::new(level, x, base)
    }
}
