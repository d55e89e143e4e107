//! Predictive pool sizing: Holt leads a ramp, stays calm on noise, and the
//! sizer grows at once, shrinks slowly and respects min/max.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::analytics::forecast::PoolSizer;
use crate::analytics::{Holt, PoolSample, PoolTarget, SizingParams};
use crate::pool::PoolSnapshot;

fn pool(active: usize, waiters: usize, min: u32, max: u32) -> PoolSample {
    PoolSample {
        states: PoolSnapshot {
            active,
            waiters,
            ..PoolSnapshot::default()
        },
        endpoints: 2,
        min_connections: min,
        max_connections: max,
    }
}

/// Feeds `secs` seconds where second `i` sees `rate(i)` acquires, each
/// holding a connection for `hold` seconds; returns (second, target).
fn drive(
    sizer: &mut PoolSizer,
    secs: u32,
    hold: f64,
    (min, max): (u32, u32),
    mut rate: impl FnMut(u32) -> f64,
) -> Vec<(u32, PoolTarget)> {
    let name: Arc<str> = Arc::from("llm");
    let p = SizingParams::default();
    let mut out = Vec::new();
    for i in 0..secs {
        let r = rate(i).max(0.0);
        let active = (r * hold).round() as usize;
        if let Some(t) = sizer.observe(&name, 1_000_000 + i, r.round() as u64, &pool(active, 0, min, max), &p) {
            out.push((i, t));
        }
    }
    out
}

#[test]
fn holt_leads_a_ramp_where_the_last_value_lags() {
    let mut h = Holt::new(0.5, 0.3);
    let actual = |t: f64| 10.0 + 2.0 * t;
    for t in 0..60 {
        h.update(actual(f64::from(t)));
        if t >= 10 {
            let ahead = actual(f64::from(t + 3));
            let forecast = h.forecast(3.0);
            assert!((forecast - ahead).abs() < 0.05 * ahead, "t={t}: {forecast} vs {ahead}");
            // The last value is 6 behind; the forecast is not.
            assert!(ahead - actual(f64::from(t)) >= 6.0);
        }
    }
}

#[test]
fn the_target_leads_a_ramp_by_the_horizon() {
    let mut s = PoolSizer::new(&SizingParams::default());
    let rate = |i: u32| 5.0 + 0.2 * f64::from(i);
    let hold = 0.5;
    let targets = drive(&mut s, 900, hold, (1, 500), rate);
    for (i, t) in targets.iter().filter(|(i, _)| *i >= 120) {
        // Demand 30 s later, without any headroom.
        let later = (rate(i + 30) * hold).ceil() as usize;
        assert!(t.total >= later, "at {i}s target {} < demand in 30 s {later}", t.total);
        // A target sized from the current demand alone would not lead by
        // as much: the trend term is doing the work.
        let now = (rate(*i) * hold).ceil() as usize;
        assert!(
            t.demand > now as f64,
            "at {i}s forecast {} not ahead of {now}",
            t.demand
        );
    }
}

#[test]
fn the_target_is_stable_on_noise() {
    let mut s = PoolSizer::new(&SizingParams::default());
    let mut rng = StdRng::seed_from_u64(42);
    let targets = drive(&mut s, 3600, 0.2, (1, 500), |_| 50.0 + rng.random_range(-10.0..10.0));
    let settled: Vec<usize> = targets.iter().skip(12).map(|(_, t)| t.total).collect();
    let (lo, hi) = (settled.iter().min().unwrap(), settled.iter().max().unwrap());
    // Demand is ~10 connections; headroom makes it ~13.
    assert!(*lo >= 12 && *hi <= 17, "target ranged {lo}..={hi}");
    let changes = settled.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(changes <= 10, "{changes} changes in an hour of {} steps", settled.len());
}

#[test]
fn the_target_grows_at_once_follows_the_peak_down_and_stays_within_bounds() {
    let mut s = PoolSizer::new(&SizingParams::default());
    // 2 endpoints, min 3 and max 40 each: the total stays in [6, 80].
    let high = drive(&mut s, 300, 1.0, (3, 40), |_| 200.0);
    assert_eq!(high.last().unwrap().1.total, 80);
    assert_eq!(high.last().unwrap().1.per_endpoint, 40);
    let low = drive(&mut s, 600, 1.0, (3, 40), |_| 0.0);
    let totals: Vec<(u32, usize)> = low.iter().map(|(i, t)| (*i, t.total)).collect();
    for w in totals.windows(2) {
        assert!(w[1].1 <= w[0].1, "the target rose with no load: {totals:?}");
    }
    // The burst's peak (200 in use) halves every 15 s; the target may be
    // at most 1.5 times what is left of it, so a minute after the load
    // stopped (1/16 of it: 12.5) the burst's connections are gone.
    for (i, total) in &totals {
        let peak = 200.0 * 0.5f64.powf(f64::from(*i + 1) / 15.0);
        let cap = ((peak * 1.5).ceil() as usize).max(6);
        assert!(*total <= cap.min(80), "at {i}s after the load: {total} > {cap}");
    }
    assert!(totals.iter().find(|(i, _)| *i >= 59).unwrap().1 <= 19, "{totals:?}");
    assert_eq!(totals.last().unwrap().1, 6);
    assert_eq!(low.last().unwrap().1.per_endpoint, 3);
}

#[test]
fn a_short_dip_still_covers_the_demand_just_seen() {
    // 40 in use, then 10 s at 30: the target may come down with the
    // decaying peak, but not below the 40 that were in use a moment ago.
    let mut s = PoolSizer::new(&SizingParams::default());
    let t = drive(&mut s, 300, 1.0, (1, 500), |_| 40.0);
    assert_eq!(t.last().unwrap().1.total, 50);
    let dip = drive(&mut s, 10, 1.0, (1, 500), |_| 30.0);
    let after = dip.last().unwrap().1.total;
    assert!((40..=50).contains(&after), "{after}");
}
