//! Several gateway processes sharing state through a real `redis-server`
//! (started here on a free port): a global rate limit, session affinity
//! across instances, reload propagation, circuit opens, Redis dying under
//! load, and mux sessions resumed on another instance when theirs dies.
//! Every test name contains `redis`, so `cargo test redis` runs them all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use agentmux_tests::client::{get_plain, read, send_plain};
use agentmux_tests::redis::Redis;
use agentmux_tests::upstream::{full, spawn_http};
use agentmux_tests::{Gateway, TempDir, eventually, ws};

/// The `[admin]` block every instance uses (ports picked by the OS), so
/// config files can be rewritten with exactly the text they started with.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn cluster_state(redis: &Redis, extra: &str) -> String {
    format!(
        "[cluster_state]\nredis = \"{}\"\nheartbeat_interval = \"200ms\"\n{extra}",
        redis.url()
    )
}

/// A metric's value on an instance (the first sample whose line starts with
/// `name`), if exported.
async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let (_, text) = gw.admin_get("/metrics").await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_connected(gws: &[Gateway], want: f64) {
    for gw in gws {
        eventually(Duration::from_secs(15), || async {
            (metric(gw, "agentmux_cluster_state_connected").await == Some(want)).then_some(())
        })
        .await;
    }
}

/// Waits until `n` instances listen on both pub/sub channels.
async fn wait_subscribed(redis: &Redis, n: usize) {
    eventually(Duration::from_secs(15), || async {
        let reply = redis.command(&["PUBSUB", "NUMSUB", "agentmux:config", "agentmux:circuits"]);
        let counts: Vec<usize> = reply
            .lines()
            .skip(1)
            .step_by(2)
            .filter_map(|c| c.parse().ok())
            .collect();
        (counts.len() == 2 && counts.iter().all(|&c| c == n)).then_some(())
    })
    .await;
}

