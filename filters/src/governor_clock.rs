//! A governor clock that reads tokio's clock.
//!
//! Governor's default clock (quanta) ignores tokio's paused test time; this
//! one measures nanoseconds since its creation with `tokio::time::Instant`,
//! so limiters obey `#[tokio::test(start_paused = true)]` and
//! `tokio::time::advance`. Outside tests it is the monotonic clock.

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// Nanoseconds since the clock's origin, as governor wants them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock whose zero is now.
    pub(crate) fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        // Saturates after ~584 years of uptime, which governor tolerates.
        let elapsed = self.origin.elapsed().as_nanos();
        Nanos::new(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

/// Compile-time check that governor accepts our instant type.
const _: fn() = || {
    fn is_reference<R: Reference>() {}
    is_reference::<Nanos>();
};
