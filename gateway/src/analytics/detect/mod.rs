//! Anomaly detection for one scope: six detectors run on every second, each
//! behind its own state machine (minimum duration before raising,
//! hysteresis and hold-down before clearing).
//!
//! | kind | signal (last 30 s) | baseline | raise | severity |
//! |---|---|---|---|---|
//! | error rate | errors / finished | ratio of EWMA sums | `μ + max(σ·SE, 1 pp)` | critical at `μ + 10 pp` |
//! | latency p99 (request, relay) | p99 of merged buckets | EWMA of ln p99 | `× max(e^{σ·sd}, 1.5)` and `+5 ms` | critical at `× 3` |
//! | message rate | messages / s | EWMA | `± max(σ·SE, 50 %, 5/s)` and seasonal band | warning |
//! | traffic drop | silent seconds in a row | EWMA of events / s | `14/μ` s (10–50 s) | critical |
//! | pool exhaustion | waiters, acquire p95, timeouts | fixed thresholds | waiters in ≥ 10 of 15 s or acquire p95 ≥ 50 ms | critical on an acquire timeout |
//!
//! Seasonality: a message-rate or traffic-drop alert also needs the rate
//! to be unusual for the time — against the same hour of day on previous
//! days (at least two in the 7 d window) or, failing that, the same minute
//! of the hour in previous hours (at least three in the 24 h window), with
//! a band of the median ± max(4 scaled MADs, 50 %, a floor). Without that
//! much history the EWMA band decides alone.
//!
//! Baselines learn only while their tracker is quiet, so an anomaly is
//! never absorbed into "normal" while it lasts. With one tick per second a
//! step is raised after at most 30 s of window fill plus `min_duration`
//! (10–20 s): inside the one minute the design asks for. Message-rate and
//! traffic-drop alerts that last (15 min, 1 h) are accepted as the new
//! normal and cleared with that reason; error and latency alerts stay open
//! until the service recovers.

mod rules;
mod seasonal;
mod stats;
mod tracker;
mod traffic;

use rules::{ErrorRule, Eval, LatencyRule};
use stats::{HistWindow, SumWindow};
use tracker::{Level, Step, Timing, Tracker};
use traffic::{DropRule, MessageRule, PoolRule};

use super::alert::{AlertKind, Raise};
use super::point::Acc;
use super::series::ScopeSeries;
use super::tick::{LatencySeries, ScopeKey};

/// Detection thresholds. The defaults suit a gateway with steady traffic;
/// every band also has a floor so near-constant series stay quiet.
#[derive(Clone, Debug)]
pub struct DetectParams {
    /// EWMA weight per second for baselines (default 1/600: a 10 min time constant).
    pub baseline_alpha: f64,
    /// Seconds of learning before a baseline is trusted (default 120).
    pub warmup_secs: u32,
    /// Standard deviations for the raise band (default 5).
    pub sigma: f64,
    /// Finished requests/sessions in 30 s needed to judge error rate (default 20).
    pub error_min_volume: u64,
    /// Minimum rise of the error rate over baseline to raise (default 0.01).
    pub error_min_delta: f64,
    /// Rise over baseline that makes an error alert critical (default 0.10).
    pub error_critical_delta: f64,
    /// Error rate that is critical before any baseline exists (default 0.25).
    pub error_cold_critical: f64,
    /// Observations in 30 s needed to judge a p99 (default 50).
    pub latency_min_volume: u64,
    /// p99 / baseline ratio to raise (default 1.5).
    pub latency_ratio: f64,
    /// p99 / baseline ratio for critical (default 3.0).
    pub latency_critical_ratio: f64,
    /// Minimum absolute rise of p99 to raise, ms (default 5).
    pub latency_min_ms: f64,
    /// Baseline messages/s below which the rate is not judged (default 1.0).
    pub message_min_rate: f64,
    /// Relative change of the message rate to raise (default 0.5).
    pub message_rel: f64,
    /// Baseline events/s below which silence is not judged (default 0.3).
    pub drop_min_rate: f64,
    /// Acquire-wait p95 that means the pool is short, ms (default 50).
    pub acquire_warn_ms: f64,
    /// Seconds a raise level must last before an alert (default 10).
    pub min_duration_secs: u32,
    /// Seconds a series must stay normal before an alert clears (default 30).
    pub hold_down_secs: u32,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self {
            baseline_alpha: 1.0 / 600.0,
            warmup_secs: 120,
            sigma: 5.0,
            error_min_volume: 20,
            error_min_delta: 0.01,
            error_critical_delta: 0.10,
            error_cold_critical: 0.25,
            latency_min_volume: 50,
            latency_ratio: 1.5,
            latency_critical_ratio: 3.0,
            latency_min_ms: 5.0,
            message_min_rate: 1.0,
            message_rel: 0.5,
            drop_min_rate: 0.3,
            acquire_warn_ms: 50.0,
            min_duration_secs: 10,
            hold_down_secs: 30,
        }
    }
}

