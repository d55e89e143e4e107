//! Anomaly detection on synthetic series: steps are caught within a minute,
//! steady noise raises nothing, alerts clear on recovery without flooding.

use super::support::{Load, Sim, global};
use crate::analytics::{AlertChange, AlertKind, ScopeKey, Severity};

/// Half an hour of normal traffic: every baseline warm.
const WARM: u64 = 1800;

fn warm(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.run(WARM, |_| global(Load::default()));
    assert!(sim.events.is_empty(), "warm-up raised {:?}", sim.events);
    sim
}

#[test]
fn error_rate_step_is_caught_within_a_minute_and_clears_on_recovery() {
    let mut sim = warm(1);
    let step = sim.now;
    sim.run(120, |_| {
        global(Load {
            err: 0.05,
            ..Load::default()
        })
    });
    let raised = sim.seen(AlertKind::ErrorRate, AlertChange::Raised);
    assert_eq!(raised.len(), 1, "{:?}", sim.events);
    assert!(
        raised[0].0 - step <= 60,
        "raised {} s after the step",
        raised[0].0 - step
    );
    let back = sim.now;
    sim.run(300, |_| global(Load::default()));
    let cleared = sim.seen(AlertKind::ErrorRate, AlertChange::Cleared);
    assert_eq!(cleared.len(), 1, "{:?}", sim.events);
    assert!(
        cleared[0].0 - back <= 120,
        "cleared {} s after recovery",
        cleared[0].0 - back
    );
    assert!(sim.engine.alerts_active().is_empty());
    let recent = sim.engine.alerts_recent();
    assert_eq!(recent[0].kind, AlertKind::ErrorRate);
    assert!(recent[0].cleared.is_some());
}

#[test]
fn a_large_error_step_is_critical() {
    let mut sim = warm(2);
    sim.run(60, |_| {
        global(Load {
            err: 0.5,
            ..Load::default()
        })
    });
    let active = sim.engine.alerts_active();
    let a = active.iter().find(|a| a.kind == AlertKind::ErrorRate).unwrap();
    assert_eq!(a.severity, Severity::Critical);
    assert!(a.message.contains("error rate"), "{}", a.message);
}

#[test]
fn latency_step_is_caught_within_a_minute() {
    let mut sim = warm(3);
    let step = sim.now;
    sim.run(90, |_| {
        global(Load {
            lat_ms: 60.0,
            ..Load::default()
        })
    });
    let raised = sim.seen(AlertKind::LatencyP99, AlertChange::Raised);
    assert_eq!(raised.len(), 1, "{:?}", sim.events);
    assert!(
        raised[0].0 - step <= 60,
        "raised {} s after the step",
        raised[0].0 - step
    );
    // Other detectors stay quiet: only latency moved.
    assert!(sim.events.iter().all(|(_, e)| e.alert.kind == AlertKind::LatencyP99));
}

#[test]
fn traffic_dropping_to_zero_alerts_and_clears_when_it_returns() {
    let mut sim = warm(4);
    let step = sim.now;
    let silent = Load {
        rps: 0.0,
        msgs: 0.0,
        ..Load::default()
    };
    sim.run(90, |_| global(silent.clone()));
    let raised = sim.seen(AlertKind::TrafficDrop, AlertChange::Raised);
    assert_eq!(raised.len(), 1, "{:?}", sim.events);
    assert!(raised[0].0 - step <= 60);
    let a = &sim.engine.alerts_active()[0];
    assert_eq!(a.severity, Severity::Critical);
    let back = sim.now;
    sim.run(120, |_| global(Load::default()));
    let cleared = sim.seen(AlertKind::TrafficDrop, AlertChange::Cleared);
    assert_eq!(cleared.len(), 1);
    assert!(cleared[0].0 - back <= 60);
    // One outage, one alert: the message-rate detector leaves silence to it.
    assert!(
        sim.events.iter().all(|(_, e)| e.alert.kind == AlertKind::TrafficDrop),
        "{:?}",
        sim.events
    );
}

