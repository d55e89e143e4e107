//! WebSocket sessions over HTTP/2 (RFC 8441) from agents, end to end: a
//! real HTTP/2 client (hyper's, over TLS with ALPN `h2` and over
//! prior-knowledge h2c) opens extended CONNECT streams, and tokio-tungstenite
//! speaks WebSocket on each; headless Chromium does the same by itself on
//! the connection that loaded the page. The sessions are the ones an
//! HTTP/1.1 upgrade opens: same routes, RFC 6455 checks, close codes,
//! session list and metrics, many per agent connection. Toward an HTTP/2
//! upstream (`protocol = "http2"`) sessions go as extended CONNECT streams
//! of shared pooled connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use agentmux_tests::browser::Browser;
use agentmux_tests::client::{connect_tls, tls_config};
use agentmux_tests::mux::spawn_mux_echo;
use agentmux_tests::upstream::{full, spawn_h2_silent, spawn_h2_ws_echo, spawn_http};
use agentmux_tests::ws::{encode, read_close};
use agentmux_tests::{Gateway, TLS, eventually};

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn websocket_config(tls: bool) -> String {
    format!(
        r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"
{}

[[routes]]
name = "sessions"
match = {{ path_prefix = "/ws" }}
mode = "websocket"
cluster = "echo"

[[routes]]
name = "api"
match = {{ path_prefix = "/" }}
cluster = "echo"

[clusters.echo]
kind = "echo"
"#,
        if tls { TLS } else { "" }
    )
}

/// An HTTP/2 connection to the gateway: over TLS (ALPN `h2`) when `ca` is
/// given, else prior-knowledge h2c. Returns whether the server's SETTINGS
/// enabled the extended CONNECT protocol.
async fn h2(addr: SocketAddr, ca: Option<&Path>) -> (SendRequest<Empty<Bytes>>, bool) {
    let io: Box<dyn agentmux_tests::ws::Io> = match ca {
        Some(ca) => Box::new(connect_tls(addr, tls_config(ca, &[b"h2"])).await),
        None => Box::new(tokio::net::TcpStream::connect(addr).await.unwrap()),
    };
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    let mut conn = Box::pin(conn);
    // The server's SETTINGS come with its first frames: one exchange,
    // the connection driven here meanwhile, makes sure they were read.
    let probe = async {
        sender.ready().await.unwrap();
        let req = Request::get("/").body(Empty::new()).unwrap();
        sender.send_request(req).await.unwrap()
    };
    tokio::select! {
        _ = probe => {}
        r = conn.as_mut() => panic!("the connection ended: {r:?}"),
    }
    let enabled = conn.is_extended_connect_protocol_enabled();
    tokio::spawn(conn);
    (sender, enabled)
}

fn extended_connect(path: &str, protocol: Option<&'static str>) -> http::request::Builder {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://agents.test{path}"));
    if let Some(p) = protocol {
        req.extensions_mut()
            .unwrap()
            .insert(hyper::ext::Protocol::from_static(p));
    }
    req
}

