//! What a soak writes into `--out`: `summary.md` (the verdict, the figures,
//! what each churn kind got), `soak.json` (the same, for machines),
//! `samples.csv` (one row per second) and three plots (`rss.svg`,
//! `fds.svg`, `pool.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::churn::expected;
use super::plot::{Line, Timeline, timeline};
use super::sample::Sample;
use super::summary::{Marks, Summary};
use crate::error::Error;

/// Schema of `soak.json`.
pub(crate) const SCHEMA: &str = "agentmux-bench.soak.v1";

/// How the run was set up.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Setup {
    pub(crate) gateway: String,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) settle_s: f64,
    pub(crate) baseline_s: f64,
    pub(crate) window_s: f64,
    pub(crate) concurrency: usize,
    pub(crate) pause_ms: f64,
    pub(crate) mix: String,
    pub(crate) half_open_hold_s: f64,
    pub(crate) keepalive_s: f64,
    pub(crate) header_timeout_s: f64,
    pub(crate) pool_idle_timeout_s: f64,
    pub(crate) min_connections: usize,
}

/// What one churn label got.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Answers {
    pub(crate) label: String,
    pub(crate) total: u64,
    /// `None`: an observation, any outcome is fine.
    pub(crate) expected: Option<Vec<String>>,
    pub(crate) as_expected: u64,
    pub(crate) outcomes: BTreeMap<String, u64>,
}

/// Sessions the gateway served (its own counters) and the upstream
/// connections it opened for them (the simulators' accept counts).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ServedCounts {
    /// WebSocket sessions ended (`agentmux_sessions_ended_total`).
    pub(crate) ws_sessions: u64,
    /// HTTP requests answered, upgrades (1xx) left out.
    pub(crate) http_requests: u64,
    pub(crate) connections_per_ws_session: Option<f64>,
    pub(crate) connections_per_http_request: Option<f64>,
    /// Both together.
    pub(crate) connections_per_session: Option<f64>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SoakReport {
    pub(crate) schema: &'static str,
    pub(crate) command: String,
    pub(crate) setup: Setup,
    pub(crate) marks: Marks,
    pub(crate) summary: Summary,
    pub(crate) answers: Vec<Answers>,
    /// The gateway's own counters at the end: sessions ended by how, HTTP
    /// requests by status class, errors by cause.
    pub(crate) gateway_counters: BTreeMap<String, BTreeMap<String, u64>>,
    /// Sessions served and the upstream connections opened for them.
    pub(crate) served: ServedCounts,
    pub(crate) operations: u64,
}

/// Sets each label's outcomes beside what it should have got.
pub(crate) fn answers(tally: BTreeMap<String, BTreeMap<String, u64>>) -> Vec<Answers> {
    tally
        .into_iter()
        .map(|(label, outcomes)| {
            let expected = expected(&label);
            let total = outcomes.values().sum();
            let as_expected = match &expected {
                Some(list) => list.iter().filter_map(|o| outcomes.get(o)).sum(),
                None => total,
            };
            Answers {
                label,
                total,
                expected,
                as_expected,
                outcomes,
            }
        })
        .collect()
}

