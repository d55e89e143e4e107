//! `agentmux-bench soak`: minutes of WebSocket and HTTP session churn
//! against the gateway binary, with its memory, descriptors and pool
//! sampled every second, and a verdict on whether they come back (issue 15:
//! RSS at the end within 5 % of its value after warm-up, descriptors back
//! to baseline).
//!
//! The upstream simulators (WebSocket and HTTP echo, one per cluster, so
//! each cluster's upstream connects are counted apart) run in this process
//! on loopback; the gateway runs as its own process with a generated config
//! (see [`config`]), written with everything else into `--out`. The run:
//!
//! 1. start: the gateway comes up; wait (at most 10 s) for its pools to hold
//!    their `min_connections`;
//! 2. baseline: no load, `--baseline` long;
//! 3. churn: `--concurrency` slots draw operations from `--mix` (see
//!    [`churn`]) for `--duration`, the first `--warmup` of it the warm-up;
//! 4. wind-down: no new operations, the last ones finish (each is bounded,
//!    a held half-open socket the longest);
//! 5. settle: nothing runs for `--settle`; then the figures (see
//!    [`summary`]) and the outputs (see [`report`]).
//!
//! This process runs on one thread, so on a 2-core machine the gateway
//! always has a core of its own. The exit status is 1 when the verdict
//! fails, 2 when the soak could not run.

mod args;
mod churn;
mod config;
mod mix;
mod plot;
mod report;
mod sample;
mod summary;
#[cfg(test)]
mod tests;
mod wire;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use args::SoakArgs;
use churn::Churn;
use report::{ServedCounts, Setup, SoakReport};
use sample::{Accepted, Phase, Sample, Sampler, parse_counters, parse_gauges, scrape};
use summary::{Criteria, Marks, summarise};

use crate::compare::{agentmux, process};
use crate::error::Error;
use crate::upstream::{Faults, Server};

/// The gateway under test, however it runs.
pub(crate) struct Target {
    /// Its process (sampled through /proc).
    pub(crate) pid: u32,
    /// Where agents connect.
    pub(crate) listen: SocketAddr,
    /// Its admin listener (`/metrics`).
    pub(crate) admin: SocketAddr,
    /// The simulators' counts of accepted connections.
    pub(crate) accepted: Accepted,
    /// For the report.
    pub(crate) name: String,
}

/// `agentmux-bench soak` entry point.
pub(crate) async fn main(args: SoakArgs) -> Result<ExitCode, Error> {
    args.validate().map_err(Error::Usage)?;
    let dir = std::path::absolute(&args.out).map_err(|e| Error::io("resolving --out", e))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let program = agentmux::find(args.gateway.as_deref()).map_err(Error::Runtime)?;

    let (ws_sim, ws_upstream) = simulator().await?;
    let (http_sim, http_upstream) = simulator().await?;
    let accepted = Accepted {
        ws: ws_sim.accepted(),
        http: http_sim.accepted(),
    };
    let sims = [tokio::spawn(ws_sim.run()), tokio::spawn(http_sim.run())];
    let (listen, admin) = free_ports()?;
    let mut text = config::config(listen, admin, ws_upstream, http_upstream, &settings(&args));
    if let Some(extra) = &args.extra_config {
        let more = std::fs::read_to_string(extra).map_err(|e| Error::io(format!("reading {}", extra.display()), e))?;
        text.push_str(&format!("\n# from --extra-config {}\n{more}", extra.display()));
    }
    let conf = dir.join("agentmux.toml");
    std::fs::write(&conf, &text).map_err(|e| Error::io(format!("writing {}", conf.display()), e))?;
    let launch = agentmux::launch(program.clone(), &conf, listen, "run --config {config}");
    let mut gateway = process::start(&launch, None)
        .await
        .map_err(|e| Error::Runtime(format!("agentmux: {e}")))?;
    let target = Target {
        pid: gateway.pid,
        listen,
        admin,
        accepted,
        name: program.display().to_string(),
    };
    let result = run(&args, &target).await;
    gateway.stop().await;
    for sim in sims {
        sim.abort();
    }
    let (report, samples) = result?;
    let md = report::write(&dir, &samples, &report)?;
    println!("{md}");
    eprintln!(
        "wrote {}/summary.md, soak.json, samples.csv, rss.svg, fds.svg, pool.svg (config agentmux.toml, log agentmux.log)",
        dir.display()
    );
    Ok(if report.summary.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The in-process upstream: WebSocket and HTTP echo, no faults.
pub(crate) async fn simulator() -> Result<(Server, SocketAddr), Error> {
    let server = Server::bind("127.0.0.1:0", Faults::default(), 20, Duration::from_millis(20), None).await?;
    let addr = server.local_addr()?;
    Ok((server, addr))
}

/// Two free loopback ports (bound together so they differ, then released).
fn free_ports() -> Result<(SocketAddr, SocketAddr), Error> {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e));
    let (a, b) = (bind()?, bind()?);
    let addr = |l: &std::net::TcpListener| l.local_addr().map_err(|e| Error::io("finding a free port", e));
    Ok((addr(&a)?, addr(&b)?))
}

/// The config's timers and pool bounds from the flags.
pub(crate) fn settings(args: &SoakArgs) -> config::Settings {
    config::Settings {
        keepalive: args.keepalive,
        header_timeout: args.header_timeout,
        pool_idle_timeout: args.pool_idle_timeout,
        min_connections: args.min_connections,
    }
}