/// Opens a WebSocket session on a new stream of `sender`.
async fn open(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> Ws {
    let req = extended_connect(path, Some("websocket"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "an extended CONNECT opens with 200");
    assert!(resp.headers().get("sec-websocket-accept").is_none());
    let io = hyper::upgrade::on(resp).await.unwrap();
    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Client, None).await
}

async fn next_data(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

/// The transports of the gateway's live sessions, from the admin API.
async fn transports(gw: &Gateway) -> Vec<String> {
    let (status, body) = gw.admin_get("/api/sessions").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["transport"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn many_websocket_sessions_share_one_tls_h2_connection() {
    let gw = Gateway::start(&websocket_config(true));
    let ca = gw.ca();
    let (mut sender, enabled) = h2(gw.addr(), Some(&ca)).await;
    assert!(
        enabled,
        "a listener with a WebSocket route offers SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(open(&mut sender, "/ws/chat").await);
    }
    // Interleaved on the one connection, each session echoes its own.
    for round in 0..10 {
        for (i, ws) in sessions.iter_mut().enumerate() {
            ws.send(Message::text(format!("s{i} r{round} ✓"))).await.unwrap();
        }
        for (i, ws) in sessions.iter_mut().enumerate() {
            assert_eq!(next_data(ws).await, Message::text(format!("s{i} r{round} ✓")));
        }
    }
    let big: Vec<u8> = (0..300_000u32).map(|x| (x % 251) as u8).collect();
    sessions[0].send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next_data(&mut sessions[0]).await, Message::binary(big));
    assert_eq!(transports(&gw).await, vec!["h2"; 5]);
    // Closing one session leaves the others (and the connection) open.
    let mut first = sessions.remove(0);
    first.close(None).await.unwrap();
    let closed = next_data(&mut first).await;
    assert!(matches!(closed, Message::Close(_)), "{closed:?}");
    sessions[1].send(Message::text("still here")).await.unwrap();
    assert_eq!(next_data(&mut sessions[1]).await, Message::text("still here"));
    eventually(Duration::from_secs(5), || async {
        (transports(&gw).await.len() == 4).then_some(())
    })
    .await;
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("agentmux_sessions_active{route=\"sessions\"} 4"),
        "sessions over h2 are counted like any other"
    );
}

#[tokio::test]
async fn rfc6455_violations_on_an_h2_stream_get_their_close_code() {
    let gw = Gateway::start(&websocket_config(false));
    let (mut sender, enabled) = h2(gw.addr(), None).await;
    assert!(enabled, "h2c offers it too");
    let healthy = open(&mut sender, "/ws/a").await;
    let req = extended_connect("/ws/b", Some("websocket"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut raw = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    // An unmasked frame from a client: a protocol error (1002).
    raw.write_all(&encode(true, 0x1, b"not masked", None)).await.unwrap();
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), read_close(&mut raw))
        .await
        .unwrap()
        .expect("a close frame");
    assert_eq!(code, 1002);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest)).await;
    // The other session on the same connection never noticed.
    let mut healthy = healthy;
    healthy.send(Message::text("fine")).await.unwrap();
    assert_eq!(next_data(&mut healthy).await, Message::text("fine"));
}

#[tokio::test]
async fn connects_the_gateway_does_not_serve_are_refused_and_counted() {
    let gw = Gateway::start(&websocket_config(false));
    let (mut sender, _) = h2(gw.addr(), None).await;
    let send = |req: Request<Empty<Bytes>>| {
        let mut s = sender.clone();
        async move { s.send_request(req).await.unwrap().status() }
    };
    // A plain CONNECT asks for a tunnel: 405.
    let tunnel = Request::builder()
        .method(Method::CONNECT)
        .uri("agents.test:443")
        .body(Empty::new())
        .unwrap();
    assert_eq!(send(tunnel).await, StatusCode::METHOD_NOT_ALLOWED);
    // Another protocol: 501.
    let udp = extended_connect("/ws/x", Some("connect-udp"))
        .body(Empty::new())
        .unwrap();
    assert_eq!(send(udp).await, StatusCode::NOT_IMPLEMENTED);
    // A WebSocket without its version: 400; with a version other than 13: 426.
    let bare = extended_connect("/ws/x", Some("websocket")).body(Empty::new()).unwrap();
    assert_eq!(send(bare).await, StatusCode::BAD_REQUEST);
    let v8 = extended_connect("/ws/x", Some("websocket"))
        .header("sec-websocket-version", "8")
        .body(Empty::new())
        .unwrap();
    assert_eq!(send(v8).await, StatusCode::UPGRADE_REQUIRED);
    // A WebSocket to a route that relays plain HTTP: 501.
    let to_http = extended_connect("/api", Some("websocket"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    assert_eq!(send(to_http).await, StatusCode::NOT_IMPLEMENTED);
    // The connection is still good for a session.
    let mut ws = open(&mut sender, "/ws/after").await;
    ws.send(Message::text("ok")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("ok"));
    let (_, metrics) = gw.admin_get("/metrics").await;
    for cause in ["method_not_allowed", "unsupported_protocol", "bad_request"] {
        assert!(
            metrics.lines().any(|l| l.contains(&format!("cause=\"{cause}\""))),
            "{cause} is counted"
        );
    }
}

#[tokio::test]
async fn the_setting_is_offered_only_where_websockets_are_served() {
    let http_only = r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"

[[routes]]
name = "api"
match = { path_prefix = "/" }
cluster = "echo"

[clusters.echo]
kind = "echo"
"#;
    let gw = Gateway::start(http_only);
    let (_sender, enabled) = h2(gw.addr(), None).await;
    assert!(!enabled, "no route takes WebSocket sessions");
    let off = websocket_config(false).replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nh2_websockets = false\n",
    );
    let gw = Gateway::start(&off);
    let (_sender, enabled) = h2(gw.addr(), None).await;
    assert!(!enabled, "h2_websockets = false");
}

#[tokio::test]
async fn mux_sessions_ride_h2_streams_too() {
    let echo = spawn_mux_echo(Duration::ZERO).await;
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"

[[routes]]
name = "mux"
mode = "mux"
cluster = "up"

[clusters.up]
endpoints = ["{}"]
[clusters.up.mux]
connections = 1
"#,
        echo.addr
    );
    let gw = Gateway::start(&config);
    let (mut sender, enabled) = h2(gw.addr(), None).await;
    assert!(enabled);
    let mut a = open(&mut sender, "/agent/a").await;
    let mut b = open(&mut sender, "/agent/b").await;
    for i in 0..20 {
        a.send(Message::text(format!("a{i}"))).await.unwrap();
        b.send(Message::binary(vec![i as u8; 1000 * i])).await.unwrap();
        assert_eq!(next_data(&mut a).await, Message::text(format!("a{i}")));
        assert_eq!(next_data(&mut b).await, Message::binary(vec![i as u8; 1000 * i]));
    }
    assert_eq!(transports(&gw).await, vec!["h2"; 2]);
    a.close(None).await.unwrap();
    b.send(Message::text("b lives on")).await.unwrap();
    assert_eq!(next_data(&mut b).await, Message::text("b lives on"));
}

