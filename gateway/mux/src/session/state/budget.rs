//! A bound on the replay memory of many sessions together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, futures::Notified};

/// A bound on the unacknowledged bytes of many sessions together: the
/// total replay memory of one side (in the gateway, of one endpoint). A
/// sender with no budget left waits for ACKs on any session sharing it,
/// exactly as it waits at its own replay bound.
///
/// Room is read under the sending session's lock and taken when its frame
/// is numbered, so sessions sending at the same instant may overshoot the
/// bound by at most one frame each
/// ([`MAX_FRAME_PAYLOAD`](crate::MAX_FRAME_PAYLOAD)). Cheap to
/// clone; every clone is the same budget.
#[derive(Clone)]
pub struct ReplayBudget(Arc<BudgetInner>);

struct BudgetInner {
    limit: usize,
    used: AtomicUsize,
    /// Senders waiting for room: freeing bytes wakes them only when there
    /// are any, so ACKs do not touch a shared lock in steady state.
    waiting: AtomicUsize,
    freed: Notify,
}

impl ReplayBudget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(BudgetInner {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }))
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Unacknowledged bytes kept now by the sessions sharing it.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    pub(super) fn room(&self) -> usize {
        // SeqCst pairs with `give`: a sender registers as waiting, then
        // reads `used`; a giver lowers `used`, then reads `waiting`. With
        // both loads SeqCst one of them sees the other's write, so either
        // the sender sees the room or the giver wakes it.
        self.0.limit.saturating_sub(self.0.used.load(Ordering::SeqCst))
    }

    pub(super) fn take(&self, n: usize) {
        self.0.used.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.0.used.fetch_sub(n, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.freed.notify_waiters();
        }
    }

    /// Completes when bytes are freed after this call (while the caller
    /// is [`register`](Self::register)ed).
    pub(crate) fn freed(&self) -> Notified<'_> {
        self.0.freed.notified()
    }

    /// Marks a sender as waiting for room until the guard drops.
    pub(crate) fn register(&self) -> Waiting<'_> {
        self.0.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }
}

impl std::fmt::Debug for ReplayBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .finish()
    }
}

/// A sender waiting for budget (see [`ReplayBudget::register`]).
pub(crate) struct Waiting<'a>(&'a ReplayBudget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
