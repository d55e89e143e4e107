//! The soak's figures and verdict, from the samples alone.
//!
//! - **RSS after warm-up**: the median over the first `window` of churn
//!   after the warm-up; **RSS at the end**: the median over the last
//!   `window` of the settle. The issue asks the end to be within 5 % of the
//!   after-warm-up value; ending lower is not a leak, so the check is
//!   `end <= 1.05 × after warm-up` and the ratio is reported either way.
//! - **Descriptors**: the median over the baseline (before any load, with
//!   the pools already holding their `min_connections`) against the median
//!   over the last `window` of the settle; the end must not exceed the
//!   baseline. Should the baseline have been taken before the pools were
//!   fully warm, the warm connections still missing then are allowed.
//! - **Pool**: upstream connections opened per session served, and spare
//!   (ready + idle) upstream connections held when the churn stopped, at
//!   most during the settle, and at the end.
//!
//! Medians, so one slow sample (a scrape that timed out, a page fault
//! burst) does not move the verdict.

use serde::Serialize;

use super::sample::{Phase, Sample};

/// When each phase began (seconds since the gateway was up).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Marks {
    pub(crate) baseline_start_s: f64,
    pub(crate) churn_start_s: f64,
    pub(crate) warmup_end_s: f64,
    /// No new operations after this.
    pub(crate) churn_stop_s: f64,
    /// The last operation finished: the settle starts.
    pub(crate) settle_start_s: f64,
    pub(crate) settle_end_s: f64,
}

/// What the verdict allows and compares against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Criteria {
    /// Seconds per median window.
    pub(crate) window_s: f64,
    /// Largest end / after-warm-up RSS ratio that passes.
    pub(crate) rss_ratio_max: f64,
    /// Warm pool connections the config asks for (all pools together).
    pub(crate) warm_connections: i64,
}

/// The figures and the verdict.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) rss_start_kib: Option<f64>,
    pub(crate) rss_baseline_kib: Option<f64>,
    pub(crate) rss_after_warmup_kib: Option<f64>,
    pub(crate) rss_peak_kib: Option<f64>,
    pub(crate) rss_end_kib: Option<f64>,
    /// End / after warm-up.
    pub(crate) rss_ratio: Option<f64>,
    pub(crate) rss_ok: bool,
    pub(crate) fds_baseline: Option<f64>,
    pub(crate) fds_peak: Option<f64>,
    pub(crate) fds_end: Option<f64>,
    /// Descriptors the end may exceed the baseline by (pool warm-up not
    /// finished at baseline).
    pub(crate) fds_allowance: f64,
    pub(crate) fds_ok: bool,
    pub(crate) threads_baseline: Option<f64>,
    pub(crate) threads_end: Option<f64>,
    pub(crate) sessions_active_end: Option<f64>,
    /// The gateway's mean CPU use from the churn's start to its stop, in
    /// cores (1.0 = one core busy): whether the machine had room for it.
    pub(crate) cpu_cores_churn: Option<f64>,
    /// Open upstream connections (every state but `failed`).
    pub(crate) pool_open_baseline: Option<f64>,
    pub(crate) pool_open_end: Option<f64>,
    /// Ready + idle upstream connections.
    pub(crate) pool_spare_at_churn_stop: Option<f64>,
    pub(crate) pool_spare_settle_max: Option<f64>,
    pub(crate) pool_spare_end: Option<f64>,
    /// Connections the websocket cluster's upstream accepted after the baseline.
    pub(crate) ws_upstream_connections: u64,
    /// Connections the http cluster's upstream accepted after the baseline.
    pub(crate) http_upstream_connections: u64,
    pub(crate) pass: bool,
}

/// Pool states that hold an open connection.
const OPEN: [&str; 6] = ["initializing", "ready", "active", "idle", "unhealthy", "recycling"];
/// Pool states of a connection nobody uses.
const SPARE: [&str; 2] = ["ready", "idle"];

/// The median of `values` (`None` when empty).
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn values(samples: &[&Sample], f: impl Fn(&Sample) -> Option<f64>) -> Vec<f64> {
    samples.iter().filter_map(|s| f(s)).collect()
}

fn rss(s: &Sample) -> Option<f64> {
    s.rss_kib.map(|v| v as f64)
}

fn fds(s: &Sample) -> Option<f64> {
    s.fds.map(|v| v as f64)
}

fn pool(states: &'static [&'static str]) -> impl Fn(&Sample) -> Option<f64> {
    move |s| s.gauges.as_ref().map(|g| g.pool_in(states) as f64)
}

