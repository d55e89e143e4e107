//! The engine: all analytics state, fed one [`Tick`] at a time.
//!
//! [`Engine::ingest`] files each scope's sample into its windows, runs the
//! detectors and the pool sizer, recomputes recommendations once a minute
//! and returns the alert events of that tick. It does no I/O and reads no
//! clock (time is the tick's timestamp), so tests drive it synchronously
//! through hours of simulated seconds; [`spawn`](super::spawn) wraps it in
//! the task the gateway runs.
//!
//! Scopes are capped: the global scope always has a place, other scopes
//! take at most `scope_cap − 1`. A scope absent from ticks for
//! `evict_after` is dropped (its alerts clear); when the cap is reached a
//! new scope takes the place of the one absent longest, and if every scope
//! is in the current tick the new one is not tracked
//! ([`Engine::dropped_samples`] counts these).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentmux_filters::circuit_breaker::CircuitState;

use super::alert::{Alert, AlertBook, AlertEvent};
use super::derived::{CostRates, Derived, derive};
use super::detect::{DetectParams, Outcome, ScopeDetector};
use super::forecast::{PoolSizer, PoolTarget, SizingParams};
use super::point::Acc;
use super::recommend::{RecommendParams, Recommendation, ScopeView, recommend};
use super::series::{ScopeSeries, tail};
use super::tally::KeyTally;
use super::tick::{LatencySeries, PoolSample, ScopeKey, ScopeSample, Tick};

/// Everything the analytics engine can be tuned with.
#[derive(Clone, Debug)]
pub struct AnalyticsParams {
    /// Most scopes tracked, the global one included (default 32).
    pub scope_cap: usize,
    /// A scope missing from ticks this long is dropped (default 10 min).
    pub evict_after: Duration,
    /// Cleared alerts kept for the admin API (default 100).
    pub recent_alerts: usize,
    /// An alert that returns within this time after clearing is reopened
    /// instead of raised anew (default 5 min).
    pub reopen_within: Duration,
    /// Seconds of the 1 s window the live derived figures cover (default 300).
    pub derived_secs: u32,
    /// Anomaly detection.
    pub detect: DetectParams,
    /// Predictive pool sizing.
    pub sizing: SizingParams,
    /// Recommendations.
    pub recommend: RecommendParams,
    /// Cost rates for cost per task.
    pub cost: CostRates,
}

impl Default for AnalyticsParams {
    fn default() -> Self {
        Self {
            scope_cap: 32,
            evict_after: Duration::from_secs(600),
            recent_alerts: 100,
            reopen_within: Duration::from_secs(300),
            derived_secs: 300,
            detect: DetectParams::default(),
            sizing: SizingParams::default(),
            recommend: RecommendParams::default(),
            cost: CostRates::default(),
        }
    }
}

/// One scope's state.
#[derive(Clone, Debug)]
pub(crate) struct ScopeState {
    pub(crate) series: ScopeSeries,
    detector: ScopeDetector,
    sizer: Option<PoolSizer>,
    keys: KeyTally,
    pub(crate) pool: Option<PoolSample>,
    pub(crate) circuit: Option<CircuitState>,
    last_seen: u32,
}

impl ScopeState {
    fn new(p: &AnalyticsParams, t: u32) -> Self {
        Self {
            series: ScopeSeries::default(),
            detector: ScopeDetector::new(&p.detect),
            sizer: None,
            keys: KeyTally::default(),
            pool: None,
            circuit: None,
            last_seen: t,
        }
    }
}

/// The analytics state of one gateway.
#[derive(Debug)]
pub struct Engine {
    params: AnalyticsParams,
    scopes: BTreeMap<ScopeKey, ScopeState>,
    alerts: AlertBook,
    recommendations: Vec<Recommendation>,
    targets: BTreeMap<Arc<str>, PoolTarget>,
    now: u32,
    last_recommend: u32,
    dropped: u64,
}

/// Seconds a tick may arrive late (and be ignored as such) before the
/// engine decides the wall clock was stepped back.
const CLOCK_SLACK: u32 = 5;

/// Unix seconds of a wall-clock time (0 before the epoch).
pub(crate) fn unix_secs(at: SystemTime) -> u32 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