async fn reload(gw: &Gateway) -> (u16, serde_json::Value) {
    let req = http::Request::post("/api/reload")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = read(send_plain(gw.admin, req).await).await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_gateways_share_a_global_limit_within_5_percent() {
    let Some(redis) = Redis::start() else { return };
    let (rate, burst) = (50.0, 5.0);
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "r"
cluster = "up"
filters = ["shared"]
[clusters.up]
kind = "echo"
[filters.shared]
kind = "rate-limit"
key = "header:x-agent"
scope = "global"
requests_per_second = {rate}
burst = {burst}
{}"#,
        cluster_state(&redis, "expected_instances = 3\n")
    );
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start(&config)).collect();
    wait_connected(&gws, 1.0).await;
    for gw in &gws {
        eventually(Duration::from_secs(10), || async {
            (metric(gw, "agentmux_cluster_state_instances").await == Some(3.0)).then_some(())
        })
        .await;
    }

    // Each instance is offered 40 req/s for 4 s (120 req/s in all) from one
    // agent; together they may admit `rate` per second plus the burst.
    let admitted = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let window = Duration::from_secs(4);
    let mut workers = Vec::new();
    for gw in &gws {
        let (addr, admitted, limited) = (gw.addr(), admitted.clone(), limited.clone());
        workers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while started.elapsed() < window {
                tick.tick().await;
                match get_plain(addr, "/", &[("x-agent", "agent-7")]).await.status {
                    200 => admitted.fetch_add(1, Ordering::Relaxed),
                    429 => limited.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected status {other}"),
                };
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, no) = (admitted.load(Ordering::Relaxed), limited.load(Ordering::Relaxed));
    let expected = rate * secs + burst;
    let error = (ok as f64 - expected) / expected;
    eprintln!(
        "global limit: admitted {ok} and refused {no} of {} in {secs:.2}s across 3 instances; \
         expected {expected:.0} (R = {rate}/s, burst {burst}); error {:+.1}%",
        ok + no,
        error * 100.0
    );
    assert!(
        no > ok,
        "the offered load must exceed the limit ({ok} admitted, {no} refused)"
    );
    assert!(error.abs() <= 0.05, "admitted {ok}, expected {expected:.0} ± 5%");
    // Requests were decided on leases, not on the local-share fallback.
    for gw in &gws {
        let (_, text) = gw.admin_get("/metrics").await;
        let fallback = text
            .lines()
            .find(|l| l.contains("event=\"rate_limit_fallback\""))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("0");
        assert_eq!(fallback, "0", "fallback decisions on a healthy Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_session_affinity_holds_across_instances() {
    let Some(redis) = Redis::start() else { return };
    let mut upstreams = Vec::new();
    for _ in 0..3 {
        upstreams.push(ws::spawn_upstream(ws::Script::Echo).await);
    }
    let endpoints: Vec<String> = upstreams.iter().map(|(a, _)| format!("\"{a}\"")).collect();
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "sessions"
mode = "websocket"
cluster = "agents"
[clusters.agents]
endpoints = [{}]
strategy = "p2c-ewma"
[clusters.agents.pool]
min_connections = 0
{}"#,
        endpoints.join(", "),
        cluster_state(&redis, "")
    );
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start(&config)).collect();
    wait_connected(&gws, 1.0).await;

    // Which upstream served the upgrades for `path`.
    let served_by = |path: &str| -> Vec<usize> {
        let line = format!("GET {path} ");
        upstreams
            .iter()
            .enumerate()
            .flat_map(|(i, (_, log))| {
                let n = log
                    .lock()
                    .unwrap()
                    .heads
                    .iter()
                    .filter(|h| h.starts_with(&line))
                    .count();
                std::iter::repeat_n(i, n)
            })
            .collect()
    };
    let sessions = 6;
    for s in 0..sessions {
        let path = format!("/s{s}");
        let header = format!("x-session-id: agent-session-{s}\r\n");
        // First connection through instance 0, then reconnects through
        // instances 1 and 2 (after the registry has the entry).
        for (round, gw) in gws.iter().enumerate() {
            let (tcp, head) = ws::raw_client(gw.addr(), &path, &header).await;
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            drop(tcp);
            let want = round + 1;
            eventually(Duration::from_secs(5), || async {
                (served_by(&path).len() == want).then_some(())
            })
            .await;
            if round == 0 {
                eventually(Duration::from_secs(5), || async {
                    let keys = redis.command(&["KEYS", "agentmux:session:*"]);
                    (keys.lines().count() > s).then_some(())
                })
                .await;
            }
        }
        let by = served_by(&path);
        assert!(
            by.iter().all(|&i| i == by[0]),
            "session {s} moved between endpoints: {by:?}"
        );
    }
    // The entry names the instance, route and endpoint.
    let key = redis.command(&["KEYS", "agentmux:session:*"]);
    let key = key.lines().next().unwrap();
    let entry = redis.command(&["HGETALL", key]);
    assert!(entry.contains("sessions"), "{entry}");
    assert!(entry.contains("acked_seq"), "{entry}");
    let ttl: i64 = redis.command(&["PTTL", key]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "entries expire (ttl {ttl} ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reload_on_one_instance_reaches_the_others() {
    let Some(redis) = Redis::start() else { return };
    let body = |routes: &str| {
        format!(
            "{ADMIN}\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n{routes}\n[clusters.up]\nkind = \"echo\"\n{}",
            cluster_state(&redis, "")
        )
    };
    let one = body("[[routes]]\nname = \"a\"\ncluster = \"up\"\n");
    let two = body(
        "[[routes]]\nname = \"a\"\ncluster = \"up\"\n[[routes]]\nname = \"b\"\nmatch = { path_prefix = \"/b\" }\ncluster = \"up\"\n",
    );
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start_in(TempDir::new("gw"), &one)).collect();
    wait_connected(&gws, 1.0).await;
    wait_subscribed(&redis, 3).await;
    // The new file reaches every instance (as a ConfigMap update would);
    // only instance 0 is told to reload.
    for gw in &gws {
        std::fs::write(gw.dir.path().join("gateway.toml"), &two).unwrap();
    }
    let (status, json) = reload(&gws[0]).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(route_names(&gws[0]).await, ["a", "b"]);
    for gw in &gws[1..] {
        eventually(Duration::from_secs(10), || async {
            (route_names(gw).await == ["a", "b"]).then_some(())
        })
        .await;
    }
    // The cluster's version is the file's hash.
    let version = redis.command(&["GET", "agentmux:config:version"]);
    assert_eq!(version.len(), 64, "{version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_circuit_opens_are_shared() {
    let Some(redis) = Redis::start() else { return };
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let up = spawn_http(move |_req| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = Response::new(full("down"));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    })
    .await;
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "r"
cluster = "up"
filters = ["breaker"]
[clusters.up]
endpoints = ["{up}"]
[filters.breaker]
kind = "circuit-breaker"
consecutive_failures = 3
open_duration = "30s"
{}"#,
        cluster_state(&redis, "")
    );
    let gws: Vec<Gateway> = (0..2).map(|_| Gateway::start(&config)).collect();
    wait_connected(&gws, 1.0).await;
    wait_subscribed(&redis, 2).await;
    // The peer's circuits exist once it has served a request.
    assert_eq!(get_plain(gws[1].addr(), "/", &[]).await.status, 503);
    for _ in 0..3 {
        get_plain(gws[0].addr(), "/", &[]).await;
    }
    // Instance 0's circuit opened on its own failures; instance 1 opens
    // the same circuit without failing again.
    let before = hits.load(Ordering::SeqCst);
    eventually(Duration::from_secs(5), || async {
        let r = get_plain(gws[1].addr(), "/", &[]).await;
        (r.status == 503 && r.text().contains("circuit_open")).then_some(())
    })
    .await;
    assert!(
        hits.load(Ordering::SeqCst) <= before + 1,
        "instance 1 kept hitting the upstream"
    );
    let (_, circuits) = gws[1].admin_get("/api/circuits").await;
    assert!(circuits.contains("\"open\""), "{circuits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_traffic_continues_and_recovers() {
    let Some(mut redis) = Redis::start() else { return };
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "r"
cluster = "up"
filters = ["shared"]
[clusters.up]
kind = "echo"
[filters.shared]
kind = "rate-limit"
key = "header:x-agent"
scope = "global"
requests_per_second = 400
burst = 40
{}"#,
        cluster_state(&redis, "expected_instances = 2\n")
    );
    let gws: Vec<Gateway> = (0..2).map(|_| Gateway::start(&config)).collect();
    wait_connected(&gws, 1.0).await;

    // 2 × 50 req/s, well under the limit and under each instance's local
    // share (200/s): every request should pass, Redis or not.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let slowest = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for gw in &gws {
        let (addr, stop, counts, slowest) = (gw.addr(), stop.clone(), counts.clone(), slowest.clone());
        workers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                tick.tick().await;
                let t = Instant::now();
                let status = get_plain(addr, "/", &[("x-agent", "agent-1")]).await.status;
                slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                let i = match status {
                    200 => 0,
                    429 => 1,
                    _ => 2,
                };
                counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    wait_connected(&gws, 0.0).await;
    let during = counts[0].load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        counts[0].load(Ordering::Relaxed) > during + 50,
        "traffic stalled without Redis"
    );
    redis.restart();
    wait_connected(&gws, 1.0).await;
    // Leases again: the limiter's bucket reappears in the new Redis.
    eventually(Duration::from_secs(5), || async {
        (!redis.command(&["KEYS", "agentmux:rl:*"]).is_empty()).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, limited, failed) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
    );
    let slowest = slowest.load(Ordering::Relaxed);
    eprintln!("redis outage: {ok} ok, {limited} limited, {failed} failed; slowest request {slowest} ms");
    assert_eq!(failed, 0);
    assert!(limited * 100 <= ok, "{limited} of {ok} limited under the limit");
    assert!(slowest < 1000, "a request waited {slowest} ms");
    for gw in &gws {
        let (_, text) = gw.admin_get("/metrics").await;
        assert!(text.contains("event=\"rate_limit_fallback\""), "no fallback recorded");
    }
}

