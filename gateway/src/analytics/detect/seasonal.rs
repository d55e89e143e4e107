//! Seasonal expectations: what a rate usually is at this time of day, or
//! at this minute of the hour, from the coarser windows.
//!
//! Traffic to agents follows the working day, and batch jobs often start
//! on the hour. An EWMA baseline lags such regular swings and would call
//! every morning ramp an anomaly, so the traffic detectors also ask: is the
//! current rate far from the *same hour of day* on previous days (needs two
//! days of the 7-day window), or else from the *same minute of the hour* in
//! previous hours (needs three hours of the 24-hour window)? Only when both
//! the EWMA band and this seasonal band say "unusual" does a traffic alert
//! fire. Without enough history the seasonal check abstains.
//!
//! The seasonal band uses the median and the median absolute deviation of
//! those few readings, so one odd day does not move it.

use super::stats::{FAST, median_mad};
use crate::analytics::point::Point;
use crate::analytics::series::ScopeSeries;

const DAY: u32 = 86_400;
const HOUR: u32 = 3_600;

/// The seasonal expectation for the fast window ending at `now`: the
/// hull of the expectations of the slots its first and last seconds fall
/// in (a window straddling the minute when a burst starts expects both).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Band {
    lo: f64,
    pub(crate) hi: f64,
    mad: f64,
}

/// The band for the per-second rate `f(point) / secs`, or `None` without
/// enough history.
pub(crate) fn expected(series: &ScopeSeries, now: u32, f: impl Fn(&Point) -> f64) -> Option<Band> {
    let last = slot(series, now, &f)?;
    let first = slot(series, now.saturating_sub(FAST as u32 - 1), &f).unwrap_or(last);
    Some(Band {
        lo: last.0.min(first.0),
        hi: last.0.max(first.0),
        mad: last.1.max(first.1),
    })
}

/// Median and MAD of the per-second rate at the same hour of day over up
/// to 6 previous days, else at the same minute of the hour over up to 23
/// previous hours.
fn slot(series: &ScopeSeries, now: u32, f: &impl Fn(&Point) -> f64) -> Option<(f64, f64)> {
    let rate = |p: &Point| f(p) / f64::from(p.secs.max(1));
    let hour = now - now % HOUR;
    let mut days: Vec<f64> = (1..=6)
        .filter_map(|k| hour.checked_sub(k * DAY))
        .filter_map(|t| series.hours.at(t))
        .filter(|p| u32::from(p.secs) >= HOUR / 2)
        .map(rate)
        .collect();
    if days.len() >= 2 {
        return median_mad(&mut days);
    }
    let minute = now - now % 60;
    let mut hours: Vec<f64> = (1..=23)
        .filter_map(|k| minute.checked_sub(k * HOUR))
        .filter_map(|t| series.mins.at(t))
        .filter(|p| p.secs >= 30)
        .map(rate)
        .collect();
    if hours.len() >= 3 {
        return median_mad(&mut hours);
    }
    None
}

/// True when `x` lies within the band widened by four scaled MADs, or
/// `rel` of its top, or `floor`, whichever is widest.
pub(crate) fn within(x: f64, b: Band, rel: f64, floor: f64) -> bool {
    let w = (4.0 * 1.4826 * b.mad).max(rel * b.hi).max(floor);
    x >= b.lo - w && x <= b.hi + w
}
