//! The report of a load run: a stable JSON schema (`agentmux-bench.load.v1`,
//! documented field by field in bench/README.md) and a human rendering.
//! Fields are only ever added to the schema; a removal or a change of
//! meaning bumps the version in `schema`.

mod recorder;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub(crate) use recorder::{ErrorKind, Metric, Recorder, Samples};

/// Schema identifier written into every load report.
pub(crate) const SCHEMA: &str = "agentmux-bench.load.v1";

/// One load run, as printed by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    /// Always [`SCHEMA`].
    pub(crate) schema: String,
    /// The URL under load.
    pub(crate) target: String,
    /// `ws`, `http` or `sse`.
    pub(crate) protocol: String,
    /// Concurrent session slots.
    pub(crate) sessions: u64,
    /// How messages were paced.
    pub(crate) mode: Mode,
    /// Payload size and kind.
    pub(crate) payload: PayloadInfo,
    /// Whether replies were checked.
    pub(crate) verify: bool,
    /// Whether latency is measured from intended send times (fixed rate).
    pub(crate) coordinated_omission_corrected: bool,
    /// Wall time from the first session start to the end of the drain, seconds.
    pub(crate) elapsed_s: f64,
    /// Message counts.
    pub(crate) messages: Messages,
    /// Replies per second and payload bytes per second received.
    pub(crate) throughput: Throughput,
    /// Request → reply (WebSocket echo, HTTP response, SSE time to first token).
    pub(crate) latency_us: Percentiles,
    /// TCP connect time.
    pub(crate) connect_us: Percentiles,
    /// TLS handshake time (count 0 for plaintext).
    pub(crate) tls_us: Percentiles,
    /// WebSocket upgrade round trip (count 0 for HTTP and SSE).
    pub(crate) handshake_us: Percentiles,
    /// Whole setup: connect + TLS + upgrade.
    pub(crate) setup_us: Percentiles,
    /// SSE figures; `null` for other protocols.
    pub(crate) sse: Option<SseStats>,
    /// Session counts.
    pub(crate) session_counts: SessionCounts,
    /// Errors by kind; every kind is always present.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub(crate) errors_total: u64,
    /// The first error message seen for each kind that occurred.
    pub(crate) first_errors: BTreeMap<String, String>,
}

/// Pacing of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// Open loop at a fixed rate per session.
    FixedRate {
        /// Messages per second per session.
        rate_per_session: f64,
    },
    /// Closed loop with a window of messages in flight.
    ClosedLoop {
        /// Messages in flight per session.
        in_flight: u32,
        /// Pause after each reply, microseconds.
        think_time_us: u64,
    },
}

/// Payload description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PayloadInfo {
    /// Bytes per message.
    pub(crate) size: usize,
    /// `text` or `binary`.
    pub(crate) kind: String,
}

/// Message counts of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Messages {
    /// Messages (requests, for SSE: streams requested) sent.
    pub(crate) sent: u64,
    /// Replies received (for SSE: tokens).
    pub(crate) received: u64,
    /// Payload bytes sent.
    pub(crate) bytes_sent: u64,
    /// Payload bytes received.
    pub(crate) bytes_received: u64,
    /// Replies whose content differed from what was sent.
    pub(crate) mismatched: u64,
    /// Intact replies that were not the next expected (loss, duplicate, reorder).
    pub(crate) out_of_order: u64,
    /// Messages never answered (connection lost or drain timed out).
    pub(crate) unanswered: u64,
}

/// Throughput over `elapsed_s`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Throughput {
    /// Replies (SSE: tokens) per second.
    pub(crate) messages_per_s: f64,
    /// Received payload bytes per second.
    pub(crate) bytes_per_s: f64,
}

/// Percentiles of a histogram, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Percentiles {
    /// Samples.
    pub(crate) count: u64,
    /// Smallest sample.
    pub(crate) min: u64,
    /// Mean.
    pub(crate) mean: f64,
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Largest sample.
    pub(crate) max: u64,
}

/// SSE-only figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SseStats {
    /// Streams that ended with `[DONE]`.
    pub(crate) streams_completed: u64,
    /// Gap between consecutive tokens.
    pub(crate) inter_token_us: Percentiles,
}

/// Session counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SessionCounts {
    /// Sessions that completed setup (churn and reconnects included).
    pub(crate) opened: u64,
    /// Sessions that ended cleanly.
    pub(crate) closed: u64,
}

