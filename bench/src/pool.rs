//! `agentmux-bench pool`: how long taking a connection from agentmux's warm
//! pool takes, timed in process (the one subcommand that links the gateway
//! library: a pool acquire has no wire protocol to drive from outside).
//!
//! The upstream is a loopback listener in this process that accepts
//! connections and holds them open. The pool keeps `--warm` connections
//! open; once they are all up, `--acquires` acquires run one after another,
//! `--interval` apart, each timed from the call to the lease in hand.
//!
//! - `raw` (WebSocket sessions): the lease takes the connection for good,
//!   as a session does, and the pool opens a replacement in the background;
//!   the interval gives it time to, so every acquire meets a warm pool.
//!   Acquires that found no idle connection anyway are counted.
//! - `http` (HTTP/1.1 requests): the lease is dropped at once and the
//!   connection goes back to the pool, the path of every pooled request.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentmux::config::UpstreamProtocol;
use agentmux::pool::{Flavor, Pool};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::cli::{PoolArgs, PoolKind};
use crate::error::Error;

/// Acquire latency figures, in microseconds (nanosecond resolution).
#[derive(Debug, Serialize)]
struct PoolReport {
    schema: &'static str,
    command: String,
    kind: &'static str,
    warm: usize,
    acquires: u64,
    interval_us: u64,
    /// Acquires that found no idle connection and waited for a connect.
    found_empty: u64,
    errors: u64,
    acquire_us: Summary,
}

#[derive(Debug, Serialize)]
struct Summary {
    count: u64,
    min: f64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Summary {
    fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 10.0).round() / 100.0;
        Self {
            count: h.len(),
            min: us(h.min()),
            mean: (h.mean() / 10.0).round() / 100.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// `agentmux-bench pool` entry point.
pub(crate) async fn main(args: PoolArgs) -> Result<ExitCode, Error> {
    if args.warm == 0 {
        return Err(Error::Usage("--warm must be at least 1".into()));
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("binding the loopback upstream", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    let upstream = tokio::spawn(hold_connections(listener));
    let (flavor, kind) = match args.kind {
        PoolKind::Raw => (Flavor::Raw, "raw"),
        PoolKind::Http => (Flavor::Http(UpstreamProtocol::Http1), "http"),
    };
    let pool = Pool::for_tcp(addr, flavor, args.warm, args.warm * 4 + 16);
    wait_warm(&pool, args.warm).await?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| Error::Runtime(e.to_string()))?;
    let (mut found_empty, mut errors) = (0u64, 0u64);
    for _ in 0..args.acquires {
        let snap = pool.snapshot();
        if snap.ready + snap.idle == 0 {
            found_empty += 1;
        }
        // Timed: the call until the lease is in hand. Not timed: giving it
        // back (http) or closing the connection (raw, as a session ends).
        let start = Instant::now();
        let (ok, elapsed) = match args.kind {
            PoolKind::Raw => {
                let lease = pool.acquire_raw(false).await;
                (lease.is_ok(), start.elapsed())
            }
            PoolKind::Http => {
                let lease = pool.acquire_http().await;
                (lease.is_ok(), start.elapsed())
            }
        };
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if ok {
            hist.saturating_record(ns.max(1));
        } else {
            errors += 1;
        }
        if !args.interval.is_zero() {
            tokio::time::sleep(args.interval).await;
        }
    }
    pool.close();
    upstream.abort();
    let report = PoolReport {
        schema: "agentmux-bench.pool.v1",
        command: std::env::args().collect::<Vec<_>>().join(" "),
        kind,
        warm: args.warm,
        acquires: args.acquires,
        interval_us: u64::try_from(args.interval.as_micros()).unwrap_or(u64::MAX),
        found_empty,
        errors,
        acquire_us: Summary::of(&hist),
    };
    let a = &report.acquire_us;
    eprintln!(
        "pool {kind}: {} acquires, p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs ({found_empty} found the pool empty, {errors} errors)",
        a.count, a.p50, a.p99, a.p999, a.max
    );
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Runtime(e.to_string()))?;
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{json}\n")).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    if args.json {
        println!("{json}");
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Waits until the pool holds `warm` ready connections (5 s at most).
async fn wait_warm(pool: &Pool, warm: usize) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.snapshot().ready < warm {
        if Instant::now() > deadline {
            return Err(Error::Runtime(format!(
                "the pool did not warm {warm} connections within 5 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Accepts connections and keeps each open until the pool closes it.
async fn hold_connections(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
}
