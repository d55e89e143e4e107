//! Synthetic traffic for the analytics tests: seeded, noisy, one tick per
//! simulated second.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::analytics::{
    AlertChange, AlertEvent, AlertKind, AnalyticsParams, Engine, Flow, PoolSample, ScopeKey, ScopeSample, Tick,
};
use crate::pool::PoolSnapshot;

/// A Monday, 00:00:00 UTC: whole hours and days line up with the windows.
pub(super) const T0: u64 = 1_700_438_400;

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

/// What one scope does in one second, before noise.
#[derive(Clone, Debug)]
pub(super) struct Load {
    /// Requests per second.
    pub(super) rps: f64,
    /// Share of requests that fail with an upstream error.
    pub(super) err: f64,
    /// Median request latency, ms (log-normal, sigma 0.25).
    pub(super) lat_ms: f64,
    /// WebSocket messages per second.
    pub(super) msgs: f64,
    /// Open sessions.
    pub(super) sessions: u32,
    /// Pool: (max_connections, active, waiters, acquire wait ms), if any.
    pub(super) pool: Option<(u32, usize, usize, f64)>,
    /// The pool's min_connections.
    pub(super) pool_min: u32,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            rps: 100.0,
            err: 0.005,
            lat_ms: 20.0,
            msgs: 200.0,
            sessions: 50,
            pool: None,
            pool_min: 2,
        }
    }
}

pub(super) struct Sim {
    pub(super) rng: StdRng,
    pub(super) engine: Engine,
    pub(super) now: u64,
    pub(super) events: Vec<(u64, AlertEvent)>,
}

impl Sim {
    pub(super) fn new(seed: u64) -> Self {
        Self::with_params(seed, AnalyticsParams::default())
    }

    pub(super) fn with_params(seed: u64, p: AnalyticsParams) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            engine: Engine::new(p),
            now: 0,
            events: Vec::new(),
        }
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random_range(0.0..1.0);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A Poisson-like count (normal approximation, never negative).
    fn count(&mut self, mean: f64) -> u32 {
        if mean <= 0.0 {
            return 0;
        }
        (mean + mean.sqrt() * self.normal()).round().max(0.0) as u32
    }

    pub(super) fn sample(&mut self, l: &Load) -> ScopeSample {
        let mut s = ScopeSample::default();
        let started = self.count(l.rps);
        let failed = (0..started)
            .filter(|_| self.rng.random_bool(l.err.clamp(0.0, 1.0)))
            .count() as u32;
        s.requests = Flow {
            started,
            completed: started - failed,
            failed,
        };
        if failed > 0 {
            s.failures = vec![(crate::error::Cause::UpstreamTimeout, failed)];
        }
        for _ in 0..started {
            let ms = l.lat_ms * (0.25 * self.normal()).exp();
            s.latency.request.record(Duration::from_secs_f64(ms / 1000.0));
        }
        s.messages = u64::from(self.count(l.msgs));
        for _ in 0..s.messages.min(200) {
            let ms = 0.2 * (0.3 * self.normal()).exp();
            s.latency.ws_relay.record(Duration::from_secs_f64(ms / 1000.0));
        }
        s.active_sessions = l.sessions;
        if let Some(p) = l.pool {
            self.add_pool(&mut s, started, p, l.pool_min);
        }
        s
    }

    fn add_pool(
        &mut self,
        s: &mut ScopeSample,
        acquires: u32,
        (max, active, waiters, wait): (u32, usize, usize, f64),
        min: u32,
    ) {
        for _ in 0..acquires {
            let ms = wait * (0.3 * self.normal()).exp();
            s.latency.acquire_wait.record(Duration::from_secs_f64(ms / 1000.0));
        }
        let open = (min as usize).max(active);
        s.pool = Some(PoolSample {
            states: PoolSnapshot {
                ready: open.saturating_sub(active),
                active,
                waiters,
                open,
                ..PoolSnapshot::default()
            },
            endpoints: 1,
            min_connections: min,
            max_connections: max,
        });
    }

    /// Runs `secs` seconds of one tick per second; `scopes` gives each
    /// scope's load for the second (relative to the run's start).
    pub(super) fn run(&mut self, secs: u64, mut scopes: impl FnMut(u64) -> Vec<(ScopeKey, Load)>) {
        for i in 0..secs {
            let loads = scopes(i);
            let scopes = loads.iter().map(|(k, l)| (k.clone(), self.sample(l))).collect();
            self.tick(scopes);
        }
    }

    pub(super) fn tick(&mut self, scopes: Vec<(ScopeKey, ScopeSample)>) {
        let tick = Tick {
            at: at(self.now),
            cpu_us: 20_000,
            scopes,
        };
        for e in self.engine.ingest(&tick) {
            self.events.push((self.now, e));
        }
        self.now += 1;
    }

    /// Events of a kind and change, as (second, alert id).
    pub(super) fn seen(&self, kind: AlertKind, change: AlertChange) -> Vec<(u64, u64)> {
        self.events
            .iter()
            .filter(|(_, e)| e.alert.kind == kind && e.change == change)
            .map(|(t, e)| (*t, e.alert.id))
            .collect()
    }
}

/// The global scope alone with this load.
pub(super) fn global(l: Load) -> Vec<(ScopeKey, Load)> {
    vec![(ScopeKey::Global, l)]
}
