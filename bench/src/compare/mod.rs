//! `agentmux-bench compare`: one scenario against the upstream directly and
//! through agentmux, nginx and haproxy, each proxy pinned to one core with
//! one worker. Per target, in order: memory per idle session (fresh
//! process), session setup time, fixed-rate load runs (latency, throughput,
//! proxy CPU per message), and optionally capacity. The upstream simulator
//! (and the delay relay, with `--upstream-latency`) run as child processes
//! on the bench cores, so the proxy's core does nothing else and this
//! process's descriptors are all client sockets.

pub(crate) mod agentmux;
mod certs;
mod h2load;
mod haproxy;
pub(crate) mod hold;
mod idle;
mod nginx;
mod phases;
pub(crate) mod process;
pub(crate) mod procstat;
mod table;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{CompareArgs, Protocol};
use crate::error::Error;
use crate::load::Wire;
use crate::plot;
use phases::{measure, skipped};
use process::{Launch, Running};
use table::Comparison;

pub(crate) use certs::{SelfSigned, self_signed};

pub(crate) const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

/// `agentmux-bench compare` entry point.
pub(crate) async fn main(args: CompareArgs) -> Result<ExitCode, Error> {
    let wire = match args.protocol {
        Protocol::Ws | Protocol::Auto => Wire::Ws,
        Protocol::Http => Wire::Http,
        Protocol::Sse => Wire::Sse,
        Protocol::WsH2 => Wire::WsH2,
    };
    if args.h2 && wire != Wire::Http {
        return Err(Error::Usage("--h2 runs HTTP requests: use --protocol http".into()));
    }
    if args.h2 && !h2load::available().await {
        return Err(Error::Usage(
            "--h2 needs h2load (apt-get install nghttp2-client)".into(),
        ));
    }
    let dir = std::path::absolute(&args.out).map_err(|e| Error::io("resolving --out", e))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let tls = match args.tls {
        true => Some(self_signed(&dir).map_err(Error::Tls)?),
        false => None,
    };
    let (proxy_core, bench_cores) = pin_cores(args.proxy_core, args.bench_cores.clone()).await;
    let (mut helpers, upstreams) = start_upstreams(&args, &dir, bench_cores.as_deref(), tls.as_ref()).await?;
    let mut results = Vec::new();
    for (i, name) in args.targets.iter().enumerate() {
        let port = |offset: u16| SocketAddr::from((LOCALHOST, args.base_port + offset));
        let (listen, admin) = (port(10 + 2 * i as u16), port(11 + 2 * i as u16));
        eprintln!("== {name}");
        let ca = tls.as_ref().map(|t| t.cert.as_path());
        let site = Site {
            listen,
            admin,
            backend: upstreams.backend,
            mux_backend: upstreams.mux,
            wire,
            tls: tls.as_ref(),
        };
        let result = match launch_target(name, &args, &dir, &site).await {
            Ok(None) => measure(name, &args, wire, upstreams.direct, None, ca).await,
            Ok(Some(launch)) => match process::start(&launch, proxy_core.map(|c| c.to_string()).as_deref()).await {
                Ok(mut running) => {
                    let result = measure(name, &args, wire, listen, Some(&running), ca).await;
                    running.stop().await;
                    result
                }
                Err(reason) => skipped(name, format!("failed to start: {reason}")),
            },
            Err(reason) => skipped(name, reason),
        };
        if result.status != "ok" {
            eprintln!("   {}", result.status);
        }
        results.push(result);
    }
    for helper in &mut helpers {
        helper.stop().await;
    }
    if let Some(t) = &tls {
        // Throwaway keys: do not leave them in a results folder that may be committed.
        let _ = std::fs::remove_file(&t.key);
        let _ = std::fs::remove_file(&t.combined);
    }
    let comparison = Comparison {
        schema: table::SCHEMA,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        protocol: format!("{wire:?}").to_lowercase(),
        tls: args.tls,
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

/// Chooses the proxy core and the bench cores, and moves this process (the
/// load generator) off the proxy's core. `None`s when taskset is missing.
pub(crate) async fn pin_cores(
    proxy_core: Option<usize>,
    bench_cores: Option<String>,
) -> (Option<usize>, Option<String>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !process::have_taskset() {
        eprintln!("warning: taskset not found; proxies run unpinned");
        return (None, None);
    }
    let proxy_core = proxy_core.unwrap_or(cores.saturating_sub(1));
    let bench_cores = bench_cores.unwrap_or_else(|| {
        let others: Vec<String> = (0..cores).filter(|c| *c != proxy_core).map(|c| c.to_string()).collect();
        if others.is_empty() {
            "0".into()
        } else {
            others.join(",")
        }
    });
    let _ = tokio::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &bench_cores, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .await;
    (Some(proxy_core), Some(bench_cores))
}

/// Where the targets find the upstream.
struct Upstreams {
    /// Plaintext, for the proxies (they terminate TLS themselves).
    backend: SocketAddr,
    /// For the direct target: TLS when comparing with `--tls`.
    direct: SocketAddr,
    /// The mux-speaking echo, for agentmux with `--agentmux-mode mux`.
    mux: Option<SocketAddr>,
}

/// Starts the simulator (a second one with TLS for the direct target under
/// `--tls`) and, with `--upstream-latency`, a delay relay in front of each.
async fn start_upstreams(
    args: &CompareArgs,
    dir: &Path,
    cores: Option<&str>,
    tls: Option<&SelfSigned>,
) -> Result<(Vec<Running>, Upstreams), Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    let port = |offset: u16| SocketAddr::from((LOCALHOST, args.base_port + offset));
    let mut helpers = Vec::new();
    let serve = |name: &'static str, listen: SocketAddr, extra: Vec<String>| {
        let mut argv = vec![
            "--listen".to_string(),
            listen.to_string(),
            "--threads".into(),
            "1".into(),
        ];
        argv.extend(extra);
        (name, listen, argv)
    };
    let mut plans = vec![serve("upstream", port(0), Vec::new())];
    if let Some(t) = tls {
        let extra = vec![
            "--tls-cert".into(),
            t.cert.display().to_string(),
            "--tls-key".into(),
            t.key.display().to_string(),
        ];
        plans.push(serve("upstream-tls", port(2), extra));
    }
    // agentmux in mux mode needs a mux-speaking upstream; the other
    // targets keep the plain WebSocket echo, under the same load.
    let mux = args.agentmux_mode.as_deref() == Some("mux") && args.targets.iter().any(|t| t == "agentmux");
    if mux {
        plans.push(serve("upstream-mux", port(4), vec!["--mode".into(), "mux".into()]));
    }
    let mut upstreams = Upstreams {
        backend: port(0),
        direct: if tls.is_some() { port(2) } else { port(0) },
        mux: mux.then(|| port(4)),
    };
    if !args.upstream_latency.is_zero() {
        let latency = format!("{}us", args.upstream_latency.as_micros());
        let relay = |to: SocketAddr| {
            vec![
                "--mode".to_string(),
                "delay".into(),
                "--to".into(),
                to.to_string(),
                "--latency".into(),
                latency.clone(),
            ]
        };
        plans.push(serve("delay", port(1), relay(port(0))));
        upstreams.backend = port(1);
        upstreams.direct = port(1);
        if tls.is_some() {
            plans.push(serve("delay-tls", port(3), relay(port(2))));
            upstreams.direct = port(3);
        }
        if mux {
            plans.push(serve("delay-mux", port(5), relay(port(4))));
            upstreams.mux = Some(port(5));
        }
    }
    for (name, listen, argv) in plans {
        helpers.push(start_helper(&exe, dir, name, argv, listen, cores).await?);
    }
    Ok((helpers, upstreams))
}

