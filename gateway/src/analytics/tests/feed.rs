//! The feed and history JSON carry every field the dashboard reads.

use serde_json::Value;

use super::support::{Load, Sim};
use crate::analytics::{FEED_VERSION, ScopeKey, Window, assets, feed_update, history};

/// Paths the page reads, relative to one scope of the feed.
const SCOPE_FIELDS: [&str; 23] = [
    "scope",
    "kind",
    "name",
    "point.t",
    "point.sessions",
    "point.msg_rate",
    "point.req_rate",
    "point.error_rate",
    "point.p50",
    "point.p95",
    "point.p99",
    "point.relay_p99",
    "point.acquire_p95",
    "point.limited_rate",
    "derived.efficiency",
    "derived.overhead",
    "derived.cost_per_task",
    "derived.tasks",
    "circuit",
    "pool.states.active",
    "pool.waiters",
    "pool.max",
    "pool.target",
];

const ALERT_FIELDS: [&str; 8] = [
    "id", "kind", "scope", "severity", "message", "started", "cleared", "reopened",
];

const HISTORY_FIELDS: [&str; 12] = [
    "t",
    "sessions",
    "msg_rate",
    "req_rate",
    "error_rate",
    "p50",
    "p95",
    "p99",
    "relay_p99",
    "acquire_p95",
    "limited_rate",
    "t",
];

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn busy_sim() -> Sim {
    let mut sim = Sim::new(1);
    let cluster = ScopeKey::cluster("llm");
    let route = ScopeKey::route("agents");
    sim.run(900, |i| {
        let err = if i >= 840 { 0.5 } else { 0.005 };
        vec![
            (ScopeKey::Global, Load { err, ..Load::default() }),
            (route.clone(), Load::default()),
            (
                cluster.clone(),
                Load {
                    pool: Some((20, 20, 5, 120.0)),
                    ..Load::default()
                },
            ),
        ]
    });
    sim
}

#[test]
fn a_feed_update_has_the_fields_the_page_reads() {
    let sim = busy_sim();
    let v = serde_json::to_value(feed_update(&sim.engine)).unwrap();
    assert_eq!(v["v"], FEED_VERSION);
    assert_eq!(v["t"], super::support::T0 + 899);
    let scopes = v["scopes"].as_array().unwrap();
    let names: Vec<&str> = scopes.iter().map(|s| s["scope"].as_str().unwrap()).collect();
    assert_eq!(names, ["global", "route:agents", "cluster:llm"]);
    let cluster = &scopes[2];
    for f in SCOPE_FIELDS {
        assert!(get(cluster, f).is_some(), "cluster scope lacks {f}: {cluster}");
    }
    assert!(cluster["pool"]["max"] == 20 && cluster["point"]["p99"].as_f64().unwrap() > 0.0);
    assert!(scopes[0]["pool"].is_null() && scopes[0]["circuit"].is_null());
    let active = v["alerts"]["active"].as_array().unwrap();
    assert!(!active.is_empty(), "the error step and the short pool raise alerts");
    for f in ALERT_FIELDS {
        assert!(active[0].get(f).is_some(), "alert lacks {f}: {}", active[0]);
    }
    assert!(v["alerts"]["recent"].is_array());
    let recs = v["recommendations"].as_array().unwrap();
    for f in ["id", "kind", "scope", "message", "since", "current", "suggested"] {
        assert!(recs[0].get(f).is_some(), "recommendation lacks {f}");
    }
    assert_eq!(v["pool_targets"][0]["cluster"], "llm");
    assert!(v["pool_targets"][0]["per_endpoint"].as_u64().unwrap() >= 2);
}

#[test]
fn history_has_columns_for_each_window() {
    let sim = busy_sim();
    let h = serde_json::to_value(history(&sim.engine, Window::Hour, None).unwrap()).unwrap();
    assert_eq!((h["window"].as_str(), h["step_s"].as_u64()), (Some("1h"), Some(1)));
    for f in HISTORY_FIELDS {
        assert_eq!(h["series"][f].as_array().map(Vec::len), Some(900), "series.{f}");
    }
    let pools = h["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0]["scope"], "cluster:llm");
    for s in [
        "initializing",
        "ready",
        "active",
        "idle",
        "unhealthy",
        "recycling",
        "failed",
    ] {
        assert_eq!(pools[0]["states"][s].as_array().map(Vec::len), Some(900), "{s}");
    }
    assert_eq!(pools[0]["waiters"].as_array().map(Vec::len), Some(900));
    let day = history(&sim.engine, Window::Day, Some(&ScopeKey::route("agents"))).unwrap();
    assert_eq!((day.step_s, day.series.t.len()), (60, 14));
    assert!(history(&sim.engine, Window::Week, Some(&ScopeKey::route("nope"))).is_none());
}

#[test]
fn the_page_reads_the_same_field_names() {
    let js = assets::APP_JS;
    let leaves = SCOPE_FIELDS
        .iter()
        .map(|f| f.rsplit('.').next().unwrap_or(f))
        .chain(ALERT_FIELDS.iter().copied())
        .chain(HISTORY_FIELDS.iter().copied())
        .chain(["pool_targets", "recommendations", "pools", "states", "waiters"]);
    for f in leaves {
        assert!(js.contains(f), "app.js never reads {f}");
    }
    assert!(assets::INDEX_HTML.contains("uPlot.iife.min.js"));
    assert!(assets::asset("").is_some() && assets::asset("nope.js").is_none());
    assert!(!assets::INDEX_HTML.contains("http://") && !assets::INDEX_HTML.contains("https://"));
    assert!(!assets::APP_JS.contains("http://") && !assets::APP_JS.contains("https://"));
}

/// Writes a feed update and histories from a simulated gateway for the
/// manual browser check of the page (`AGENTMUX_DUMP_FEED=dir cargo test
/// dump_feed_for_the_page_check`); does nothing without the variable.
#[test]
fn dump_feed_for_the_page_check() {
    let Some(dir) = std::env::var_os("AGENTMUX_DUMP_FEED") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let sim = busy_sim();
    let write = |name: &str, v: String| std::fs::write(dir.join(name), v).unwrap();
    write("feed.json", serde_json::to_string(&feed_update(&sim.engine)).unwrap());
    for (w, name) in [(Window::Hour, "1h"), (Window::Day, "24h"), (Window::Week, "7d")] {
        for scope in sim.engine.scopes() {
            let h = history(&sim.engine, w, Some(scope)).unwrap();
            write(
                &format!("history-{name}-{scope}.json"),
                serde_json::to_string(&h).unwrap(),
            );
        }
    }
}

#[test]
fn global_history_exists_before_the_first_tick() {
    let engine = crate::analytics::engine::Engine::new(crate::analytics::AnalyticsParams::default());
    let h = serde_json::to_value(history(&engine, Window::Hour, None).unwrap()).unwrap();
    assert_eq!(h["scope"], "global");
    assert!(history(&engine, Window::Hour, Some(&ScopeKey::route("agents"))).is_none());
}
