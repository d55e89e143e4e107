//! Global limits against an in-memory store that runs the same batched
//! GCRA as the gateway's Redis script, in paused tokio time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::CountingMetrics;

/// The store: one theoretical arrival time per bucket, in seconds since
/// its creation, granting between `min` and `want` cells or none.
#[derive(Debug)]
struct FakeStore {
    origin: Instant,
    tat: Mutex<HashMap<(Arc<str>, GlobalKey), f64>>,
    up: AtomicBool,
    instances: AtomicU32,
    delay: Mutex<Duration>,
    calls: AtomicU64,
    /// Answers every call with an error while still reachable (a
    /// read-only replica after a failover, out of memory).
    erroring: AtomicBool,
}

impl FakeStore {
    fn new(instances: u32) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            tat: Mutex::new(HashMap::new()),
            up: AtomicBool::new(true),
            instances: AtomicU32::new(instances),
            delay: Mutex::new(Duration::from_micros(200)),
            calls: AtomicU64::new(0),
            erroring: AtomicBool::new(false),
        })
    }

    /// The GCRA step of the Redis script, in `f64` seconds.
    fn take_now(&self, r: &LeaseRequest) -> Lease {
        let now = self.origin.elapsed().as_secs_f64();
        let period = 1.0 / r.rate;
        let mut map = self.tat.lock().unwrap();
        let tat = map.entry((r.limit.clone(), r.key)).or_insert(now);
        let base = tat.max(now);
        let room = ((f64::from(r.burst) * period - (base - now)) / period + 1e-9).floor();
        let room = room.max(0.0) as u32;
        if room < r.min {
            let wait = base + f64::from(r.min) * period - f64::from(r.burst) * period - now;
            return Lease {
                granted: 0,
                retry_after: Duration::from_secs_f64(wait.max(0.0)),
            };
        }
        let granted = room.min(r.want);
        *tat = base + f64::from(granted) * period;
        Lease {
            granted,
            retry_after: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Source(Arc<FakeStore>);

impl LeaseSource for Source {
    fn take(&self, request: LeaseRequest) -> LeaseFuture {
        let store = self.0.clone();
        Box::pin(async move {
            store.calls.fetch_add(1, Ordering::Relaxed);
            let delay = *store.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if !store.up.load(Ordering::Relaxed) || store.erroring.load(Ordering::Relaxed) {
                return Err(LeaseUnavailable);
            }
            Ok(store.take_now(&request))
        })
    }

    fn available(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    fn instances(&self) -> u32 {
        self.0.instances.load(Ordering::Relaxed)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(50)
    }
}

fn limiter(store: &Arc<FakeStore>, rate: f64, burst: u32) -> (GlobalLimiter, Arc<CountingMetrics>) {
    let metrics = Arc::new(CountingMetrics::default());
    let params = GlobalLimitParams::new("limit", KeySource::ClientIp, rate, burst).unwrap();
    let l = GlobalLimiter::new(params, Arc::new(Source(store.clone())), metrics.clone());
    (l, metrics)
}

fn keys(agent: &str) -> (GlobalKey, LimitKey) {
    (
        GlobalKey::from_bytes(agent.as_bytes()),
        LimitKey::from_bytes(agent.as_bytes()),
    )
}

/// Sends `per_second` requests a second for `secs` seconds to each limiter
/// (interleaved), returning how many each admitted.
async fn drive(limiters: &[GlobalLimiter], per_second: u32, secs: u32) -> Vec<u32> {
    drive_timed(limiters, per_second, secs).await.0
}

/// Like [`drive`], also returning the time it took. Requests go out on a
/// fixed schedule (waits for leases do not stretch it), each round
/// starting at the next instance so none is always first.
async fn drive_timed(limiters: &[GlobalLimiter], per_second: u32, secs: u32) -> (Vec<u32>, f64) {
    let started = Instant::now();
    let (g, l) = keys("agent");
    let n = limiters.len();
    let mut admitted = vec![0; n];
    let step = Duration::from_secs(1) / per_second;
    for round in 0..per_second * secs {
        for k in 0..n {
            let i = (round as usize + k) % n;
            if limiters[i].admit(g, l).await.is_ok() {
                admitted[i] += 1;
            }
        }
        tokio::time::sleep_until(started + step * (round + 1)).await;
    }
    (admitted, started.elapsed().as_secs_f64())
}

#[tokio::test(start_paused = true)]
async fn three_instances_share_one_rate() {
    let store = FakeStore::new(3);
    let pairs: Vec<_> = (0..3).map(|_| limiter(&store, 50.0, 10)).collect();
    let limiters: Vec<_> = pairs.iter().map(|p| p.0.clone()).collect();
    // 3 × 100 req/s offered for 4 s against 50 req/s in all.
    let (admitted, secs) = drive_timed(&limiters, 100, 4).await;
    let total: u32 = admitted.iter().sum();
    let expected = 50.0 * secs + 10.0;
    let error = (f64::from(total) - expected).abs() / expected;
    let fb: Vec<_> = pairs.iter().map(|p| p.1.rate_limit_fallback_count()).collect();
    assert!(
        error <= 0.05,
        "admitted {total} ({admitted:?}), expected about {expected} in {secs:.3}s, fallback {fb:?} calls {}",
        store.calls.load(Ordering::Relaxed)
    );
    // Each instance got a fair part of it.
    assert!(admitted.iter().all(|&a| a > 40), "{admitted:?}");
    // At saturation with leases this small (2 cells, minimum 1) each
    // instance asks about once per conforming cell plus one top-up that
    // finds the bucket empty: a bounded few calls per cell, whatever the
    // offered load. (Batching pays at high rates: see the next test.)
    let calls = store.calls.load(Ordering::Relaxed);
    assert!(f64::from(calls as u32) <= 5.0 * expected, "{calls} store calls");
}

#[tokio::test(start_paused = true)]
async fn a_high_rate_leases_in_batches() {
    let store = FakeStore::new(3);
    let limiters: Vec<_> = (0..3).map(|_| limiter(&store, 3000.0, 3000).0).collect();
    // 3 × 2000 req/s offered against 3000 req/s.
    let (admitted, secs) = drive_timed(&limiters, 2000, 2).await;
    let total: u32 = admitted.iter().sum();
    let expected = 3000.0 * secs + 3000.0;
    let error = (f64::from(total) - expected).abs() / expected;
    assert!(
        error <= 0.05,
        "admitted {total}, expected about {expected} in {secs:.3}s"
    );
    let calls = store.calls.load(Ordering::Relaxed);
    assert!(calls < 12_000 / 20, "{calls} store calls for 12000 requests");
}

#[tokio::test(start_paused = true)]
async fn under_the_limit_nothing_is_refused() {
    let store = FakeStore::new(2);
    let (a, ma) = limiter(&store, 100.0, 20);
    let (b, _) = limiter(&store, 100.0, 20);
    let admitted = drive(&[a, b], 40, 3).await;
    assert_eq!(admitted, vec![120, 120]);
    assert_eq!(ma.rate_limited_count(), 0);
    assert_eq!(ma.rate_limit_fallback_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn store_down_decides_on_the_local_share() {
    let store = FakeStore::new(3);
    let (l, m) = limiter(&store, 30.0, 3);
    store.up.store(false, Ordering::Relaxed);
    // 100 req/s offered for 3 s; the share is 10 req/s with a burst of 1.
    let admitted = drive(std::slice::from_ref(&l), 100, 3).await[0];
    assert!((29..=32).contains(&admitted), "admitted {admitted}");
    assert!(m.rate_limit_fallback_count() >= 300);
    // Back up: leases again.
    store.up.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = m.rate_limit_fallback_count();
    drive(std::slice::from_ref(&l), 100, 1).await;
    assert_eq!(m.rate_limit_fallback_count(), before);
}

#[tokio::test(start_paused = true)]
async fn a_store_answering_errors_is_not_asked_by_every_request() {
    let store = FakeStore::new(1);
    let (l, m) = limiter(&store, 1000.0, 10);
    store.erroring.store(true, Ordering::Relaxed);
    // 200 req/s for 2 s on one key: after each failed fetch the local
    // share decides for one store timeout (50 ms) before asking again.
    let admitted = drive(std::slice::from_ref(&l), 200, 2).await[0];
    let calls = store.calls.load(Ordering::Relaxed);
    assert!(calls <= 45, "{calls} lease calls for 400 requests");
    assert!(admitted >= 390, "the local share (1000/s) admits them: {admitted}");
    assert!(m.rate_limit_fallback_count() >= 350);
    // The store recovers: leases again within one timeout.
    store.erroring.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = m.rate_limit_fallback_count();
    drive(std::slice::from_ref(&l), 200, 1).await;
    assert!(m.rate_limit_fallback_count() - before <= 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_costs_at_most_its_timeout() {
    let store = FakeStore::new(1);
    *store.delay.lock().unwrap() = Duration::from_secs(10);
    let (l, m) = limiter(&store, 10.0, 5);
    let (g, k) = keys("cold");
    let started = Instant::now();
    assert!(l.admit(g, k).await.is_ok(), "decided on the local share");
    let waited = started.elapsed();
    assert!(waited <= Duration::from_millis(51), "waited {waited:?}");
    assert_eq!(m.rate_limit_fallback_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn unspent_cells_expire() {
    let store = FakeStore::new(1);
    let (l, _) = limiter(&store, 100.0, 100);
    let (g, k) = keys("a");
    l.admit(g, k).await.unwrap();
    let slot = l.inner.slots.get(g, Instant::now());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(slot.tokens(Instant::now()) > 0);
    tokio::time::sleep(l.inner.params.lease_ttl()).await;
    assert_eq!(slot.tokens(Instant::now()), 0);
}

#[test]
fn lease_size_follows_the_share() {
    let p = GlobalLimitParams::new("x", KeySource::ClientIp, 50.0, 10).unwrap();
    assert_eq!(p.lease_size(3), 2);
    assert_eq!(p.lease_size(1), 5);
    let big = GlobalLimitParams::new("x", KeySource::ClientIp, 10_000.0, 500).unwrap();
    assert_eq!(big.lease_size(4), 250);
    assert_eq!(big.lease_size(1), 500, "capped at the burst");
    assert!(p.clone().with_lease_window(Duration::ZERO).is_err());
    assert!(GlobalLimitParams::new("x", KeySource::ClientIp, 0.0, 1).is_err());
}

#[test]
fn global_keys_agree_across_processes() {
    // A fixed digest: every instance (and release) must name buckets alike.
    let k = GlobalKey::from_bytes(b"agent-7");
    assert_eq!(k.to_hex().len(), 32);
    assert_eq!(k, GlobalKey::from_bytes(b"agent-7"));
    assert_ne!(k, GlobalKey::from_bytes(b"agent-8"));
    let mut req = http::Request::new(());
    req.headers_mut().insert("x-agent", "agent-7".parse().unwrap());
    let by_header = KeySource::Header("x-agent".parse().unwrap()).global_key_from(req.headers(), req.extensions());
    assert_ne!(by_header, k, "header values and custom bytes live in separate domains");
}

/// The per-request cost of a global limit on a key holding a lease, next
/// to a local limit's. Run: `cargo test --release -p agentmux-filters --
/// --ignored --nocapture lease_hot_path_cost`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement, not a check"]
async fn lease_hot_path_cost() {
    let store = FakeStore::new(1);
    *store.delay.lock().unwrap() = Duration::ZERO;
    let (global, _) = limiter(&store, 1e9, 1_000_000);
    let local = crate::rate_limit::RequestLimiter::new(
        crate::rate_limit::RateLimitParams::new(KeySource::ClientIp, 1e9, 1_000_000).unwrap(),
        Arc::new(CountingMetrics::default()),
    );
    let (g, l) = keys("agent");
    let n = 1_000_000u32;
    for _ in 0..1000 {
        global.admit(g, l).await.unwrap();
    }
    let t = std::time::Instant::now();
    for _ in 0..n {
        global.admit(g, l).await.unwrap();
    }
    let per_global = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        local.check_key(&l).unwrap();
    }
    let per_local = t.elapsed() / n;
    let calls = store.calls.load(Ordering::Relaxed);
    eprintln!(
        "global (leased) {per_global:?}/request, local {per_local:?}/request; {calls} store calls for {} requests",
        n + 1000
    );
}
