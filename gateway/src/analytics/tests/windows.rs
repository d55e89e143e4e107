//! Windows: rollup from seconds to minutes to hours, percentiles from
//! merged buckets, ring bounds, the scope cap and eviction.

use std::time::Duration;

use super::support::{Sim, at};
use crate::analytics::{
    AnalyticsParams, Engine, Flow, Hist, LatencySeries, ScopeKey, ScopeSample, Tick, Window, memory_bound,
};

/// Second `i` has 10 requests, all taking `i % 60 + 1` ms, and `i % 7`
/// open sessions.
fn second(i: u64) -> ScopeSample {
    let mut s = ScopeSample {
        requests: Flow {
            started: 10,
            completed: 9,
            failed: 1,
        },
        messages: 5,
        active_sessions: (i % 7) as u32,
        ..ScopeSample::default()
    };
    for _ in 0..10 {
        s.latency.request.record(Duration::from_millis(i % 60 + 1));
    }
    s
}

fn run(engine: &mut Engine, from: u64, to: u64, f: impl Fn(u64) -> ScopeSample) {
    for i in from..to {
        engine.ingest(&Tick {
            at: at(i),
            cpu_us: 0,
            scopes: vec![(ScopeKey::Global, f(i))],
        });
    }
}

#[test]
fn seconds_roll_up_into_minutes_and_hours_with_merged_percentiles() {
    let mut e = Engine::new(AnalyticsParams::default());
    run(&mut e, 0, 2 * 3600 + 121, second);
    let s = &e.scope(&ScopeKey::Global).unwrap().series;
    let m = s.mins.iter().next().unwrap();
    assert_eq!((m.t, m.secs), (super::support::T0 as u32, 60));
    assert_eq!(m.counts.req_started, 600);
    assert_eq!(m.counts.req_failed, 60);
    assert_eq!(m.counts.messages, 300);
    assert_eq!(m.sessions_max, 6);
    // Mean of i % 7 over 0..60.
    let mean = (0..60).map(|i| (i % 7) as f32).sum::<f32>() / 60.0;
    assert!((m.sessions_mean - mean).abs() < 1e-4);
    // The minute's p50/p99 are the quantiles of all its observations
    // merged, not an average of per-second percentiles.
    let mut all = Hist::default();
    for i in 0..60 {
        for _ in 0..10 {
            all.record(Duration::from_millis(i % 60 + 1));
        }
    }
    let lat = m.latency(LatencySeries::Request);
    assert_eq!(lat.count, 600);
    assert!((f64::from(lat.p50) - all.quantile_ms(0.5).unwrap()).abs() < 1e-3);
    assert!((f64::from(lat.p99) - all.quantile_ms(0.99).unwrap()).abs() < 1e-3);
    assert!((f64::from(lat.sum_ms) - 10.0 * (1..=60).sum::<u64>() as f64).abs() < 1.0);
    // Two whole hours are closed; each is sixty of those minutes.
    assert_eq!(s.hours.len(), 2);
    let h = s.hours.iter().next().unwrap();
    assert_eq!((h.secs, h.counts.req_started), (3600, 36_000));
    assert!((f64::from(h.latency(LatencySeries::Request).p50) - all.quantile_ms(0.5).unwrap()).abs() < 1e-3);
    // The minute in progress is not closed yet.
    assert_eq!(s.mins.len(), 121);
    assert_eq!(s.window(Window::Hour).len(), 3600);
}

#[test]
fn the_one_second_ring_is_bounded_and_allocates_no_more_than_its_cap() {
    let mut e = Engine::new(AnalyticsParams::default());
    run(&mut e, 0, 3700, |_| ScopeSample::default());
    let s = &e.scope(&ScopeKey::Global).unwrap().series;
    assert_eq!(s.secs.len(), 3600);
    assert!(s.secs.capacity() <= 3600, "{}", s.secs.capacity());
    assert_eq!(u64::from(s.secs.iter().next().unwrap().t), super::support::T0 + 100);
    assert!(s.allocated_bytes() <= memory_bound(&AnalyticsParams::default()).windows_per_scope);
}

#[test]
fn two_ticks_in_one_second_merge_and_late_ticks_are_ignored() {
    let mut e = Engine::new(AnalyticsParams::default());
    let tick = |secs, ms, n, sessions| Tick {
        at: at(secs) + Duration::from_millis(ms),
        cpu_us: 0,
        scopes: vec![(
            ScopeKey::Global,
            ScopeSample {
                requests: Flow {
                    started: n,
                    ..Flow::default()
                },
                active_sessions: sessions,
                ..ScopeSample::default()
            },
        )],
    };
    e.ingest(&tick(5, 100, 1, 10));
    e.ingest(&tick(5, 900, 2, 20));
    e.ingest(&tick(4, 500, 100, 0));
    let s = &e.scope(&ScopeKey::Global).unwrap().series;
    assert_eq!(s.secs.len(), 1);
    let p = s.latest().unwrap();
    assert_eq!((p.counts.req_started, p.sessions_mean, p.secs), (3, 20.0, 1));
}

#[test]
fn a_clock_stepped_back_does_not_stop_the_windows() {
    let mut e = Engine::new(AnalyticsParams::default());
    run(&mut e, 3600, 3610, second);
    // The wall clock jumps back an hour; ticks keep coming once a second.
    run(&mut e, 0, 10, second);
    let s = &e.scope(&ScopeKey::Global).unwrap().series;
    assert_eq!(s.secs.len(), 20);
    assert_eq!(u64::from(s.latest().unwrap().t), super::support::T0 + 3619);
}

#[test]
fn scopes_are_capped_and_absent_ones_evicted() {
    let params = AnalyticsParams {
        scope_cap: 8,
        evict_after: Duration::from_secs(60),
        ..AnalyticsParams::default()
    };
    let mut sim = Sim::with_params(1, params);
    let routes = |prefix: &str| -> Vec<(ScopeKey, ScopeSample)> {
        let mut v = vec![(ScopeKey::Global, ScopeSample::default())];
        v.extend((0..20).map(|i| (ScopeKey::route(&format!("{prefix}{i}")), ScopeSample::default())));
        v
    };
    sim.tick(routes("a"));
    assert_eq!(sim.engine.scopes().count(), 8);
    assert_eq!(sim.engine.dropped_samples(), 13);
    // New routes replace ones that are no longer reported.
    sim.tick(routes("b"));
    let names: Vec<String> = sim.engine.scopes().map(|k| k.to_string()).collect();
    assert_eq!(names.len(), 8);
    assert!(
        names.iter().filter(|n| n.starts_with("route:b")).count() == 7,
        "{names:?}"
    );
    // A scope silent for longer than evict_after goes; global stays.
    for _ in 0..62 {
        sim.tick(vec![(ScopeKey::Global, ScopeSample::default())]);
    }
    let names: Vec<String> = sim.engine.scopes().map(|k| k.to_string()).collect();
    assert_eq!(names, vec!["global".to_owned()]);
}

#[test]
fn the_memory_bound_holds_and_is_what_the_docs_say() {
    let b = memory_bound(&AnalyticsParams::default());
    // The figures quoted in the module docs.
    assert_eq!(b.windows_per_scope, 1_173_728, "{b:?}");
    assert_eq!(b.per_scope, 1_200_960, "{b:?}");
    assert_eq!((b.scopes, b.total), (32, 38_482_720), "{b:?}");
    assert_eq!(std::mem::size_of::<crate::analytics::Point>(), 208);
}