/// Starts `agentmux-bench upstream ARGS` (this executable) as a helper
/// process pinned to `cores`, logging to `DIR/NAME.log`.
pub(crate) async fn start_helper(
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

/// Where a proxy under test listens and what it talks to.
struct Site<'a> {
    listen: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
    /// The mux upstream (agentmux in mux mode talks to it instead).
    mux_backend: Option<SocketAddr>,
    wire: Wire,
    tls: Option<&'a SelfSigned>,
}

/// Writes the target's config and says how to run it; `None` for direct.
async fn launch_target(name: &str, args: &CompareArgs, dir: &Path, site: &Site<'_>) -> Result<Option<Launch>, String> {
    let write = |file: &str, text: String| -> Result<PathBuf, String> {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    match name {
        "direct" => Ok(None),
        // The floor: this tool's own WebSocket echo, run as a process of
        // its own on the proxy's core and measured like a proxy. Any proxy
        // whose agents each have their own connection reads and writes
        // every message on them as this does, whatever it does upstream;
        // the echo does nothing else (its kernel share is the part no
        // user-space work can take away).
        "echo" => {
            if site.tls.is_some() {
                return Err("the echo floor runs plaintext only".into());
            }
            let program = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
            Ok(Some(Launch {
                program,
                args: ["upstream", "--mode", "serve", "--threads", "1", "--listen"]
                    .into_iter()
                    .map(String::from)
                    .chain([site.listen.to_string()])
                    .collect(),
                listen: site.listen,
                log: dir.join("echo.log"),
            }))
        }
        "nginx" => {
            let program = process::find_program(&args.nginx).ok_or("nginx not installed (bench/install-peers.sh)")?;
            let conf = write(
                "nginx.conf",
                nginx::config(
                    dir,
                    site.listen,
                    site.backend,
                    running_as_root(),
                    site.tls,
                    args.h2 || site.wire == Wire::WsH2,
                ),
            )?;
            Ok(Some(nginx::launch(program, dir, &conf, site.listen)))
        }
        "haproxy" => {
            let program =
                process::find_program(&args.haproxy).ok_or("haproxy not installed (bench/install-peers.sh)")?;
            let conf = write(
                "haproxy.cfg",
                haproxy::config(
                    site.listen,
                    site.backend,
                    site.tls,
                    site.wire == Wire::Sse,
                    args.h2 || site.wire == Wire::WsH2,
                ),
            )?;
            Ok(Some(haproxy::launch(program, dir, &conf, site.listen)))
        }
        // `agentmux-h2`: websocket mode with the upstream sessions as RFC
        // 8441 streams of pooled HTTP/2 connections (cluster `protocol =
        // "http2"`), to set beside `agentmux` in the same run.
        "agentmux" | "agentmux-h2" => {
            let program = agentmux::find(args.agentmux.as_deref())?;
            let default_mode = if matches!(site.wire, Wire::Ws | Wire::WsH2) {
                "websocket"
            } else {
                "http"
            };
            let mode = match name {
                "agentmux-h2" if matches!(site.wire, Wire::Ws | Wire::WsH2) => "websocket-h2",
                "agentmux-h2" => return Err("agentmux-h2 carries WebSocket sessions: use --protocol ws".into()),
                _ => args.agentmux_mode.as_deref().unwrap_or(default_mode),
            };
            if mode == "mux" && !matches!(site.wire, Wire::Ws | Wire::WsH2) {
                return Err("--agentmux-mode mux carries WebSocket sessions: use --protocol ws".into());
            }
            let backend = match mode {
                "mux" => site.mux_backend.ok_or("no mux upstream was started")?,
                _ => site.backend,
            };
            // One file per target: `agentmux` and `agentmux-h2` in one run
            // keep their own config (and log).
            let conf = write(
                &format!("{name}.toml"),
                agentmux::config(site.listen, site.admin, backend, mode, site.tls),
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
                return Err(format!("agentmux validate rejected {}: {why}", conf.display()));
            }
            Ok(Some(agentmux::launch(program, &conf, site.listen, &args.agentmux_args)))
        }
        other => Err(format!(
            "unknown target `{other}` (direct, echo, agentmux, agentmux-h2, nginx, haproxy)"
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

fn write_outputs(dir: &Path, comparison: &Comparison) -> Result<(), Error> {
    let markdown = comparison.to_markdown();
    let json = serde_json::to_string_pretty(comparison).map_err(|e| Error::Runtime(e.to_string()))?;
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
    if series.is_empty() {
        println!("{markdown}");
        return Ok(());
    }
    if let Err(e) = plot::latency_vs_load(&dir.join("latency-vs-load.svg"), &title, &series) {
        eprintln!("warning: plot not written: {e}");
    }
    println!("{markdown}");
    eprintln!("wrote {}/compare.md, compare.json, latency-vs-load.svg", dir.display());
    Ok(())
}
