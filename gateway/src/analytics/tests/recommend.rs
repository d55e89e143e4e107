//! Recommendations from minutes of synthetic traffic.

use std::sync::Arc;

use super::support::{Load, Sim};
use crate::analytics::{RecKind, ScopeKey};

#[test]
fn a_saturated_pool_gets_a_larger_max_connections_from_littles_law() {
    let mut sim = Sim::new(1);
    let cluster = ScopeKey::cluster("llm");
    // 100 acquires/s, 20 of 20 connections busy, 5 waiting ~120 ms.
    let load = Load {
        pool: Some((20, 20, 5, 120.0)),
        ..Load::default()
    };
    sim.run(12 * 60, |_| vec![(cluster.clone(), load.clone())]);
    let recs = sim.engine.recommendations();
    let r = recs
        .iter()
        .find(|r| r.kind == RecKind::RaiseMaxConnections)
        .unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(r.scope, cluster);
    assert_eq!(r.current, Some(20));
    // 100/s × (0.2 s hold + ~0.125 s wait) ≈ 32 wanted, +25 % → 45.
    let sug = r.suggested.unwrap();
    assert!((35..=50).contains(&sug), "{sug}: {}", r.message);
    assert!(
        r.message.starts_with("cluster:llm: acquire wait p95 ")
            && r.message.contains("raise max_connections from 20 to"),
        "{}",
        r.message
    );
    assert_eq!(r.id, "cluster:llm/raise_max_connections");
}

#[test]
fn a_mostly_idle_pool_gets_a_lower_min_connections() {
    let mut sim = Sim::new(2);
    let cluster = ScopeKey::cluster("llm");
    // min_connections 20 keeps 20 open; at most 2 are ever in use.
    let load = Load {
        rps: 10.0,
        msgs: 10.0,
        pool: Some((40, 2, 0, 0.5)),
        pool_min: 20,
        ..Load::default()
    };
    sim.run(62 * 60, |_| vec![(cluster.clone(), load.clone())]);
    let recs = sim.engine.recommendations();
    let r = recs
        .iter()
        .find(|r| r.kind == RecKind::LowerMinConnections)
        .unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!((r.current, r.suggested), (Some(20), Some(3)), "{}", r.message);
    assert!(
        r.message
            .contains("90% of pooled connections unused over the last hour — lower min_connections from 20 to 3"),
        "{}",
        r.message
    );
}

#[test]
fn rate_limited_routes_are_named_with_their_top_key_when_known() {
    let mut sim = Sim::new(3);
    let route = ScopeKey::route("agents");
    let key: Arc<str> = Arc::from("agent-7");
    for i in 0..11 * 60 {
        let mut s = sim.sample(&Load {
            rps: 50.0,
            err: 0.0,
            ..Load::default()
        });
        s.rate_limited = 15;
        if i % 2 == 0 {
            s.rate_limited_keys = vec![(key.clone(), 24), (Arc::from("agent-2"), 6)];
        }
        sim.tick(vec![(route.clone(), s)]);
    }
    let recs = sim.engine.recommendations();
    let r = recs
        .iter()
        .find(|r| r.kind == RecKind::RateLimited)
        .unwrap_or_else(|| panic!("{recs:?}"));
    assert!(
        r.message.starts_with("route:agents: 30% of requests rate-limited"),
        "{}",
        r.message
    );
    assert!(r.message.contains("key agent-7 accounts for 80% of"), "{}", r.message);
    // Advice that keeps standing keeps its first time.
    let since = r.since;
    sim.run(120, |_| Vec::new());
    let again = sim
        .engine
        .recommendations()
        .iter()
        .find(|r| r.kind == RecKind::RateLimited)
        .cloned();
    if let Some(again) = again {
        assert_eq!(again.since, since);
    }
}