fn mib(kib: Option<f64>) -> String {
    kib.map_or("—".into(), |k| format!("{:.1} MiB", k / 1024.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

/// The summary in Markdown.
pub(crate) fn markdown(r: &SoakReport) -> String {
    let (s, m, u) = (&r.summary, &r.marks, &r.setup);
    let mut md = String::new();
    let _ = writeln!(md, "`{}`\n", r.command);
    let _ = writeln!(
        md,
        "{} churn slots for {:.0} s (warm-up {:.0} s), mix `{}`, pause {:.0} ms between a slot's \
         operations; keepalive {} s, request header timeout {} s, pool idle timeout {} s, \
         `min_connections = {}` per pool. Baseline {:.0} s before the churn, settle {:.0} s after \
         the last operation ended; medians over {:.0} s windows. Gateway: `{}`, config `agentmux.toml`.\n",
        u.concurrency,
        u.duration_s,
        u.warmup_s,
        u.mix,
        u.pause_ms,
        u.keepalive_s,
        u.header_timeout_s,
        u.pool_idle_timeout_s,
        u.min_connections,
        u.baseline_s,
        u.settle_s,
        u.window_s,
        u.gateway,
    );
    let verdict = if s.pass { "PASS" } else { "FAIL" };
    let ok = |b: bool| if b { "met" } else { "**not met**" };
    let _ = writeln!(md, "## Verdict: **{verdict}**\n");
    let _ = writeln!(
        md,
        "- RSS at the end within 5 % of its value after warm-up: {} — after warm-up {}, end {} \
         ({}).",
        ok(s.rss_ok),
        mib(s.rss_after_warmup_kib),
        mib(s.rss_end_kib),
        s.rss_ratio.map_or("no ratio".into(), |x| format!(
            "{:.3}× , {:+.1} %",
            x,
            (x - 1.0) * 100.0
        )),
    );
    let _ = writeln!(
        md,
        "- Descriptors back to baseline: {} — baseline {}, end {}{} (peak {}).\n",
        ok(s.fds_ok),
        num(s.fds_baseline),
        num(s.fds_end),
        if s.fds_allowance > 0.0 {
            format!(
                ", {:.0} allowed for pool connections still warming at baseline",
                s.fds_allowance
            )
        } else {
            String::new()
        },
        num(s.fds_peak),
    );
    let _ = writeln!(md, "| | start | baseline | after warm-up | peak | end |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        md,
        "| RSS | {} | {} | {} | {} | {} |",
        mib(s.rss_start_kib),
        mib(s.rss_baseline_kib),
        mib(s.rss_after_warmup_kib),
        mib(s.rss_peak_kib),
        mib(s.rss_end_kib)
    );
    let _ = writeln!(
        md,
        "| open descriptors | | {} | | {} | {} |",
        num(s.fds_baseline),
        num(s.fds_peak),
        num(s.fds_end)
    );
    let _ = writeln!(
        md,
        "| threads | | {} | | | {} |",
        num(s.threads_baseline),
        num(s.threads_end)
    );
    let _ = writeln!(
        md,
        "| upstream connections open | | {} | | | {} |",
        num(s.pool_open_baseline),
        num(s.pool_open_end)
    );
    let _ = writeln!(md, "| sessions active | | | | | {} |\n", num(s.sessions_active_end));
    let _ = writeln!(
        md,
        "Gateway CPU during the churn: {} of a core on average.\n",
        s.cpu_cores_churn.map_or("—".into(), |c| format!("{:.0} %", c * 100.0))
    );
    let _ = writeln!(
        md,
        "Phases (s since the gateway started): baseline {:.0}, churn {:.0}, warm-up over {:.0}, \
         churn stopped {:.0}, last operation ended {:.0}, end {:.0}.\n",
        m.baseline_start_s, m.churn_start_s, m.warmup_end_s, m.churn_stop_s, m.settle_start_s, m.settle_end_s
    );
    let _ = writeln!(md, "## Upstream pool\n");
    let ratio = |c: Option<f64>| c.map_or("—".into(), |c| format!("{c:.3}"));
    let v = &r.served;
    let _ = writeln!(
        md,
        "- Upstream connections opened after the baseline, per session served (sessions and \
         requests by the gateway's counters, connections by the simulators' accepts): \
         **{} per session** overall; websocket cluster {} for {} sessions ended ({} per session), \
         http cluster {} for {} requests answered, upgrades left out ({} per request).",
        ratio(v.connections_per_session),
        s.ws_upstream_connections,
        v.ws_sessions,
        ratio(v.connections_per_ws_session),
        s.http_upstream_connections,
        v.http_requests,
        ratio(v.connections_per_http_request),
    );
    let _ = writeln!(
        md,
        "- Spare (ready + idle) upstream connections held: {} when the churn stopped, at most {} \
         during the settle, {} at the end.\n",
        num(s.pool_spare_at_churn_stop),
        num(s.pool_spare_settle_max),
        num(s.pool_spare_end),
    );
    let _ = writeln!(md, "## What each churn kind got ({} operations)\n", r.operations);
    let _ = writeln!(md, "| kind | count | expected | as expected | outcomes |");
    let _ = writeln!(md, "|---|---:|---|---:|---|");
    for a in &r.answers {
        let outcomes: Vec<String> = a.outcomes.iter().map(|(o, n)| format!("{o}: {n}")).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            a.label,
            a.total,
            a.expected.as_ref().map_or("(observed)".into(), |e| e.join(" or ")),
            if a.expected.is_some() {
                format!(
                    "{} ({:.1} %)",
                    a.as_expected,
                    100.0 * a.as_expected as f64 / a.total.max(1) as f64
                )
            } else {
                "—".into()
            },
            outcomes.join(", "),
        );
    }
    let _ = writeln!(md, "\n## The gateway's counters at the end\n");
    for (family, counts) in &r.gateway_counters {
        let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(md, "- `{family}`: {}", parts.join(", "));
    }
    let _ = writeln!(
        md,
        "\nPlots: `rss.svg` (RSS over time, the after-warm-up level and its +5 % line), `fds.svg` \
         (descriptors and active sessions, the baseline level), `pool.svg` (upstream connections \
         by state). Raw samples: `samples.csv`."
    );
    md
}

/// One row per sample.
pub(crate) fn csv(samples: &[Sample]) -> String {
    const STATES: [&str; 7] = [
        "initializing",
        "ready",
        "active",
        "idle",
        "unhealthy",
        "recycling",
        "failed",
    ];
    let mut out = String::from(
        "t_s,phase,rss_kib,fds,threads,cpu_ms,sessions_active,pool_initializing,pool_ready,pool_active,pool_idle,\
         pool_unhealthy,pool_recycling,pool_failed,pool_waiters,pool_acquires,ws_upstream_accepted,http_upstream_accepted,ops_started,ops_finished\n",
    );
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for s in samples {
        let g = s.gauges.as_ref();
        let gauge = |f: &dyn Fn(&super::sample::Gauges) -> String| g.map_or(String::new(), f);
        let pool: Vec<String> = STATES
            .iter()
            .map(|st| gauge(&|g| g.pool.get(*st).copied().unwrap_or(0).to_string()))
            .collect();
        let _ = writeln!(
            out,
            "{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            s.t_s,
            s.phase.as_str(),
            opt(s.rss_kib),
            opt(s.fds),
            opt(s.threads),
            s.cpu_ms,
            gauge(&|g| g.sessions_active.to_string()),
            pool.join(","),
            gauge(&|g| g.pool_waiters.to_string()),
            gauge(&|g| g.acquires.to_string()),
            s.ws_upstream_accepted,
            s.http_upstream_accepted,
            s.ops_started,
            s.ops_finished,
        );
    }
    out
}

/// The three plots.
fn plots(dir: &Path, samples: &[Sample], r: &SoakReport) -> Result<(), String> {
    let m = &r.marks;
    let marks = vec![
        (m.churn_start_s, "churn"),
        (m.warmup_end_s, "warm-up over"),
        (m.churn_stop_s, "churn stops"),
        (m.settle_start_s, "settle"),
    ];
    let series = |name: &str, f: &dyn Fn(&Sample) -> Option<f64>| Line {
        name: name.into(),
        points: samples.iter().filter_map(|s| f(s).map(|v| (s.t_s, v))).collect(),
    };
    let mut levels = Vec::new();
    if let Some(a) = r.summary.rss_after_warmup_kib {
        levels.push((a / 1024.0, "after warm-up (median)".to_string()));
        levels.push((a * 1.05 / 1024.0, "+5 %".to_string()));
    }
    timeline(
        &dir.join("rss.svg"),
        &Timeline {
            title: "agentmux RSS under churn",
            y_desc: "RSS (MiB)",
            lines: vec![series("RSS", &|s| s.rss_kib.map(|v| v as f64 / 1024.0))],
            marks: marks.clone(),
            levels,
        },
    )?;
    timeline(
        &dir.join("fds.svg"),
        &Timeline {
            title: "agentmux open descriptors under churn",
            y_desc: "count",
            lines: vec![
                series("open descriptors", &|s| s.fds.map(|v| v as f64)),
                series("sessions active", &|s| {
                    s.gauges.as_ref().map(|g| g.sessions_active as f64)
                }),
            ],
            marks: marks.clone(),
            levels: r
                .summary
                .fds_baseline
                .map(|b| (b, "descriptor baseline".to_string()))
                .into_iter()
                .collect(),
        },
    )?;
    let state =
        |st: &'static str| move |s: &Sample| s.gauges.as_ref().map(|g| g.pool.get(st).copied().unwrap_or(0) as f64);
    timeline(
        &dir.join("pool.svg"),
        &Timeline {
            title: "agentmux upstream connections by state",
            y_desc: "connections",
            lines: vec![
                series("active", &state("active")),
                series("ready", &state("ready")),
                series("idle", &state("idle")),
                series("initializing", &state("initializing")),
            ],
            marks,
            levels: Vec::new(),
        },
    )
}

/// Writes every output file.
pub(crate) fn write(dir: &Path, samples: &[Sample], r: &SoakReport) -> Result<String, Error> {
    let md = markdown(r);
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::Runtime(e.to_string()))?;
    let file = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| Error::io(format!("writing {name}"), e))
    };
    file("summary.md", &md)?;
    file("soak.json", &format!("{json}\n"))?;
    file("samples.csv", &csv(samples))?;
    if let Err(e) = plots(dir, samples, r) {
        eprintln!("warning: plots not drawn: {e}");
    }
    Ok(md)
}
