//! Recommendations: plain sentences with a number to change, recomputed
//! once a minute from the closed minutes of each scope.
//!
//! | kind | when (over the window) | suggestion |
//! |---|---|---|
//! | raise `max_connections` | acquire-wait p95 ≥ 50 ms over 10 min and the pool was at its max | `ceil(peak λ × (W + Wq) × 1.25 / endpoints)`, rounded up to 5 |
//! | raise `min_connections` | the same wait while the pool still had room (connects on demand) | `ceil(mean in use × 1.25 / endpoints)` |
//! | lower `min_connections` | ≥ 60 % of open connections unused over 1 h | `ceil(peak in use × 1.25 / endpoints)` |
//! | rate limits | ≥ 10 % of requests and sessions rate-limited over 10 min | names the top key when keys are reported |
//! | coordination overhead | waiting in the gateway ≥ 20 % of request time over 10 min | points at the pool and limits |
//!
//! `λ` is the acquire rate of the busiest minute, `W = in use / λ` the mean
//! hold time (Little's law on the connections in use) and `Wq` the mean
//! acquire wait. By Little's law again, `λ × (W + Wq)` is how many
//! acquirers hold or want a connection at once: with that many
//! connections nobody would have waited. A saturated pool hides demand in
//! its queue, which is why the wait counts.

use serde::Serialize;

use super::derived::derive;
use super::point::Point;
use super::series::{ScopeSeries, tail};
use super::tally::KeyTally;
use super::tick::{LatencySeries, PoolSample, ScopeKey};

/// Thresholds for recommendations.
#[derive(Clone, Debug)]
pub struct RecommendParams {
    /// Acquire-wait p95 that calls for more connections, ms (default 50).
    pub acquire_wait_ms: f64,
    /// Spare capacity added to observed demand (default 0.25).
    pub headroom: f64,
    /// Unused share of open connections that calls for a lower minimum (default 0.6).
    pub idle_share: f64,
    /// Rate-limited share of requests worth a word (default 0.1).
    pub rate_limited_share: f64,
    /// Coordination overhead above which to say so (default 0.2).
    pub overhead: f64,
}

impl Default for RecommendParams {
    fn default() -> Self {
        Self {
            acquire_wait_ms: 50.0,
            headroom: 0.25,
            idle_share: 0.6,
            rate_limited_share: 0.1,
            overhead: 0.2,
        }
    }
}

/// What a recommendation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecKind {
    /// Raise `max_connections`.
    RaiseMaxConnections,
    /// Raise `min_connections` (keep more warm).
    RaiseMinConnections,
    /// Lower `min_connections`.
    LowerMinConnections,
    /// Many requests rate-limited.
    RateLimited,
    /// Much of the request time spent waiting in the gateway.
    Overhead,
}

impl RecKind {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RaiseMaxConnections => "raise_max_connections",
            Self::RaiseMinConnections => "raise_min_connections",
            Self::LowerMinConnections => "lower_min_connections",
            Self::RateLimited => "rate_limited",
            Self::Overhead => "overhead",
        }
    }
}

/// One piece of advice.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// `scope/kind`, stable while the advice stands.
    pub id: String,
    /// What it is about.
    pub kind: RecKind,
    /// Where.
    pub scope: ScopeKey,
    /// The advice, with its evidence.
    pub message: String,
    /// The setting's current value, when the advice changes a setting.
    pub current: Option<u64>,
    /// The suggested value.
    pub suggested: Option<u64>,
    /// First made (Unix seconds); kept while the advice keeps standing.
    pub since: u64,
}

/// The inputs for one scope.
pub(crate) struct ScopeView<'a> {
    pub(crate) key: &'a ScopeKey,
    pub(crate) series: &'a ScopeSeries,
    pub(crate) pool: Option<&'a PoolSample>,
    pub(crate) keys: &'a KeyTally,
}

/// Every recommendation that stands for this scope now.
pub(crate) fn recommend(v: &ScopeView<'_>, p: &RecommendParams, now: u64) -> Vec<Recommendation> {
    let mut out = Vec::new();
    if let Some(pool) = v.pool {
        out.extend(acquire_wait(v, pool, p, now));
        out.extend(idle(v, pool, p, now));
    }
    out.extend(rate_limited(v, p, now));
    out.extend(overhead(v, p, now));
    out
}

