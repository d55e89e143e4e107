//! One key's lease on this instance, and the table of them.
//!
//! A slot holds the cells this instance leased for one key, until when
//! they may be spent, whether a fetch is in flight, and — after the store
//! said the bucket is empty — until when asking again is pointless. Every
//! decision is a few field updates under the slot's own mutex; the table
//! is sharded so keys do not contend on one lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::source::{Lease, LeaseUnavailable};
use crate::rate_limit::GlobalKey;

/// What one check decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Admitted from the lease; `prefetch` asks the caller to top it up.
    Admit { prefetch: bool },
    /// The shared bucket is empty for this long.
    Reject(Duration),
    /// No cells: the caller starts a fetch and waits for it.
    Fetch,
    /// No cells and a fetch is already under way: wait for it.
    Wait,
    /// No cells and the store is unreachable: decide on the local share.
    Fallback,
}

#[derive(Debug)]
struct SlotState {
    tokens: u32,
    expires: Instant,
    empty_until: Instant,
    /// After a failed fetch, the local share decides until then: a store
    /// that answers with errors (read-only replica, out of memory) is not
    /// asked again by every request, and no request waits on it.
    failed_until: Instant,
    fetching: bool,
    last_used: Instant,
}

/// One key's lease.
#[derive(Debug)]
pub(super) struct Slot {
    key: GlobalKey,
    state: Mutex<SlotState>,
    /// Woken when a fetch completes.
    pub(super) refilled: Notify,
}

impl Slot {
    fn new(key: GlobalKey, now: Instant) -> Self {
        Self {
            key,
            state: Mutex::new(SlotState {
                tokens: 0,
                expires: now,
                empty_until: now,
                failed_until: now,
                fetching: false,
                last_used: now,
            }),
            refilled: Notify::new(),
        }
    }

    /// The key this slot leases for.
    pub(super) fn key(&self) -> GlobalKey {
        self.key
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides one request. `available` says whether the store may be
    /// asked; `low_water` is the level at which the lease is topped up.
    pub(super) fn step(&self, now: Instant, available: bool, low_water: u32) -> Step {
        let mut s = self.lock();
        s.last_used = now;
        if s.tokens > 0 && now < s.expires {
            s.tokens -= 1;
            let prefetch = available && s.tokens <= low_water && !s.fetching && now >= s.empty_until;
            if prefetch {
                s.fetching = true;
            }
            return Step::Admit { prefetch };
        }
        s.tokens = 0;
        if !available || now < s.failed_until {
            return Step::Fallback;
        }
        if now < s.empty_until {
            return Step::Reject(s.empty_until - now);
        }
        if s.fetching {
            return Step::Wait;
        }
        s.fetching = true;
        Step::Fetch
    }

    /// Records a fetch's result and wakes the requests waiting for it.
    /// After a failure the key decides locally for `backoff`.
    pub(super) fn complete(
        &self,
        result: Result<Lease, LeaseUnavailable>,
        now: Instant,
        ttl: Duration,
        backoff: Duration,
    ) {
        {
            let mut s = self.lock();
            s.fetching = false;
            match result {
                Ok(lease) if lease.granted > 0 => {
                    let kept = if now < s.expires { s.tokens } else { 0 };
                    s.tokens = kept.saturating_add(lease.granted);
                    s.expires = now + ttl;
                    s.empty_until = now;
                }
                Ok(lease) => s.empty_until = now + lease.retry_after,
                Err(LeaseUnavailable) => s.failed_until = now + backoff,
            }
        }
        self.refilled.notify_waiters();
    }

    /// Cells held now (expired ones count as none).
    #[cfg(test)]
    pub(super) fn tokens(&self, now: Instant) -> u32 {
        let s = self.lock();
        if now < s.expires { s.tokens } else { 0 }
    }

    fn idle_since(&self, since: Instant) -> bool {
        let s = self.lock();
        !s.fetching && s.last_used < since
    }
}

const SHARDS: usize = 16;

/// Prune idle slots after this many checks, or [`PRUNE_INTERVAL`].
const PRUNE_EVERY_CHECKS: u64 = 16 * 1024;
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// The slots of one limit, sharded by key.
#[derive(Debug)]
pub(super) struct Slots {
    shards: [Mutex<HashMap<GlobalKey, Arc<Slot>>>; SHARDS],
    checks: AtomicU64,
    origin: Instant,
    next_prune_ms: AtomicU64,
}

impl Slots {
    pub(super) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            checks: AtomicU64::new(0),
            origin: Instant::now(),
            next_prune_ms: AtomicU64::new(millis(PRUNE_INTERVAL)),
        }
    }

    fn shard(&self, key: &GlobalKey) -> &Mutex<HashMap<GlobalKey, Arc<Slot>>> {
        let i = key.shard_byte() as usize % SHARDS;
        &self.shards[i]
    }

    /// The slot of `key`, created empty on first use.
    pub(super) fn get(&self, key: GlobalKey, now: Instant) -> Arc<Slot> {
        let mut map = self.shard(&key).lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key).or_insert_with(|| Arc::new(Slot::new(key, now))).clone()
    }

    /// Drops slots unused for `idle` (their leases have expired anyway),
    /// every so many checks or seconds; cheap to call on every check.
    pub(super) fn maybe_prune(&self, now: Instant, idle: Duration) {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        let at = millis(now.saturating_duration_since(self.origin));
        let next = self.next_prune_ms.load(Ordering::Relaxed);
        if !checks.is_multiple_of(PRUNE_EVERY_CHECKS) && at < next {
            return;
        }
        // One pruner wins the swap; the others carry on.
        let upcoming = at.saturating_add(millis(PRUNE_INTERVAL));
        if self
            .next_prune_ms
            .compare_exchange(next, upcoming, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let since = now.checked_sub(idle).unwrap_or(self.origin);
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, slot| !slot.idle_since(since));
            map.shrink_to_fit();
        }
    }

    /// Keys held now.
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
