//! When a session sends next. Fixed rate: one message per interval from a
//! per-slot offset (golden-ratio spread, so sessions do not all send in the
//! same instant), returning the intended time even when late, for the
//! coordinated-omission correction. Closed loop: now, after the think time
//! (not before the first message); the window of messages in flight is the
//! caller's.

use std::time::Instant;

use super::{ConnLimits, Ctx, Pacing};

/// Paces one connection's sends.
pub(crate) struct Pacer {
    next: Instant,
    first: bool,
}

impl Pacer {
    /// Starts pacing for a connection.
    pub(crate) fn new(ctx: &Ctx, limits: &ConnLimits) -> Self {
        let mut next = Instant::now();
        if let Pacing::FixedRate { interval } = ctx.plan.pacing {
            next += interval.mul_f64((limits.slot as f64 * 0.618_033_988_75).fract());
        }
        Self { next, first: true }
    }

    /// Waits for the next send; returns its intended time (ns since the
    /// epoch), or `None` when the connection should stop sending.
    pub(crate) async fn next(&mut self, ctx: &Ctx, limits: &ConnLimits, sent: u64) -> Option<u64> {
        if limits.max_messages.is_some_and(|max| sent >= max) || ctx.stop.is_cancelled() {
            return None;
        }
        match ctx.plan.pacing {
            Pacing::FixedRate { interval } => {
                if self.next >= limits.until {
                    return None;
                }
                tokio::time::sleep_until(self.next.into()).await;
                let intended = u64::try_from((self.next - ctx.epoch).as_nanos()).unwrap_or(u64::MAX);
                self.next += interval;
                Some(intended)
            }
            Pacing::ClosedLoop { think, .. } => {
                if !self.first && !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
                self.first = false;
                (Instant::now() < limits.until).then(|| ctx.now_ns())
            }
        }
    }
}