fn rec(v: &ScopeView<'_>, kind: RecKind, message: String, now: u64) -> Recommendation {
    Recommendation {
        id: format!("{}/{}", v.key, kind.as_str()),
        kind,
        scope: v.key.clone(),
        message,
        current: None,
        suggested: None,
        since: now,
    }
}

/// What the last minutes say about a pool that made acquirers wait.
struct WaitEvidence {
    p95: f64,
    minutes: usize,
    at_max: bool,
    peak_rate: f64,
    hold_s: f64,
    wait_s: f64,
    in_use: f64,
}

fn wait_evidence(v: &ScopeView<'_>, pool: &PoolSample, p: &RecommendParams) -> Option<WaitEvidence> {
    let (hists, minutes) = v.series.recent_minutes_hists(10);
    let acquire = &hists[LatencySeries::AcquireWait.index()];
    if minutes < 5 || acquire.total() < 100 {
        return None;
    }
    let p95 = acquire.quantile_ms(0.95)?;
    if p95 < p.acquire_wait_ms {
        return None;
    }
    let pts: Vec<&Point> = tail(&v.series.mins, minutes).collect();
    let cap = f64::from(pool.max_connections) * f64::from(pool.endpoints.max(1));
    let (peak_rate, hold_s, in_use) = load(&pts);
    Some(WaitEvidence {
        p95,
        minutes,
        at_max: pts.iter().any(|pt| f64::from(pt.pool.open_mean()) >= 0.9 * cap),
        peak_rate,
        hold_s,
        wait_s: acquire_mean_s(&pts),
        in_use,
    })
}

fn acquire_wait(v: &ScopeView<'_>, pool: &PoolSample, p: &RecommendParams, now: u64) -> Option<Recommendation> {
    let e = wait_evidence(v, pool, p)?;
    let n = f64::from(pool.endpoints.max(1));
    let (name, p95, minutes) = (v.key, e.p95, e.minutes);
    if e.at_max {
        // Little's law: acquirers holding or wanting a connection at once.
        let wanted = e.peak_rate * (e.hold_s + e.wait_s);
        let per_ep = (wanted * (1.0 + p.headroom) / n).ceil().max(1.0) as u64;
        let cur = u64::from(pool.max_connections);
        let sug = per_ep.max(cur + 1).div_ceil(5) * 5;
        let msg = format!(
            "{name}: acquire wait p95 {p95:.0} ms over {minutes} min — raise max_connections from \
             {cur} to {sug} (peak {:.1} acquires/s × ({:.0} ms hold + {:.0} ms wait) ≈ {wanted:.0} \
             connections wanted, +{:.0}% headroom)",
            e.peak_rate,
            e.hold_s * 1000.0,
            e.wait_s * 1000.0,
            p.headroom * 100.0
        );
        return Some(with_values(rec(v, RecKind::RaiseMaxConnections, msg, now), cur, sug));
    }
    let cur = u64::from(pool.min_connections);
    let sug = ((e.in_use * (1.0 + p.headroom) / n).ceil() as u64).min(u64::from(pool.max_connections));
    if sug <= cur {
        return None;
    }
    let msg = format!(
        "{name}: acquire wait p95 {p95:.0} ms over {minutes} min while the pool had room — \
         connections are being opened on demand; raise min_connections from {cur} to {sug} \
         (≈ {:.1} connections in use on average)",
        e.in_use
    );
    Some(with_values(rec(v, RecKind::RaiseMinConnections, msg, now), cur, sug))
}

fn with_values(mut r: Recommendation, current: u64, suggested: u64) -> Recommendation {
    (r.current, r.suggested) = (Some(current), Some(suggested));
    r
}

/// Mean acquire wait over the points, seconds.
fn acquire_mean_s(pts: &[&Point]) -> f64 {
    let (sum, n) = pts.iter().fold((0.0, 0.0), |(s, n), pt| {
        let l = pt.latency(LatencySeries::AcquireWait);
        (s + f64::from(l.sum_ms), n + f64::from(l.count))
    });
    if n > 0.0 { sum / n / 1000.0 } else { 0.0 }
}

