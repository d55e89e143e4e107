//! Concurrent sessions per key.
//!
//! The gateway calls [`SessionLimiter::try_acquire`] before accepting a
//! WebSocket (or mux) session and keeps the [`SessionPermit`] for the
//! session's lifetime; dropping it frees the slot. The table holds only keys
//! with at least one live session, so it is bounded by the number of open
//! sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::TooManySessions;
use super::key::{LimitKey, PreHashed};
use crate::{FilterMetrics, InvalidParam};

/// Validated parameters of the concurrent-session limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimitParams {
    max_sessions: u32,
}

impl SessionLimitParams {
    /// At most `max_sessions` (>= 1) concurrent sessions per key.
    pub fn new(max_sessions: u32) -> Result<Self, InvalidParam> {
        if max_sessions == 0 {
            return Err(InvalidParam::new("max_sessions", "must be >= 1 (got 0)"));
        }
        Ok(Self { max_sessions })
    }
}

/// Counts live sessions per key. Cheap to clone; clones share the counts.
#[derive(Clone, Debug)]
pub struct SessionLimiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_sessions: u32,
    // Touched once per session open and close, not per message: a mutex is
    // cheaper and simpler here than a sharded map.
    live: Mutex<HashMap<LimitKey, u32, PreHashed>>,
    metrics: Arc<dyn FilterMetrics>,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, HashMap<LimitKey, u32, PreHashed>> {
        // A panic while holding the lock cannot leave a count half-written
        // (each update is one store), so a poisoned map is still usable.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionLimiter {
    /// A limiter with no live sessions.
    pub fn new(params: SessionLimitParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_sessions: params.max_sessions,
                live: Mutex::new(HashMap::with_hasher(PreHashed)),
                metrics,
            }),
        }
    }

    /// Takes a session slot for `key`, or fails if the key holds the maximum.
    pub fn try_acquire(&self, key: LimitKey) -> Result<SessionPermit, TooManySessions> {
        let mut live = self.shared.live();
        let count = live.entry(key).or_insert(0);
        if *count >= self.shared.max_sessions {
            drop(live);
            self.shared.metrics.session_rejected();
            return Err(TooManySessions::new(self.shared.max_sessions));
        }
        *count += 1;
        Ok(SessionPermit {
            key,
            shared: self.shared.clone(),
        })
    }

    /// The number of live sessions of `key`.
    pub fn active(&self, key: &LimitKey) -> u32 {
        self.shared.live().get(key).copied().unwrap_or(0)
    }

    /// The number of keys with at least one live session.
    pub fn tracked_keys(&self) -> usize {
        self.shared.live().len()
    }
}

/// One live session's slot; dropping it frees the slot.
#[derive(Debug)]
#[must_use = "the session slot is released when the permit is dropped"]
pub struct SessionPermit {
    key: LimitKey,
    shared: Arc<Shared>,
}

impl SessionPermit {
    /// The key this session counts against.
    pub fn key(&self) -> &LimitKey {
        &self.key
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut live = self.shared.live();
        if let Some(count) = live.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Keys without live sessions leave the table: it stays
                // bounded by the number of open sessions.
                live.remove(&self.key);
            }
        }
    }
}
