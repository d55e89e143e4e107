//! The phases `compare` runs against each target: idle sessions (memory
//! per idle session from the proxy's RSS delta), session setup (connect +
//! upgrade + one echo, repeated), fixed-rate load runs (latency, throughput
//! and the proxy's CPU per relayed message from /proc), and capacity (how
//! many sessions it holds at once).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ::http::Method;

use super::process::Running;
use super::procstat;
use super::table::{CapacityResult, IdleResult, LoadPoint, TargetResult};
use super::{hold, idle};
use crate::cli::CompareArgs;
use crate::error::Error;
use crate::load::{self, Pacing, Plan, Target, Wire};
use crate::report::Percentiles;
use crate::tls::{self, Trust};

/// A target that could not be measured, and why.
pub(super) fn skipped(name: &str, status: String) -> TargetResult {
    TargetResult {
        name: name.to_string(),
        status,
        points: Vec::new(),
        setup_us: None,
        idle: None,
        capacity: None,
    }
}

/// Runs every phase against `addr` (the proxy, or the upstream for direct).
pub(super) async fn measure(
    name: &str,
    args: &CompareArgs,
    wire: Wire,
    addr: SocketAddr,
    proxy: Option<&Running>,
    ca: Option<&Path>,
) -> TargetResult {
    let scheme = match (wire, ca.is_some()) {
        (Wire::Ws | Wire::WsH2, false) => "ws",
        (Wire::Ws | Wire::WsH2, true) => "wss",
        (_, false) => "http",
        (_, true) => "https",
    };
    let url = match wire {
        Wire::Sse => format!(
            "{scheme}://{addr}/sse?tokens={}&delay_ms={}",
            args.sse_tokens, args.sse_token_delay_ms
        ),
        _ => format!("{scheme}://{addr}/bench"),
    };
    let trust = || match ca {
        Some(path) => tls::client_config(Trust::CaFile(path)),
        None => Err(Error::Usage("plaintext target needs no TLS".into())),
    };
    // RFC 8441 sessions need `h2` by ALPN.
    let h2 = wire == Wire::WsH2;
    let trust = || trust().map(|c| if h2 { crate::tls::with_alpn(&c, b"h2") } else { c });
    let target = match Target::resolve(&url, trust).await {
        Ok(t) => t,
        Err(e) => return skipped(name, e.to_string()),
    };
    let mut result = TargetResult {
        name: name.to_string(),
        status: "ok".into(),
        points: Vec::new(),
        setup_us: None,
        idle: None,
        capacity: None,
    };
    if args.idle_sessions > 0 && wire == Wire::Ws {
        result.idle = Some(idle_phase(&target, args.idle_sessions, proxy).await);
    }
    // An SSE "session" is a stream of `--sse-tokens` events: its setup is
    // the HTTP one, measured by `--protocol http`.
    if args.setup_sessions > 0 && !matches!(wire, Wire::Sse | Wire::WsH2) {
        result.setup_us = setup_phase(args, wire, &target).await;
    }
    for rate in args.rates.iter().filter(|r| **r > 0.0) {
        let point = match args.h2 {
            true => super::h2load::point(args, &url, *rate, &args.out, proxy).await,
            false => load_point(args, wire, &target, *rate, proxy).await,
        };
        if let Some(point) = point {
            result.points.push(point);
        }
    }
    if args.max_sessions > 0 && wire == Wire::Ws {
        let per = args.sessions_per_process.max(1);
        let (held, first_error, processes) = if args.max_sessions <= per {
            let held = idle::hold(&target, args.max_sessions, 64, hold::GIVE_UP, Duration::from_secs(5)).await;
            (held.open(), held.first_error.clone(), 1)
        } else {
            let processes = args.max_sessions.div_ceil(per);
            let share = hold::across_processes(&url, ca, args.max_sessions, processes).await;
            (share.held, share.first_error, processes)
        };
        eprintln!(
            "   held {held} of {} sessions ({processes} generator process{})",
            args.max_sessions,
            if processes == 1 { "" } else { "es" }
        );
        result.capacity = Some(CapacityResult {
            requested: args.max_sessions,
            held,
            first_error,
            generator_processes: processes,
        });
    }
    result
}