impl DetectParams {
    fn timing(&self, kind: AlertKind) -> Timing {
        let (min, hold) = (self.min_duration_secs, self.hold_down_secs);
        match kind {
            AlertKind::ErrorRate | AlertKind::PoolExhaustion => Timing {
                min_duration: min,
                hold_down: hold,
                rebase_after: None,
            },
            AlertKind::LatencyP99 | AlertKind::RelayLatencyP99 => Timing {
                min_duration: min + min / 2,
                hold_down: hold,
                rebase_after: None,
            },
            AlertKind::MessageRate => Timing {
                min_duration: 2 * min,
                hold_down: hold,
                rebase_after: Some(15 * 60),
            },
            // The silent run is itself the duration.
            AlertKind::TrafficDrop => Timing {
                min_duration: 0,
                hold_down: hold / 2,
                rebase_after: Some(60 * 60),
            },
        }
    }
}

/// What detection asks of the alert book.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Raise(Raise),
    Clear(AlertKind, &'static str),
}

/// The last 30 seconds of the signals the detectors read.
#[derive(Clone, Debug, Default)]
struct Fast {
    errors: SumWindow,
    finished: SumWindow,
    messages: SumWindow,
    exhausted: SumWindow,
    request: HistWindow,
    relay: HistWindow,
    acquire: HistWindow,
}

/// Detector state of one scope (about 9 KiB, mostly the sliding
/// histograms).
#[derive(Clone, Debug)]
pub(crate) struct ScopeDetector {
    fast: Fast,
    error: ErrorRule,
    latency: LatencyRule,
    relay: LatencyRule,
    message: MessageRule,
    drop: DropRule,
    pool: PoolRule,
    trackers: [Tracker; 6],
    /// When the traffic-drop alert last ended (cleared or rebased).
    drop_ended: Option<u32>,
}

impl ScopeDetector {
    pub(crate) fn new(p: &DetectParams) -> Self {
        Self {
            fast: Fast::default(),
            error: ErrorRule::new(p),
            latency: LatencyRule::new(p),
            relay: LatencyRule::new(p),
            message: MessageRule::new(p),
            drop: DropRule::new(p),
            pool: PoolRule::default(),
            trackers: [Tracker::default(); 6],
            drop_ended: None,
        }
    }

    /// Heap bytes of one detector (the sliding histograms).
    pub(crate) fn heap_bytes() -> usize {
        3 * stats::FAST * std::mem::size_of::<crate::analytics::hist::Hist>()
    }

    /// Feeds one second and returns what changed. `waiters` is `None` for
    /// scopes without a pool.
    pub(crate) fn observe(
        &mut self,
        key: &ScopeKey,
        s: &Acc,
        waiters: Option<usize>,
        series: &ScopeSeries,
        p: &DetectParams,
    ) -> Vec<Outcome> {
        let now = s.point.t;
        self.push(s, waiters);
        let evals = self.evaluate(series, now, waiters.is_some(), p);
        let mut out = Vec::new();
        for (kind, eval) in AlertKind::ALL.iter().zip(evals) {
            let Some(eval) = eval else { continue };
            let step = self.trackers[kind.index()].step(now, eval.level, p.timing(*kind));
            if *kind == AlertKind::TrafficDrop && matches!(step, Step::Clear | Step::Rebase) {
                self.drop_ended = Some(now);
            }
            if let Some(o) = self.outcome(key, *kind, step, &eval) {
                out.push(o);
            }
        }
        self.learn(s, p);
        out
    }

    fn push(&mut self, s: &Acc, waiters: Option<usize>) {
        let c = &s.point.counts;
        let f = &mut self.fast;
        f.errors.push(u64::from(c.errors));
        f.finished.push(c.finished());
        f.messages.push(c.messages);
        f.exhausted.push(u64::from(c.pool_exhausted));
        f.request.push(&s.hists[LatencySeries::Request.index()]);
        f.relay.push(&s.hists[LatencySeries::WsRelay.index()]);
        f.acquire.push(&s.hists[LatencySeries::AcquireWait.index()]);
        self.drop.observe(c.traffic());
        if let Some(w) = waiters {
            self.pool.observe(w);
        }
    }

