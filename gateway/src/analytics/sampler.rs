//! Turns the gateway's live counters into one [`Tick`] per second.
//!
//! The data path only bumps its cached metric handles; this sampler reads
//! them once a second from the analytics side, keeps the previous readings
//! and hands the engine the deltas. Nothing on the request path waits on
//! analytics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Flow, Latencies, LatencySample, PoolSample, ScopeKey, ScopeSample, Tick};
use crate::error::Cause;
use crate::metrics::{HistogramSnapshot, LatencyHistogram};
use crate::pool::PoolSnapshot;
use crate::runtime::Runtime;

/// Cumulative readings of one scope.
#[derive(Clone, Default)]
struct Totals {
    answered: [u64; 5],
    errors: [u64; Cause::ALL.len()],
    sessions_ok: u64,
    sessions_failed: u64,
    messages: u64,
    bytes_in: u64,
    bytes_out: u64,
    hists: [HistogramSnapshot; 4],
}

/// Reads counters and emits per-second deltas.
#[derive(Default)]
pub struct Sampler {
    prev: HashMap<ScopeKey, Totals>,
    prev_cpu_us: Option<u64>,
}

fn latency(now: &HistogramSnapshot, prev: &HistogramSnapshot) -> LatencySample {
    let d = now.since(prev);
    let counts = d.buckets.map(|c| u32::try_from(c).unwrap_or(u32::MAX));
    LatencySample::new(counts, d.sum_ns / 1000)
}

fn snap(h: &LatencyHistogram) -> HistogramSnapshot {
    h.snapshot()
}

impl Sampler {
    /// One tick from the runtime's current counters.
    pub fn tick(&mut self, rt: &Runtime) -> Tick {
        let mut scopes = Vec::new();
        let mut global = (ScopeSample::default(), 0u32);
        for stack in rt.stacks() {
            let m = &stack.metrics;
            let (sessions_ok, sessions_failed) = m.sessions_ended();
            let now = Totals {
                answered: m.answered(),
                errors: Cause::ALL.map(|c| m.errors_of(c)),
                sessions_ok,
                sessions_failed,
                messages: m.messages_up.get() + m.messages_down.get(),
                bytes_in: m.bytes_up.get(),
                bytes_out: m.bytes_down.get(),
                hists: [
                    snap(&m.request_seconds),
                    snap(&m.first_byte_seconds),
                    snap(&m.relay_seconds),
                    snap(&stack.acquire),
                ],
            };
            let key = ScopeKey::route(&stack.name);
            let prev = self.prev.get(&key).cloned().unwrap_or_else(|| now.clone());
            let mut sample = delta(&now, &prev);
            sample.active_sessions = u32::try_from(m.sessions_active.get().max(0)).unwrap_or(u32::MAX);
            merge(&mut global.0, &sample);
            scopes.push((key.clone(), sample));
            self.prev.insert(key, now);
        }
        for (name, cluster) in rt.clusters() {
            let mut states = PoolSnapshot::default();
            let mut endpoints = 0;
            for ep in cluster.endpoints() {
                for p in ep.pools() {
                    states.add(&p.snapshot());
                    endpoints += 1;
                }
            }
            let key = ScopeKey::cluster(name);
            // A cluster's traffic is that of the routes sending to it.
            let mut sample = ScopeSample::default();
            for (k, s) in &scopes {
                let sends_here = rt
                    .router()
                    .routes()
                    .any(|r| matches!(k, ScopeKey::Route(n) if **n == *r.name()) && r.cluster() == &**name);
                if sends_here {
                    merge(&mut sample, s);
                }
            }
            let pool = cluster.config().pool();
            sample.pool = Some(PoolSample {
                states,
                endpoints,
                min_connections: u32::try_from(pool.min_connections()).unwrap_or(u32::MAX),
                max_connections: u32::try_from(pool.max_connections()).unwrap_or(u32::MAX),
            });
            scopes.push((key, sample));
        }
        scopes.insert(0, (ScopeKey::Global, global.0));
        Tick {
            at: SystemTime::now(),
            cpu_us: self.cpu_delta(),
            scopes,
        }
    }

    /// Process CPU time (user + system) since the last tick, from /proc.
    fn cpu_delta(&mut self) -> u64 {
        let now = process_cpu_us().unwrap_or(0);
        let d = self.prev_cpu_us.map_or(0, |p| now.saturating_sub(p));
        self.prev_cpu_us = Some(now);
        d
    }
}

