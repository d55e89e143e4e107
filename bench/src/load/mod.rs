//! `agentmux-bench load`: N session slots, each running one session after
//! another (churn and reconnects) until the run ends. The protocol modules
//! (`ws`, `http`, `sse`) run one connection each; this module owns the plan,
//! the ramp-up, the stop conditions and the report.
//!
//! A failed connection is counted by kind and replaced after a short pause;
//! it never ends the run, so a fault shows up as counts, not as a crash.

pub(crate) mod http;
mod pacer;
pub(crate) mod sse;
pub(crate) mod target;
pub(crate) mod ws;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::http::{HeaderName, HeaderValue, Method};
use tokio_util::sync::CancellationToken;

use crate::cli::{LoadArgs, PayloadKind, Protocol};
use crate::error::Error;
use crate::payload;
use crate::progress::Progress;
use crate::report::{Mode, PayloadInfo, Recorder, Report, RunInfo};
use crate::tls::{self, Trust};

pub(crate) use target::{SessionError, Target};

/// The wire protocol, resolved from `--protocol` and the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// WebSocket echo.
    Ws,
    /// WebSocket echo on RFC 8441 streams of shared HTTP/2 connections.
    WsH2,
    /// HTTP request/response.
    Http,
    /// SSE token streams.
    Sse,
}

impl Wire {
    fn name(self) -> &'static str {
        match self {
            Wire::Ws => "ws",
            Wire::WsH2 => "ws-h2",
            Wire::Http => "http",
            Wire::Sse => "sse",
        }
    }
}

/// How a session paces its messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pacing {
    /// Open loop, one message per `interval`; latency from the intended time.
    FixedRate { interval: Duration },
    /// Closed loop, `in_flight` outstanding, `think` after each reply.
    ClosedLoop { in_flight: u32, think: Duration },
}

/// A validated load plan.
pub(crate) struct Plan {
    pub(crate) target: Target,
    pub(crate) wire: Wire,
    pub(crate) sessions: u64,
    pub(crate) duration: Duration,
    pub(crate) messages: Option<u64>,
    pub(crate) ramp_up: Duration,
    pub(crate) pacing: Pacing,
    pub(crate) kind: PayloadKind,
    pub(crate) size: usize,
    pub(crate) session_life: Option<Duration>,
    pub(crate) session_messages: Option<u64>,
    pub(crate) verify: bool,
    pub(crate) method: Method,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) timeout: Duration,
    pub(crate) drain: Duration,
    /// `Wire::WsH2`: sessions per HTTP/2 connection.
    pub(crate) h2_streams: usize,
}

impl Plan {
    /// Validates the flags and resolves the target.
    pub(crate) async fn from_args(args: &LoadArgs) -> Result<Self, Error> {
        let ca = args.ca.clone();
        let insecure = args.insecure;
        let h2 = args.protocol == Protocol::WsH2;
        let target = Target::resolve(&args.url, || {
            let config = match (&ca, insecure) {
                (_, true) => tls::client_config(Trust::Insecure),
                (Some(path), false) => tls::client_config(Trust::CaFile(path)),
                (None, false) => tls::client_config(Trust::WebRoots),
            }?;
            Ok(match h2 {
                true => tls::with_alpn(&config, b"h2"),
                false => config,
            })
        })
        .await?;
        if h2 && args.h2_streams == 0 {
            return Err(Error::Usage("--h2-streams must be at least 1".into()));
        }
        let wire = match (args.protocol, target.websocket) {
            (Protocol::Auto, true) | (Protocol::Ws, true) => Wire::Ws,
            (Protocol::WsH2, true) => Wire::WsH2,
            (Protocol::Auto, false) | (Protocol::Http, false) => Wire::Http,
            (Protocol::Sse, false) => Wire::Sse,
            (p, _) => {
                return Err(Error::Usage(format!(
                    "--protocol {p:?} does not match the URL scheme of {}",
                    args.url
                )));
            }
        };
        if args.sessions == 0 {
            return Err(Error::Usage("--sessions must be at least 1".into()));
        }
        let pacing = match args.rate {
            Some(rate) if rate > 0.0 && rate.is_finite() => Pacing::FixedRate {
                interval: Duration::from_secs_f64(1.0 / rate),
            },
            Some(rate) => {
                return Err(Error::Usage(format!("--rate must be a positive number, got {rate}")));
            }
            None if args.in_flight == 0 => {
                return Err(Error::Usage("--in-flight must be at least 1".into()));
            }
            None => Pacing::ClosedLoop {
                in_flight: args.in_flight,
                think: args.think_time,
            },
        };
        let method: Method = args
            .method
            .parse()
            .map_err(|_| Error::Usage(format!("--method `{}` is not an HTTP method", args.method)))?;
        let headers = args.headers.iter().map(|h| parse_header(h)).collect::<Result<_, _>>()?;
        // A GET sends no payload, so there is nothing to compare the reply with.
        let verify = !(args.no_verify || wire == Wire::Http && method == Method::GET);
        Ok(Self {
            target,
            wire,
            sessions: args.sessions,
            duration: args.duration,
            messages: args.messages,
            ramp_up: args.ramp_up,
            pacing,
            kind: args.kind,
            size: args.size.max(payload::min_size(args.kind)),
            session_life: args.session_life,
            session_messages: args.session_messages.filter(|n| *n > 0),
            verify,
            method,
            headers,
            timeout: args.timeout,
            drain: args.drain,
            h2_streams: args.h2_streams,
        })
    }

