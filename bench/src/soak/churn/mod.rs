//! The churn: `concurrency` slots, each drawing one operation after
//! another from the mix until the churn ends, with a jittered pause
//! between two. Every operation is bounded in time (its own limit, then
//! it counts as `timeout`) and in work (a few messages or requests), so
//! the number of open sockets never exceeds what the slots hold: at most
//! two per slot here, plus the keep-alive pool.
//!
//! Each operation ends in one outcome, counted under its label (the kind,
//! and for some kinds the variant: `ws_violation/bad_utf8`) in a
//! [`Tally`]. What the gateway should answer each label is [`expected`];
//! the summary sets the two side by side.

mod http;
mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::mix::{Kind, Mix};

/// Protocol violations: variant name and the close code the gateway owes
/// the agent for it (RFC 6455 §7.4.1: 1007 for bad UTF-8, 1002 otherwise).
pub(crate) const VIOLATIONS: [(&str, u16); 5] = [
    ("unmasked", 1002),
    ("bad_utf8", 1007),
    ("bad_opcode", 1002),
    ("big_control", 1002),
    ("orphan_continuation", 1002),
];
/// How HTTP connections are dropped.
pub(crate) const DROPS: [&str; 3] = ["idle", "unanswered", "mid_body"];
/// Where a slowloris head starts: on a fresh connection (the listener's
/// 408 guard) or after one complete request (hyper's header timeout).
pub(crate) const SLOW: [&str; 2] = ["first", "second"];

/// Path of the websocket route in the generated config.
pub(crate) const WS_PATH: &str = "/ws/soak";
/// Path on the http route.
pub(crate) const HTTP_PATH: &str = "/echo";

/// Outcome counts by label.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Operations started.
    pub(crate) started: AtomicU64,
    /// Operations finished.
    pub(crate) finished: AtomicU64,
}

impl Tally {
    /// Counts one `outcome` of `label`.
    pub(crate) fn add(&self, label: &str, outcome: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts
            .entry(label.to_string())
            .or_default()
            .entry(outcome.to_string())
            .or_insert(0) += 1;
    }

    /// A copy of the counts.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The outcomes that show the gateway answered `label` as it should;
/// `None` for labels that only observe (any outcome is fine).
pub(crate) fn expected(label: &str) -> Option<Vec<String>> {
    let (kind, variant) = label.split_once('/').unwrap_or((label, ""));
    let one = |s: &str| Some(vec![s.to_string()]);
    match kind {
        "ws_clean" => one("close 1000"),
        // Pinged, closed with 1001 when the ping went unanswered, and cut
        // when the close was not answered either.
        "ws_half_open" => one("close 1001 + eof"),
        "ws_violation" => VIOLATIONS
            .iter()
            .find(|(name, _)| *name == variant)
            .and_then(|(_, code)| one(&format!("close {code}"))),
        "http_keepalive" if variant.is_empty() => one("status 200"),
        "http_drop" => one("dropped"),
        // The listener's guard answers a first request head 408; a later
        // one on a keep-alive connection falls to hyper's header timeout,
        // which just closes: a FIN, or a reset when the close finds dripped
        // bytes unread.
        "http_slowloris" if variant == "first" => one("status 408"),
        "http_slowloris" => Some(vec!["status 408".into(), "eof".into(), "reset".into()]),
        _ => None,
    }
}

/// Everything the slots share.
pub(crate) struct Churn {
    /// The gateway's listener.
    pub(crate) addr: SocketAddr,
    pub(crate) mix: Mix,
    pub(crate) pause: Duration,
    pub(crate) hold: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) tally: Tally,
    /// Idle keep-alive connections for reuse.
    pool: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    pool_cap: usize,
    /// Round-robin counters of each kind's variants, so each variant gets
    /// an equal share of its kind.
    next_variant: [AtomicU64; Kind::ALL.len()],
}

impl Churn {
    /// A churn against `addr`.
    pub(crate) fn new(
        addr: SocketAddr,
        mix: Mix,
        pause: Duration,
        hold: Duration,
        header_timeout: Duration,
        pool_cap: usize,
    ) -> Self {
        Self {
            addr,
            mix,
            pause,
            hold,
            header_timeout,
            tally: Tally::default(),
            pool: Mutex::new(Vec::new()),
            pool_cap,
            next_variant: Default::default(),
        }
    }