impl Engine {
    /// An engine with no history.
    pub fn new(params: AnalyticsParams) -> Self {
        let alerts = AlertBook::new(params.recent_alerts, params.reopen_within.as_secs());
        Self {
            params,
            scopes: BTreeMap::new(),
            alerts,
            recommendations: Vec::new(),
            targets: BTreeMap::new(),
            now: 0,
            last_recommend: 0,
            dropped: 0,
        }
    }

    /// The parameters in force.
    pub fn params(&self) -> &AnalyticsParams {
        &self.params
    }

    /// Files one tick; returns the alert events it caused, in order.
    pub fn ingest(&mut self, tick: &Tick) -> Vec<AlertEvent> {
        let t = self.second_of(tick.at);
        self.now = self.now.max(t);
        let mut events = self.evict_stale(t);
        for (key, _) in &tick.scopes {
            if let Some(s) = self.scopes.get_mut(key) {
                s.last_seen = s.last_seen.max(t);
            }
        }
        let global_traffic = tick
            .scopes
            .iter()
            .find(|(k, _)| *k == ScopeKey::Global)
            .map_or(0, |(_, s)| traffic(s));
        for (key, sample) in &tick.scopes {
            // CPU is measured for the process; routes and clusters get the
            // share of it their traffic makes up.
            let cpu_ms = tick.cpu_us as f32 / 1000.0;
            let cpu_ms = match key {
                ScopeKey::Global => cpu_ms,
                _ if global_traffic == 0 => 0.0,
                _ => cpu_ms * (traffic(sample) as f32 / global_traffic as f32).min(1.0),
            };
            events.extend(self.ingest_scope(key, sample, t, cpu_ms));
        }
        if t >= self.last_recommend.saturating_add(60) {
            self.last_recommend = t;
            self.recompute_recommendations();
        }
        events
    }

    /// The second a tick is filed under. Windows only move forward, so a
    /// wall clock stepped back by more than a few seconds would otherwise
    /// stop them until it caught up: the engine then keeps counting
    /// seconds from where it was.
    fn second_of(&self, at: SystemTime) -> u32 {
        let t = unix_secs(at);
        if self.now > 0 && t.saturating_add(CLOCK_SLACK) < self.now {
            return self.now.saturating_add(1);
        }
        t
    }

