//! Results of `compare` (JSON schema `agentmux-bench.compare.v1`) and the
//! markdown tables with ratios to nginx.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::Percentiles;

/// Schema identifier of the compare JSON.
pub(crate) const SCHEMA: &str = "agentmux-bench.compare.v1";

/// The whole comparison.
#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    pub(crate) schema: &'static str,
    /// The command line that produced it.
    pub(crate) command: String,
    pub(crate) protocol: String,
    /// Whether clients spoke TLS to every target (the proxies terminate it).
    pub(crate) tls: bool,
    pub(crate) sessions: u64,
    pub(crate) payload_size: usize,
    pub(crate) upstream_latency_ms: f64,
    pub(crate) proxy_core: Option<usize>,
    pub(crate) bench_cores: Option<String>,
    pub(crate) targets: Vec<TargetResult>,
}

/// One target (direct, echo, agentmux, nginx, haproxy).
#[derive(Debug, Serialize)]
pub(crate) struct TargetResult {
    pub(crate) name: String,
    /// `ok`, or why it was skipped or failed.
    pub(crate) status: String,
    pub(crate) points: Vec<LoadPoint>,
    pub(crate) setup_us: Option<Percentiles>,
    pub(crate) idle: Option<IdleResult>,
    pub(crate) capacity: Option<CapacityResult>,
}

/// One fixed-rate run.
#[derive(Debug, Serialize)]
pub(crate) struct LoadPoint {
    pub(crate) offered_per_s: f64,
    pub(crate) achieved_per_s: f64,
    pub(crate) latency_us: Percentiles,
    pub(crate) errors_total: u64,
    pub(crate) mismatched: u64,
    /// Proxy CPU per relayed message (each echo is two relayed messages); null for direct.
    pub(crate) cpu_us_per_msg: Option<f64>,
    /// Share of that CPU spent in user space.
    pub(crate) user_share: Option<f64>,
}

/// Memory of idle sessions.
#[derive(Debug, Serialize)]
pub(crate) struct IdleResult {
    pub(crate) requested: u64,
    pub(crate) open: u64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    pub(crate) kib_per_session: Option<f64>,
}

/// Sessions held at once.
#[derive(Debug, Serialize)]
pub(crate) struct CapacityResult {
    pub(crate) requested: u64,
    pub(crate) held: u64,
    pub(crate) first_error: Option<String>,
    /// Load generator processes that held them (each has its own open-file limit).
    pub(crate) generator_processes: u64,
}

fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "—".into(),
    }
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.digits$}"))
}

impl Comparison {
    fn nginx(&self) -> Option<&TargetResult> {
        self.targets.iter().find(|t| t.name == "nginx" && t.status == "ok")
    }

    fn load_table(&self, out: &mut String, nginx: Option<&TargetResult>) {
        let _ = writeln!(
            out,
            "| target | offered msg/s | achieved msg/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU µs/msg | × nginx | user % | errors |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for t in self.targets.iter().filter(|t| t.status == "ok") {
            for p in &t.points {
                let base = nginx
                    .and_then(|n| n.points.iter().find(|q| q.offered_per_s == p.offered_per_s))
                    .and_then(|q| q.cpu_us_per_msg);
                let l = &p.latency_us;
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    t.name,
                    p.offered_per_s,
                    p.achieved_per_s,
                    l.p50,
                    l.p99,
                    l.p999,
                    l.max,
                    opt(p.cpu_us_per_msg, 2),
                    ratio(p.cpu_us_per_msg, base),
                    opt(p.user_share.map(|s| s * 100.0), 0),
                    p.errors_total + p.mismatched,
                );
            }
        }
    }

    /// The report as markdown: a load table, a session table, and skipped targets.
    pub(crate) fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "`{}`\n", self.command);
        let what = match self.protocol.as_str() {
            // SSE: a "msg" is one relayed event, the payload the simulator's token.
            "sse" => "token streams (msg = one relayed event)",
            _ => "echo",
        };
        let _ = writeln!(
            out,
            "{}{} {what}, {} sessions, {} B payload, upstream latency {} ms per direction; each proxy pinned to core {}, load generator and upstream on {}.\n",
            self.protocol,
            if self.tls { " over TLS" } else { "" },
            self.sessions,
            self.payload_size,
            self.upstream_latency_ms,
            self.proxy_core.map_or("—".into(), |c| c.to_string()),
            self.bench_cores.as_deref().unwrap_or("any core"),
        );
        let nginx = self.nginx();
        if self.targets.iter().any(|t| !t.points.is_empty()) {
            self.load_table(&mut out, nginx);
        }
        let idle_base = nginx.and_then(|n| n.idle.as_ref()).and_then(|i| i.kib_per_session);
        let haproxy_base = self
            .targets
            .iter()
            .find(|t| t.name == "haproxy" && t.status == "ok")
            .and_then(|t| t.idle.as_ref())
            .and_then(|i| i.kib_per_session);
        let _ = writeln!(
            out,
            "\n| target | setup p50 µs | setup p99 µs | idle sessions | KiB / idle session | × nginx | × haproxy | sessions held |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for t in self.targets.iter().filter(|t| t.status == "ok") {
            let kib = t.idle.as_ref().and_then(|i| i.kib_per_session);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                t.setup_us.as_ref().map_or("—".into(), |s| s.p50.to_string()),
                t.setup_us.as_ref().map_or("—".into(), |s| s.p99.to_string()),
                t.idle
                    .as_ref()
                    .map_or("—".into(), |i| format!("{}/{}", i.open, i.requested)),
                opt(kib, 1),
                ratio(kib, idle_base),
                ratio(kib, haproxy_base),
                t.capacity
                    .as_ref()
                    .map_or("—".into(), |c| format!("{}/{}", c.held, c.requested)),
            );
        }
        for t in self.targets.iter().filter(|t| t.status != "ok") {
            let _ = writeln!(out, "\n- **{}**: {}", t.name, t.status);
        }
        out
    }
}
