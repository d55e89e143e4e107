//! Mux mode end to end: many agent WebSocket sessions over a few upstream
//! connections speaking `agentmux.v1`, resumed with nothing lost when those
//! connections die. Tests about resuming have `resume` in their names, so
//! `cargo test resume` runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use agentmux::mux::{ErrorCode, Frame};
use agentmux_tests::mux::{spawn_mux_echo, spawn_mux_silent, spawn_poisoner};
use agentmux_tests::{Gateway, eventually, ws};

fn config(upstream: std::net::SocketAddr, connections: usize) -> String {
    config_with(upstream, connections, "", "")
}

/// `config` with more keys for the listener and for the route.
fn config_with(upstream: std::net::SocketAddr, connections: usize, listener: &str, route: &str) -> String {
    format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
{listener}
[[routes]]
name = "mux"
mode = "mux"
cluster = "up"
{route}
[clusters.up]
endpoints = ["{upstream}"]
[clusters.up.pool]
min_connections = 1
max_connections = 16
[clusters.up.mux]
connections = {connections}
resume_timeout = "20s"
"#
    )
}

type Client = tokio_tungstenite::WebSocketStream<Box<dyn ws::Io>>;

async fn recv_text(c: &mut Client) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends `n` numbered messages and checks each echo, in order.
async fn exchange(c: &mut Client, session: usize, from: usize, n: usize) {
    for m in from..from + n {
        let payload = format!("s{session}-m{m}");
        c.send(Message::text(payload.clone())).await.unwrap();
        assert_eq!(recv_text(c).await, payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_over_four_connections_in_order() {
    let up = spawn_mux_echo(Duration::ZERO).await;
    let gw = Gateway::start(&config(up.addr, 4));
    let addr = gw.addr();
    let mut tasks = Vec::new();
    for s in 0..1000 {
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = ws::connect(addr, None, "/", None).await.unwrap();
            exchange(&mut c, s, 0, 10).await;
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    assert!(
        up.accepted.load(Ordering::SeqCst) <= 4,
        "{} upstream connections",
        up.accepted.load(Ordering::SeqCst)
    );
    // Fragments keep their message framing across the mux.
    let c = &mut clients[0];
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    c.send(Message::Frame(Frame::message("frag", OpCode::Data(Data::Text), false)))
        .await
        .unwrap();
    c.send(Message::Frame(Frame::message(
        "mented",
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(recv_text(c).await, "fragmented");
    for mut c in clients {
        c.close(None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_every_connection_dies_twice_loses_nothing() {
    let up = spawn_mux_echo(Duration::ZERO).await;
    let gw = Gateway::start(&config(up.addr, 2));
    let addr = gw.addr();
    let mut clients = Vec::new();
    for s in 0..100 {
        let (mut c, _) = ws::connect(addr, None, "/", None).await.unwrap();
        exchange(&mut c, s, 0, 2).await;
        clients.push(c);
    }
    // Every session streams while all upstream connections are killed,
    // twice; each echo must come back exactly once, in order.
    let streams: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(s, mut c)| {
            tokio::spawn(async move {
                exchange(&mut c, s, 2, 600).await;
                c
            })
        })
        .collect();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            streams.iter().any(|t| !t.is_finished()),
            "streams ended before the kill"
        );
        up.kill_all();
    }
    for t in streams {
        let mut c = t.await.unwrap();
        c.close(None).await.unwrap();
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    let resumed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("agentmux_mux_resumes_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(resumed > 0.0, "no session was resumed:\n{metrics}");
    assert!(
        !metrics.contains("agentmux_mux_sessions_lost_total{cluster=\"up\"} 1"),
        "a session was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agent_does_not_slow_the_others() {
    let up = spawn_mux_echo(Duration::ZERO).await;
    let gw = Gateway::start(&config(up.addr, 1));
    let addr = gw.addr();
    // The staller sends far more than the windows and buffers hold and
    // never reads its echoes.
    let (mut staller, _) = ws::connect(addr, None, "/", None).await.unwrap();
    let big = "x".repeat(64 * 1024);
    let stalled = tokio::spawn(async move {
        let mut sent = 0;
        for _ in 0..400 {
            if tokio::time::timeout(Duration::from_secs(3), staller.send(Message::text(big.clone())))
                .await
                .is_err()
            {
                break; // its own backpressure stopped it
            }
            sent += 1;
        }
        (sent, staller)
    });
    // Meanwhile others on the same single connection complete all their
    // round trips.
    let mut others = Vec::new();
    for s in 0..20 {
        others.push(tokio::spawn(async move {
            let (mut c, _) = ws::connect(addr, None, "/", None).await.unwrap();
            exchange(&mut c, s, 0, 100).await;
            100
        }));
    }
    let mut done = 0;
    for o in others {
        done += o.await.unwrap();
    }
    assert_eq!(done, 2000);
    let (sent, _staller) = stalled.await.unwrap();
    assert!(sent < 400, "the stalled agent was never held back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_bad_frame_from_upstream() {
    let up = spawn_mux_echo(Duration::ZERO).await;
    let relay = spawn_poisoner(up.addr).await;
    let gw = Gateway::start(&config(relay.addr, 2));
    let addr = gw.addr();
    let mut clients = Vec::new();
    for s in 0..20 {
        let (mut c, _) = ws::connect(addr, None, "/", None).await.unwrap();
        exchange(&mut c, s, 0, 3).await;
        clients.push(c);
    }
    // Quiet connections: the junk lands between frames.
    relay.poison();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (s, c) in clients.iter_mut().enumerate() {
        exchange(c, s, 3, 5).await;
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    let resumed = metrics
        .lines()
        .find(|l| l.starts_with("agentmux_mux_resumes_total{cluster=\"up\"}"))
        .unwrap_or("");
    assert!(!resumed.ends_with(" 0"), "{resumed}");
    // The bad frame is counted as a protocol end of its connection.
    let ends = metrics
        .lines()
        .find(|l| l.starts_with("agentmux_mux_connection_ends_total{") && l.contains("reason=\"protocol\""))
        .unwrap_or("");
    assert!(!ends.is_empty() && !ends.ends_with(" 0"), "{ends}");
}

#[tokio::test]
async fn mux_config_errors_name_the_key() {
    let dir = agentmux_tests::TempDir::new("muxcfg");
    let path = dir.write(
        "bad.toml",
        &config("127.0.0.1:1".parse().unwrap(), 0).replace("resume_timeout = \"20s\"", "resume_timeout = \"soon\""),
    );
    let out = std::process::Command::new(agentmux_tests::gateway_bin())
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clusters.up.mux.connections: must be within 1..=64, got 0"),
        "{err}"
    );
    assert!(
        err.contains("clusters.up.mux.resume_timeout: invalid duration \"soon\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_continue_when_a_reload_rebuilds_their_cluster() {
    let up = spawn_mux_echo(Duration::ZERO).await;
    let gw = Gateway::start(&config(up.addr, 2));
    let (mut c, _) = ws::connect(gw.addr(), None, "/", None).await.unwrap();
    exchange(&mut c, 0, 0, 5).await;

    // A changed mux setting rebuilds the cluster (new connections); the
    // session opened before the reload keeps working on the old ones.
    let path = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("connections = 2", "connections = 3")).unwrap();
    let req = http::Request::post("/api/reload")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = agentmux_tests::client::read(agentmux_tests::client::send_plain(gw.admin, req).await).await;
    assert_eq!(r.status, 200);
    exchange(&mut c, 0, 5, 5).await;
    // New sessions use the new cluster.
    let (mut d, _) = ws::connect(gw.addr(), None, "/", None).await.unwrap();
    exchange(&mut d, 1, 0, 5).await;
    c.close(None).await.unwrap();
    d.close(None).await.unwrap();
}

/// The value of the first metric line that starts with `prefix` and
/// contains every one of `labels`.
fn metric(metrics: &str, prefix: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_open_gets_the_agent_a_504_and_the_session_given_up() {
    // OPEN_OK comes, but long after the route's handshake timeout.
    let (up, seen) = spawn_mux_silent(Some(Duration::from_millis(1500))).await;
    let gw = Gateway::start(&config_with(
        up,
        1,
        "",
        r#"websocket = { handshake_timeout = "500ms" }"#,
    ));
    let started = tokio::time::Instant::now();
    let (_tcp, head) = tokio::time::timeout(Duration::from_secs(10), ws::raw_client(gw.addr(), "/", ""))
        .await
        .expect("the agent's upgrade hung");
    let took = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The session is given up upstream, and the late OPEN_OK finds
    // nothing left to open.
    let frames = |id: u64| {
        let seen = seen.clone();
        move || {
            let seen = seen.lock().unwrap();
            let errors: Vec<ErrorCode> = seen
                .iter()
                .filter_map(|f| match f {
                    Frame::Error { session, code, .. } if *session == id => Some(*code),
                    _ => None,
                })
                .collect();
            async move { (errors.len() >= 2).then_some(errors) }
        }
    };
    let id = seen
        .lock()
        .unwrap()
        .iter()
        .find_map(|f| match f {
            Frame::Open { session, .. } => Some(*session),
            _ => None,
        })
        .expect("no OPEN reached the upstream");
    let errors = eventually(Duration::from_secs(5), frames(id)).await;
    assert_eq!(errors, [ErrorCode::Internal, ErrorCode::UnknownSession]);
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "agentmux_errors_total{",
            &["route=\"mux\"", "cause=\"upstream_timeout\""]
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_an_open_cannot_carry_get_431_before_any_upstream_work() {
    let (up, seen) = spawn_mux_silent(None).await;
    // The listener takes heads this large; an OPEN carries 64 KiB.
    let gw = Gateway::start(&config_with(up, 1, "max_request_header_bytes = 262144", ""));
    let big = "v".repeat(70 * 1024);
    let (_tcp, head) = tokio::time::timeout(
        Duration::from_secs(10),
        ws::raw_client(gw.addr(), "/", &format!("x-big: {big}\r\n")),
    )
    .await
    .expect("the agent's upgrade hung: the OPEN was dropped unanswered");
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert!(
        !seen.lock().unwrap().iter().any(|f| matches!(f, Frame::Open { .. })),
        "an OPEN reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_pinged_closed_and_its_upstream_session_released() {
    let up = spawn_mux_echo(Duration::ZERO).await;
    let gw = Gateway::start(&config_with(
        up.addr,
        1,
        "",
        r#"websocket = { keepalive_interval = "300ms" }"#,
    ));
    // An agent that completes its handshake, then answers nothing (a raw
    // socket: no library answers pings for it).
    let (mut silent, head) = ws::raw_client(gw.addr(), "/", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // An agent whose library answers pings while it reads.
    let (live, _) = ws::connect(gw.addr(), None, "/", None).await.unwrap();
    let (mut to_live, mut from_live) = live.split();
    let reading = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(m) = from_live.next().await {
            match m.unwrap() {
                Message::Ping(_) => pings += 1,
                Message::Text(t) => return (pings, t.to_string()),
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("the live agent was closed");
    });
    let server = up.server.clone();
    eventually(Duration::from_secs(5), || {
        let n = server.stats().sessions;
        async move { (n == 2).then_some(()) }
    })
    .await;

    let first = tokio::time::timeout(Duration::from_secs(10), ws::read_frame(&mut silent))
        .await
        .expect("the silent agent was never pinged")
        .expect("the silent agent's connection ended");
    assert_eq!((first.opcode, &first.payload[..]), (0x9, &b"agentmux"[..]));
    let (code, _) = ws::read_close(&mut silent).await.expect("no close");
    assert_eq!(code, 1001);
    // Its mux session is closed upstream; the live one stays.
    eventually(Duration::from_secs(5), || {
        let n = server.stats().sessions;
        async move { (n == 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    to_live.send(Message::text("still here")).await.unwrap();
    let (pings, echo) = reading.await.unwrap();
    assert_eq!(echo, "still here");
    assert!(pings >= 1, "the live agent was never pinged");
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "agentmux_sessions_ended_total{",
            &["end=\"keepalive_timeout\""]
        ),
        1.0,
        "{metrics}"
    );
}
