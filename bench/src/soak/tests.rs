//! A smoke soak, in process: the generated config run by the gateway
//! library (`agentmux::server::start`) in front of the simulator, a few
//! seconds of churn with every kind, and the outputs written. /proc is
//! this test process's (the gateway lives in it). The point is the whole
//! path: every kind gets the answer it should, samples carry the gateway's
//! gauges, the report and plots are written.

use std::net::SocketAddr;

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

fn args(extra: &[&str]) -> SoakArgs {
    let mut argv = vec!["agentmux-bench", "soak", "--quiet"];
    argv.extend_from_slice(extra);
    let Command::Soak(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_soak_answers_every_kind_and_writes_the_outputs() {
    let args = args(&[
        // Phases of 2 s at least, so each gets a sample of the 1 s sampler.
        "--duration",
        "5s",
        "--warmup",
        "2s",
        "--settle",
        "2s",
        "--baseline",
        "2s",
        "--window",
        "1s",
        "--concurrency",
        "24",
        "--pause",
        "50ms",
        // Pinged after 1 s, closed after 2 s, cut 5 s later: within the hold.
        "--keepalive",
        "1s",
        "--half-open-hold",
        "8s",
        "--header-timeout",
        "1s",
        "--mix",
        "ws_clean=3,ws_half_open=1,ws_violation=5,http_keepalive=3,http_drop=3,http_slowloris=2",
    ]);
    args.validate().unwrap();
    let (ws_sim, ws_upstream) = simulator().await.unwrap();
    let (http_sim, http_upstream) = simulator().await.unwrap();
    let accepted = Accepted {
        ws: ws_sim.accepted(),
        http: http_sim.accepted(),
    };
    tokio::spawn(ws_sim.run());
    tokio::spawn(http_sim.run());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let text = config::config(any, any, ws_upstream, http_upstream, &settings(&args));
    let gateway = ::agentmux::server::start(::agentmux::Config::parse(&text, "soak").unwrap())
        .await
        .unwrap();
    let target = Target {
        pid: std::process::id(),
        listen: gateway.listeners()[0].1,
        admin: gateway.admin_addr(),
        accepted,
        name: "in-process".into(),
    };
    let (report, samples) = run(&args, &target).await.unwrap();

    let got = |label: &str| report.answers.iter().find(|a| a.label == label).cloned();
    for label in [
        "ws_clean",
        "ws_half_open",
        "ws_violation/unmasked",
        "ws_violation/bad_utf8",
        "ws_violation/bad_opcode",
        "ws_violation/big_control",
        "ws_violation/orphan_continuation",
        "http_keepalive",
        "http_drop/idle",
        "http_drop/unanswered",
        "http_drop/mid_body",
        "http_slowloris/first",
        "http_slowloris/second",
    ] {
        let a = got(label).unwrap_or_else(|| panic!("no {label} in {:#?}", report.answers));
        assert!(a.total > 0);
        assert_eq!(a.as_expected, a.total, "{a:#?}");
    }
    // Samples: every phase, with the gateway's gauges.
    for phase in [Phase::Baseline, Phase::Warmup, Phase::Churn, Phase::Settle] {
        assert!(samples.iter().any(|s| s.phase == phase), "no {phase:?} sample");
    }
    assert!(samples.iter().all(|s| s.rss_kib.is_some() && s.fds.is_some()));
    assert!(samples.iter().filter(|s| s.gauges.is_some()).count() >= samples.len() - 1);
    let s = &report.summary;
    assert!(s.rss_after_warmup_kib.is_some() && s.rss_end_kib.is_some() && s.fds_baseline.is_some());
    // The pools were warm before the baseline: 4 per pool, two pools.
    assert!(s.pool_open_baseline.unwrap() >= 8.0, "{s:?}");
    // Every websocket session takes an upstream connection of its own (the
    // first few the ones warm at baseline, which the pool replaces).
    assert!(
        s.ws_upstream_connections + 8 >= report.served.ws_sessions,
        "{s:?} {:?}",
        report.served
    );
    assert!(report.served.http_requests > 0);
    assert!(
        report.served.connections_per_http_request.unwrap() < 1.0,
        "{:?}",
        report.served
    );
    assert!(report.gateway_counters["sessions_ended"].contains_key("keepalive_timeout"));

    let dir = std::env::temp_dir().join(format!("agentmux-bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let md = report::write(&dir, &samples, &report).unwrap();
    assert!(md.contains("## Verdict"));
    assert!(md.contains("| ws_violation/bad_utf8 |"));
    for file in [
        "summary.md",
        "soak.json",
        "samples.csv",
        "rss.svg",
        "fds.svg",
        "pool.svg",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("soak.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], report::SCHEMA);
    let csv = std::fs::read_to_string(dir.join("samples.csv")).unwrap();
    assert_eq!(csv.lines().count(), samples.len() + 1);
    let _ = std::fs::remove_dir_all(&dir);
    gateway.shutdown().await;
}