/// Peak per-minute acquire rate, mean hold time (s) and mean connections
/// in use over the points.
fn load(pts: &[&Point]) -> (f64, f64, f64) {
    let acq = |pt: &Point| pt.rate(u64::from(pt.latency(LatencySeries::AcquireWait).count));
    let peak = pts.iter().map(|pt| acq(pt)).fold(0.0, f64::max);
    let secs: f64 = pts.iter().map(|pt| f64::from(pt.secs)).sum();
    let total_acq: f64 = pts
        .iter()
        .map(|pt| f64::from(pt.latency(LatencySeries::AcquireWait).count))
        .sum();
    let in_use: f64 = pts
        .iter()
        .map(|pt| f64::from(pt.pool.active_mean()) * f64::from(pt.secs))
        .sum::<f64>()
        / secs.max(1.0);
    let mean_rate = total_acq / secs.max(1.0);
    let hold = if mean_rate > 0.0 { in_use / mean_rate } else { 0.0 };
    (peak, hold, in_use)
}

fn idle(v: &ScopeView<'_>, pool: &PoolSample, p: &RecommendParams, now: u64) -> Option<Recommendation> {
    let pts: Vec<&Point> = tail(&v.series.mins, 60).collect();
    if pts.len() < 60 {
        return None;
    }
    let weighted =
        |f: &dyn Fn(&Point) -> f32| -> f64 { pts.iter().map(|pt| f64::from(f(pt)) * f64::from(pt.pool.secs)).sum() };
    let open = weighted(&|pt| pt.pool.open_mean());
    let unused = weighted(&|pt| pt.pool.unused_mean());
    if open <= 0.0 || unused / open < p.idle_share {
        return None;
    }
    let peak = pts
        .iter()
        .map(|pt| f64::from(pt.pool.active_mean()))
        .fold(0.0, f64::max);
    let n = f64::from(pool.endpoints.max(1));
    let sug = ((peak * (1.0 + p.headroom) / n).ceil() as u64).max(1);
    let cur = u64::from(pool.min_connections);
    if sug >= cur {
        return None;
    }
    let msg = format!(
        "{}: {:.0}% of pooled connections unused over the last hour — lower min_connections from \
         {cur} to {sug} (peak {peak:.1} in use)",
        v.key,
        unused / open * 100.0
    );
    Some(with_values(rec(v, RecKind::LowerMinConnections, msg, now), cur, sug))
}

fn rate_limited(v: &ScopeView<'_>, p: &RecommendParams, now: u64) -> Option<Recommendation> {
    let pts: Vec<&Point> = tail(&v.series.mins, 10).collect();
    let limited: u64 = pts.iter().map(|pt| u64::from(pt.counts.rate_limited)).sum();
    let started: u64 = pts
        .iter()
        .map(|pt| u64::from(pt.counts.req_started) + u64::from(pt.counts.sess_started))
        .sum();
    if limited < 50 || started == 0 {
        return None;
    }
    let share = (limited as f64 / started as f64).min(1.0);
    if share < p.rate_limited_share {
        return None;
    }
    let who = match v.keys.top() {
        Some((k, n, total)) if n > 0 => format!(
            "; key {k} accounts for {:.0}% of those reported per key — raise that agent's limit \
             or ask it to back off",
            n as f64 / total as f64 * 100.0
        ),
        _ => "; per-key counts are not reported — check the rate-limit filter's key and \
              requests_per_second"
            .to_owned(),
    };
    let msg = format!(
        "{}: {:.0}% of requests rate-limited over the last {} min ({limited} of {started}){who}",
        v.key,
        share * 100.0,
        pts.len()
    );
    Some(rec(v, RecKind::RateLimited, msg, now))
}

fn overhead(v: &ScopeView<'_>, p: &RecommendParams, now: u64) -> Option<Recommendation> {
    let pts = tail(&v.series.mins, 10);
    let d = derive(pts, &Default::default());
    let requests: u64 = tail(&v.series.mins, 10)
        .map(|pt| u64::from(pt.counts.req_started))
        .sum();
    let o = d.overhead?;
    if requests < 100 || o < p.overhead {
        return None;
    }
    let msg = format!(
        "{}: {:.0}% of request time is spent waiting inside the gateway over the last 10 min \
         (pool acquire, queues, retry backoff; the target is under {:.0}%) — see the pool and \
         rate-limit advice for this scope",
        v.key,
        o * 100.0,
        p.overhead * 100.0
    );
    Some(rec(v, RecKind::Overhead, msg, now))
}
