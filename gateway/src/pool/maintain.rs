//! The pool's maintenance task: keeps the target number of connections
//! warm, replaces dead ones, recycles old ones and closes surplus idle ones.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Flavor, Shared};

/// How often idle connections are probed and the pool topped up. A dead
/// HTTP connection wakes the task at once; a raw idle socket has no task
/// watching it, so this bounds how long a dead one stays pooled.
const TICK: Duration = Duration::from_secs(1);

/// Runs until the pool is closed or dropped. Holds only a weak reference
/// between ticks so a dropped pool is not kept alive by its own task.
pub(super) async fn run(pool: Weak<Shared>, shutdown: CancellationToken) {
    let Some(wake) = pool.upgrade().map(|p| p.wake_handle()) else {
        return;
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        match pool.upgrade() {
            Some(p) => p.maintain(Instant::now()),
            None => return,
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

impl Shared {
    /// Connections that count toward the warm target. Lent HTTP
    /// connections come back; lent raw transports belong to their sessions,
    /// so a raw pool keeps `target` spare ones ready for the next session.
    fn warm_count(&self, inner: &super::Inner) -> usize {
        let live_h2 = inner.h2.iter().filter(|e| !e.is_draining()).count();
        let spare = inner.idle.len() + live_h2 + inner.connecting;
        match self.flavor {
            Flavor::Http(_) => spare + inner.leased,
            Flavor::Raw => spare,
        }
    }

    fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// One maintenance pass.
    pub(super) fn maintain(self: &Arc<Self>, now: Instant) {
        let enabled = self.enabled.load(Ordering::Relaxed);
        let target = if enabled { self.target() } else { 0 };
        let p = &self.params;
        let mut inner = self.lock();
        let mut closing = Vec::new();

        // Exclusive idle connections: drop dead ones, recycle old ones.
        let idle = std::mem::take(&mut inner.idle);
        for entry in idle {
            if !enabled || entry.age(now) >= p.connection_ttl {
                closing.push(entry);
            } else if let Some(entry) = entry.checked() {
                inner.idle.push(entry);
            }
        }
        // Surplus idle connections, longest unused first (the front).
        while self.warm_count(&inner) > target
            && inner.idle.first().is_some_and(|e| e.unused_for(now) >= p.idle_timeout)
        {
            closing.push(inner.idle.remove(0));
        }

        // Shared HTTP/2 connections: drain past TTL or when ejected, drop
        // closed ones and drained ones, close surplus idle ones.
        for e in &inner.h2 {
            if !enabled || e.age(now) >= p.connection_ttl {
                e.start_draining();
            }
        }
        let mut surplus = self.warm_count(&inner).saturating_sub(target);
        inner.h2.retain(|e| {
            let idle_out = e.in_flight() == 0 && e.unused_for(now) >= p.idle_timeout && surplus > 0;
            let gone = e.is_closed() || (e.is_draining() && e.in_flight() == 0) || idle_out;
            if idle_out {
                surplus -= 1;
            }
            !gone
        });

        // Top up to the target unless backing off after failed connects.
        let backing_off = inner.backoff_until.is_some_and(|t| now < t);
        if enabled && !backing_off {
            let warm = self.warm_count(&inner);
            self.start_connects(&mut inner, target.saturating_sub(warm));
        }
        drop(inner);
        drop(closing);
    }
}
