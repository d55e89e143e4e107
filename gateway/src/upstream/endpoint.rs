//! One upstream endpoint: its pools, health and load figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::pool::Pool;

/// An endpoint of a cluster.
#[derive(Debug)]
pub struct Endpoint {
    label: Arc<str>,
    weight: u32,
    pub(crate) http: Option<Pool>,
    pub(crate) raw: Option<Pool>,
    ejected: AtomicBool,
    /// Taken out of rotation by an operator (admin API); health checks do
    /// not bring it back.
    drained: AtomicBool,
    /// Consecutive failed requests (passive health), reset by a success.
    passive_failures: AtomicU32,
    pub(crate) health_wake: Notify,
    /// Requests and sessions in flight (least-connections, p2c).
    active: AtomicUsize,
    /// Latency EWMA in nanoseconds, stored as f64 bits (p2c-ewma).
    ewma_ns: AtomicU64,
}

impl Endpoint {
    pub(crate) fn new(label: Arc<str>, weight: u32, http: Option<Pool>, raw: Option<Pool>) -> Self {
        Self {
            label,
            weight,
            http,
            raw,
            ejected: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            passive_failures: AtomicU32::new(0),
            health_wake: Notify::new(),
            active: AtomicUsize::new(0),
            ewma_ns: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// The endpoint's address as written in the config, for labels.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its balancing weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whether health checks have taken it out of rotation.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Whether an operator drained it: no new requests or sessions, the
    /// ones under way continue.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains the endpoint (or puts it back).
    pub fn set_drained(&self, drained: bool) {
        if self.drained.swap(drained, Ordering::Relaxed) != drained {
            let enabled = !drained && !self.is_ejected();
            for pool in self.http.iter().chain(self.raw.iter()) {
                pool.set_enabled(enabled);
            }
        }
    }

    /// Requests and sessions in flight now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one request or session in flight until the guard drops.
    pub(crate) fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Records how a request went (passive health and latency).
    pub(crate) fn report(&self, success: bool, latency: Option<Duration>, threshold: u32) {
        if success {
            self.passive_failures.store(0, Ordering::Relaxed);
        } else if self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1 == threshold {
            // The health controller decides; we only tell it to look now.
            self.health_wake.notify_one();
        }
        if let Some(l) = latency {
            self.observe_latency(l);
        }
    }

    pub(crate) fn passive_failures(&self) -> u32 {
        self.passive_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_passive_failures(&self) {
        self.passive_failures.store(0, Ordering::Relaxed);
    }

    /// Ejects or restores the endpoint and tells its pools.
    pub(crate) fn set_ejected(&self, ejected: bool) {
        if self.ejected.swap(ejected, Ordering::Relaxed) != ejected {
            let enabled = !ejected && !self.is_drained();
            for pool in self.http.iter().chain(self.raw.iter()) {
                pool.set_enabled(enabled);
            }
        }
    }

    fn observe_latency(&self, l: Duration) {
        // A racy read-modify-write is fine: losing one sample of an
        // average costs nothing, a lock on every response would.
        const ALPHA: f64 = 0.3;
        let old = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let sample = l.as_nanos() as f64;
        let new = if old == 0.0 {
            sample
        } else {
            old + ALPHA * (sample - old)
        };
        self.ewma_ns.store(new.to_bits(), Ordering::Relaxed);
    }

    /// The latency EWMA.
    pub fn latency_ewma(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.ewma_ns.load(Ordering::Relaxed)) as u64)
    }

    /// p2c-ewma cost: expected latency times the queue in front of us.
    pub(crate) fn p2c_cost(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed)).max(1.0) * (self.active() as f64 + 1.0)
    }

    pub(crate) fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.http.iter().chain(self.raw.iter())
    }
}

/// Decrements an endpoint's in-flight count on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Endpoint>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