async fn route_names(gw: &Gateway) -> Vec<String> {
    let req = http::Request::get("/api/routes").body(Full::new(Bytes::new())).unwrap();
    let r = read(send_plain(gw.admin, req).await).await;
    let mut names: Vec<String> = r.json()["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reload_during_an_outage_reaches_the_others_when_it_returns() {
    let Some(mut redis) = Redis::start() else { return };
    let body = |routes: &str| {
        format!(
            "{ADMIN}\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n{routes}\n[clusters.up]\nkind = \"echo\"\n{}",
            cluster_state(&redis, "")
        )
    };
    let one = body("[[routes]]\nname = \"a\"\ncluster = \"up\"\n");
    let two = body(
        "[[routes]]\nname = \"a\"\ncluster = \"up\"\n[[routes]]\nname = \"b\"\nmatch = { path_prefix = \"/b\" }\ncluster = \"up\"\n",
    );
    let gws: Vec<Gateway> = (0..2).map(|_| Gateway::start_in(TempDir::new("gw"), &one)).collect();
    wait_connected(&gws, 1.0).await;
    wait_subscribed(&redis, 2).await;

    // Redis goes away; instance 0 reloads the new file meanwhile.
    redis.kill();
    wait_connected(&gws, 0.0).await;
    for gw in &gws {
        std::fs::write(gw.dir.path().join("gateway.toml"), &two).unwrap();
    }
    let (status, json) = reload(&gws[0]).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(route_names(&gws[0]).await, ["a", "b"]);
    assert_eq!(route_names(&gws[1]).await, ["a"], "nothing could reach instance 1");

    // Redis returns: the reload is announced then, and instance 1 follows.
    redis.restart();
    wait_connected(&gws, 1.0).await;
    eventually(Duration::from_secs(20), || async {
        (route_names(&gws[1]).await == ["a", "b"]).then_some(())
    })
    .await;
}

/// One mux route `mux` over cluster `up` (the upstream at `up`), with
/// `route` lines added to the route and `more` tables after the cluster.
fn mux_config(up: std::net::SocketAddr, route: &str, more: &str, cluster_state: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nname = \"mux\"\nmode = \"mux\"\ncluster = \"up\"\n\
         {route}[clusters.up]\nendpoints = [\"{up}\"]\n{more}{cluster_state}"
    )
}