fn delta(now: &Totals, prev: &Totals) -> ScopeSample {
    let d = |a: u64, b: u64| u32::try_from(a.saturating_sub(b)).unwrap_or(u32::MAX);
    let answered: u32 = (0..5).map(|i| d(now.answered[i], prev.answered[i])).sum();
    let server_errors = d(now.answered[4], prev.answered[4]);
    let failures: Vec<(Cause, u32)> = Cause::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, d(now.errors[i], prev.errors[i])))
        .filter(|(_, n)| *n > 0)
        .collect();
    let rate_limited = failures
        .iter()
        .filter(|(c, _)| *c == Cause::RateLimited)
        .map(|(_, n)| n)
        .sum();
    let ok = d(now.sessions_ok, prev.sessions_ok);
    let failed = d(now.sessions_failed, prev.sessions_failed);
    ScopeSample {
        requests: Flow {
            started: answered,
            completed: answered.saturating_sub(server_errors),
            failed: server_errors,
        },
        sessions: Flow {
            started: ok + failed,
            completed: ok,
            failed,
        },
        failures,
        messages: now.messages.saturating_sub(prev.messages),
        bytes_in: now.bytes_in.saturating_sub(prev.bytes_in),
        bytes_out: now.bytes_out.saturating_sub(prev.bytes_out),
        rate_limited,
        latency: Latencies {
            request: latency(&now.hists[0], &prev.hists[0]),
            first_byte: latency(&now.hists[1], &prev.hists[1]),
            ws_relay: latency(&now.hists[2], &prev.hists[2]),
            acquire_wait: latency(&now.hists[3], &prev.hists[3]),
        },
        ..ScopeSample::default()
    }
}

/// Adds `s` into `into` (counts and histograms; gauges summed).
fn merge(into: &mut ScopeSample, s: &ScopeSample) {
    into.active_sessions = into.active_sessions.saturating_add(s.active_sessions);
    for (a, b) in [(&mut into.requests, &s.requests), (&mut into.sessions, &s.sessions)] {
        a.started = a.started.saturating_add(b.started);
        a.completed = a.completed.saturating_add(b.completed);
        a.failed = a.failed.saturating_add(b.failed);
    }
    for (c, n) in &s.failures {
        match into.failures.iter_mut().find(|(k, _)| k == c) {
            Some((_, m)) => *m = m.saturating_add(*n),
            None => into.failures.push((*c, *n)),
        }
    }
    into.messages += s.messages;
    into.bytes_in += s.bytes_in;
    into.bytes_out += s.bytes_out;
    into.rate_limited = into.rate_limited.saturating_add(s.rate_limited);
    for series in super::LatencySeries::ALL {
        into.latency.get_mut(series).merge(s.latency.get(series));
    }
}

fn process_cpu_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 Hz on Linux.
    Some((utime + stime) * 10_000)
}

/// A cluster's forecast, as the pools of its endpoints use it.
#[derive(Clone, Debug)]
pub struct PoolHint {
    /// The cluster.
    pub cluster: Arc<str>,
    /// Connections each endpoint's HTTP pool should hold in all.
    pub per_endpoint: usize,
    /// Forecast acquires per second over the cluster.
    pub rate: f64,
}

/// Pool sizing hints, per cluster, from the engine's latest output.
pub fn pool_targets(published: &super::Published) -> Vec<PoolHint> {
    published
        .update
        .pool_targets
        .iter()
        .map(|t| PoolHint {
            cluster: Arc::from(t.cluster.as_str()),
            per_endpoint: t.per_endpoint,
            rate: t.forecast_rate,
        })
        .collect()
}

/// The hint for one pool. HTTP connections come back, so the forecast
/// demand is the total to hold. A WebSocket pool's transports leave with
/// their sessions; what it needs is spares for the sessions that arrive
/// while replacements connect: the forecast arrival rate times twice the
/// connect time.
pub fn hint_for(pool: &crate::pool::Pool, hint: &PoolHint, endpoints: usize) -> usize {
    if pool.is_raw() {
        let per_endpoint_rate = hint.rate / endpoints.max(1) as f64;
        (per_endpoint_rate * pool.connect_time().as_secs_f64() * 2.0).ceil() as usize
    } else {
        hint.per_endpoint
    }
}