#[test]
fn pool_exhaustion_alerts_on_waiters_and_long_acquire_waits() {
    let mut sim = Sim::new(5);
    let cluster = ScopeKey::cluster("llm");
    let ok = Load {
        pool: Some((20, 10, 0, 1.0)),
        ..Load::default()
    };
    let short = Load {
        pool: Some((20, 20, 6, 150.0)),
        ..Load::default()
    };
    sim.run(600, |_| vec![(cluster.clone(), ok.clone())]);
    assert!(sim.events.is_empty(), "{:?}", sim.events);
    let step = sim.now;
    sim.run(60, |_| vec![(cluster.clone(), short.clone())]);
    let raised = sim.seen(AlertKind::PoolExhaustion, AlertChange::Raised);
    assert_eq!(raised.len(), 1, "{:?}", sim.events);
    assert!(raised[0].0 - step <= 30);
    let back = sim.now;
    sim.run(120, |_| vec![(cluster.clone(), ok.clone())]);
    let cleared = sim.seen(AlertKind::PoolExhaustion, AlertChange::Cleared);
    assert_eq!(cleared.len(), 1);
    assert!(cleared[0].0 - back <= 90);
}

#[test]
fn a_steady_noisy_series_raises_nothing_for_hours() {
    let mut sim = Sim::new(6);
    let route = ScopeKey::route("agents");
    let cluster = ScopeKey::cluster("llm");
    sim.run(4 * 3600, |_| {
        vec![
            (ScopeKey::Global, Load::default()),
            (
                route.clone(),
                Load {
                    rps: 20.0,
                    msgs: 30.0,
                    ..Load::default()
                },
            ),
            (
                cluster.clone(),
                Load {
                    pool: Some((20, 5, 0, 2.0)),
                    ..Load::default()
                },
            ),
        ]
    });
    assert!(sim.events.is_empty(), "{:?}", sim.events);
}

#[test]
fn a_flapping_series_keeps_one_alert() {
    let mut sim = warm(7);
    for _ in 0..6 {
        sim.run(90, |_| {
            global(Load {
                err: 0.08,
                ..Load::default()
            })
        });
        sim.run(70, |_| global(Load::default()));
    }
    let ids: std::collections::BTreeSet<u64> = sim.events.iter().map(|(_, e)| e.alert.id).collect();
    assert_eq!(ids.len(), 1, "{:?}", sim.events);
    assert_eq!(sim.seen(AlertKind::ErrorRate, AlertChange::Raised).len(), 1);
    // Each bad spell at most reopens the one alert.
    assert!(sim.events.len() <= 12, "{} events", sim.events.len());
}

#[test]
fn message_rate_spike_alerts_and_hourly_bursts_do_not() {
    let mut sim = warm(8);
    let step = sim.now;
    sim.run(90, |_| {
        global(Load {
            msgs: 800.0,
            ..Load::default()
        })
    });
    let raised = sim.seen(AlertKind::MessageRate, AlertChange::Raised);
    assert_eq!(raised.len(), 1, "{:?}", sim.events);
    assert!(raised[0].0 - step <= 60);

    // A fresh gateway whose message rate jumps 4× for the first five
    // minutes of every hour: once three hours of history show the pattern,
    // the seasonal check stops calling it an anomaly.
    let mut sim = Sim::new(9);
    let burst = |i: u64| {
        let minute = (i % 3600) / 60;
        let msgs = if minute < 5 { 800.0 } else { 200.0 };
        global(Load {
            msgs,
            ..Load::default()
        })
    };
    sim.run(6 * 3600, burst);
    let bursts_seen = sim
        .seen(AlertKind::MessageRate, AlertChange::Raised)
        .iter()
        .filter(|(t, _)| (3600..3 * 3600).contains(t))
        .count();
    assert!(bursts_seen > 0, "without history the bursts are anomalies");
    let late: Vec<_> = sim
        .events
        .iter()
        .filter(|(t, e)| *t >= 4 * 3600 && e.alert.kind == AlertKind::MessageRate)
        .filter(|(_, e)| e.change != AlertChange::Cleared)
        .collect();
    assert!(late.is_empty(), "{late:?}");
}
