//! Small streaming statistics the detectors keep per scope: an
//! exponentially weighted mean and variance, sliding sums and sliding
//! histograms over the last 30 seconds, and a run register.

use crate::analytics::hist::Hist;

/// Seconds in the fast window every detector compares to its baseline.
pub(crate) const FAST: usize = 30;

/// Exponentially weighted mean and variance (West's incremental form).
/// With `alpha = 1/600` and one update per second the baseline forgets
/// with a time constant of ten minutes: slow enough that a step stands
/// out for many minutes, fast enough to follow a working day.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ewma {
    alpha: f64,
    mean: f64,
    var: f64,
    n: u32,
}

impl Ewma {
    pub(crate) fn new(alpha: f64) -> Self {
        Self {
            alpha,
            mean: 0.0,
            var: 0.0,
            n: 0,
        }
    }

    pub(crate) fn update(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n = self.n.saturating_add(1);
        // Early on, average plainly so the first sample does not weigh
        // 1 − alpha of the baseline forever.
        let a = self.alpha.max(1.0 / f64::from(self.n));
        let diff = x - self.mean;
        let incr = a * diff;
        self.mean += incr;
        self.var = (1.0 - a) * (self.var + diff * incr);
    }

    pub(crate) fn mean(&self) -> f64 {
        self.mean
    }

    pub(crate) fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// Updates seen (saturating).
    pub(crate) fn samples(&self) -> u32 {
        self.n
    }

    /// Accepts `x` as the new normal (after a long, stable shift).
    pub(crate) fn rebase(&mut self, x: f64) {
        self.mean = x;
    }
}

/// Sum of the last [`FAST`] one-second values.
#[derive(Clone, Debug)]
pub(crate) struct SumWindow {
    vals: [u64; FAST],
    next: usize,
    sum: u64,
}

impl Default for SumWindow {
    fn default() -> Self {
        Self {
            vals: [0; FAST],
            next: 0,
            sum: 0,
        }
    }
}

impl SumWindow {
    pub(crate) fn push(&mut self, v: u64) {
        let slot = &mut self.vals[self.next % FAST];
        self.sum = self.sum.saturating_sub(*slot).saturating_add(v);
        *slot = v;
        self.next = (self.next + 1) % FAST;
    }

    pub(crate) fn sum(&self) -> u64 {
        self.sum
    }
}

/// Merged bucket counts of the last [`FAST`] seconds.
#[derive(Clone, Debug, Default)]
pub(crate) struct HistWindow {
    vals: Vec<Hist>,
    next: usize,
    merged: Hist,
}

impl HistWindow {
    pub(crate) fn push(&mut self, h: &Hist) {
        if self.vals.len() < FAST {
            self.vals.push(*h);
        } else if let Some(slot) = self.vals.get_mut(self.next) {
            self.merged.unmerge(slot);
            *slot = *h;
        }
        self.merged.merge(h);
        self.next = (self.next + 1) % FAST;
    }

    pub(crate) fn merged(&self) -> &Hist {
        &self.merged
    }
}

/// One bit per second, newest in bit 0: "was the condition true then".
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bits(u32);

impl Bits {
    pub(crate) fn push(&mut self, on: bool) {
        self.0 = (self.0 << 1) | u32::from(on);
    }

    /// How many of the last `n` seconds (n ≤ 32) were true.
    pub(crate) fn count_last(&self, n: u32) -> u32 {
        let mask = if n >= 32 { u32::MAX } else { (1 << n) - 1 };
        (self.0 & mask).count_ones()
    }
}

/// Median and median absolute deviation of a few values (seasonal
/// baselines: a handful of same-minute or same-hour readings).
pub(crate) fn median_mad(vals: &mut [f64]) -> Option<(f64, f64)> {
    let med = median(vals)?;
    let mut dev: Vec<f64> = vals.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&mut dev)?;
    Some((med, mad))
}

fn median(vals: &mut [f64]) -> Option<f64> {
    if vals.is_empty() {
        return None;
    }
    vals.sort_by(f64::total_cmp);
    let mid = vals.len() / 2;
    let hi = *vals.get(mid)?;
    if vals.len() % 2 == 1 {
        return Some(hi);
    }
    Some((vals.get(mid - 1)? + hi) / 2.0)
}
