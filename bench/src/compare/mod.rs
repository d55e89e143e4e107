//! `agentmux-bench compare`: one scenario against the upstream directly and
//! through agentmux, nginx and haproxy, each proxy pinned to one core with
//! one worker. Per target, in order: memory per idle session (fresh
//! process), session setup time, fixed-rate load runs (latency, throughput,
//! proxy CPU per message), and optionally capacity. The upstream simulator
//! (and the delay relay, with `--upstream-latency`) run as child processes
//! on the bench cores, so the proxy's core does nothing else and this
//! process's descriptors are all client sockets.

mod agentmux;
mod haproxy;
mod idle;
mod nginx;
mod process;
mod procstat;
mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ::http::Method;

use crate::cli::{CompareArgs, Protocol};
use crate::error::Error;
use crate::load::{self, Pacing, Plan, Target, Wire};
use crate::plot;
use process::{Launch, Running};
use table::{CapacityResult, Comparison, IdleResult, LoadPoint, TargetResult};

const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

/// `agentmux-bench compare` entry point.
pub(crate) async fn main(args: CompareArgs) -> Result<ExitCode, Error> {
    let wire = match args.protocol {
        Protocol::Ws | Protocol::Auto => Wire::Ws,
        Protocol::Http => Wire::Http,
        Protocol::Sse => {
            return Err(Error::Usage(
                "compare runs ws or http echo (--protocol ws|http)".into(),
            ));
        }
    };
    let dir = std::path::absolute(&args.out).map_err(|e| Error::io("resolving --out", e))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = process::have_taskset();
    let proxy_core = taskset.then(|| args.proxy_core.unwrap_or(cores.saturating_sub(1)));
    let bench_cores = taskset.then(|| {
        args.bench_cores
            .clone()
            .unwrap_or_else(|| match proxy_core {
                Some(p) if cores > 1 => (0..cores)
                    .filter(|c| *c != p)
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => "0".into(),
            })
    });
    if !taskset {
        eprintln!("warning: taskset not found; proxies run unpinned");
    }
    if let Some(cores) = &bench_cores {
        // Keep this process (the load generator) off the proxy's core.
        let _ = tokio::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .await;
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    let port = |offset: u16| SocketAddr::from((LOCALHOST, args.base_port + offset));
    let mut helpers = Vec::new();
    let upstream_addr = port(0);
    helpers.push(
        start_helper(
            &exe,
            &dir,
            "upstream",
            vec![
                "--listen".into(),
                upstream_addr.to_string(),
                "--threads".into(),
                "1".into(),
            ],
            upstream_addr,
            bench_cores.as_deref(),
        )
        .await?,
    );
    let mut backend = upstream_addr;
    if !args.upstream_latency.is_zero() {
        let relay = port(1);
        let latency = format!("{}us", args.upstream_latency.as_micros());
        let relay_args = vec![
            "--mode".into(),
            "delay".into(),
            "--listen".into(),
            relay.to_string(),
            "--to".into(),
            upstream_addr.to_string(),
            "--latency".into(),
            latency,
            "--threads".into(),
            "1".into(),
        ];
        helpers.push(
            start_helper(
                &exe,
                &dir,
                "delay",
                relay_args,
                relay,
                bench_cores.as_deref(),
            )
            .await?,
        );
        backend = relay;
    }
    let mut results = Vec::new();
    for (i, name) in args.targets.iter().enumerate() {
        let listen = port(10 + 2 * i as u16);
        let admin = port(11 + 2 * i as u16);
        eprintln!("== {name}");
        let result = match launch_target(name, &args, &dir, listen, admin, backend, wire).await {
            Ok(None) => measure(name, &args, wire, backend, None).await,
            Ok(Some(launch)) => {
                match process::start(&launch, proxy_core.map(|c| c.to_string()).as_deref()).await {
                    Ok(mut running) => {
                        let result = measure(name, &args, wire, listen, Some(&running)).await;
                        running.stop().await;
                        result
                    }
                    Err(reason) => skipped(name, format!("failed to start: {reason}")),
                }
            }
            Err(reason) => skipped(name, reason),
        };
        if result.status != "ok" {
            eprintln!("   {}", result.status);
        }
        results.push(result);
    }
    for mut helper in helpers {
        helper.stop().await;
    }
    let comparison = Comparison {
        schema: table::SCHEMA,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        protocol: format!("{wire:?}").to_lowercase(),
        sessions: args.sessions,
        payload_size: args.size,
        upstream_latency_ms: args.upstream_latency.as_secs_f64() * 1000.0,
        proxy_core,
        bench_cores,
        targets: results,
    };
    write_outputs(&dir, &comparison)?;
    Ok(ExitCode::SUCCESS)
}

fn skipped(name: &str, status: String) -> TargetResult {
    TargetResult {
        name: name.to_string(),
        status,
        points: Vec::new(),
        setup_us: None,
        idle: None,
        capacity: None,
    }
}

async fn start_helper(
    exe: &Path,
    dir: &Path,
    name: &str,
    mut args: Vec<String>,
    listen: SocketAddr,
    cores: Option<&str>,
) -> Result<Running, Error> {
    args.insert(0, "upstream".into());
    let launch = Launch {
        program: exe.to_path_buf(),
        args,
        listen,
        log: dir.join(format!("{name}.log")),
    };
    process::start(&launch, cores)
        .await
        .map_err(|e| Error::Runtime(format!("{name}: {e}")))
}

/// Writes the target's config and says how to run it; `None` for direct.
async fn launch_target(
    name: &str,
    args: &CompareArgs,
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
    wire: Wire,
) -> Result<Option<Launch>, String> {
    let write = |file: &str, text: String| -> Result<PathBuf, String> {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    match name {
        "direct" => Ok(None),
        "nginx" => {
            let program = process::find_program(&args.nginx)
                .ok_or("nginx not installed (bench/install-peers.sh)")?;
            let conf = write(
                "nginx.conf",
                nginx::config(dir, listen, backend, running_as_root()),
            )?;
            Ok(Some(nginx::launch(program, dir, &conf, listen)))
        }
        "haproxy" => {
            let program = process::find_program(&args.haproxy)
                .ok_or("haproxy not installed (bench/install-peers.sh)")?;
            let conf = write("haproxy.cfg", haproxy::config(listen, backend))?;
            Ok(Some(haproxy::launch(program, dir, &conf, listen)))
        }
        "agentmux" => {
            let program = agentmux::find(args.agentmux.as_deref())?;
            let mode = if wire == Wire::Ws {
                "websocket"
            } else {
                "http"
            };
            let conf = write(
                "agentmux.toml",
                agentmux::config(listen, admin, backend, mode),
            )?;
            // A config the gateway rejects is reported with its own words.
            let validated = tokio::process::Command::new(&program)
                .arg("validate")
                .arg(&conf)
                .output()
                .await;
            if let Ok(out) = validated
                && !out.status.success()
            {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Err(format!(
                    "agentmux validate rejected {}: {why}",
                    conf.display()
                ));
            }
            Ok(Some(agentmux::launch(
                program,
                dir,
                &conf,
                listen,
                &args.agentmux_args,
            )))
        }
        other => Err(format!(
            "unknown target `{other}` (direct, agentmux, nginx, haproxy)"
        )),
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs every phase against `addr` (the proxy, or the upstream for direct).
async fn measure(
    name: &str,
    args: &CompareArgs,
    wire: Wire,
    addr: SocketAddr,
    proxy: Option<&Running>,
) -> TargetResult {
    let scheme = if wire == Wire::Ws { "ws" } else { "http" };
    let url = format!("{scheme}://{addr}/bench");
    let target = match Target::resolve(&url, || Err(Error::Usage("no TLS in compare".into()))).await
    {
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
    if args.setup_sessions > 0 {
        let slots = 4u64;
        let per_slot = args.setup_sessions.div_ceil(slots);
        let plan = plan(
            args,
            wire,
            target.clone(),
            slots,
            Pacing::ClosedLoop {
                in_flight: 1,
                think: Duration::ZERO,
            },
            Duration::from_secs(60),
            Some(per_slot),
            Some(1),
        );
        if let Ok(report) = load::run(plan, !args.quiet).await {
            eprintln!(
                "   setup p50 {} µs p99 {} µs ({} errors)",
                report.setup_us.p50, report.setup_us.p99, report.errors_total
            );
            result.setup_us = Some(report.setup_us);
        }
    }
    for rate in &args.rates {
        let per_session = rate / args.sessions.max(1) as f64;
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
        let Ok(report) = load::run(plan, !args.quiet).await else {
            continue;
        };
        let after = procstat::cpu(&pids);
        let relayed = (report.messages.sent + report.messages.received) as f64;
        let (cpu_us, user_share) = procstat::delta(before, after);
        let point = LoadPoint {
            offered_per_s: *rate,
            achieved_per_s: report.throughput.messages_per_s,
            latency_us: report.latency_us.clone(),
            errors_total: report.errors_total,
            mismatched: report.messages.mismatched + report.messages.out_of_order,
            cpu_us_per_msg: (proxy.is_some() && relayed > 0.0)
                .then(|| (cpu_us / relayed * 100.0).round() / 100.0),
            user_share: proxy
                .is_some()
                .then_some((user_share * 100.0).round() / 100.0),
        };
        eprintln!(
            "   {:.0} msg/s offered: {:.0} achieved, p50 {} µs p99 {} µs, cpu {} µs/msg, {} errors",
            rate,
            point.achieved_per_s,
            point.latency_us.p50,
            point.latency_us.p99,
            point
                .cpu_us_per_msg
                .map_or("—".into(), |c| format!("{c:.2}")),
            point.errors_total
        );
        result.points.push(point);
    }
    if args.max_sessions > 0 && wire == Wire::Ws {
        let held = idle::hold(&target, args.max_sessions, 64, 200, Duration::from_secs(5)).await;
        eprintln!("   held {} of {} sessions", held.open(), args.max_sessions);
        result.capacity = Some(CapacityResult {
            requested: args.max_sessions,
            held: held.open(),
            first_error: held.first_error.clone(),
        });
    }
    result
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

fn write_outputs(dir: &Path, comparison: &Comparison) -> Result<(), Error> {
    let markdown = comparison.to_markdown();
    let json =
        serde_json::to_string_pretty(comparison).map_err(|e| Error::Runtime(e.to_string()))?;
    let write = |file: &str, text: &str| {
        std::fs::write(dir.join(file), text).map_err(|e| Error::io(format!("writing {file}"), e))
    };
    write("compare.md", &markdown)?;
    write("compare.json", &format!("{json}\n"))?;
    let series: Vec<plot::Series> = comparison
        .targets
        .iter()
        .filter(|t| !t.points.is_empty())
        .map(|t| plot::Series {
            name: t.name.clone(),
            points: t
                .points
                .iter()
                .map(|p| {
                    (
                        p.achieved_per_s,
                        p.latency_us.p50 as f64 / 1000.0,
                        p.latency_us.p99 as f64 / 1000.0,
                    )
                })
                .collect(),
        })
        .collect();
    let title = format!(
        "{} echo latency vs load ({} sessions, {} B)",
        comparison.protocol, comparison.sessions, comparison.payload_size
    );
    if let Err(e) = plot::latency_vs_load(&dir.join("latency-vs-load.svg"), &title, &series) {
        eprintln!("warning: plot not written: {e}");
    }
    println!("{markdown}");
    eprintln!(
        "wrote {}/compare.md, compare.json, latency-vs-load.svg",
        dir.display()
    );
    Ok(())
}