impl Percentiles {
    /// Summarises a histogram.
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What the run was, for the report header (the recorder has the rest).
pub(crate) struct RunInfo {
    pub(crate) target: String,
    pub(crate) protocol: &'static str,
    pub(crate) sessions: u64,
    pub(crate) mode: Mode,
    pub(crate) payload: PayloadInfo,
    pub(crate) verify: bool,
}

impl Report {
    /// Builds the report from a finished run.
    pub(crate) fn build(info: RunInfo, rec: &Recorder, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let messages = Messages {
            sent: Recorder::get(&rec.sent),
            received: Recorder::get(&rec.received),
            bytes_sent: Recorder::get(&rec.bytes_sent),
            bytes_received: Recorder::get(&rec.bytes_received),
            mismatched: Recorder::get(&rec.mismatched),
            out_of_order: Recorder::get(&rec.out_of_order),
            unanswered: Recorder::get(&rec.unanswered),
        };
        let throughput = Throughput {
            messages_per_s: round2(messages.received as f64 / secs),
            bytes_per_s: round2(messages.bytes_received as f64 / secs),
        };
        let sse = (info.protocol == "sse").then(|| SseStats {
            streams_completed: Recorder::get(&rec.streams_completed),
            inter_token_us: Percentiles::of(&rec.histogram(Metric::InterToken)),
        });
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), rec.errors(*k)))
            .collect();
        Self {
            schema: SCHEMA.to_string(),
            coordinated_omission_corrected: matches!(info.mode, Mode::FixedRate { .. }),
            target: info.target,
            protocol: info.protocol.to_string(),
            sessions: info.sessions,
            mode: info.mode,
            payload: info.payload,
            verify: info.verify,
            elapsed_s: round2(secs),
            messages,
            throughput,
            latency_us: Percentiles::of(&rec.histogram(Metric::Latency)),
            connect_us: Percentiles::of(&rec.histogram(Metric::Connect)),
            tls_us: Percentiles::of(&rec.histogram(Metric::Tls)),
            handshake_us: Percentiles::of(&rec.histogram(Metric::Handshake)),
            setup_us: Percentiles::of(&rec.histogram(Metric::Setup)),
            sse,
            session_counts: SessionCounts {
                opened: Recorder::get(&rec.sessions_opened),
                closed: Recorder::get(&rec.sessions_closed),
            },
            errors,
            errors_total: rec.errors_total(),
            first_errors: rec
                .first_errors()
                .into_iter()
                .map(|(k, d)| (k.name().to_string(), d))
                .collect(),
        }
    }

    /// A human rendering for the terminal.
    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        let m = &self.messages;
        let _ = writeln!(
            out,
            "target     {} ({}, {} sessions, {:?})",
            self.target, self.protocol, self.sessions, self.mode
        );
        let _ = writeln!(out, "elapsed    {:.2} s", self.elapsed_s);
        let _ = writeln!(
            out,
            "messages   sent {} received {} mismatched {} out-of-order {} unanswered {}",
            m.sent, m.received, m.mismatched, m.out_of_order, m.unanswered
        );
        let _ = writeln!(
            out,
            "throughput {:.1} msg/s, {:.1} KiB/s",
            self.throughput.messages_per_s,
            self.throughput.bytes_per_s / 1024.0
        );
        let co = if self.coordinated_omission_corrected {
            " (CO-corrected)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "µs", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, p: &Percentiles| {
            if p.count > 0 {
                let _ = writeln!(
                    out,
                    "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name, p.count, p.p50, p.p90, p.p99, p.p999, p.max
                );
            }
        };
        row("latency", &self.latency_us);
        row("connect", &self.connect_us);
        row("tls", &self.tls_us);
        row("handshake", &self.handshake_us);
        row("setup", &self.setup_us);
        if let Some(sse) = &self.sse {
            row("token gap", &sse.inter_token_us);
        }
        if !co.is_empty() {
            let _ = writeln!(
                out,
                "latency counts from the intended send time when a send was held back >2 ms{co}"
            );
        }
        if let Some(sse) = &self.sse {
            let _ = writeln!(out, "sse        {} streams completed", sse.streams_completed);
        }
        let _ = writeln!(
            out,
            "sessions   opened {} closed {}",
            self.session_counts.opened, self.session_counts.closed
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "errors     {}{}",
            self.errors_total,
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join(", "))
            }
        );
        out
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