/// A mux agent's WebSocket (plaintext, so the test sees the `101` headers).
type MuxAgent = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;
type Upgrade = tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>;

/// Messages an agent keeps in flight: more than one, so that the gateway's
/// death catches agent messages and echoes on their way in both directions.
const WINDOW: usize = 4;

/// Opens an agent session on `addr` with extra request headers; `Err` holds
/// a refused upgrade (`Error::Http`) as tungstenite reports it.
async fn mux_agent(
    addr: std::net::SocketAddr,
    headers: &[(&'static str, String)],
) -> Result<(MuxAgent, Upgrade), tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://localhost:{}/", addr.port()).into_client_request()?;
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("upgrade not answered within 30 s")
}

fn upgrade_header(r: &Upgrade, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("header value is not visible ASCII").to_owned())
}

/// One agent's side of its session, across all its connections: the next
/// message index to send (every index below it was sent at least once) and
/// every echo received, in order.
#[derive(Default)]
struct AgentStream {
    next: usize,
    got: Vec<String>,
    /// The close code the gateway ended the stream with, if it sent one.
    close_code: Option<u16>,
}

/// Keeps up to [`WINDOW`] messages `s{s}-m{k}` in flight on `c` until
/// `until` echoes are in (`true`) or the connection breaks (`false`). Every
/// echo must be the next one expected, so a gap, a duplicate or a reorder
/// fails here, at the message where it happens. `warm = (counter, at)`:
/// `counter` goes up once, when `at` echoes are in.
async fn pump(
    c: &mut MuxAgent,
    s: usize,
    st: &mut AgentStream,
    until: usize,
    warm: Option<(&AtomicU64, usize)>,
) -> bool {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    loop {
        if st.got.len() >= until {
            return true;
        }
        while st.next < until && st.next - st.got.len() < WINDOW {
            // Counted as sent before the attempt: a send that fails may
            // still have reached the gateway, and the upstream's count
            // (`agentmux-upstream-received`) must never exceed ours.
            let k = st.next;
            st.next += 1;
            let sent = tokio::time::timeout(Duration::from_secs(30), c.send(Message::text(format!("s{s}-m{k}"))))
                .await
                .unwrap_or_else(|_| panic!("agent {s}: send of m{k} blocked for 30 s"));
            if sent.is_err() {
                return false;
            }
        }
        let next = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "agent {s}: no echo within 30 s ({} received, {} sent)",
                    st.got.len(),
                    st.next
                )
            });
        match next {
            Some(Ok(Message::Text(t))) => {
                let want = format!("s{s}-m{}", st.got.len());
                assert_eq!(t.as_str(), want, "agent {s}: echo out of order (sent {})", st.next);
                st.got.push(want);
                if let Some((counter, at)) = warm
                    && st.got.len() == at
                {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                st.close_code = frame.map(|f| u16::from(f.code));
                return false;
            }
            Some(Ok(other)) => panic!("agent {s}: unexpected {other:?}"),
            Some(Err(_)) | None => return false,
        }
    }
}