    fn ingest_scope(&mut self, key: &ScopeKey, sample: &ScopeSample, t: u32, cpu_ms: f32) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        if !self.scopes.contains_key(key) {
            match self.make_room(key, t) {
                Some(evicted) => events.extend(evicted),
                None => {
                    self.dropped += 1;
                    return events;
                }
            }
            self.scopes.insert(key.clone(), ScopeState::new(&self.params, t));
        }
        let Some(state) = self.scopes.get_mut(key) else {
            return events;
        };
        let acc = Acc::from_sample(t, sample, cpu_ms);
        if !state.series.push(acc.clone()) {
            return events;
        }
        state.pool = sample.pool;
        state.circuit = sample.circuit;
        state.keys.add(t, &sample.rate_limited_keys);
        let waiters = sample.pool.map(|p| p.states.waiters);
        let outcomes = state
            .detector
            .observe(key, &acc, waiters, &state.series, &self.params.detect);
        size_pool(state, &mut self.targets, key, sample, t, &self.params.sizing);
        for o in outcomes {
            let e = match o {
                Outcome::Raise(r) => self.alerts.raise(r, u64::from(t)),
                Outcome::Clear(kind, why) => self.alerts.clear(key, kind, u64::from(t), why),
            };
            events.extend(e);
        }
        events
    }

    /// Frees a place for `key` if the cap requires it. `None`: no place.
    fn make_room(&mut self, key: &ScopeKey, t: u32) -> Option<Vec<AlertEvent>> {
        let others = self.scopes.keys().filter(|k| **k != ScopeKey::Global).count();
        let cap_others = self.params.scope_cap.saturating_sub(1);
        if *key == ScopeKey::Global || others < cap_others {
            return Some(Vec::new());
        }
        // The scope absent longest, if it is absent from this tick.
        let victim = self
            .scopes
            .iter()
            .filter(|(k, s)| **k != ScopeKey::Global && s.last_seen < t)
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(k, _)| k.clone())?;
        Some(self.remove_scope(&victim, t))
    }

    fn evict_stale(&mut self, t: u32) -> Vec<AlertEvent> {
        let after = u32::try_from(self.params.evict_after.as_secs()).unwrap_or(u32::MAX);
        let stale: Vec<ScopeKey> = self
            .scopes
            .iter()
            .filter(|(k, s)| **k != ScopeKey::Global && s.last_seen.saturating_add(after) < t)
            .map(|(k, _)| k.clone())
            .collect();
        stale.iter().flat_map(|k| self.remove_scope(k, t)).collect()
    }

    fn remove_scope(&mut self, key: &ScopeKey, t: u32) -> Vec<AlertEvent> {
        self.scopes.remove(key);
        if let ScopeKey::Cluster(name) = key {
            self.targets.remove(name);
        }
        self.recommendations.retain(|r| r.scope != *key);
        self.alerts.clear_scope(key, u64::from(t))
    }

    fn recompute_recommendations(&mut self) {
        let now = u64::from(self.now);
        let mut next: Vec<Recommendation> = Vec::new();
        for (key, s) in &self.scopes {
            let view = ScopeView {
                key,
                series: &s.series,
                pool: s.pool.as_ref(),
                keys: &s.keys,
            };
            next.extend(recommend(&view, &self.params.recommend, now));
        }
        // Advice that still stands keeps the time it was first given.
        for r in &mut next {
            if let Some(old) = self.recommendations.iter().find(|o| o.id == r.id) {
                r.since = old.since;
            }
        }
        self.recommendations = next;
    }

    /// Open alerts, most severe first.
    pub fn alerts_active(&self) -> Vec<Alert> {
        self.alerts.active()
    }

    /// Cleared alerts, newest first (at most `recent_alerts`).
    pub fn alerts_recent(&self) -> Vec<Alert> {
        self.alerts.recent().cloned().collect()
    }

    /// Recommendations standing now (recomputed once a minute).
    pub fn recommendations(&self) -> &[Recommendation] {
        &self.recommendations
    }

    /// The newest pool target of every cluster with a pool.
    pub fn pool_targets(&self) -> Vec<PoolTarget> {
        self.targets.values().cloned().collect()
    }

    /// Derived figures of a scope over the last `derived_secs` seconds.
    pub fn derived(&self, key: &ScopeKey) -> Option<Derived> {
        let s = self.scopes.get(key)?;
        let n = self.params.derived_secs as usize;
        Some(derive(tail(&s.series.secs, n), &self.params.cost))
    }

    /// The scopes tracked now, in order: global, routes, clusters.
    pub fn scopes(&self) -> impl Iterator<Item = &ScopeKey> {
        self.scopes.keys()
    }

    /// Samples not tracked because the scope cap was reached.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped
    }

    /// The newest tick second seen (Unix seconds).
    pub fn now(&self) -> u64 {
        u64::from(self.now)
    }

    pub(crate) fn scope(&self, key: &ScopeKey) -> Option<&ScopeState> {
        self.scopes.get(key)
    }

    pub(crate) fn scope_states(&self) -> impl Iterator<Item = (&ScopeKey, &ScopeState)> {
        self.scopes.iter()
    }

    /// Bytes the scopes' windows have allocated now.
    pub fn window_bytes(&self) -> usize {
        self.scopes.values().map(|s| s.series.allocated_bytes()).sum()
    }
}

/// Feeds a cluster's pool to its sizer and files the target it yields.
fn size_pool(
    state: &mut ScopeState,
    targets: &mut BTreeMap<Arc<str>, PoolTarget>,
    key: &ScopeKey,
    sample: &ScopeSample,
    t: u32,
    p: &SizingParams,
) {
    let (ScopeKey::Cluster(name), Some(pool)) = (key, sample.pool.as_ref()) else {
        return;
    };
    let sizer = state.sizer.get_or_insert_with(|| PoolSizer::new(p));
    let acquires = sample.latency.get(LatencySeries::AcquireWait).count();
    if let Some(target) = sizer.observe(name, t, acquires, pool, p) {
        targets.insert(name.clone(), target);
    }
}

fn traffic(s: &ScopeSample) -> u64 {
    u64::from(s.requests.started) + u64::from(s.sessions.started) + s.messages
}