/// A browser's own WebSocket: Chromium loads a page from the gateway over
/// TLS (ALPN `h2`), sees `SETTINGS_ENABLE_CONNECT_PROTOCOL` on that
/// connection and opens `wss://` to the same origin as a stream of it.
#[tokio::test]
async fn chromium_opens_wss_as_an_h2_stream() {
    const PAGE: &str = r#"<!doctype html><title>agent</title><script>
window.result = "pending";
const ws = new WebSocket("wss://" + location.host + "/ws/browser");
ws.onopen = () => ws.send("from chromium");
ws.onmessage = (e) => { window.result = e.data; };
ws.onerror = () => { window.result = "error"; };
</script>"#;
    let site = spawn_http(|_req| async {
        let mut r = http::Response::new(full(PAGE));
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html"));
        r
    })
    .await;
    let config = websocket_config(true).replace(
        "[clusters.echo]",
        &format!("[clusters.site]\nendpoints = [\"{site}\"]\n\n[clusters.echo]"),
    );
    // The page comes from the site; /ws stays on the echo.
    let config = config.replacen(
        "name = \"api\"\nmatch = { path_prefix = \"/\" }\ncluster = \"echo\"",
        "name = \"api\"\nmatch = { path_prefix = \"/\" }\ncluster = \"site\"",
        1,
    );
    let gw = Gateway::start(&config);
    let url = format!("https://127.0.0.1:{}/", gw.addr().port());
    let Some(mut browser) = Browser::open_with(&url, &["--ignore-certificate-errors"]).await else {
        return;
    };
    let mut result = serde_json::Value::Null;
    for _ in 0..200 {
        result = browser.eval("window.result").await;
        if result != serde_json::json!("pending") && !result.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(result, serde_json::json!("from chromium"), "the echo came back");
    assert_eq!(
        transports(&gw).await,
        vec!["h2"],
        "Chromium carried its WebSocket on the page's HTTP/2 connection"
    );
}

fn h2_upstream_config(upstream: SocketAddr) -> String {
    format!(
        r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"

[[routes]]
name = "sessions"
match = {{ path_prefix = "/ws" }}
mode = "websocket"
cluster = "up"

[clusters.up]
endpoints = ["{upstream}"]
protocol = "http2"
[clusters.up.pool]
min_connections = 1
max_connections = 8
"#
    )
}

/// RFC 8441 toward the upstream: HTTP/1.1 agents' sessions become extended
/// CONNECT streams of a few shared HTTP/2 connections; past the upstream's
/// MAX_CONCURRENT_STREAMS (4 here) the pool opens another connection.
#[tokio::test]
async fn sessions_go_upstream_as_streams_of_shared_h2_connections() {
    let (upstream, connections) = spawn_h2_ws_echo(4).await;
    let gw = Gateway::start(&h2_upstream_config(upstream));
    let mut agents = Vec::new();
    for i in 0..10 {
        let (ws, resp) = agentmux_tests::ws::connect(gw.addr(), None, &format!("/ws/{i}"), Some("agent.v1"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap()),
            Some("agent.v1"),
            "the upstream's choice comes back"
        );
        agents.push(ws);
    }
    for round in 0..5 {
        for (i, ws) in agents.iter_mut().enumerate() {
            ws.send(Message::text(format!("{i}/{round}"))).await.unwrap();
        }
        for (i, ws) in agents.iter_mut().enumerate() {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(m, Message::text(format!("{i}/{round}")));
        }
    }
    let opened = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (3..10).contains(&opened),
        "10 sessions at 4 streams per connection took {opened} upstream connections"
    );
    for mut ws in agents {
        ws.close(None).await.unwrap();
    }
}