/// Session setup: 4 slots each open a session, echo once, close, repeat.
async fn setup_phase(args: &CompareArgs, wire: Wire, target: &Target) -> Option<Percentiles> {
    let slots = 4u64;
    let per_slot = args.setup_sessions.div_ceil(slots);
    let pacing = Pacing::ClosedLoop {
        in_flight: 1,
        think: Duration::ZERO,
    };
    let plan = plan(
        args,
        wire,
        target.clone(),
        slots,
        pacing,
        Duration::from_secs(60),
        Some(per_slot),
        Some(1),
    );
    let report = load::run(plan, !args.quiet).await.ok()?;
    eprintln!(
        "   setup p50 {} µs p99 {} µs ({} errors)",
        report.setup_us.p50, report.setup_us.p99, report.errors_total
    );
    Some(report.setup_us)
}

/// One fixed-rate run at `rate` msg/s over all sessions, with the proxy's
/// CPU read from /proc before and after.
async fn load_point(
    args: &CompareArgs,
    wire: Wire,
    target: &Target,
    rate: f64,
    proxy: Option<&Running>,
) -> Option<LoadPoint> {
    // SSE: `rate` counts events, each stream carries `sse_tokens` of them.
    let per_stream = match wire {
        Wire::Sse => args.sse_tokens.max(1) as f64,
        _ => 1.0,
    };
    let per_session = rate / per_stream / args.sessions.max(1) as f64;
    let pacing = Pacing::FixedRate {
        interval: Duration::from_secs_f64(1.0 / per_session.max(1e-3)),
    };
    let plan = plan(
        args,
        wire,
        target.clone(),
        args.sessions,
        pacing,
        args.duration,
        None,
        None,
    );
    let pids = proxy.map(Running::pids).unwrap_or_default();
    let before = procstat::cpu(&pids);
    let report = load::run(plan, !args.quiet).await.ok()?;
    let after = procstat::cpu(&pids);
    // Each echo crosses the proxy twice: once up, once down. An SSE
    // request is not counted: the figure is CPU per relayed event.
    let relayed = match wire {
        Wire::Sse => report.messages.received as f64,
        _ => (report.messages.sent + report.messages.received) as f64,
    };
    let (cpu_us, user_share) = procstat::delta(before, after);
    let point = LoadPoint {
        offered_per_s: rate,
        achieved_per_s: report.throughput.messages_per_s,
        latency_us: report.latency_us.clone(),
        errors_total: report.errors_total,
        mismatched: report.messages.mismatched + report.messages.out_of_order,
        cpu_us_per_msg: (proxy.is_some() && relayed > 0.0).then(|| (cpu_us / relayed * 100.0).round() / 100.0),
        user_share: proxy.is_some().then_some((user_share * 100.0).round() / 100.0),
    };
    let cpu = point.cpu_us_per_msg.map_or("—".into(), |c| format!("{c:.2}"));
    eprintln!(
        "   {rate:.0} msg/s offered: {:.0} achieved, p50 {} µs p99 {} µs, cpu {cpu} µs/msg, {} errors",
        point.achieved_per_s, point.latency_us.p50, point.latency_us.p99, point.errors_total
    );
    Some(point)
}

#[allow(clippy::too_many_arguments)] // a plain constructor of a plain struct
fn plan(
    args: &CompareArgs,
    wire: Wire,
    target: Target,
    sessions: u64,
    pacing: Pacing,
    duration: Duration,
    messages: Option<u64>,
    session_messages: Option<u64>,
) -> Plan {
    Plan {
        target,
        wire,
        sessions,
        duration,
        messages,
        ramp_up: Duration::ZERO,
        pacing,
        kind: args.kind,
        size: args.size.max(crate::payload::min_size(args.kind)),
        session_life: None,
        session_messages,
        verify: true,
        method: Method::POST,
        headers: Vec::new(),
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        h2_streams: usize::try_from(args.h2_streams).unwrap_or(usize::MAX).max(1),
    }
}

async fn idle_phase(target: &Target, count: u64, proxy: Option<&Running>) -> IdleResult {
    // A few sessions first, so lazily allocated state is not charged to the idle ones.
    drop(idle::hold(target, 16, 16, 16, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids = proxy.map(Running::pids).unwrap_or_default();
    let before = procstat::rss_kib(&pids);
    let held = idle::hold(target, count, 64, 50, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = procstat::rss_kib(&pids);
    let open = held.open();
    drop(held);
    let kib = (proxy.is_some() && open > 0)
        .then(|| ((after.saturating_sub(before)) as f64 / open as f64 * 10.0).round() / 10.0);
    eprintln!(
        "   {open} idle sessions: {} KiB per session",
        kib.map_or("—".into(), |k| format!("{k:.1}"))
    );
    IdleResult {
        requested: count,
        open,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_session: kib,
    }
}
