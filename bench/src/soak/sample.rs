//! Once a second: the gateway's resident memory, threads and open
//! descriptors from `/proc/<pid>`, and its session and pool gauges from
//! the admin `/metrics`, with the churn's own counters beside them. /proc
//! is read before `/metrics` is fetched, so the scrape's own connection is
//! never among the descriptors counted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::churn::Churn;
use crate::ramp::parse_line;

/// Where the run is when a sample is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Gateway started, pools warming.
    Start,
    /// No load yet: the descriptor baseline.
    Baseline,
    /// Churn, before the warm-up ends.
    Warmup,
    /// Churn after the warm-up.
    Churn,
    /// No new operations; the last ones finishing.
    WindDown,
    /// Everything stopped; the gateway settling.
    Settle,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Start,
        Phase::Baseline,
        Phase::Warmup,
        Phase::Churn,
        Phase::WindDown,
        Phase::Settle,
    ];

    /// The name in samples.csv.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Baseline => "baseline",
            Phase::Warmup => "warmup",
            Phase::Churn => "churn",
            Phase::WindDown => "wind_down",
            Phase::Settle => "settle",
        }
    }
}

/// The gateway's gauges at one scrape.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Gauges {
    /// `agentmux_sessions_active`, all routes.
    pub(crate) sessions_active: i64,
    /// `agentmux_pool_connections` summed by state over every pool.
    pub(crate) pool: BTreeMap<String, i64>,
    /// `agentmux_pool_waiters`, all pools.
    pub(crate) pool_waiters: i64,
    /// `agentmux_pool_acquire_seconds_count`, all clusters: acquires so far.
    pub(crate) acquires: u64,
}

impl Gauges {
    /// Pool connections in `states`.
    pub(crate) fn pool_in(&self, states: &[&str]) -> i64 {
        states.iter().filter_map(|s| self.pool.get(*s)).sum()
    }
}

/// The simulators' counts of connections accepted from the gateway, one
/// simulator per cluster.
#[derive(Clone, Debug, Default)]
pub(crate) struct Accepted {
    pub(crate) ws: Arc<AtomicU64>,
    pub(crate) http: Arc<AtomicU64>,
}

/// One sample.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the gateway was up.
    pub(crate) t_s: f64,
    pub(crate) phase: Phase,
    /// `VmRSS`, KiB.
    pub(crate) rss_kib: Option<u64>,
    /// Entries in `/proc/<pid>/fd`.
    pub(crate) fds: Option<u64>,
    pub(crate) threads: Option<u64>,
    /// CPU time used so far, all threads, milliseconds (from `schedstat`).
    pub(crate) cpu_ms: u64,
    /// `None` when the scrape failed.
    pub(crate) gauges: Option<Gauges>,
    /// Connections the websocket cluster's simulator accepted so far.
    pub(crate) ws_upstream_accepted: u64,
    /// Connections the http cluster's simulator accepted so far.
    pub(crate) http_upstream_accepted: u64,
    /// Churn operations started and finished so far.
    pub(crate) ops_started: u64,
    pub(crate) ops_finished: u64,
}

/// `VmRSS` (KiB) and `Threads` from the text of `/proc/<pid>/status`.
pub(crate) fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    (field("VmRSS:"), field("Threads:"))
}

/// RSS (KiB), open descriptors and threads of `pid`.
pub(crate) fn read_proc(pid: u32) -> (Option<u64>, Option<u64>, Option<u64>) {
    let (rss, threads) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|t| parse_status(&t))
        .unwrap_or((None, None));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|dir| dir.flatten().count() as u64);
    (rss, fds, threads)
}

/// The gauges in a `/metrics` text.
pub(crate) fn parse_gauges(text: &str) -> Gauges {
    let mut g = Gauges::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        match name {
            "agentmux_sessions_active" => g.sessions_active += value as i64,
            "agentmux_pool_connections" => {
                let state = labels.get("state").copied().unwrap_or("unknown");
                *g.pool.entry(state.to_string()).or_insert(0) += value as i64;
            }
            "agentmux_pool_waiters" => g.pool_waiters += value as i64,
            "agentmux_pool_acquire_seconds_count" => g.acquires += value as u64,
            _ => {}
        }
    }
    g
}

/// Counters of the final scrape, by their telling label: sessions ended by
/// how (`end`), HTTP requests by `status_class`, errors by `cause`.
pub(crate) fn parse_counters(text: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        let (family, label) = match name {
            "agentmux_sessions_ended_total" => ("sessions_ended", "end"),
            "agentmux_http_requests_total" => ("http_requests", "status_class"),
            "agentmux_errors_total" => ("errors", "cause"),
            _ => continue,
        };
        let key = labels.get(label).copied().unwrap_or("unknown").to_string();
        *out.entry(family.into()).or_default().entry(key).or_insert(0) += value as u64;
    }
    out
}

