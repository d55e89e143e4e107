//! Exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

use crate::InvalidParam;
use crate::params::nonzero_duration;

/// Exponential backoff with **full jitter**: the delay before retry `n`
/// (counting from 0) is drawn uniformly from `[0, min(cap, base · 2^n)]`.
///
/// Full jitter spreads the retries of many clients that failed together
/// over the whole interval instead of bunching them at its end (tower's
/// `ExponentialBackoff` adds jitter on top of the base and clips at the
/// maximum, so once it reaches the cap every client retries in lockstep).
/// The gateway also uses this for WebSocket and mux connect retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Backoff starting at `base` (> 0) and never exceeding `cap`
    /// (>= `base`).
    pub fn new(base: Duration, cap: Duration) -> Result<Self, InvalidParam> {
        let base = nonzero_duration("backoff_base", base)?;
        if cap < base {
            return Err(InvalidParam::new(
                "backoff_cap",
                format!("must be >= backoff_base ({base:?}) (got {cap:?})"),
            ));
        }
        Ok(Self { base, cap })
    }

    /// The delay before retry `attempt` (0 before the first retry), drawn
    /// from the thread-local RNG.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    /// [`Self::delay`] with a caller-supplied RNG (for reproducible tests).
    pub fn delay_with(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        self.ceiling(attempt).mul_f64(rng.random::<f64>())
    }

    /// The upper end of the jitter interval for `attempt`:
    /// `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.base.checked_mul(factor).map_or(self.cap, |d| d.min(self.cap))
    }

    /// The first delay's ceiling.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest possible delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }
}
