//! The retry budget: retries may be at most a fraction of requests.
//!
//! Modelled on tower's `TpsBudget` (a sliding window of deposits and
//! withdrawals plus a constant reserve) with two changes: amounts are fixed
//! point in millionths, so a ratio of 0.6 means 0.6 (tower's integer
//! `1 / ratio` withdrawal turns it into 1.0), and the window rotates under a
//! lock only when a slot boundary has passed, so the per-request cost is a
//! few atomic operations.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::InvalidParam;

/// Fixed-point scale of the ledger: one retry costs `SCALE`.
const SCALE: i64 = 1_000_000;
/// How many slots the ttl window is split into.
const SLOTS: usize = 10;

/// Validated retry-budget parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetParams {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

impl RetryBudgetParams {
    /// Retries may add up to `ratio` (within `0.0..=1.0`) of the requests
    /// seen over the last `ttl` (1 s ..= 60 s), plus a floor of
    /// `min_per_sec` retries per second so a quiet route can still retry.
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Result<Self, InvalidParam> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(InvalidParam::new(
                "ratio",
                format!("must be within 0.0..=1.0 (got {ratio})"),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(InvalidParam::new(
                "ttl",
                format!("must be within 1s..=60s (got {ttl:?})"),
            ));
        }
        if min_per_sec > 1_000_000 {
            return Err(InvalidParam::new(
                "min_per_sec",
                format!("must be <= 1000000 (got {min_per_sec})"),
            ));
        }
        Ok(Self {
            ratio,
            min_per_sec,
            ttl,
        })
    }
}

impl Default for RetryBudgetParams {
    /// 20% of requests, at least 10 retries per second, over 10 s (tower's
    /// defaults).
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// A retry budget, shared by every clone (typically one per route or per
/// cluster). Every request deposits; every retry withdraws.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    inner: Arc<Ledger>,
}

#[derive(Debug)]
struct Ledger {
    deposit: i64,
    reserve: i64,
    /// Closed slots of the window.
    slots: [AtomicI64; SLOTS],
    /// The slot being written.
    open: AtomicI64,
    slot_width: Duration,
    origin: Instant,
    /// Nanoseconds since `origin` at which the open slot closes.
    next_rotation: AtomicU64,
    rotation: Mutex<Rotation>,
}

#[derive(Debug)]
struct Rotation {
    index: usize,
    opened_at: Instant,
}

impl RetryBudget {
    /// A budget holding only its reserve.
    pub fn new(params: RetryBudgetParams) -> Self {
        let origin = Instant::now();
        let slot_width = params.ttl / SLOTS as u32;
        let reserve = i64::from(params.min_per_sec)
            .saturating_mul(params.ttl.as_secs() as i64)
            .saturating_mul(SCALE);
        Self {
            inner: Arc::new(Ledger {
                deposit: (params.ratio * SCALE as f64).round() as i64,
                reserve,
                slots: Default::default(),
                open: AtomicI64::new(0),
                slot_width,
                origin,
                next_rotation: AtomicU64::new(nanos(slot_width)),
                rotation: Mutex::new(Rotation {
                    index: 0,
                    opened_at: origin,
                }),
            }),
        }
    }

    /// Records one request.
    pub fn deposit(&self) {
        self.inner.expire();
        self.inner.open.fetch_add(self.inner.deposit, Ordering::AcqRel);
    }

    /// Takes one retry from the budget; `false` if it is empty.
    pub fn withdraw(&self) -> bool {
        self.inner.expire();
        if self.inner.balance() < SCALE {
            return false;
        }
        // Check-then-take is not atomic: concurrent withdrawals may overdraw
        // by a retry or two, which a budget tolerates (tower's does too).
        self.inner.open.fetch_sub(SCALE, Ordering::AcqRel);
        true
    }

    /// Whole retries available now.
    pub fn available(&self) -> u64 {
        self.inner.expire();
        u64::try_from(self.inner.balance() / SCALE).unwrap_or(0)
    }
}

impl Ledger {
    fn balance(&self) -> i64 {
        let closed = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .fold(0i64, i64::saturating_add);
        closed
            .saturating_add(self.open.load(Ordering::Acquire))
            .saturating_add(self.reserve)
    }

    /// Closes the open slot (and clears the ones that fell out of the
    /// window) once a slot boundary has passed.
    fn expire(&self) {
        let now = Instant::now();
        let since_origin = nanos(now.saturating_duration_since(self.origin));
        if since_origin < self.next_rotation.load(Ordering::Acquire) {
            return;
        }
        let mut rotation = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
        let mut elapsed = now.saturating_duration_since(rotation.opened_at);
        if elapsed < self.slot_width {
            return; // another caller rotated meanwhile
        }
        let committed = self.open.swap(0, Ordering::AcqRel);
        self.slots[rotation.index].store(committed, Ordering::Release);
        let mut index = (rotation.index + 1) % SLOTS;
        let mut cleared = 0;
        while elapsed > self.slot_width && cleared < SLOTS {
            self.slots[index].store(0, Ordering::Release);
            elapsed -= self.slot_width;
            index = (index + 1) % SLOTS;
            cleared += 1;
        }
        rotation.index = index;
        rotation.opened_at = now;
        let next = nanos(now.saturating_duration_since(self.origin) + self.slot_width);
        self.next_rotation.store(next, Ordering::Release);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
