//! `agentmux-bench ramp`: predictive pool sizing on against off, in one
//! run of alternating rounds (issue 7).
//!
//! One gateway config, two clusters pointing at the same upstream
//! simulator, each through its own delay relay (a far upstream): cluster
//! `predictive` with `predictive = true`, cluster `fixed` with
//! `predictive = false`, the same small `min_connections`, and a websocket
//! route to each (`/predictive/…`, `/fixed/…`). Each round starts a fresh
//! gateway (cold pools, no analytics history) and ramps load on one route
//! only: sessions that live `--session-life` each and are replaced at once,
//! their slots started evenly over `--ramp-up`, so the session arrival
//! rate climbs linearly from 0 to `sessions / session-life` per second and
//! then holds for `--duration`. Every session takes a fresh upstream
//! transport from its cluster's warm pool; an empty pool makes the session
//! wait for a connect.
//!
//! Rounds alternate on and off in ABBA order (on, off, off, on, …), so a
//! drift in the shared machine's load over the run weighs on both alike,
//! and only one cluster is loaded at a time, so one's connects do not slow
//! the other's. The gateway's own `agentmux_pool_acquire_seconds`
//! histogram (per cluster) is scraped from `/metrics` before, every second
//! during, and after each round; the report gives each round's acquire-wait
//! percentiles (interpolated inside the histogram's buckets), the pooled
//! percentiles over all rounds of each setting, the ratio of the pooled
//! p99s, and a 10-second timeline of waits and spares per round.
//!
//! By default the upstream speaks TLS: the delay relay cannot slow a TCP
//! connect on loopback (the kernel completes the handshake before the
//! relay's `accept`), so a plaintext connect looks instant to the pool and
//! there would be nothing to predict. The TLS handshake crosses the relay
//! (one round trip plus the relay's connect delay), so a connect takes
//! what it takes to a far upstream and a pool that runs empty makes
//! sessions wait that long.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::http::Method;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{PayloadKind, RampArgs};
use crate::compare::process::{self, Launch};
use crate::compare::{LOCALHOST, agentmux, pin_cores, self_signed, start_helper};
use crate::error::Error;
use crate::load::{self, Pacing, Plan, Target, Wire};
use crate::report::Report;

/// The two clusters: name and whether its pool predicts.
const CLUSTERS: [(&str, bool); 2] = [("predictive", true), ("fixed", false)];

/// Schema of `ramp.json`.
const SCHEMA: &str = "agentmux-bench.ramp.v2";