/// GET /metrics from the admin listener (HTTP/1.0: read to the end). The
/// `Host` is the listener's own address: the admin API answers any other
/// 421 (its DNS-rebinding guard).
pub(crate) async fn scrape(admin: SocketAddr) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        let head = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
        s.write_all(head.as_bytes()).await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        text.contains(" 200 ").then_some(text)
    };
    tokio::time::timeout(Duration::from_millis(900), fetch)
        .await
        .ok()
        .flatten()
}

/// The sampling task and what it shares.
pub(crate) struct Sampler {
    pub(crate) epoch: Instant,
    phase: Arc<AtomicU8>,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Samples `pid` and `admin` every second from now on.
    pub(crate) fn start(pid: u32, admin: SocketAddr, accepted: Accepted, churn: Arc<Churn>) -> Self {
        let epoch = Instant::now();
        let phase = Arc::new(AtomicU8::new(0));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (phase, samples) = (phase.clone(), samples.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let t_s = epoch.elapsed().as_secs_f64();
                    let phase = Phase::ALL[usize::from(phase.load(Ordering::Relaxed)) % Phase::ALL.len()];
                    let (rss_kib, fds, threads) = read_proc(pid);
                    let cpu_ms = crate::compare::procstat::cpu(&[pid]).cpu_ns / 1_000_000;
                    let gauges = scrape(admin).await.map(|t| parse_gauges(&t));
                    let sample = Sample {
                        t_s,
                        phase,
                        rss_kib,
                        fds,
                        threads,
                        cpu_ms,
                        gauges,
                        ws_upstream_accepted: accepted.ws.load(Ordering::Relaxed),
                        http_upstream_accepted: accepted.http.load(Ordering::Relaxed),
                        ops_started: churn.tally.started.load(Ordering::Relaxed),
                        ops_finished: churn.tally.finished.load(Ordering::Relaxed),
                    };
                    samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(sample);
                }
            })
        };
        Self {
            epoch,
            phase,
            samples,
            task,
        }
    }

    /// Marks the samples from now on with `phase`; returns the time (s since
    /// the epoch) it changed.
    pub(crate) fn enter(&self, phase: Phase) -> f64 {
        let i = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase.store(i as u8, Ordering::Relaxed);
        self.epoch.elapsed().as_secs_f64()
    }

    /// The latest sample, if any.
    pub(crate) fn last(&self) -> Option<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .cloned()
    }

    /// Stops sampling and hands over the samples.
    pub(crate) fn stop(self) -> Vec<Sample> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse() {
        let text = "Name:\tagentmux\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status(text), (Some(12345), Some(3)));
        assert_eq!(parse_status("Name: x\n"), (None, None));
    }

    #[test]
    fn this_process_reads() {
        let (rss, fds, threads) = read_proc(std::process::id());
        assert!(rss.unwrap() > 0);
        // stdin, stdout, stderr at least.
        assert!(fds.unwrap() >= 3);
        assert!(threads.unwrap() >= 1);
        assert_eq!(read_proc(u32::MAX), (None, None, None));
    }

    #[test]
    fn gauges_sum_over_label_sets() {
        let text = r#"# HELP agentmux_sessions_active WebSocket sessions open now
agentmux_sessions_active{route="ws"} 7
agentmux_sessions_active{route="other"} 1
agentmux_pool_connections{cluster="ws",endpoint="e",pool="websocket",state="ready"} 4
agentmux_pool_connections{cluster="ws",endpoint="e",pool="websocket",state="active"} 7
agentmux_pool_connections{cluster="http",endpoint="e",pool="http",state="ready"} 2
agentmux_pool_connections{cluster="http",endpoint="e",pool="http",state="idle"} 1
agentmux_pool_waiters{cluster="ws",endpoint="e"} 0
agentmux_pool_acquire_seconds_count{cluster="ws"} 100
agentmux_pool_acquire_seconds_count{cluster="http"} 50
agentmux_sessions_ended_total{route="ws",end="closed"} 9
agentmux_sessions_ended_total{route="ws",end="keepalive_timeout"} 2
agentmux_http_requests_total{route="http",status_class="2xx"} 40
agentmux_errors_total{route="ws",cause="malformed",origin="downstream"} 3
"#;
        let g = parse_gauges(text);
        assert_eq!(g.sessions_active, 8);
        assert_eq!(g.pool["ready"], 6);
        assert_eq!(g.pool_in(&["ready", "idle"]), 7);
        assert_eq!(g.pool_in(&["active", "missing"]), 7);
        assert_eq!(g.acquires, 150);
        let c = parse_counters(text);
        assert_eq!(c["sessions_ended"]["keepalive_timeout"], 2);
        assert_eq!(c["http_requests"]["2xx"], 40);
        assert_eq!(c["errors"]["malformed"], 3);
    }
}
