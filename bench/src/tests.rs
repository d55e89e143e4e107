//! The generator against the simulator on loopback: clean runs verify every
//! reply, injected faults (corruption, errors, drops, latency) show up in
//! the counts they should, and the JSON report has the documented fields.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::load::{self, Plan};
use crate::report::Report;
use crate::upstream::{Faults, Relay, Server};

async fn simulator(faults: Faults) -> SocketAddr {
    let server = Server::bind("127.0.0.1:0", faults, 5, Duration::from_millis(2), None)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    addr
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

fn err(report: &Report, kind: &str) -> u64 {
    report.errors[kind]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_ws_run_verifies_every_echo() {
    let addr = simulator(Faults::default()).await;
    for kind in ["binary", "text"] {
        let url = format!("ws://{addr}/ws");
        let r = run_load(&[
            &url,
            "-s",
            "8",
            "--messages",
            "200",
            "-k",
            "4",
            "--kind",
            kind,
            "--size",
            "100",
        ])
        .await;
        assert_eq!(r.messages.sent, 1600, "{kind}");
        assert_eq!(r.messages.received, 1600);
        assert_eq!(
            r.messages.mismatched + r.messages.out_of_order + r.messages.unanswered,
            0
        );
        assert_eq!(r.errors_total, 0, "{:?}", r.first_errors);
        assert_eq!(r.latency_us.count, 1600);
        assert_eq!(r.handshake_us.count, 8);
        assert_eq!(r.session_counts.opened, 8);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_ws_payloads_are_counted() {
    let addr = simulator(Faults {
        corrupt_rate: 0.05,
        ..Faults::default()
    })
    .await;
    let url = format!("ws://{addr}/ws");
    let r = run_load(&[&url, "-s", "4", "--messages", "500", "--kind", "text"]).await;
    assert_eq!(r.messages.received, 2000);
    // 5% of 2000: far from zero, far from all.
    assert!(
        r.messages.mismatched > 20 && r.messages.mismatched < 400,
        "{}",
        r.messages.mismatched
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_errors_and_drops_are_counted_and_sessions_reconnect() {
    let addr = simulator(Faults {
        error_rate: 0.01,
        drop_rate: 0.01,
        ..Faults::default()
    })
    .await;
    let url = format!("ws://{addr}/ws");
    let r = run_load(&[&url, "-s", "4", "-d", "1s", "--timeout", "1s"]).await;
    assert!(err(&r, "closed") > 0, "{:?}", r.errors);
    assert!(err(&r, "io") > 0, "{:?}", r.errors);
    assert!(r.session_counts.opened > 4, "sessions should reconnect after faults");
    assert_eq!(r.messages.mismatched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_error_rate_shows_as_status_errors() {
    let addr = simulator(Faults {
        error_rate: 0.2,
        ..Faults::default()
    })
    .await;
    let url = format!("http://{addr}/echo");
    let r = run_load(&[&url, "-s", "4", "--messages", "250"]).await;
    assert_eq!(r.messages.sent, 1000);
    let failed = err(&r, "http_status");
    assert!(failed > 100 && failed < 300, "{failed}");
    assert_eq!(r.messages.received + failed, 1000);
    assert_eq!(r.messages.mismatched + r.messages.out_of_order, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_corruption_is_caught() {
    let addr = simulator(Faults {
        corrupt_rate: 0.1,
        ..Faults::default()
    })
    .await;
    let url = format!("http://{addr}/echo");
    let r = run_load(&[&url, "-s", "2", "--messages", "200", "--size", "256"]).await;
    assert!(r.messages.mismatched > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_are_checked_token_by_token() {
    let addr = simulator(Faults::default()).await;
    let url = format!("http://{addr}/sse?tokens=10&delay_ms=1");
    let r = run_load(&[&url, "--protocol", "sse", "-s", "3", "--messages", "4"]).await;
    assert_eq!(r.messages.sent, 12);
    assert_eq!(r.messages.received, 120);
    assert_eq!(r.sse.as_ref().unwrap().streams_completed, 12);
    assert_eq!(r.messages.mismatched, 0);

    let addr = simulator(Faults {
        corrupt_rate: 0.2,
        ..Faults::default()
    })
    .await;
    let url = format!("http://{addr}/sse?tokens=10&delay_ms=1");
    let r = run_load(&[&url, "--protocol", "sse", "-s", "3", "--messages", "4"]).await;
    assert!(r.messages.mismatched > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_at_breaks_every_open_session() {
    let addr = simulator(Faults {
        drop_at: Some(Duration::from_millis(300)),
        ..Faults::default()
    })
    .await;
    let url = format!("ws://{addr}/ws");
    let r = run_load(&[&url, "-s", "5", "-d", "800ms", "--rate", "200"]).await;
    assert!(err(&r, "io") >= 5, "{:?}", r.errors);
    assert!(r.session_counts.opened >= 10, "every session reconnects once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_relay_adds_latency_both_ways_and_to_connect() {
    let addr = simulator(Faults::default()).await;
    let relay = Relay::bind(
        "127.0.0.1:0",
        &addr.to_string(),
        Duration::from_millis(15),
        Duration::from_millis(15),
        true,
    )
    .await
    .unwrap();
    let relay_addr = relay.local_addr().unwrap();
    tokio::spawn(relay.run());
    let url = format!("ws://{relay_addr}/ws");
    let r = run_load(&[&url, "-s", "2", "--messages", "20", "-k", "1"]).await;
    assert_eq!(r.messages.received, 40);
    assert!(
        r.latency_us.p50 >= 30_000,
        "echo crosses the relay twice: {:?}",
        r.latency_us
    );
    // Connect round trip (30 ms) + upgrade round trip (30 ms).
    assert!(r.setup_us.p50 >= 60_000, "{:?}", r.setup_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_has_the_documented_fields() {
    let addr = simulator(Faults::default()).await;
    let url = format!("ws://{addr}/ws");
    let r = run_load(&[&url, "-s", "2", "--messages", "10", "--rate", "500"]).await;
    let value: serde_json::Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(value["schema"], "agentmux-bench.load.v1");
    assert_eq!(value["mode"]["kind"], "fixed-rate");
    assert_eq!(value["coordinated_omission_corrected"], true);
    for field in [
        "target",
        "protocol",
        "sessions",
        "payload",
        "verify",
        "elapsed_s",
        "messages",
        "throughput",
        "latency_us",
        "connect_us",
        "tls_us",
        "handshake_us",
        "setup_us",
        "sse",
        "session_counts",
        "errors",
        "errors_total",
        "first_errors",
    ] {
        assert!(value.get(field).is_some(), "missing {field}");
    }
    for field in [
        "sent",
        "received",
        "bytes_sent",
        "bytes_received",
        "mismatched",
        "out_of_order",
        "unanswered",
    ] {
        assert!(value["messages"][field].is_u64(), "messages.{field}");
    }
    for field in ["count", "min", "p50", "p90", "p99", "p999", "max"] {
        assert!(value["latency_us"][field].is_u64(), "latency_us.{field}");
    }
    for kind in [
        "connect",
        "tls",
        "handshake",
        "http_status",
        "io",
        "closed",
        "timeout",
        "protocol",
    ] {
        assert!(value["errors"][kind].is_u64(), "errors.{kind}");
    }
    // And it reads back into the same type.
    let back: Report = serde_json::from_value(value).unwrap();
    assert_eq!(back.messages.received, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_counts_connect_errors() {
    // Bind then drop to find a port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let r = run_load(&[&url, "-s", "2", "-d", "300ms"]).await;
    assert!(err(&r, "connect") >= 2);
    assert_eq!(r.messages.sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_replaces_sessions_and_think_time_paces_them() {
    let addr = simulator(Faults::default()).await;
    let url = format!("ws://{addr}/ws");
    // 2 slots x 20 messages, a new session every 5 messages: 8 sessions.
    let r = run_load(&[&url, "-s", "2", "--messages", "20", "--session-messages", "5"]).await;
    assert_eq!(r.messages.received, 40);
    assert_eq!(r.session_counts.opened, 8);
    assert_eq!(r.session_counts.closed, 8);
    assert_eq!(r.messages.out_of_order + r.messages.mismatched, 0);
    // Time-based churn.
    let r = run_load(&[
        &url,
        "-s",
        "2",
        "-d",
        "600ms",
        "--session-life",
        "150ms",
        "--rate",
        "100",
    ])
    .await;
    assert!(r.session_counts.opened >= 6, "{}", r.session_counts.opened);
    assert_eq!(r.errors_total, 0, "{:?}", r.first_errors);
    // 5 messages with 40 ms think time between them: at least 160 ms.
    let r = run_load(&[&url, "-s", "1", "--messages", "5", "--think-time", "40ms"]).await;
    assert_eq!(r.messages.received, 5);
    assert!(r.elapsed_s >= 0.16, "{}", r.elapsed_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_with_ca_insecure_and_untrusted() {
    let dir = std::env::temp_dir().join(format!("agentmux-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = match crate::compare::self_signed(&dir) {
        Ok(c) => (c.cert, c.key),
        Err(e) => {
            eprintln!("TLS test skipped: {e}");
            return;
        }
    };
    let tls = crate::tls::server_config(&cert, &key).unwrap();
    let server = Server::bind("127.0.0.1:0", Faults::default(), 5, Duration::from_millis(1), Some(tls))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run());
    let ca = cert.display().to_string();

    let wss = format!("wss://{addr}/ws");
    let r = run_load(&[&wss, "-s", "3", "--messages", "50", "--ca", &ca]).await;
    assert_eq!(r.messages.received, 150, "{:?}", r.first_errors);
    assert_eq!(r.tls_us.count, 3);
    assert_eq!(r.errors_total, 0);

    let https = format!("https://{addr}/echo");
    let r = run_load(&[&https, "-s", "2", "--messages", "20", "--insecure"]).await;
    assert_eq!(r.messages.received, 40, "{:?}", r.first_errors);

    // The built-in web roots do not trust a self-signed certificate.
    let r = run_load(&[&wss, "-s", "1", "-d", "300ms"]).await;
    assert!(err(&r, "tls") >= 1, "{:?}", r.errors);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn pool_acquires_are_timed_from_a_warm_pool() {
    let out = std::env::temp_dir().join(format!("agentmux-bench-pool-{}.json", std::process::id()));
    for kind in ["raw", "http"] {
        let argv = [
            "agentmux-bench",
            "pool",
            "--kind",
            kind,
            "--warm",
            "2",
            "--acquires",
            "20",
            "--interval",
            "5ms",
            "-o",
            out.to_str().unwrap(),
        ];
        let Command::Pool(args) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!()
        };
        crate::pool::main(args).await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(report["schema"], "agentmux-bench.pool.v1");
        assert_eq!(report["kind"], kind);
        assert_eq!(report["errors"], 0);
        assert_eq!(report["acquire_us"]["count"], 20);
        assert!(report["acquire_us"]["p50"].as_f64().unwrap() > 0.0);
    }
    let _ = std::fs::remove_file(&out);
}