    /// Runs `slots` slots, started evenly over `ramp`, until `stop_at`;
    /// returns once every slot has finished its last operation. The
    /// keep-alive pool is emptied at the end.
    pub(crate) async fn run(self: &std::sync::Arc<Self>, slots: usize, ramp: Duration, stop_at: Instant) {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..slots {
            let churn = self.clone();
            // Slots started together would draw their long operations
            // (half-open holds, slowloris) together and come back together,
            // a wave that takes long to even out.
            let start = ramp.mul_f64(i as f64 / slots as f64);
            set.spawn(async move {
                tokio::time::sleep(start).await;
                while Instant::now() < stop_at {
                    churn.one(churn.mix.draw()).await;
                    let jitter = rand::random_range(0.5..1.5);
                    tokio::time::sleep(churn.pause.mul_f64(jitter)).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// One operation of `kind`, counted.
    async fn one(&self, kind: Kind) {
        let counter = &self.next_variant[Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)];
        let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
        let (label, limit) = match kind {
            Kind::WsClean => ("ws_clean".to_string(), Duration::from_secs(15)),
            Kind::WsHalfOpen => ("ws_half_open".to_string(), self.hold + Duration::from_secs(10)),
            Kind::WsViolation => (
                format!("ws_violation/{}", VIOLATIONS[n % VIOLATIONS.len()].0),
                Duration::from_secs(15),
            ),
            Kind::HttpKeepalive => ("http_keepalive".to_string(), Duration::from_secs(15)),
            Kind::HttpDrop => (format!("http_drop/{}", DROPS[n % DROPS.len()]), Duration::from_secs(10)),
            Kind::HttpSlowloris => (
                format!("http_slowloris/{}", SLOW[n % SLOW.len()]),
                self.header_timeout + Duration::from_secs(15),
            ),
        };
        self.tally.started.fetch_add(1, Ordering::Relaxed);
        let variant = label.split_once('/').map_or("", |(_, v)| v);
        let op = async {
            match kind {
                Kind::WsClean => Some(ws::clean(self).await),
                Kind::WsHalfOpen => Some(ws::half_open(self).await),
                Kind::WsViolation => Some(ws::violation(self, variant).await),
                Kind::HttpKeepalive => http::keepalive(self).await,
                Kind::HttpDrop => Some(http::dropped(self, variant).await),
                Kind::HttpSlowloris => Some(http::slowloris(self, variant).await),
            }
        };
        match tokio::time::timeout(limit, op).await {
            Ok(Some(outcome)) => self.tally.add(&label, &outcome),
            Ok(None) => {}
            Err(_) => self.tally.add(&label, "timeout"),
        }
        self.tally.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// An idle keep-alive connection, if one is pooled.
    fn take_pooled(&self) -> Option<SendRequest<Full<Bytes>>> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
    }

    /// Keeps a connection for reuse (dropped when the pool is full).
    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut pool = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < self.pool_cap {
            pool.push(sender);
        }
    }
}

/// A payload of `len` bytes: lowercase ASCII for text, random for binary.
pub(crate) fn filler(len: usize, text: bool) -> Vec<u8> {
    (0..len)
        .map(|_| {
            if text {
                rand::random_range(b'a'..=b'z')
            } else {
                rand::random()
            }
        })
        .collect()
}

/// An I/O failure as a tally outcome (a small, fixed set of names).
pub(crate) fn io_outcome(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset => "reset",
        std::io::ErrorKind::UnexpectedEof => "eof",
        std::io::ErrorKind::InvalidData => "bad frame",
        std::io::ErrorKind::BrokenPipe => "broken pipe",
        _ => "io error",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_an_expectation() {
        for (name, code) in VIOLATIONS {
            assert_eq!(
                expected(&format!("ws_violation/{name}")),
                Some(vec![format!("close {code}")])
            );
        }
        for name in DROPS {
            assert_eq!(expected(&format!("http_drop/{name}")), Some(vec!["dropped".into()]));
        }
        assert_eq!(expected("http_slowloris/first"), Some(vec!["status 408".into()]));
        assert_eq!(expected("http_slowloris/second").map(|v| v.len()), Some(3));
        assert_eq!(expected("ws_clean"), Some(vec!["close 1000".into()]));
        assert_eq!(expected("ws_half_open"), Some(vec!["close 1001 + eof".into()]));
        // Observations only.
        assert_eq!(expected("http_keepalive/conn"), None);
        assert_eq!(expected("ws_violation/unknown"), None);
    }

    #[test]
    fn tally_counts_by_label_and_outcome() {
        let t = Tally::default();
        t.add("ws_clean", "close 1000");
        t.add("ws_clean", "close 1000");
        t.add("ws_clean", "timeout");
        let s = t.snapshot();
        assert_eq!(s["ws_clean"]["close 1000"], 2);
        assert_eq!(s["ws_clean"]["timeout"], 1);
    }
}