    fn run_info(&self) -> RunInfo {
        RunInfo {
            target: self.target.url.clone(),
            protocol: self.wire.name(),
            sessions: self.sessions,
            mode: match self.pacing {
                Pacing::FixedRate { interval } => Mode::FixedRate {
                    rate_per_session: 1.0 / interval.as_secs_f64(),
                },
                Pacing::ClosedLoop { in_flight, think } => Mode::ClosedLoop {
                    in_flight,
                    think_time_us: target::micros(think),
                },
            },
            payload: PayloadInfo {
                size: self.size,
                kind: match self.kind {
                    PayloadKind::Text => "text".into(),
                    PayloadKind::Binary => "binary".into(),
                },
            },
            verify: self.verify,
        }
    }
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| Error::Usage(format!("--header `{text}` must look like `Name: value`")))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| Error::Usage(format!("--header `{text}`: {e}")))?;
    let value = HeaderValue::try_from(value.trim()).map_err(|e| Error::Usage(format!("--header `{text}`: {e}")))?;
    Ok((name, value))
}

/// Everything a running session needs.
pub(crate) struct Ctx {
    pub(crate) plan: Plan,
    pub(crate) rec: Recorder,
    /// Time zero of the run; payload timestamps count from here.
    pub(crate) epoch: Instant,
    /// When sessions stop sending.
    pub(crate) end_at: Instant,
    /// Ctrl-C.
    pub(crate) stop: CancellationToken,
    next_session: AtomicU64,
    /// `Wire::WsH2`: the HTTP/2 connections sessions open streams on.
    pub(crate) h2: ws::H2Conns,
}

impl Ctx {
    /// Nanoseconds since the epoch.
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a failure under its kind.
    pub(crate) fn fail(&self, err: &SessionError) {
        self.rec.error(err.kind);
        self.rec.note(err.kind, &err.detail);
    }
}

/// How late a fixed-rate send may be and still count as the timer's own
/// jitter (tokio's timer has 1 ms granularity) rather than a stall.
const TIMER_SLACK_NS: u64 = 2_000_000;

/// Where a message's latency counts from. A send more than
/// [`TIMER_SLACK_NS`] behind its intended time was held back (by the
/// target's backpressure, or an overloaded generator): latency then counts
/// from the intended time, so the stall is charged to every message it
/// delayed (coordinated-omission correction). Otherwise it counts from the
/// actual send, so timer jitter is not charged to the target.
pub(crate) fn latency_origin(intended_ns: u64, actual_ns: u64) -> u64 {
    if actual_ns.saturating_sub(intended_ns) > TIMER_SLACK_NS {
        intended_ns
    } else {
        actual_ns
    }
}

/// Limits of one connection within its slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Stop sending after this many messages.
    pub(crate) max_messages: Option<u64>,
    /// Stop sending at this time.
    pub(crate) until: Instant,
    /// Slot index, used to spread fixed-rate sends over the interval.
    pub(crate) slot: u64,
}

