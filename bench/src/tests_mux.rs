//! The mux simulator (`upstream --mode mux`) behind a real gateway in mux
//! mode, in process: the load generator's sessions go through agentmux as
//! plain WebSockets, ride its mux connections to the simulator and come
//! back verified. Drops of every mux connection are survived with nothing
//! lost, repeated or reordered; latency and corruption show as they should.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::load::{self, Plan};
use crate::report::Report;
use crate::upstream::mux_echo::MuxCounts;
use crate::upstream::{Faults, MuxSim};

struct Setup {
    url: String,
    counts: Arc<MuxCounts>,
    server: agentmux::mux::MuxServer,
    _gateway: agentmux::Running,
}

/// The mux simulator with `faults`, and a gateway in mux mode in front of it.
async fn mux_setup(faults: Faults) -> Setup {
    let sim = MuxSim::bind("127.0.0.1:0", faults, None).await.unwrap();
    let upstream: SocketAddr = sim.local_addr().unwrap();
    let (counts, server) = (sim.counts(), sim.server());
    tokio::spawn(sim.run());
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"
[[routes]]
name = "mux"
match = {{ path_prefix = "/" }}
mode = "mux"
cluster = "up"
[clusters.up]
endpoints = ["{upstream}"]
[clusters.up.pool]
min_connections = 2
max_connections = 16
[clusters.up.mux]
connections = 2
resume_timeout = "20s"
"#
    );
    let config = agentmux::Config::parse(&text, "bench-test").unwrap();
    let gateway = agentmux::server::start(config).await.unwrap();
    let addr = gateway.listeners()[0].1;
    // Wait until both mux connections are up (the simulator counts them).
    for _ in 0..200 {
        if counts.connections.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Setup {
        url: format!("ws://{addr}/agent"),
        counts,
        server,
        _gateway: gateway,
    }
}

async fn run_load(args: &[&str]) -> Report {
    let mut argv = vec!["agentmux-bench", "load", "--quiet"];
    argv.extend_from_slice(args);
    let Command::Load(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let plan = Plan::from_args(&args).await.unwrap();
    load::run(plan, false).await.unwrap()
}

fn clean(r: &Report) {
    assert_eq!(r.messages.received, r.messages.sent, "{r:?}");
    assert_eq!(r.messages.mismatched, 0);
    assert_eq!(r.messages.out_of_order, 0);
    assert_eq!(r.messages.unanswered, 0);
    assert_eq!(r.errors_total, 0, "{:?}", r.first_errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_echo_through_the_gateway_verifies_every_message() {
    let s = mux_setup(Faults::default()).await;
    for kind in ["binary", "text"] {
        let r = run_load(&[
            &s.url,
            "-s",
            "16",
            "--messages",
            "200",
            "-k",
            "4",
            "--kind",
            kind,
            "--size",
            "300",
        ])
        .await;
        assert_eq!(r.messages.sent, 3200, "{kind}");
        clean(&r);
    }
    // Every session rode the two mux connections.
    assert_eq!(s.counts.connections.load(Ordering::Relaxed), 2);
    assert_eq!(s.server.stats().opened, 32);
}

/// The chaos test: every mux connection is aborted three times while 20
/// agents send 100 messages/s each; the gateway resumes every session on
/// its next connection and the agents see every echo, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_drops_are_resumed_with_zero_mismatches() {
    let s = mux_setup(Faults {
        drop_at: Some(Duration::from_millis(600)),
        drop_every: Some(Duration::from_millis(700)),
        ..Faults::default()
    })
    .await;
    let r = run_load(&[&s.url, "-s", "20", "-d", "2500ms", "--rate", "100", "--size", "200"]).await;
    clean(&r);
    // The load really ran across the drops (at least a second's worth of
    // messages; the exact count depends on the pacer, not on the gateway).
    assert!(r.messages.sent >= 20 * 100, "{}", r.messages.sent);
    assert_eq!(r.session_counts.opened, 20, "no agent had to reconnect");
    let dropped = s.counts.dropped.load(Ordering::Relaxed);
    assert!(dropped >= 6, "three drops of two connections each: {dropped}");
    assert!(s.server.stats().resumed >= 20, "{:?}", s.server.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_latency_delays_each_echo_and_corruption_is_caught() {
    let s = mux_setup(Faults {
        latency: Duration::from_millis(20),
        ..Faults::default()
    })
    .await;
    let r = run_load(&[&s.url, "-s", "4", "--messages", "20", "-k", "4"]).await;
    clean(&r);
    // The delay is a floor on every echo (a lower bound holds however
    // loaded the machine is; no upper bound is asserted for that reason).
    assert!(r.latency_us.min >= 20_000, "{:?}", r.latency_us);
    assert!(s.counts.echoed.load(Ordering::Relaxed) >= 80);

    let s = mux_setup(Faults {
        corrupt_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let r = run_load(&[&s.url, "-s", "2", "--messages", "10"]).await;
    assert!(r.messages.mismatched > 0, "{:?}", r.messages);
}

#[tokio::test]
async fn mux_mode_refuses_drop_rate() {
    let faults = Faults {
        drop_rate: 0.1,
        ..Faults::default()
    };
    assert!(MuxSim::bind("127.0.0.1:0", faults, None).await.is_err());
}
