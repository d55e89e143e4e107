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
mod phases;
mod process;
mod procstat;
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
    if series.is_empty() {
        println!("{markdown}");
        return Ok(());
    }
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