/// `agentmux-bench ramp` entry point.
pub(crate) async fn main(args: RampArgs) -> Result<ExitCode, Error> {
    if args.sessions == 0 || args.session_life.is_zero() || args.rounds == 0 {
        return Err(Error::Usage(
            "--sessions, --session-life and --rounds must be more than 0".into(),
        ));
    }
    let dir = std::path::absolute(&args.out).map_err(|e| Error::io("resolving --out", e))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let cert = match args.plaintext {
        false => Some(self_signed(&dir).map_err(Error::Tls)?),
        true => None,
    };
    let (proxy_core, bench_cores) = pin_cores(args.proxy_core, args.bench_cores.clone()).await;
    let port = |offset: u16| SocketAddr::from((LOCALHOST, args.base_port + offset));
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;

    // The upstream simulator and one delay relay per cluster.
    let mut helpers = Vec::new();
    let mut sim = vec!["--listen".into(), port(0).to_string(), "--threads".into(), "1".into()];
    if let Some(c) = &cert {
        sim.extend([
            "--tls-cert".into(),
            c.cert.display().to_string(),
            "--tls-key".into(),
            c.key.display().to_string(),
        ]);
    }
    helpers.push(start_helper(&exe, &dir, "upstream", sim, port(0), bench_cores.as_deref()).await?);
    let latency = format!("{}us", args.latency.as_micros());
    for (i, (name, _)) in CLUSTERS.iter().enumerate() {
        let listen = port(1 + i as u16);
        let relay = vec![
            "--listen".into(),
            listen.to_string(),
            "--mode".into(),
            "delay".into(),
            "--to".into(),
            port(0).to_string(),
            "--latency".into(),
            latency.clone(),
            "--threads".into(),
            "1".into(),
        ];
        helpers.push(
            start_helper(
                &exe,
                &dir,
                &format!("delay-{name}"),
                relay,
                listen,
                bench_cores.as_deref(),
            )
            .await?,
        );
    }

    // The gateway, started afresh for every round.
    let (listen, admin) = (port(10), port(11));
    let text = config(
        &args,
        listen,
        admin,
        [port(1), port(2)],
        cert.as_ref().map(|c| c.cert.as_path()),
    );
    let conf = dir.join("agentmux.toml");
    std::fs::write(&conf, &text).map_err(|e| Error::io(format!("writing {}", conf.display()), e))?;
    let program = agentmux::find(args.agentmux.as_deref()).map_err(Error::Runtime)?;
    let mut launch = agentmux::launch(program, &conf, listen, "run --config {config}");
    let core = proxy_core.map(|c| c.to_string());
    let mut rounds = Vec::new();
    let mut failure = None;
    for round in 0..args.rounds {
        let (name, predictive) = CLUSTERS[abba(round)];
        launch.log = dir.join(format!("agentmux-round{round}.log"));
        match one_round(&args, &launch, core.as_deref(), round, name, predictive, admin).await {
            Ok(r) => rounds.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    for h in &mut helpers {
        h.stop().await;
    }
    if let Some(c) = &cert {
        let _ = std::fs::remove_file(&c.key);
        let _ = std::fs::remove_file(&c.combined);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let report = summarise(&args, rounds, proxy_core, bench_cores);
    write_outputs(&dir, &report)?;
    Ok(ExitCode::SUCCESS)
}

/// Which cluster round `i` loads: 0 (predictive), 1, 1, 0, 0, 1, 1, 0, …
/// (ABBA, so a linear drift over the run averages out between the two).
fn abba(round: usize) -> usize {
    match round % 4 {
        0 | 3 => 0,
        _ => 1,
    }
}

/// Starts the gateway, ramps load on `name`'s route, stops the gateway.
async fn one_round(
    args: &RampArgs,
    launch: &Launch,
    core: Option<&str>,
    round: usize,
    name: &'static str,
    predictive: bool,
    admin: SocketAddr,
) -> Result<Round, Error> {
    eprintln!("round {round}: {name} (predictive = {predictive})");
    let mut gateway = process::start(launch, core)
        .await
        .map_err(|e| Error::Runtime(format!("agentmux: {e}")))?;
    let result = run(args, name, launch.listen, admin).await;
    gateway.stop().await;
    let (waits, buckets, load, windows, cost, scrapes) = result?;
    Ok(Round {
        round,
        cluster: name,
        predictive,
        waits,
        buckets,
        load,
        windows,
        cost,
        scrapes,
    })
}

/// The gateway's config: two routes, two clusters, one upstream.
fn config(
    args: &RampArgs,
    listen: SocketAddr,
    admin: SocketAddr,
    relays: [SocketAddr; 2],
    ca: Option<&Path>,
) -> String {
    let mut text = format!(
        r#"# generated by agentmux-bench ramp
[admin]
listen = "{admin}"

# One worker thread, as in compare.
[runtime]
worker_threads = 1

[[listeners]]
name = "agents"
listen = "{listen}"
"#
    );
    for (name, _) in CLUSTERS {
        let _ = write!(
            text,
            r#"
[[routes]]
name = "{name}"
match = {{ path_prefix = "/{name}" }}
mode = "websocket"
cluster = "{name}"
"#
        );
    }
    for ((name, predictive), relay) in CLUSTERS.iter().zip(relays) {
        let tls = ca.map_or(String::new(), |ca| format!("tls = {{ ca = \"{}\" }}\n", ca.display()));
        let _ = write!(
            text,
            r#"
[clusters.{name}]
endpoints = ["{relay}"]
{tls}
[clusters.{name}.pool]
min_connections = {min}
max_connections = {max}
predictive = {predictive}
idle_timeout = "{idle}"
"#,
            min = args.min_connections,
            max = args.max_connections,
            idle = ::agentmux::config::format_duration(args.pool_idle_timeout),
        );
    }
    text
}

/// One scrape of the figures this benchmark follows, per cluster.
#[derive(Clone, Debug, Default, Serialize)]
struct Scrape {
    /// Seconds since the load started.
    at_s: f64,
    clusters: BTreeMap<String, ClusterScrape>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct ClusterScrape {
    /// Cumulative acquire-wait histogram: (upper bound s, cumulative count).
    #[serde(skip)]
    buckets: Vec<(f64, u64)>,
    count: u64,
    /// Spare transports ready in the pool (`ready` + `idle` states).
    spare: i64,
    /// Connects in progress.
    connecting: i64,
    waiters: i64,
    /// Connections the cluster's WebSocket pools opened so far.
    opened: u64,
}

/// Percentiles of acquire waits from a histogram delta.
#[derive(Clone, Debug, Default, Serialize)]
struct Waits {
    acquires: u64,
    /// Acquires slower than 1 ms: they found the pool empty and waited
    /// for a connect (a warm acquire takes microseconds).
    waited: u64,
    waited_share: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Upper bound of the bucket holding p99 (the exact figure lies below it).
    p99_bucket_ms: f64,
}

/// Per-bucket counts: (lower bound s, upper bound s, acquires).
type Buckets = Vec<(f64, f64, u64)>;

/// Ten seconds of one round.
#[derive(Clone, Debug, Serialize)]
struct Window {
    from_s: f64,
    to_s: f64,
    /// Session arrival rate the load offered, mid-window.
    offered_per_s: f64,
    acquires: u64,
    waited: u64,
    p99_ms: f64,
    /// Mean spare transports over the window's scrapes.
    spare_mean: f64,
}

/// One round: a fresh gateway, load on one cluster.
#[derive(Debug, Serialize)]
struct Round {
    round: usize,
    cluster: &'static str,
    predictive: bool,
    waits: Waits,
    #[serde(skip)]
    buckets: Buckets,
    /// The load generator's view (setup, errors).
    load: Report,
    windows: Vec<Window>,
    /// What the pool's sizing cost.
    cost: Cost,
    scrapes: Vec<Scrape>,
}

/// What a round's pool sizing cost: connections opened against sessions
/// served, and the spares left once the load stopped.
#[derive(Clone, Debug, Default, Serialize)]
struct Cost {
    /// Upstream connections opened during the load.
    opened: u64,
    /// Sessions served (acquires) during the load.
    sessions: u64,
    opened_per_session: f64,
    /// Spare transports when the load stopped.
    spare_at_end: i64,
    /// Spare transports `--after` later.
    spare_after: i64,
    after_s: f64,
}

#[derive(Debug, Serialize)]
struct RampReport {
    schema: &'static str,
    command: String,
    proxy_core: Option<usize>,
    bench_cores: Option<String>,
    sessions: u64,
    ramp_up_s: f64,
    hold_s: f64,
    session_life_s: f64,
    peak_arrivals_per_s: f64,
    upstream_latency_ms: f64,
    tls: bool,
    min_connections: usize,
    /// The clusters' `pool.idle_timeout`, seconds.
    pool_idle_timeout_s: f64,
    /// Per cluster, every acquire of its rounds in one histogram.
    pooled: BTreeMap<String, Waits>,
    /// Pooled p99 with prediction on / off (below 1: prediction helps).
    p99_ratio: Option<f64>,
    rounds: Vec<Round>,
}

/// What [`run`] measured: waits, their buckets, the load report, the
/// timeline, the sizing's cost and the raw scrapes.
type Measured = (Waits, Buckets, Report, Vec<Window>, Cost, Vec<Scrape>);

async fn run(args: &RampArgs, name: &'static str, listen: SocketAddr, admin: SocketAddr) -> Result<Measured, Error> {
    // Let the pool warm up to its minimum.
    tokio::time::sleep(args.warm_up).await;
    let start = Instant::now();
    let first = scrape(admin, start).await?;
    let scrapes = Arc::new(Mutex::new(vec![first.clone()]));
    let sampler = {
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                every.tick().await;
                if let Ok(s) = scrape(admin, start).await {
                    scrapes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(s);
                }
            }
        })
    };
    let url = format!("ws://{listen}/{name}/agent");
    let target = Target::resolve(&url, || Err(Error::Usage("plaintext".into()))).await?;
    let plan = Plan {
        target,
        wire: Wire::Ws,
        sessions: args.sessions,
        duration: args.duration,
        messages: None,
        ramp_up: args.ramp_up,
        pacing: Pacing::FixedRate {
            interval: Duration::from_secs_f64(1.0 / args.rate.max(1e-3)),
        },
        kind: PayloadKind::Binary,
        size: 64,
        session_life: Some(args.session_life),
        session_messages: None,
        verify: true,
        method: Method::GET,
        headers: Vec::new(),
        timeout: Duration::from_secs(10),
        drain: Duration::from_secs(1),
        h2_streams: 100,
    };
    eprintln!(
        "   {} sessions over {:?}, held {:?}, {:?} each: arrivals 0 → {:.0}/s",
        args.sessions,
        args.ramp_up,
        args.duration,
        args.session_life,
        args.sessions as f64 / args.session_life.as_secs_f64()
    );
    let load = load::run(plan, !args.quiet).await;
    // The burst is over: what the pool keeps `--after` later (the sampler
    // goes on meanwhile). A failed load skips the wait.
    let ended = async {
        let load = load?;
        let last = scrape(admin, start).await?;
        tokio::time::sleep(args.after).await;
        let after = scrape(admin, start).await?;
        Ok::<_, Error>((load, last, after))
    }
    .await;
    sampler.abort();
    let (load, last, after) = ended?;
    let mut scrapes = std::mem::take(&mut *scrapes.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    scrapes.push(after.clone());
    let cluster = |s: &Scrape| s.clusters.get(name).cloned().unwrap_or_default();
    let (c0, c1, c2) = (cluster(&first), cluster(&last), cluster(&after));
    let sessions = c1.count.saturating_sub(c0.count);
    let opened = c1.opened.saturating_sub(c0.opened);
    let cost = Cost {
        opened,
        sessions,
        opened_per_session: if sessions > 0 {
            (opened as f64 / sessions as f64 * 1000.0).round() / 1000.0
        } else {
            0.0
        },
        spare_at_end: c1.spare,
        spare_after: c2.spare,
        after_s: args.after.as_secs_f64(),
    };
    eprintln!(
        "   {name}: {opened} connections opened for {sessions} sessions ({:.3} each); {} spare at the end, {} after {:?}",
        cost.opened_per_session, cost.spare_at_end, cost.spare_after, args.after
    );

    let buckets = delta(first.clusters.get(name), last.clusters.get(name));
    let w = waits_of(&buckets);
    eprintln!(
        "   {name}: {} acquires, {} waited ({:.2} %), p50 {:.3} ms, p99 {:.2} ms (bucket ≤ {} ms), {} errors",
        w.acquires,
        w.waited,
        w.waited_share * 100.0,
        w.p50_ms,
        w.p99_ms,
        w.p99_bucket_ms,
        load.errors_total
    );
    let windows = windows(&scrapes, args, name);
    Ok((w, buckets, load, windows, cost, scrapes))
}

/// The report: every round, and each setting's rounds pooled.
fn summarise(
    args: &RampArgs,
    rounds: Vec<Round>,
    proxy_core: Option<usize>,
    bench_cores: Option<String>,
) -> RampReport {
    let mut pooled = BTreeMap::new();
    for (name, _) in CLUSTERS {
        let mut sum: Buckets = Vec::new();
        for r in rounds.iter().filter(|r| r.cluster == name) {
            if sum.is_empty() {
                sum = r.buckets.clone();
            } else {
                for (acc, b) in sum.iter_mut().zip(&r.buckets) {
                    acc.2 += b.2;
                }
            }
        }
        pooled.insert(name.to_string(), waits_of(&sum));
    }
    let p99 = |name: &str| pooled.get(name).map(|w: &Waits| w.p99_ms);
    let p99_ratio = match (p99(CLUSTERS[0].0), p99(CLUSTERS[1].0)) {
        (Some(on), Some(off)) if off > 0.0 => Some((on / off * 1000.0).round() / 1000.0),
        _ => None,
    };
    RampReport {
        schema: SCHEMA,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        proxy_core,
        bench_cores,
        sessions: args.sessions,
        ramp_up_s: args.ramp_up.as_secs_f64(),
        hold_s: args.duration.as_secs_f64(),
        session_life_s: args.session_life.as_secs_f64(),
        peak_arrivals_per_s: args.sessions as f64 / args.session_life.as_secs_f64(),
        upstream_latency_ms: args.latency.as_secs_f64() * 1000.0,
        tls: !args.plaintext,
        min_connections: args.min_connections,
        pool_idle_timeout_s: args.pool_idle_timeout.as_secs_f64(),
        pooled,
        p99_ratio,
        rounds,
    }
}

/// GET /metrics from the admin listener (HTTP/1.0, read to the end), with
/// the listener's own address as `Host` (the admin API answers any other
/// 421: its DNS-rebinding guard).
async fn scrape(admin: SocketAddr, start: Instant) -> Result<Scrape, Error> {
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| Error::io("connecting to the admin listener", e))?;
    let head = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| Error::io("asking for /metrics", e))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .await
        .map_err(|e| Error::io("reading /metrics", e))?;
    Ok(parse_metrics(&body, start.elapsed().as_secs_f64()))
}

