//! The edge against a hostile client, end to end: each finding of the
//! edge-hardening issue, tried the way an attacker would try it against
//! the real binary, with the defaults on.
//!
//! The config protects an `/admin` prefix and an `api.example` host with
//! an auth filter, next to an open catch-all route; every bypass must land
//! on the protected route (401) or be refused (400), and what reaches the
//! upstream is what the route matched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use agentmux_tests::client::{connect_tls, tls_config};
use agentmux_tests::{Gateway, TLS, eventually, ws};

const KEY: &str = "sk-edge-0123456789abcdef";

fn key_hash() -> String {
    let out = std::process::Command::new(agentmux_tests::gateway_bin())
        .args(["hash-key", KEY])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Two listeners on the same routes: `agents` with the defaults, `raw`
/// with normalization switched off (the documented escape hatch).
fn protected_config(listener_extra: &str, route_extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"
request_header_timeout = "1s"
{listener_extra}

[[listeners]]
name = "raw"
listen = "127.0.0.1:0"
normalize_path = false

[[routes]]
name = "admin"
match = {{ path_prefix = "/admin" }}
cluster = "echo"
filters = ["keys"]

[[routes]]
name = "api"
match = {{ host = "api.example" }}
cluster = "echo"
filters = ["keys"]

[[routes]]
name = "passthrough"
match = {{ path_prefix = "/raw" }}
cluster = "echo"
forward_path = "raw"

[[routes]]
name = "open"
cluster = "echo"
{route_extra}

[clusters.echo]
kind = "echo"

[filters.keys]
kind = "auth"
api_keys = {{ ci = "{}" }}
"#,
        key_hash()
    )
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    body: String,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Reads one response (head and a `content-length` body) or what there is
/// before the connection closes.
async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> Option<Raw> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(20), r.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(Raw {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Sends raw bytes on a fresh connection and reads the answer.
async fn raw(addr: SocketAddr, request: &str) -> Raw {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut tcp)
        .await
        .unwrap_or_else(|| panic!("no answer to {request:?}"))
}

fn get(path: &str, host: &str, auth: bool) -> String {
    let auth = if auth {
        format!("authorization: Bearer {KEY}\r\n")
    } else {
        String::new()
    };
    format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n")
}

/// Whether the gateway closes `tcp` (EOF or reset) within a generous
/// bound; a test fails rather than hangs if it does not.
async fn closed_by_gateway(tcp: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn listener(gw: &Gateway, name: &str) -> SocketAddr {
    gw.listeners.iter().find(|(n, _)| n == name).unwrap().1
}

#[tokio::test]
async fn path_tricks_land_on_the_protected_route_or_are_refused() {
    let gw = Gateway::start(&protected_config("", ""));
    let addr = gw.addr();
    for path in [
        "/x/../admin",
        "/./admin",
        "/%61dmin",
        "//admin",
        "/%2e%2e/admin/",
        "/admin/./x/..",
    ] {
        let r = raw(addr, &get(path, "open.example", false)).await;
        assert_eq!(r.status, 401, "{path} must meet the auth filter: {r:?}");
        let r = raw(addr, &get(path, "open.example", true)).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let forwarded = r.json()["path"].as_str().unwrap().to_owned();
        assert!(
            forwarded == "/admin" || forwarded == "/admin/",
            "{path} forwarded as {forwarded}"
        );
    }
    for path in ["/ok/..%2f..%2fadmin", "/ok/..%5cadmin", "/ok%2Fadmin", "/a%zz"] {
        let r = raw(addr, &get(path, "open.example", true)).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "bad_request");
    }
    // A literal backslash: refused by the gateway (or by hyper's parser).
    let r = raw(addr, &get("/ok/..\\admin", "open.example", true)).await;
    assert_eq!(r.status, 400, "{r:?}");
    // Counted per listener and cause.
    let (_, metrics) = gw.admin_get("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("agentmux_edge_rejected_total{")
                && l.contains("listener=\"agents\"")
                && l.contains("bad_request")
        })
        .unwrap_or_else(|| panic!("no edge_rejected line in {metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 4.0, "{line}");
}

#[tokio::test]
async fn the_switches_route_or_forward_the_raw_path_when_asked() {
    let gw = Gateway::start(&protected_config("", ""));
    // `normalize_path = false` on the `raw` listener: routed and forwarded
    // as received (the documented risk of that switch).
    let r = raw(listener(&gw, "raw"), &get("/x/../admin", "open.example", false)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/x/../admin");
    // `forward_path = "raw"`: routed on the normalized path, forwarded as sent.
    let r = raw(gw.addr(), &get("/raw/./a//b", "open.example", false)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/raw/./a//b");
    // The default forwards the path it routed.
    let r = raw(gw.addr(), &get("/x/./a//b", "open.example", false)).await;
    assert_eq!(r.json()["path"], "/x/a/b");
}

#[tokio::test]
async fn one_authority_per_request() {
    let gw = Gateway::start(&protected_config("", ""));
    let addr = gw.addr();
    // Absolute form: routed on the target's authority, and the upstream
    // sees that one, never the agent's `Host`.
    let r = raw(
        addr,
        "GET http://open.example/x HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let headers = &r.json()["headers"];
    assert_eq!(headers["host"], "open.example");
    assert_eq!(headers["x-forwarded-host"], "open.example");
    let r = raw(
        addr,
        "GET http://api.example/x HTTP/1.1\r\nhost: open.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401, "the target's host route applies: {r:?}");
    // Two `Host` headers, a missing one, a malformed one.
    for req in [
        "GET /x HTTP/1.1\r\nhost: open.example\r\nhost: api.example\r\nconnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nhost: open.example\r\nhost: open.example\r\nconnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nconnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nhost: user@api.example\r\nconnection: close\r\n\r\n",
    ] {
        let r = raw(addr, req).await;
        assert_eq!(r.status, 400, "{req:?}: {r:?}");
    }
}

#[tokio::test]
async fn h2_authority_and_host_that_disagree_are_refused() {
    let gw = Gateway::start(&protected_config(TLS, ""));
    let ca = gw.ca();
    let send = |authority: &'static str, host: Option<&'static str>| {
        let (addr, ca) = (gw.addr(), ca.clone());
        async move {
            let tls = connect_tls(addr, tls_config(&ca, &[b"h2"])).await;
            let (mut send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let mut b = http::Request::get(format!("https://{authority}/x"));
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let resp = send
                .send_request(b.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = send("open.example", Some("api.example")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send("api.example", Some("api.example")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = send("open.example", None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn silent_and_preface_only_h2_connections_lose_their_slot() {
    let gw = Gateway::start(&protected_config("max_connections = 4", ""));
    let addr = gw.addr();
    // Four agents take every slot: one sends nothing, one only the
    // HTTP/2 preface, one the preface and half a SETTINGS frame, one half
    // a request head.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut half_settings = preface.clone();
    half_settings.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3]);
    let sends: [Vec<u8>; 4] = [Vec::new(), preface, half_settings, b"GET / HTTP/1.1\r\nho".to_vec()];
    let mut held = Vec::new();
    for bytes in &sends {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        held.push(tcp);
    }
    for (i, tcp) in held.iter_mut().enumerate() {
        assert!(closed_by_gateway(tcp).await, "connection {i} was never closed");
    }
    // The slots are free again.
    let r = raw(addr, &get("/x", "open.example", false)).await;
    assert_eq!(r.status, 200);
    // Each cut is counted with its reason.
    eventually(Duration::from_secs(20), || async {
        let (_, m) = gw.admin_get("/metrics").await;
        (cut(&m, "header_timeout") == 2 && cut(&m, "preface_timeout") == 2).then_some(())
    })
    .await;
}

/// `agentmux_listener_connections_cut_total` of the `agents` listener.
fn cut(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("agentmux_listener_connections_cut_total{{listener=\"agents\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_silent_tls_h2_connection_is_closed() {
    let gw = Gateway::start(&protected_config(TLS, ""));
    let mut tls = connect_tls(gw.addr(), tls_config(&gw.ca(), &[b"h2"])).await;
    assert!(closed_by_gateway(&mut tls).await);
}

#[tokio::test]
async fn idle_connections_are_closed_and_h2_gets_goaway() {
    let gw = Gateway::start(&protected_config("idle_timeout = \"1s\"", ""));
    // HTTP/1.1 keep-alive: one request, then nothing.
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nhost: open.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut tcp).await.unwrap().status, 200);
    assert!(closed_by_gateway(&mut tcp).await);
    // HTTP/2 (prior knowledge): the connection ends with GOAWAY once its
    // last stream is done, which hyper's client reports as the connection
    // future completing.
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("http://open.example/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");
    // Counted once the gateway's side of each connection has ended.
    eventually(Duration::from_secs(20), || async {
        let (_, metrics) = gw.admin_get("/metrics").await;
        (cut(&metrics, "idle") == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_slow_later_head_on_a_keep_alive_connection_is_cut() {
    // idle_timeout is long: only the head deadline can close this one.
    let gw = Gateway::start(&protected_config("idle_timeout = \"120s\"", ""));
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"GET /x HTTP/1.1\r\nhost: open.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut tcp).await.unwrap().status, 200);
    tcp.write_all(b"GET /x HTTP/1.1\r\nho").await.unwrap();
    assert!(closed_by_gateway(&mut tcp).await);
}

#[tokio::test]
async fn auth_decides_before_any_body_byte_is_read() {
    // Retry before auth in the route's list: the worst order for a route
    // that buffers bodies to replay them. The body deadline is long, so
    // only a decision made without the body can answer quickly.
    let extra = "filters = [\"retries\", \"keys\"]\nrequest_body_timeout = \"60s\"\n";
    let config = protected_config("", extra).replace(
        "[filters.keys]",
        "[filters.retries]\nkind = \"retry\"\nmax_body_bytes = 65536\n\n[filters.keys]",
    );
    let gw = Gateway::start(&config);
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"POST /x HTTP/1.1\r\nhost: open.example\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), read_response(&mut tcp))
        .await
        .expect("auth answered without waiting for the body")
        .unwrap();
    assert_eq!(r.status, 401, "{r:?}");
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_a_large_one_413() {
    let extra = "request_body_timeout = \"1s\"\nmax_request_body_bytes = 1000\n";
    let gw = Gateway::start(&protected_config("", extra));
    let addr = gw.addr();
    // Declared too large: refused before a byte of it is read.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /x HTTP/1.1\r\nhost: open.example\r\ncontent-length: 5000\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut tcp).await.unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"], "too_large");
    // Streamed past the limit (chunked, no declared size).
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 800, "a".repeat(800));
    let req =
        format!("POST /x HTTP/1.1\r\nhost: open.example\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let r = read_response(&mut tcp).await.unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    // Trickled: 10 of 100 bytes, then nothing.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /x HTTP/1.1\r\nhost: open.example\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let r = read_response(&mut tcp).await.unwrap();
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.json()["error"], "request_timeout");
    // Within both bounds: untouched.
    let body = "b".repeat(900);
    let req =
        format!("POST /x HTTP/1.1\r\nhost: open.example\r\ncontent-length: 900\r\nconnection: close\r\n\r\n{body}");
    let r = raw(addr, &req).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_bytes"], 900);
}

#[tokio::test]
async fn h2_does_not_advertise_extended_connect() {
    let gw = Gateway::start(&protected_config("", ""));
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    let ids: Vec<u16> = payload.chunks(6).map(|s| u16::from_be_bytes([s[0], s[1]])).collect();
    assert!(
        !ids.contains(&0x8),
        "SETTINGS_ENABLE_CONNECT_PROTOCOL advertised: {ids:?}"
    );
}

#[tokio::test]
async fn forwarding_headers_are_replaced_unless_a_trusted_proxy_sent_them() {
    let forged = "x-forwarded-for: 6.6.6.6\r\nx-forwarded-proto: gopher\r\nx-forwarded-host: evil.example\r\n";
    let req = format!("GET /x HTTP/1.1\r\nhost: open.example\r\n{forged}connection: close\r\n\r\n");
    let gw = Gateway::start(&protected_config("", ""));
    let h = raw(gw.addr(), &req).await.json()["headers"].clone();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "open.example");
    let trusted = Gateway::start(&protected_config("trusted_proxies = [\"127.0.0.0/8\"]", ""));
    let h = raw(trusted.addr(), &req).await.json()["headers"].clone();
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "gopher");
    assert_eq!(h["x-forwarded-host"], "evil.example");
}

#[tokio::test]
async fn forwarding_headers_are_set_in_websocket_and_mux_modes() {
    use agentmux::mux::{MuxServer, ServerConfig};
    // A websocket-mode upstream records the upgrade head it got.
    let (up, log) = ws::spawn_upstream(ws::Script::Echo).await;
    // A mux upstream records the OPEN's headers.
    let mux = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mux_addr = mux.local_addr().unwrap();
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let server = MuxServer::new(ServerConfig::default());
        loop {
            let Ok((tcp, _)) = mux.accept().await else { return };
            let (server, open_tx) = (server.clone(), open_tx.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = server.accept(tcp).await else { return };
                while let Some(s) = conn.next_session().await {
                    let _ = open_tx.send(s.open_request().headers.clone()).await;
                    tokio::spawn(async move {
                        let mut s = s;
                        while s.recv_chunk().await.is_some() {}
                    });
                }
            });
        }
    });
    let config = format!(
        r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"

[[routes]]
name = "ws"
match = {{ path_prefix = "/ws" }}
mode = "websocket"
cluster = "ws"

[[routes]]
name = "mux"
match = {{ path_prefix = "/mux" }}
mode = "mux"
cluster = "mux"

[clusters.ws]
endpoints = ["{up}"]

[clusters.mux]
endpoints = ["{mux_addr}"]
"#
    );
    let gw = Gateway::start(&config);
    let forged = "x-forwarded-for: 6.6.6.6\r\nx-forwarded-host: evil.example\r\n";
    let (_ws, head) = ws::raw_client(gw.addr(), "/ws", forged).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let upstream_head = log.lock().unwrap().heads.last().cloned().unwrap().to_ascii_lowercase();
    assert!(
        upstream_head.contains("x-forwarded-for: 127.0.0.1\r\n"),
        "{upstream_head}"
    );
    assert!(
        !upstream_head.contains("6.6.6.6") && !upstream_head.contains("evil.example"),
        "{upstream_head}"
    );
    let (_mux, head) = ws::raw_client(gw.addr(), "/mux", forged).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let headers = tokio::time::timeout(Duration::from_secs(10), open_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let get = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(get("x-forwarded-host"), ["localhost"]);
    assert_eq!(get("x-forwarded-proto"), ["http"]);
}

#[tokio::test]
async fn a_websocket_agent_that_stops_answering_pings_is_closed() {
    let config = r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"

[[routes]]
name = "ws"
mode = "websocket"
cluster = "echo"
websocket = { keepalive_interval = "200ms" }

[clusters.echo]
kind = "echo"
"#;
    let gw = Gateway::start(config);
    // A raw client that completes the upgrade and then never answers.
    let (mut tcp, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, reason) = ws::read_close(&mut tcp).await.expect("a close frame");
    assert_eq!(code, 1001, "{reason}");
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("agentmux_sessions_ended_total{route=\"ws\",end=\"keepalive_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn an_upstream_s_error_text_cannot_forge_a_log_line() {
    use agentmux::mux::{ErrorCode, Frame, encode};
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    // A "mux upstream" that accepts the gateway's connection and answers
    // with an ERROR whose text carries a line break and a fake log line.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let pick = |_: &Request, mut resp: Response| {
                    resp.headers_mut()
                        .insert("sec-websocket-protocol", "agentmux.v1".parse().unwrap());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, pick).await else {
                    return;
                };
                let mut buf = bytes::BytesMut::new();
                let error = Frame::Error {
                    session: 0,
                    code: ErrorCode::Protocol,
                    message: "bad\n2026-12-06T00:00:00Z  WARN FORGED admin token accepted".into(),
                };
                encode(&error, &mut buf).unwrap();
                let _ = ws
                    .send(tokio_tungstenite::tungstenite::Message::binary(buf.freeze()))
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            });
        }
    });
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nname = \"mux\"\nmode = \"mux\"\ncluster = \"up\"\n[clusters.up]\nendpoints = [\"{up}\"]\n"
    );
    let gw = Gateway::start_capturing_logs(&config, "info");
    let logged = eventually(Duration::from_secs(20), || async {
        let lines = gw.stderr.lock().unwrap().clone();
        lines.iter().any(|l| l.contains("FORGED")).then_some(lines)
    })
    .await;
    for line in &logged {
        assert!(
            !line.contains("WARN FORGED") || line.contains("bad\\n"),
            "a forged line: {line:?}"
        );
        assert!(
            !line.trim_start().starts_with("2026-12-06T00:00:00Z"),
            "a forged line: {line:?}"
        );
    }
}