/// A token of the same shape as `real` (length, character classes) that no
/// session has: its last letter or digit is changed, so a gateway that
/// checks the token's format still has to look it up to refuse it.
fn forged_token(real: &str) -> String {
    let mut chars: Vec<char> = real.chars().collect();
    if let Some(c) = chars.iter_mut().rev().find(|c| c.is_ascii_alphanumeric()) {
        *c = match *c {
            '2' => '3',
            '0'..='9' => '2',
            'a' => 'b',
            'a'..='z' => 'a',
            'A' => 'B',
            _ => 'A',
        };
    }
    chars.into_iter().collect()
}

/// A raw upgrade to `addr` with `extra` header lines; the response head.
async fn raw_upgrade_head(addr: std::net::SocketAddr, extra: &str) -> String {
    let (_tcp, head) = tokio::time::timeout(Duration::from_secs(30), ws::raw_client(addr, "/", extra))
        .await
        .expect("upgrade not answered within 30 s");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mux_sessions_resume_on_another_instance_when_their_gateway_dies() {
    mux_sessions_move_to_b_when_a_gets("KILL").await;
}

/// A drained gateway (SIGTERM: a restart, an upgrade) leaves its mux
/// sessions intact upstream and tells its agents 1012; they carry on on
/// another instance exactly as after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mux_sessions_resume_on_another_instance_when_their_gateway_restarts() {
    mux_sessions_move_to_b_when_a_gets("TERM").await;
}