/// How one connection ended.
pub(crate) struct ConnOutcome {
    /// Messages it sent.
    pub(crate) sent: u64,
    /// Why it ended early, if it did.
    pub(crate) error: Option<SessionError>,
}

/// Runs a plan to the end and returns the report.
pub(crate) async fn run(plan: Plan, progress: bool) -> Result<Report, Error> {
    let rec = Recorder::new().map_err(|e| Error::Runtime(e.to_string()))?;
    let epoch = Instant::now();
    let end_at = epoch + plan.ramp_up + plan.duration;
    let stop = CancellationToken::new();
    let ctx = Arc::new(Ctx {
        plan,
        rec,
        epoch,
        end_at,
        stop: stop.clone(),
        next_session: AtomicU64::new(1),
        h2: ws::H2Conns::default(),
    });
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        })
    };
    let total_messages = ctx.plan.messages.map(|m| m * ctx.plan.sessions);
    let progress = progress.then(|| Progress::start(ctx.clone(), total_messages));
    let slots: Vec<_> = (0..ctx.plan.sessions)
        .map(|i| tokio::spawn(slot(ctx.clone(), i)))
        .collect();
    for s in slots {
        let _ = s.await;
    }
    let elapsed = epoch.elapsed();
    ctrl_c.abort();
    if let Some(p) = progress {
        p.finish();
    }
    Ok(Report::build(ctx.plan.run_info(), &ctx.rec, elapsed))
}

async fn slot(ctx: Arc<Ctx>, index: u64) {
    let plan = &ctx.plan;
    let offset = plan.ramp_up.mul_f64(index as f64 / plan.sessions as f64);
    tokio::select! {
        _ = tokio::time::sleep_until((ctx.epoch + offset).into()) => {}
        _ = ctx.stop.cancelled() => return,
    }
    let mut remaining = plan.messages;
    while !ctx.stop.is_cancelled() && Instant::now() < ctx.end_at && remaining != Some(0) {
        let session = ctx.next_session.fetch_add(1, Ordering::Relaxed);
        let until = plan
            .session_life
            .map_or(ctx.end_at, |life| ctx.end_at.min(Instant::now() + life));
        let max_messages = match (remaining, plan.session_messages) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let limits = ConnLimits {
            max_messages,
            until,
            slot: index,
        };
        let outcome = match plan.wire {
            Wire::Ws | Wire::WsH2 => ws::run(&ctx, session, limits).await,
            Wire::Http => http::run(&ctx, session, limits).await,
            Wire::Sse => sse::run(&ctx, session, limits).await,
        };
        if let Some(r) = remaining.as_mut() {
            *r = r.saturating_sub(outcome.sent);
        }
        // A clean end starts a new session only when churn ended it; an end
        // at the deadline or the message budget ends the slot.
        let churned = limits.until < ctx.end_at || plan.session_messages.is_some_and(|m| outcome.sent >= m);
        if outcome.error.is_none() && !churned {
            break;
        }
        if let Some(err) = outcome.error {
            ctx.fail(&err);
            // Pause before reconnecting so a dead target is not hammered
            // in a tight loop (and the error counts stay meaningful).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = ctx.stop.cancelled() => {}
            }
        }
    }
}

/// `agentmux-bench load` entry point.
pub(crate) async fn main(args: LoadArgs, nofile: Option<u64>) -> Result<ExitCode, Error> {
    let plan = Plan::from_args(&args).await?;
    if let Some(limit) = nofile {
        // One descriptor per session plus a margin for the runtime.
        if plan.sessions + 64 > limit {
            eprintln!(
                "warning: {} sessions but only {limit} open files allowed (raise `ulimit -n`)",
                plan.sessions
            );
        }
    }
    let show_progress = !args.quiet;
    let report = run(plan, show_progress).await?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Runtime(e.to_string()))?;
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{json}\n")).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.to_text());
        for (kind, detail) in report_notes(&report) {
            eprintln!("first {kind} error: {detail}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_notes(report: &Report) -> Vec<(String, String)> {
    report
        .first_errors
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
