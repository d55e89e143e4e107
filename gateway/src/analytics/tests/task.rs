//! The task, with paused time.

use std::time::Duration;

use super::support::{Load, Sim, at};
use crate::analytics::{AnalyticsParams, ScopeKey, Tick, Window, spawn, spawn_polling};

#[tokio::test(start_paused = true)]
async fn the_polling_task_publishes_every_tick_and_answers_history() {
    let mut sim = Sim::new(1);
    let mut second = 0;
    let handle = spawn_polling(AnalyticsParams::default(), None, move || {
        second += 1;
        let scopes = vec![(ScopeKey::Global, sim.sample(&Load::default()))];
        Tick {
            at: at(second),
            cpu_us: 10_000,
            scopes,
        }
    });
    let mut feed = handle.subscribe();
    let start = tokio::time::Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        feed.changed().await.unwrap();
        seen.push((start.elapsed(), feed.borrow_and_update().seq));
    }
    // One update per tick, one tick per second: the page gets each second
    // as soon as it is measured.
    for w in seen.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1);
        assert_eq!(w[1].0 - w[0].0, Duration::from_secs(1));
    }
    let latest = handle.latest();
    let json: serde_json::Value = serde_json::from_str(&latest.json).unwrap();
    assert_eq!(json["scopes"][0]["scope"], "global");
    let h = handle.history(Window::Hour, None).await.unwrap();
    assert!(h.series.t.len() >= 10);
    assert!(handle.history(Window::Hour, Some(ScopeKey::route("x"))).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_task_stops_when_the_producer_goes() {
    let (tx, handle) = spawn(AnalyticsParams::default(), None);
    tx.send(Tick {
        at: at(1),
        cpu_us: 0,
        scopes: Vec::new(),
    })
    .await
    .unwrap();
    drop(tx);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(handle.history(Window::Hour, None).await.is_none());
}