/// Agents stream through gateway A; A gets `signal`; every agent takes its
/// session over on B and must see every echo exactly once, in order.
async fn mux_sessions_move_to_b_when_a_gets(signal: &str) {
    let Some(redis) = Redis::start() else { return };
    const AGENTS: usize = 20;
    // Echoes each agent has before the kill, at least; and messages each
    // sends after its resume beyond all it had sent before, so every
    // session has to carry on for real on the second instance.
    const WARMUP: usize = 30;
    const AFTER: usize = 30;
    // The echo delay keeps messages queued at the upstream (received, not
    // yet echoed) all the time, so the kill always finds some in flight.
    let up = agentmux_tests::mux::spawn_mux_echo(Duration::from_millis(10)).await;
    let config = mux_config(
        up.addr,
        "",
        "[clusters.up.pool]\nmin_connections = 1\nmax_connections = 16\n\
         [clusters.up.mux]\nconnections = 2\nresume_timeout = \"20s\"\n",
        &cluster_state(&redis, ""),
    );
    let mut gws: Vec<Gateway> = (0..2).map(|_| Gateway::start(&config)).collect();
    wait_connected(&gws, 1.0).await;
    let (a, b) = (gws[0].addr(), gws[1].addr());

    // Every session on A gets a distinct token in its 101.
    let mut agents = Vec::new();
    let mut tokens = Vec::new();
    for s in 0..AGENTS {
        let (c, resp) = mux_agent(a, &[]).await.unwrap();
        let token = upgrade_header(&resp, "agentmux-session")
            .unwrap_or_else(|| panic!("agent {s}: no agentmux-session in the 101: {resp:?}"));
        assert!(
            !token.is_empty() && token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "agent {s}: token {token:?} is not visible ASCII"
        );
        assert!(!tokens.contains(&token), "agent {s}: token {token} given twice");
        tokens.push(token.clone());
        agents.push((c, token));
    }

    let expect_cut = signal == "KILL";
    let warm = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    // Agents wait for this after losing A, so the failure answers below are
    // checked on B while every session is still waiting to be resumed.
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (s, (mut c, token)) in agents.into_iter().enumerate() {
        let (warm, lost, mut go_rx) = (warm.clone(), lost.clone(), go_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut st = AgentStream::default();
            // Streams on A until A dies (no upper bound: traffic flows at
            // the kill, whenever it comes).
            let ended = pump(&mut c, s, &mut st, usize::MAX, Some((&warm, WARMUP))).await;
            assert!(!ended, "agent {s}: stream on A ended by itself");
            // Killed: the connection just breaks. Drained: A says 1012
            // (service restart) and leaves the session to be taken over.
            let want_close = (!expect_cut).then_some(1012);
            assert_eq!(st.close_code, want_close, "agent {s}: how A ended the stream");
            drop(c);
            let (received, sent) = (st.got.len(), st.next);
            lost.fetch_add(1, Ordering::SeqCst);
            go_rx.wait_for(|&go| go).await.unwrap();

            let resumed = mux_agent(
                b,
                &[
                    ("agentmux-session", token.clone()),
                    ("agentmux-received", received.to_string()),
                ],
            )
            .await;
            let (mut c, resp) = match resumed {
                Ok(ok) => ok,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => panic!(
                    "agent {s}: resume on B refused: {} {:?}",
                    r.status(),
                    r.body().as_deref().map(String::from_utf8_lossy)
                ),
                Err(e) => panic!("agent {s}: resume on B failed: {e}"),
            };
            assert_eq!(
                upgrade_header(&resp, "agentmux-session").as_deref(),
                Some(token.as_str()),
                "agent {s}: the resume's 101 names another session"
            );
            let upstream_received: usize = upgrade_header(&resp, "agentmux-upstream-received")
                .unwrap_or_else(|| panic!("agent {s}: no agentmux-upstream-received in {resp:?}"))
                .parse()
                .unwrap_or_else(|e| panic!("agent {s}: agentmux-upstream-received: {e}"));
            // The echo upstream answered every message it got, and cannot
            // have got one that was never sent.
            assert!(
                received <= upstream_received && upstream_received <= sent,
                "agent {s}: upstream received {upstream_received}, but the agent sent {sent} and got {received} echoes"
            );
            // Resend from the upstream's count, then carry on.
            st.next = upstream_received;
            let target = sent + AFTER;
            assert!(
                pump(&mut c, s, &mut st, target, None).await,
                "agent {s}: connection to B broke"
            );

            // Nothing more may come (a late duplicate) before the close.
            use futures_util::StreamExt;
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close(None)).await;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), c.next())
                    .await
                    .unwrap_or_else(|_| panic!("agent {s}: close not answered within 10 s"))
                {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                        panic!("agent {s}: extra message {t} after all {target} echoes")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            (s, received, sent, upstream_received, target, st.got)
        }));
    }

    eventually(Duration::from_secs(60), || async {
        assert!(!tasks.iter().any(|t| t.is_finished()), "an agent ended before the kill");
        (warm.load(Ordering::SeqCst) == AGENTS as u64).then_some(())
    })
    .await;
    let mut gw_a = gws.remove(0);
    gw_a.signal(signal);
    let gw_a = tokio::task::spawn_blocking(move || {
        assert!(gw_a.wait(Duration::from_secs(20)).is_some(), "A outlived its signal");
        gw_a
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(30), || async {
        (lost.load(Ordering::SeqCst) == AGENTS as u64).then_some(())
    })
    .await;

    // Refusals on B. A malformed `agentmux-received` is refused for a real,
    // resumable session, and the refusal must not spend it: agent 0 still
    // resumes below.
    let real = &tokens[0];
    let head = raw_upgrade_head(b, &format!("agentmux-session: {real}\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "no agentmux-received: {head}");
    let head = raw_upgrade_head(b, &format!("agentmux-session: {real}\r\nagentmux-received: many\r\n")).await;
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "agentmux-received not a number: {head}"
    );
    let forged = forged_token(real);
    assert!(!tokens.contains(&forged), "forged token {forged} is real");
    for unknown in [forged.as_str(), "no-such-session"] {
        let head = raw_upgrade_head(b, &format!("agentmux-session: {unknown}\r\nagentmux-received: 0\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 404"), "unknown token {unknown}: {head}");
    }
    go_tx.send(true).unwrap();

    let mut in_flight = 0;
    let mut replayed = 0;
    let mut resent = 0;
    for t in tasks {
        let (s, received, sent, upstream_received, target, got) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("agent not done within 120 s")
            .unwrap();
        let want: Vec<String> = (0..target).map(|k| format!("s{s}-m{k}")).collect();
        assert_eq!(got, want, "agent {s}: echoes across both instances");
        in_flight += sent - received;
        replayed += upstream_received - received;
        resent += sent - upstream_received;
    }
    eprintln!(
        "gateway killed with {in_flight} messages in flight: {replayed} echoes owed by the upstream, \
         {resent} agent messages resent"
    );
    assert!(
        in_flight > 0,
        "the kill found no message in flight, so resuming in-flight traffic went untested"
    );
    // The registry holds one entry per session, all now B's (A wrote each
    // first), naming its mux session and (written as each session ended)
    // how far the upstream acknowledged it.
    eventually(Duration::from_secs(10), || async {
        let keys = redis.command(&["KEYS", "agentmux:session:*"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        assert_eq!(keys.len(), AGENTS, "one registry entry per session");
        let mut owners = std::collections::HashSet::new();
        let ready = keys.iter().all(|key| {
            let entry = redis.command(&["HGETALL", key]);
            let fields: Vec<&str> = entry.lines().collect();
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .map(|kv| kv.get(1).copied().unwrap_or(""))
            };
            owners.insert(field("instance").unwrap_or("").to_owned());
            assert!(field("mux").is_some_and(|m| m.parse::<u64>().is_ok()), "{entry}");
            field("acked_seq").and_then(|a| a.parse::<u64>().ok()).unwrap_or(0) > 0
        });
        assert_eq!(owners.len(), 1, "entries of two instances: {owners:?}");
        ready.then_some(())
    })
    .await;
    drop(gw_a);
}

/// On an authenticated route a takeover token is bound to the identity
/// that opened the session: another key gets 403 even with the token. The
/// owner itself, while its session is still live here, gets 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mux_takeover_is_bound_to_the_agent_identity() {
    let Some(redis) = Redis::start() else { return };
    let hash = |key: &str| {
        let out = std::process::Command::new(agentmux_tests::gateway_bin())
            .args(["hash-key", key])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let up = agentmux_tests::mux::spawn_mux_echo(Duration::ZERO).await;
    let keys = format!(
        "[filters.keys]\nkind = \"auth\"\napi_keys = {{ alice = \"{}\", bob = \"{}\" }}\n",
        hash("sk-alice-0123456789"),
        hash("sk-bob-0123456789"),
    );
    let gw = Gateway::start(&mux_config(
        up.addr,
        "filters = [\"keys\"]\n",
        &keys,
        &cluster_state(&redis, ""),
    ));
    wait_connected(std::slice::from_ref(&gw), 1.0).await;
    let (_alice, head) = ws::raw_client(gw.addr(), "/", "x-api-key: sk-alice-0123456789\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let token = head
        .lines()
        .find_map(|l| l.strip_prefix("agentmux-session: "))
        .unwrap_or_else(|| panic!("no token: {head}"))
        .trim()
        .to_owned();
    // Registered in the background once the agent is connected.
    eventually(Duration::from_secs(10), || async {
        (!redis.command(&["KEYS", "agentmux:session:*"]).trim().is_empty()).then_some(())
    })
    .await;
    let take = |key: &'static str| {
        let extra = format!("x-api-key: {key}\r\nagentmux-session: {token}\r\nagentmux-received: 0\r\n");
        let addr = gw.addr();
        async move { ws::raw_client(addr, "/", &extra).await.1 }
    };
    let head = take("sk-bob-0123456789").await;
    assert!(head.starts_with("HTTP/1.1 403"), "another identity: {head}");
    let head = take("sk-alice-0123456789").await;
    assert!(
        head.starts_with("HTTP/1.1 409"),
        "the owner, session still live: {head}"
    );
}