    fn evaluate(&self, series: &ScopeSeries, now: u32, has_pool: bool, p: &DetectParams) -> [Option<Eval>; 6] {
        let f = &self.fast;
        [
            Some(self.error.eval(f.errors.sum(), f.finished.sum(), p)),
            Some(self.latency.eval(f.request.merged(), p)),
            Some(self.relay.eval(f.relay.merged(), p)),
            Some(if self.message_muted(now) {
                Eval::new(Level::Normal, 0.0, 0.0)
            } else {
                self.message.eval(f.messages.sum(), series, now, p)
            }),
            Some(self.drop.eval(series, now, p)),
            has_pool.then(|| self.pool.eval(f.acquire.merged(), f.exhausted.sum(), p)),
        ]
    }

    /// An outage is the traffic-drop detector's to report: while its alert
    /// is pending or open, while messages are silent, and until the fast
    /// window has forgotten the silence, a message-rate alert would only
    /// repeat it.
    fn message_muted(&self, now: u32) -> bool {
        let f = &self.fast;
        !self.trackers[AlertKind::TrafficDrop.index()].is_quiet()
            || (self.drop.silent() && f.messages.sum() == 0)
            || self
                .drop_ended
                .is_some_and(|t| now.saturating_sub(t) < stats::FAST as u32)
    }

    fn outcome(&mut self, key: &ScopeKey, kind: AlertKind, step: Step, e: &Eval) -> Option<Outcome> {
        match step {
            Step::Hold => None,
            Step::Clear => Some(Outcome::Clear(kind, "recovered")),
            Step::Rebase => {
                match kind {
                    AlertKind::MessageRate => self.message.rebase(e.value),
                    AlertKind::TrafficDrop => self.drop.rebase(),
                    AlertKind::LatencyP99 => self.latency.rebase(e.value),
                    AlertKind::RelayLatencyP99 => self.relay.rebase(e.value),
                    AlertKind::ErrorRate | AlertKind::PoolExhaustion => {}
                }
                Some(Outcome::Clear(kind, "the shift lasted; accepted as the new baseline"))
            }
            Step::Raise(severity) => Some(Outcome::Raise(Raise {
                scope: key.clone(),
                kind,
                severity,
                value: e.value,
                baseline: e.baseline,
                message: describe(key, kind, e),
            })),
        }
    }

    /// Baselines learn from this second unless their alert is pending or
    /// firing.
    fn learn(&mut self, s: &Acc, p: &DetectParams) {
        let c = &s.point.counts;
        let quiet = |k: AlertKind| self.trackers[k.index()].is_quiet();
        let (q_err, q_lat, q_rel, q_msg, q_drop) = (
            quiet(AlertKind::ErrorRate),
            quiet(AlertKind::LatencyP99),
            quiet(AlertKind::RelayLatencyP99),
            quiet(AlertKind::MessageRate),
            quiet(AlertKind::TrafficDrop),
        );
        if q_err {
            self.error.learn(u64::from(c.errors), c.finished());
        }
        if q_lat {
            self.latency.learn(self.fast.request.merged(), p);
        }
        if q_rel {
            self.relay.learn(self.fast.relay.merged(), p);
        }
        if q_msg && !self.message_muted(s.point.t) {
            self.message.learn(c.messages);
        }
        if q_drop {
            self.drop.learn(c.traffic());
        }
    }
}

/// The sentence an alert carries.
fn describe(key: &ScopeKey, kind: AlertKind, e: &Eval) -> String {
    let (v, b) = (e.value, e.baseline);
    match kind {
        AlertKind::ErrorRate => format!(
            "{key}: error rate {:.1}% over the last 30 s (baseline {:.2}%)",
            v * 100.0,
            b * 100.0
        ),
        AlertKind::LatencyP99 => {
            format!("{key}: request latency p99 {v:.0} ms over the last 30 s (baseline {b:.0} ms)")
        }
        AlertKind::RelayLatencyP99 => {
            format!("{key}: WebSocket relay latency p99 {v:.1} ms over the last 30 s (baseline {b:.1} ms)")
        }
        AlertKind::MessageRate => {
            format!("{key}: message rate {v:.1}/s over the last 30 s (baseline {b:.1}/s)")
        }
        AlertKind::TrafficDrop => {
            format!("{key}: no requests, sessions or messages for {v:.0} s (baseline {b:.1}/s)")
        }
        AlertKind::PoolExhaustion => format!(
            "{key}: pool exhausted — acquire wait p95 {v:.0} ms, acquirers waiting in {:.0} of \
             the last 15 s, {:.0} acquire timeouts in the last 30 s",
            e.extra.0, e.extra.1
        ),
    }
}