/// The samples of the windows the verdict compares: baseline, after
/// warm-up, end. A run too short for a full window uses what it has.
pub(crate) fn windows<'a>(
    samples: &'a [Sample],
    marks: &Marks,
    window_s: f64,
) -> (Vec<&'a Sample>, Vec<&'a Sample>, Vec<&'a Sample>) {
    let in_phase = |p: Phase| samples.iter().filter(move |s| s.phase == p);
    let baseline: Vec<&Sample> = in_phase(Phase::Baseline).collect();
    let mut after: Vec<&Sample> = in_phase(Phase::Churn)
        .filter(|s| s.t_s <= marks.warmup_end_s + window_s)
        .collect();
    if after.is_empty() {
        after = in_phase(Phase::Churn).take(1).collect();
    }
    let mut end: Vec<&Sample> = in_phase(Phase::Settle)
        .filter(|s| s.t_s >= marks.settle_end_s - window_s)
        .collect();
    if end.is_empty() {
        end = samples.last().into_iter().collect();
    }
    (baseline, after, end)
}

/// Computes the figures and the verdict.
pub(crate) fn summarise(samples: &[Sample], marks: &Marks, c: &Criteria) -> Summary {
    let (baseline, after, end) = windows(samples, marks, c.window_s);
    let all: Vec<&Sample> = samples.iter().collect();
    let max = |v: Vec<f64>| v.into_iter().reduce(f64::max);
    let rss_after = median(values(&after, rss));
    let rss_end = median(values(&end, rss));
    let rss_ratio = match (rss_after, rss_end) {
        (Some(a), Some(e)) if a > 0.0 => Some(e / a),
        _ => None,
    };
    let fds_baseline = median(values(&baseline, fds));
    let fds_end = median(values(&end, fds));
    let pool_open_baseline = median(values(&baseline, pool(&OPEN)));
    let fds_allowance = (c.warm_connections as f64 - pool_open_baseline.unwrap_or(0.0)).max(0.0);
    let rss_ok = rss_ratio.is_some_and(|r| r <= c.rss_ratio_max);
    let fds_ok = matches!((fds_baseline, fds_end), (Some(b), Some(e)) if e <= b + fds_allowance);
    let at_stop: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= marks.churn_stop_s).take(1).collect();
    let settle: Vec<&Sample> = samples.iter().filter(|s| s.phase == Phase::Settle).collect();
    let first_from = |t: f64| samples.iter().find(|s| s.t_s >= t);
    let cpu_cores_churn = match (first_from(marks.churn_start_s), first_from(marks.churn_stop_s)) {
        (Some(a), Some(b)) if b.t_s > a.t_s && b.cpu_ms >= a.cpu_ms => {
            Some((b.cpu_ms - a.cpu_ms) as f64 / 1000.0 / (b.t_s - a.t_s))
        }
        _ => None,
    };
    let opened = |f: fn(&Sample) -> u64| {
        let at = |s: Option<&&Sample>| s.map_or(0, |s| f(s));
        at(all.last()).saturating_sub(at(baseline.first()))
    };
    Summary {
        rss_start_kib: samples.iter().find_map(rss),
        rss_baseline_kib: median(values(&baseline, rss)),
        rss_after_warmup_kib: rss_after,
        rss_peak_kib: max(values(&all, rss)),
        rss_end_kib: rss_end,
        rss_ratio,
        rss_ok,
        fds_baseline,
        fds_peak: max(values(&all, fds)),
        fds_end,
        fds_allowance,
        fds_ok,
        threads_baseline: median(values(&baseline, |s| s.threads.map(|v| v as f64))),
        threads_end: median(values(&end, |s| s.threads.map(|v| v as f64))),
        cpu_cores_churn,
        sessions_active_end: median(values(&end, |s| s.gauges.as_ref().map(|g| g.sessions_active as f64))),
        pool_open_baseline,
        pool_open_end: median(values(&end, pool(&OPEN))),
        pool_spare_at_churn_stop: values(&at_stop, pool(&SPARE)).first().copied(),
        pool_spare_settle_max: max(values(&settle, pool(&SPARE))),
        pool_spare_end: median(values(&end, pool(&SPARE))),
        ws_upstream_connections: opened(|s| s.ws_upstream_accepted),
        http_upstream_connections: opened(|s| s.http_upstream_accepted),
        pass: rss_ok && fds_ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::sample::Gauges;

    fn sample(t_s: f64, phase: Phase, rss: u64, fds: u64, spare: i64) -> Sample {
        let mut gauges = Gauges::default();
        gauges.pool.insert("ready".into(), spare);
        gauges.pool.insert("active".into(), 1);
        Sample {
            t_s,
            phase,
            rss_kib: Some(rss),
            fds: Some(fds),
            threads: Some(3),
            cpu_ms: t_s as u64 * 250,
            gauges: Some(gauges),
            ws_upstream_accepted: t_s as u64 * 10,
            http_upstream_accepted: t_s as u64,
            ops_started: 0,
            ops_finished: 0,
        }
    }

    /// Baseline 0–4 s, warm-up to 10 s, churn to 30 s, settle 30–40 s.
    fn run(end_rss: u64, end_fds: u64) -> (Vec<Sample>, Marks) {
        let mut samples = Vec::new();
        for t in 0..40 {
            let (phase, rss, fds) = match t {
                0..=4 => (Phase::Baseline, 10_000, 20),
                5..=9 => (Phase::Warmup, 15_000, 400),
                10..=29 => (Phase::Churn, 20_000 + (t % 3) * 100, 600),
                _ => (Phase::Settle, end_rss, end_fds),
            };
            samples.push(sample(t as f64, phase, rss, fds, 4));
        }
        // One wild sample in the end window does not move the median.
        if let Some(s) = samples.last_mut() {
            s.rss_kib = Some(90_000);
        }
        let marks = Marks {
            baseline_start_s: 0.0,
            churn_start_s: 5.0,
            warmup_end_s: 10.0,
            churn_stop_s: 30.0,
            settle_start_s: 30.0,
            settle_end_s: 39.5,
        };
        (samples, marks)
    }

    const CRITERIA: Criteria = Criteria {
        window_s: 5.0,
        rss_ratio_max: 1.05,
        warm_connections: 5,
    };

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn steady_memory_and_descriptors_pass() {
        let (samples, marks) = run(20_500, 20);
        let s = summarise(&samples, &marks, &CRITERIA);
        assert_eq!(s.rss_after_warmup_kib, Some(20_100.0));
        assert_eq!(s.rss_end_kib, Some(20_500.0));
        assert!((s.rss_ratio.unwrap() - 20_500.0 / 20_100.0).abs() < 1e-9);
        assert_eq!(s.rss_start_kib, Some(10_000.0));
        // A quarter of a core all along.
        assert!((s.cpu_cores_churn.unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(s.rss_peak_kib, Some(90_000.0));
        assert_eq!(
            (s.fds_baseline, s.fds_end, s.fds_peak),
            (Some(20.0), Some(20.0), Some(600.0))
        );
        // Five open at baseline (4 ready + 1 active): the pool was warm.
        assert_eq!(s.pool_open_baseline, Some(5.0));
        assert_eq!(s.fds_allowance, 0.0);
        assert_eq!(s.pool_spare_at_churn_stop, Some(4.0));
        assert_eq!((s.ws_upstream_connections, s.http_upstream_connections), (390, 39));
        assert!(s.rss_ok && s.fds_ok && s.pass, "{s:?}");
        // Memory that fell back below the warm-up level is no leak.
        let (samples, marks) = run(15_000, 20);
        assert!(summarise(&samples, &marks, &CRITERIA).pass);
    }

    #[test]
    fn growth_and_leaked_descriptors_fail() {
        let (samples, marks) = run(21_200, 20);
        let s = summarise(&samples, &marks, &CRITERIA);
        assert!(!s.rss_ok && s.fds_ok && !s.pass);
        let (samples, marks) = run(20_000, 23);
        let s = summarise(&samples, &marks, &CRITERIA);
        assert!(s.rss_ok && !s.fds_ok && !s.pass);
        // Unless the baseline caught the pools still warming: 3 missing.
        let c = Criteria {
            warm_connections: 8,
            ..CRITERIA
        };
        assert!(summarise(&samples, &marks, &c).pass);
    }

    #[test]
    fn short_runs_use_what_they_have() {
        let marks = Marks {
            warmup_end_s: 1.0,
            settle_end_s: 100.0,
            ..Marks::default()
        };
        let samples = vec![
            sample(0.0, Phase::Baseline, 1000, 10, 2),
            sample(1.0, Phase::Churn, 2000, 30, 2),
            sample(2.0, Phase::WindDown, 3000, 30, 2),
        ];
        let (baseline, after, end) = windows(&samples, &marks, 10.0);
        assert_eq!((baseline.len(), after.len(), end.len()), (1, 1, 1));
        assert_eq!(end[0].t_s, 2.0);
        assert!(summarise(&[], &marks, &CRITERIA).rss_ratio.is_none());
        assert!(!summarise(&[], &marks, &CRITERIA).pass);
    }
}