/// An HTTP/2 upstream that does not offer extended CONNECT gets no stream:
/// the agent hears 502, and the failure is counted.
#[tokio::test]
async fn an_h2_upstream_without_the_setting_is_a_502() {
    let upstream = spawn_http(|_req| async { http::Response::new(full("no websockets here")) }).await;
    let gw = Gateway::start(&h2_upstream_config(upstream));
    let result = agentmux_tests::ws::connect(gw.addr(), None, "/ws/x", None).await;
    let Err(err) = result else {
        panic!("no session without the upstream's setting");
    };
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 502),
        other => panic!("expected a 502, got {other:?}"),
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("route=\"sessions\"") && l.contains("cause=\"upstream_protocol\"")),
        "counted"
    );
}

/// A WebSocket session on an HTTP/2 stream keeps its agent connection
/// busy: the listener's idle timeout (1 s here) does not send GOAWAY under
/// it, so the connection still takes new sessions after the timeout.
#[tokio::test]
async fn live_h2_sessions_keep_their_connection_from_the_idle_timeout() {
    let config = websocket_config(false).replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nidle_timeout = \"1s\"\n",
    );
    let gw = Gateway::start(&config);
    let (mut sender, _) = h2(gw.addr(), None).await;
    let mut first = open(&mut sender, "/ws/long").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.send(Message::text("still open")).await.unwrap();
    assert_eq!(next_data(&mut first).await, Message::text("still open"));
    // No GOAWAY came: the same connection opens another session.
    let mut second = open(&mut sender, "/ws/later").await;
    second.send(Message::text("second")).await.unwrap();
    assert_eq!(next_data(&mut second).await, Message::text("second"));
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("agentmux_listener_connections_cut_total") && l.contains("reason=\"idle\"")),
        "no connection was cut as idle"
    );
}

/// An HTTP/2 upstream that takes the extended CONNECT and never answers:
/// the agent gets 504 at the route's handshake timeout, counted, and the
/// gateway goes on serving.
#[tokio::test]
async fn a_stalled_h2_upstream_is_a_504_at_the_handshake_timeout() {
    let upstream = spawn_h2_silent().await;
    let config = h2_upstream_config(upstream).replace(
        "cluster = \"up\"\n",
        "cluster = \"up\"\nwebsocket = { handshake_timeout = \"1s\" }\n",
    );
    let gw = Gateway::start(&config);
    let result = agentmux_tests::ws::connect(gw.addr(), None, "/ws/x", None).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(resp)) = result else {
        panic!("a stalled upstream opens no session");
    };
    // Only the handshake timeout answers a silent upstream: 504.
    assert_eq!(resp.status(), 504);
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("route=\"sessions\"") && l.contains("cause=\"upstream_timeout\"")),
        "counted"
    );
    let (status, _) = gw.admin_get("/healthz").await;
    assert_eq!(status, 200);
}