/// Baseline, churn, wind-down and settle against a running gateway.
pub(crate) async fn run(args: &SoakArgs, target: &Target) -> Result<(SoakReport, Vec<Sample>), Error> {
    let churn = Arc::new(Churn::new(
        target.listen,
        args.mix.clone(),
        args.pause,
        args.half_open_hold,
        args.header_timeout,
        args.http_pool,
    ));
    let sampler = Sampler::start(target.pid, target.admin, target.accepted.clone(), churn.clone());
    let warm = (args.min_connections * config::POOLS) as i64;
    wait_for_warm_pools(target.admin, warm).await;

    let mut marks = Marks {
        baseline_start_s: sampler.enter(Phase::Baseline),
        ..Marks::default()
    };
    say(args, &format!("baseline: {:?} without load", args.baseline));
    tokio::time::sleep(args.baseline).await;

    marks.churn_start_s = sampler.enter(Phase::Warmup);
    let start = Instant::now();
    let stop_at = start + args.duration;
    say(
        args,
        &format!(
            "churn: {} slots for {:?} (warm-up {:?}), mix {}",
            args.concurrency, args.duration, args.warmup, args.mix
        ),
    );
    let task = {
        let (churn, slots) = (churn.clone(), args.concurrency);
        let ramp = (args.warmup / 2).min(Duration::from_secs(10));
        tokio::spawn(async move { churn.run(slots, ramp, stop_at).await })
    };
    let mut warmed = false;
    while Instant::now() < stop_at {
        let warmup_at = start + args.warmup;
        let next = (Instant::now() + Duration::from_secs(10)).min(stop_at);
        let next = if warmed { next } else { next.min(warmup_at) };
        tokio::time::sleep_until(next).await;
        if !warmed && Instant::now() >= warmup_at {
            marks.warmup_end_s = sampler.enter(Phase::Churn);
            warmed = true;
        }
        progress(args, &sampler, start);
    }
    marks.churn_stop_s = sampler.enter(Phase::WindDown);
    say(args, "wind-down: waiting for the last operations");
    let _ = task.await;
    marks.settle_start_s = sampler.enter(Phase::Settle);
    say(args, &format!("settle: {:?} without load", args.settle));
    // Half a second more, so the last whole second of the settle is sampled.
    tokio::time::sleep(args.settle + Duration::from_millis(500)).await;
    marks.settle_end_s = sampler.epoch.elapsed().as_secs_f64();
    let counters = scrape(target.admin)
        .await
        .map(|t| parse_counters(&t))
        .unwrap_or_default();
    let samples = sampler.stop();

    let criteria = Criteria {
        window_s: args.window.as_secs_f64(),
        rss_ratio_max: 1.05,
        warm_connections: warm,
    };
    let summary = summarise(&samples, &marks, &criteria);
    // Upgrades are counted as HTTP requests too (status class 1xx): they are
    // the WebSocket sessions, counted once, when they end.
    let ws_sessions_served: u64 = counters.get("sessions_ended").map_or(0, |m| m.values().sum());
    let http_requests_served: u64 = counters.get("http_requests").map_or(0, |m| {
        m.iter()
            .filter(|(class, _)| class.as_str() != "1xx")
            .map(|(_, n)| n)
            .sum()
    });
    let per = |conns: u64, served: u64| (served > 0).then(|| conns as f64 / served as f64);
    let served = ServedCounts {
        ws_sessions: ws_sessions_served,
        http_requests: http_requests_served,
        connections_per_ws_session: per(summary.ws_upstream_connections, ws_sessions_served),
        connections_per_http_request: per(summary.http_upstream_connections, http_requests_served),
        connections_per_session: per(
            summary.ws_upstream_connections + summary.http_upstream_connections,
            ws_sessions_served + http_requests_served,
        ),
    };
    let report = SoakReport {
        schema: report::SCHEMA,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        setup: setup(args, &target.name),
        marks,
        summary,
        answers: report::answers(churn.tally.snapshot()),
        gateway_counters: counters,
        served,
        operations: churn.tally.finished.load(std::sync::atomic::Ordering::Relaxed),
    };
    Ok((report, samples))
}

/// Waits until the pools hold `warm` spare connections (at most 10 s: a
/// gateway slow to warm still gets its soak, the summary allows for it).
async fn wait_for_warm_pools(admin: SocketAddr, warm: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(text) = scrape(admin).await
            && parse_gauges(&text).pool_in(&["ready", "idle"]) >= warm
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("warning: the pools did not reach {warm} warm connections within 10 s");
}

fn say(args: &SoakArgs, text: &str) {
    if !args.quiet {
        eprintln!("{text}");
    }
}

/// One line: time, operations, and the latest sample.
fn progress(args: &SoakArgs, sampler: &Sampler, start: Instant) {
    let Some(s) = sampler.last() else { return };
    let sessions = s.gauges.as_ref().map_or("?".into(), |g| g.sessions_active.to_string());
    say(
        args,
        &format!(
            "  {:>5.0} s  ops {:>7}  rss {:>7.1} MiB  fds {:>5}  sessions {:>5}",
            start.elapsed().as_secs_f64(),
            s.ops_finished,
            s.rss_kib.unwrap_or(0) as f64 / 1024.0,
            s.fds.unwrap_or(0),
            sessions
        ),
    );
}

fn setup(args: &SoakArgs, gateway: &str) -> Setup {
    Setup {
        gateway: gateway.to_string(),
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        settle_s: args.settle.as_secs_f64(),
        baseline_s: args.baseline.as_secs_f64(),
        window_s: args.window.as_secs_f64(),
        concurrency: args.concurrency,
        pause_ms: args.pause.as_secs_f64() * 1000.0,
        mix: args.mix.to_string(),
        half_open_hold_s: args.half_open_hold.as_secs_f64(),
        keepalive_s: args.keepalive.as_secs_f64(),
        header_timeout_s: args.header_timeout.as_secs_f64(),
        pool_idle_timeout_s: args.pool_idle_timeout.as_secs_f64(),
        min_connections: args.min_connections,
    }
}