/// Labels of a metric line: `name{a="x",b="y"} value`.
pub(crate) fn parse_line(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut map = BTreeMap::new();
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        map.insert(k, v.trim_matches('"'));
    }
    Some((name, map, value))
}

fn parse_metrics(text: &str, at_s: f64) -> Scrape {
    let mut out = Scrape {
        at_s,
        clusters: BTreeMap::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        let Some(cluster) = labels.get("cluster") else { continue };
        let c = out.clusters.entry((*cluster).to_string()).or_default();
        match name {
            "agentmux_pool_acquire_seconds_bucket" => {
                let le = labels.get("le").copied().unwrap_or("+Inf");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                c.buckets.push((bound, value as u64));
            }
            "agentmux_pool_acquire_seconds_count" => c.count = value as u64,
            "agentmux_pool_connections" if labels.get("pool") == Some(&"websocket") => {
                match labels.get("state").copied() {
                    Some("ready" | "idle") => c.spare += value as i64,
                    Some("initializing") => c.connecting += value as i64,
                    _ => {}
                }
            }
            "agentmux_pool_waiters" => c.waiters += value as i64,
            "agentmux_pool_connections_opened_total" if labels.get("pool") == Some(&"websocket") => {
                c.opened += value as u64
            }
            _ => {}
        }
    }
    for c in out.clusters.values_mut() {
        c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Per-bucket counts between two cumulative scrapes: (lower, upper, n).
fn delta(before: Option<&ClusterScrape>, after: Option<&ClusterScrape>) -> Vec<(f64, f64, u64)> {
    let Some(after) = after else { return Vec::new() };
    let prev = |bound: f64| {
        before
            .and_then(|b| b.buckets.iter().find(|(x, _)| *x == bound))
            .map_or(0, |(_, n)| *n)
    };
    let mut out = Vec::new();
    let (mut lower, mut cum_prev) = (0.0, 0u64);
    for (bound, n) in &after.buckets {
        let cum = n.saturating_sub(prev(*bound));
        out.push((lower, *bound, cum.saturating_sub(cum_prev)));
        (lower, cum_prev) = (*bound, cum);
    }
    out
}

/// The `q` quantile (0..1) in seconds, interpolated linearly inside its
/// bucket, and that bucket's upper bound.
fn quantile(buckets: &[(f64, f64, u64)], q: f64) -> (f64, f64) {
    let total: u64 = buckets.iter().map(|b| b.2).sum();
    if total == 0 {
        return (0.0, 0.0);
    }
    let rank = q * total as f64;
    let mut seen = 0.0;
    for (lo, hi, n) in buckets {
        let n = *n as f64;
        if n > 0.0 && seen + n >= rank {
            let hi = if hi.is_finite() { *hi } else { *lo };
            return (lo + (hi - lo) * ((rank - seen) / n).clamp(0.0, 1.0), hi);
        }
        seen += n;
    }
    let last = buckets.last().map_or(0.0, |b| b.0);
    (last, last)
}

fn waits_between(before: Option<&ClusterScrape>, after: Option<&ClusterScrape>) -> Waits {
    waits_of(&delta(before, after))
}

fn waits_of(b: &[(f64, f64, u64)]) -> Waits {
    let acquires: u64 = b.iter().map(|x| x.2).sum();
    let waited: u64 = b.iter().filter(|x| x.0 >= 0.001).map(|x| x.2).sum();
    let ms = |q: f64| (quantile(b, q).0 * 1e6).round() / 1e3;
    Waits {
        acquires,
        waited,
        waited_share: if acquires > 0 {
            waited as f64 / acquires as f64
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        p99_bucket_ms: quantile(b, 0.99).1 * 1e3,
    }
}

/// 10-second windows of one round.
fn windows(scrapes: &[Scrape], args: &RampArgs, name: &str) -> Vec<Window> {
    let mut out = Vec::new();
    let peak = args.sessions as f64 / args.session_life.as_secs_f64();
    let ramp = args.ramp_up.as_secs_f64();
    let mut i = 0;
    while i < scrapes.len() {
        let from = &scrapes[i];
        let j = scrapes
            .iter()
            .position(|s| s.at_s >= from.at_s + 10.0 - 0.5)
            .unwrap_or(scrapes.len() - 1);
        // The last scrape may follow the one before within a second: not a window.
        if j <= i || scrapes[j].at_s - from.at_s < 1.0 {
            break;
        }
        let to = &scrapes[j];
        let mid = (from.at_s + to.at_s) / 2.0;
        // After the load (`--after`) nothing is offered: those windows show
        // what the pool keeps once a burst is over.
        let offered = if mid > ramp + args.duration.as_secs_f64() {
            0.0
        } else if ramp > 0.0 {
            peak * (mid / ramp).min(1.0)
        } else {
            peak
        };
        let w = waits_between(from.clusters.get(name), to.clusters.get(name));
        let spares: Vec<f64> = scrapes[i..=j]
            .iter()
            .filter_map(|s| s.clusters.get(name).map(|c| c.spare as f64))
            .collect();
        let spare_mean = if spares.is_empty() {
            0.0
        } else {
            spares.iter().sum::<f64>() / spares.len() as f64
        };
        out.push(Window {
            from_s: (from.at_s * 10.0).round() / 10.0,
            to_s: (to.at_s * 10.0).round() / 10.0,
            offered_per_s: (offered * 10.0).round() / 10.0,
            acquires: w.acquires,
            waited: w.waited,
            p99_ms: w.p99_ms,
            spare_mean: (spare_mean * 10.0).round() / 10.0,
        });
        i = j;
    }
    out
}

fn write_outputs(dir: &Path, r: &RampReport) -> Result<(), Error> {
    let mut md = String::new();
    let _ = writeln!(md, "`{}`\n", r.command);
    let _ = writeln!(
        md,
        "{} session slots, started over {:.0} s then held {:.0} s, each session {:.1} s: \
         arrivals ramp 0 → {:.0}/s. Upstream {} ms away each way{}, min_connections = {}. \
         {} rounds, a fresh gateway each, prediction on and off in ABBA order.\n",
        r.sessions,
        r.ramp_up_s,
        r.hold_s,
        r.session_life_s,
        r.peak_arrivals_per_s,
        r.upstream_latency_ms,
        if r.tls { " over TLS" } else { " (plaintext)" },
        r.min_connections,
        r.rounds.len(),
    );
    let _ = writeln!(
        md,
        "| predictive | rounds | acquires | waited (> 1 ms) | p50 ms | p90 ms | p99 ms | p99.9 ms |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, predictive) in CLUSTERS {
        let Some(w) = r.pooled.get(name) else { continue };
        let n = r.rounds.iter().filter(|x| x.cluster == name).count();
        let _ = writeln!(
            md,
            "| {predictive} | {n} | {} | {} ({:.2} %) | {:.3} | {:.3} | {:.2} | {:.2} |",
            w.acquires,
            w.waited,
            w.waited_share * 100.0,
            w.p50_ms,
            w.p90_ms,
            w.p99_ms,
            w.p999_ms,
        );
    }
    if let Some(ratio) = r.p99_ratio {
        let _ = writeln!(
            md,
            "\nAcquire-wait p99, prediction on / off (pooled rounds): **{ratio:.2}×**."
        );
    }
    let _ = writeln!(
        md,
        "\n| round | predictive | acquires | waited | p99 ms | agent setup p50 ms | agent setup p99 ms | errors |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for x in &r.rounds {
        let (w, l) = (&x.waits, &x.load);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} ({:.2} %) | {:.2} | {:.1} | {:.1} | {} |",
            x.round,
            x.predictive,
            w.acquires,
            w.waited,
            w.waited_share * 100.0,
            w.p99_ms,
            l.setup_us.p50 as f64 / 1000.0,
            l.setup_us.p99 as f64 / 1000.0,
            l.errors_total + l.messages.mismatched,
        );
    }
    let _ = writeln!(
        md,
        "\nWhat each round's pool sizing cost: upstream connections opened during the load \
         per session served, and the spare transports it held when the load stopped and \
         `--after` later (pool `idle_timeout` = {} s):\n",
        r.pool_idle_timeout_s
    );
    let _ = writeln!(
        md,
        "| round | predictive | sessions | connections opened | opened per session | spares at the end | spares after |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|");
    for x in &r.rounds {
        let c = &x.cost;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.3} | {} | {} ({:.0} s later) |",
            x.round, x.predictive, c.sessions, c.opened, c.opened_per_session, c.spare_at_end, c.spare_after, c.after_s
        );
    }
    let _ = writeln!(
        md,
        "\nPercentiles are interpolated inside the gateway's histogram buckets \
         (…, 10, 20, 35, 50, 75 ms, …). Timeline of each round (10 s windows: \
         acquires / waited / p99 ms / mean spares):\n"
    );
    let _ = writeln!(
        md,
        "| window s | arrivals/s offered | {} |",
        r.rounds
            .iter()
            .map(|x| format!("round {} ({})", x.round, if x.predictive { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|---|---:|{}", "---|".repeat(r.rounds.len()));
    let longest = r.rounds.iter().map(|x| x.windows.len()).max().unwrap_or(0);
    for i in 0..longest {
        let Some(w) = r.rounds.iter().find_map(|x| x.windows.get(i)) else {
            continue;
        };
        let cells: Vec<String> = r
            .rounds
            .iter()
            .map(|x| {
                x.windows.get(i).map_or("—".into(), |c| {
                    format!("{} / {} / {:.2} / {:.1}", c.acquires, c.waited, c.p99_ms, c.spare_mean)
                })
            })
            .collect();
        let _ = writeln!(
            md,
            "| {:.0}–{:.0} | {:.1} | {} |",
            w.from_s,
            w.to_s,
            w.offered_per_s,
            cells.join(" | ")
        );
    }
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::Runtime(e.to_string()))?;
    std::fs::write(dir.join("ramp.md"), &md).map_err(|e| Error::io("writing ramp.md", e))?;
    std::fs::write(dir.join("ramp.json"), format!("{json}\n")).map_err(|e| Error::io("writing ramp.json", e))?;
    println!("{md}");
    eprintln!("wrote {}/ramp.md, ramp.json", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# TYPE agentmux_pool_acquire_seconds histogram
agentmux_pool_acquire_seconds_bucket{cluster="a",le="0.00005"} 90
agentmux_pool_acquire_seconds_bucket{cluster="a",le="0.001"} 95
agentmux_pool_acquire_seconds_bucket{cluster="a",le="0.05"} 100
agentmux_pool_acquire_seconds_bucket{cluster="a",le="+Inf"} 100
agentmux_pool_acquire_seconds_count{cluster="a"} 100
agentmux_pool_connections{cluster="a",endpoint="x",pool="websocket",state="ready"} 3
agentmux_pool_connections{cluster="a",endpoint="x",pool="websocket",state="idle"} 1
agentmux_pool_waiters{cluster="a",endpoint="x"} 2
agentmux_pool_connections_opened_total{cluster="a",endpoint="x",pool="websocket"} 7
agentmux_pool_connections_opened_total{cluster="a",endpoint="y",pool="websocket"} 5
agentmux_pool_connections_opened_total{cluster="a",endpoint="x",pool="http"} 100
"#;

    #[test]
    fn metrics_parse_and_quantiles_interpolate() {
        let s = parse_metrics(SAMPLE, 1.0);
        let a = &s.clusters["a"];
        assert_eq!(a.count, 100);
        assert_eq!(a.spare, 4);
        assert_eq!(a.waiters, 2);
        assert_eq!(a.opened, 12, "websocket pools of every endpoint, not the http one");
        let w = waits_between(None, Some(a));
        assert_eq!(w.acquires, 100);
        assert_eq!(w.waited, 5);
        // p99: rank 99 is the 4th of 5 in (1 ms, 50 ms].
        assert!((w.p99_ms - (1.0 + 49.0 * 0.8)).abs() < 1e-6, "{w:?}");
        assert_eq!(w.p99_bucket_ms, 50.0);
        assert!(w.p50_ms <= 0.05);
        // A delta against itself is empty.
        assert_eq!(waits_between(Some(a), Some(a)).acquires, 0);
    }

    #[test]
    fn rounds_alternate_abba() {
        let order: Vec<usize> = (0..8).map(abba).collect();
        assert_eq!(order, [0, 1, 1, 0, 0, 1, 1, 0]);
        // Any even count of rounds loads each setting equally often.
        assert_eq!(order[..2].iter().filter(|c| **c == 0).count(), 1);
        assert_eq!(order[..6].iter().filter(|c| **c == 0).count(), 3);
    }
}
