//! HTTP mode end to end: the real binary, real TLS clients, real upstreams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use agentmux_tests::client::{get_plain, get_tls, read, send_tls};
use agentmux_tests::upstream::{closed_port, full, spawn_http};
use agentmux_tests::{Gateway, TLS};

fn echo_config(tls: bool) -> String {
    format!(
        r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"
{}
request_header_timeout = "500ms"

[[routes]]
name = "echo"
cluster = "echo"

[clusters.echo]
kind = "echo"
"#,
        if tls { TLS } else { "" }
    )
}

fn upstream_config(endpoint: std::net::SocketAddr, route_extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"

[[routes]]
name = "up"
cluster = "up"
{route_extra}

[clusters.up]
endpoints = ["{endpoint}"]
connect_timeout = "1s"
"#
    )
}

#[tokio::test]
async fn http1_and_http2_through_tls_verify_the_dev_ca() {
    let gw = Gateway::start(&echo_config(true));
    for h2 in [false, true] {
        let r = get_tls(gw.addr(), &gw.ca(), h2, "/agents/7?q=1").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.version,
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        let j = r.json();
        assert_eq!(j["path"], "/agents/7");
        assert_eq!(j["query"], "q=1");
        let h = &j["headers"];
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["via"], if h2 { "2 agentmux" } else { "1.1 agentmux" });
        assert!(r.headers["via"].to_str().unwrap().contains("agentmux"));
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let gw = Gateway::start(&echo_config(false));
    let r = get_plain(
        gw.addr(),
        "/",
        &[
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("proxy-authorization", "Basic x"),
            ("x-keep", "1"),
        ],
    )
    .await;
    let h = &r.json()["headers"];
    assert!(
        h.get("x-private").is_none() && h.get("proxy-authorization").is_none(),
        "{h}"
    );
    assert_eq!(h["x-keep"], "1");
}

#[tokio::test]
async fn routing_picks_the_most_specific_route_end_to_end() {
    let named = |name: &'static str| move |_req| async move { Response::new(full(name)) };
    let (a, b, c) = (
        spawn_http(named("a")).await,
        spawn_http(named("b")).await,
        spawn_http(named("c")).await,
    );
    let gw = Gateway::start(&format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "default"
cluster = "a"
[[routes]]
name = "api"
match = {{ path_prefix = "/api" }}
cluster = "b"
[[routes]]
name = "api-canary"
match = {{ path_prefix = "/api", headers = [{{ name = "x-canary", value = "yes" }}] }}
cluster = "c"
[[routes]]
name = "tenant"
match = {{ host = "*.tenant.test" }}
cluster = "c"
[clusters.a]
endpoints = ["{a}"]
[clusters.b]
endpoints = ["{b}"]
[clusters.c]
endpoints = ["{c}"]
"#
    ));
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        ("/", &[], "a"),
        ("/api/v1", &[], "b"),
        ("/apix", &[], "a"),
        ("/api/v1", &[("x-canary", "yes")], "c"),
        ("/", &[("host", "acme.tenant.test")], "c"),
    ];
    for (path, headers, want) in cases {
        let r = get_plain(gw.addr(), path, headers).await;
        assert_eq!(r.text(), want, "{path} {headers:?}");
    }
}

#[tokio::test]
async fn no_route_is_404_with_a_json_reason() {
    let gw = Gateway::start(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nname = \"ws\"\nmatch = { path_prefix = \"/only\" }\ncluster = \"echo\"\n[clusters.echo]\nkind = \"echo\"\n",
    );
    let r = get_plain(gw.addr(), "/elsewhere", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no_route");
}

/// The upstream sends one SSE event, then holds the stream open until the
/// test has received that event through the gateway. A gateway that
/// buffered the stream would never deliver it: the test would time out.
#[tokio::test]
async fn sse_first_event_reaches_the_agent_before_the_stream_ends() {
    let release = Arc::new(Notify::new());
    let sent_at = Arc::new(std::sync::Mutex::new(None));
    let (r2, s2) = (release.clone(), sent_at.clone());
    let up = spawn_http(move |_req| {
        let (release, sent_at) = (r2.clone(), s2.clone());
        async move {
            let stream = futures_util::stream::unfold(0, move |i| {
                let (release, sent_at) = (release.clone(), sent_at.clone());
                async move {
                    match i {
                        0 => {
                            *sent_at.lock().unwrap() = Some(tokio::time::Instant::now());
                            Some((Ok(Frame::data(Bytes::from("data: first\n\n"))), 1))
                        }
                        1 => {
                            release.notified().await;
                            Some((Ok(Frame::data(Bytes::from("data: last\n\n"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n{TLS}\n[[routes]]\nname = \"sse\"\ncluster = \"up\"\n[clusters.up]\nendpoints = [\"{up}\"]\n"
    ));
    for h2 in [false, true] {
        let req = Request::get("/v1/stream")
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send_tls(gw.addr(), &gw.ca(), h2, req).await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("first event held back by the gateway")
            .unwrap()
            .unwrap();
        let got_at = tokio::time::Instant::now();
        assert_eq!(first.into_data().unwrap(), "data: first\n\n");
        let sent = sent_at.lock().unwrap().expect("upstream sent");
        // The stream is still open: the upstream is waiting for us.
        release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        let ended_at = tokio::time::Instant::now();
        assert_eq!(rest, "data: last\n\n");
        assert!(got_at - sent < ended_at - sent, "first event arrived only at the end");
    }
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let gw = Gateway::start(&upstream_config(closed_port(), ""));
    let r = get_plain(gw.addr(), "/", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_connect");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = spawn_http(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("late"))
    })
    .await;
    let gw = Gateway::start(&upstream_config(up, "request_timeout = \"300ms\""));
    let r = get_plain(gw.addr(), "/", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_gateway_keeps_serving() {
    let gw = Gateway::start(&echo_config(false));
    let big = "x".repeat(40 * 1024);
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n");
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert_eq!(get_plain(gw.addr(), "/", &[]).await.status, 200);
}

#[tokio::test]
async fn slowloris_gets_408_and_does_not_block_others() {
    let gw = Gateway::start(&echo_config(false));
    let mut slow = TcpStream::connect(gw.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    // Another agent is served meanwhile.
    assert_eq!(get_plain(gw.addr(), "/", &[]).await.status, 200);
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

#[tokio::test]
async fn tls_garbage_is_dropped_without_affecting_others() {
    let gw = Gateway::start(&echo_config(true));
    let mut junk = TcpStream::connect(gw.addr()).await.unwrap();
    junk.write_all(b"\x16\x03\x01\x00\x05hello this is not TLS\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut buf))
        .await
        .unwrap();
    // Plain HTTP on the TLS port is refused too.
    let mut plain = TcpStream::connect(gw.addr()).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf))
        .await
        .unwrap();
    assert_eq!(get_tls(gw.addr(), &gw.ca(), true, "/").await.status, 200);
}

#[tokio::test]
async fn upstream_tls_with_custom_ca_sni_and_http2() {
    // A second gateway serves as a TLS upstream speaking HTTP/2.
    let upstream = Gateway::start(&echo_config(true));
    let ca = upstream.ca();
    let gw = Gateway::start(&format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "up"
cluster = "up"
[clusters.up]
endpoints = ["{}"]
tls = {{ ca = "{}", sni = "localhost" }}
"#,
        upstream.addr(),
        ca.display()
    ));
    let r = get_plain(gw.addr(), "/chain", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    // Agent → gateway over HTTP/1.1, gateway → upstream over HTTP/2.
    assert_eq!(j["headers"]["via"], "1.1 agentmux, 2 agentmux");
}

#[tokio::test]
async fn graceful_drain_finishes_in_flight_requests_then_exits_0() {
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (r2, s2) = (release.clone(), started.clone());
    let up = spawn_http(move |_req| {
        let (release, started) = (r2.clone(), s2.clone());
        async move {
            started.notify_one();
            release.notified().await;
            Response::new(full("finished"))
        }
    })
    .await;
    let mut gw = Gateway::start(&format!(
        "[shutdown]\ndrain_timeout = \"20s\"\n{}",
        upstream_config(up, "")
    ));
    let addr = gw.addr();
    let in_flight = tokio::spawn(async move { get_plain(addr, "/slow", &[]).await });
    started.notified().await;
    gw.signal("TERM");
    // New connections are refused once draining has begun.
    agentmux_tests::eventually(Duration::from_secs(10), || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    release.notify_one();
    let r = in_flight.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "finished"));
    let status = tokio::task::spawn_blocking(move || gw.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[tokio::test]
async fn request_bodies_stream_through() {
    let gw = Gateway::start(&echo_config(true));
    let body = "payload ".repeat(10_000);
    for h2 in [false, true] {
        let req = Request::post("/upload")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let r = read(send_tls(gw.addr(), &gw.ca(), h2, req).await).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["body_bytes"], body.len());
    }
}

/// Certificate files rewritten on disk are served to new agents without a
/// restart; connections verify against the new CA.
#[tokio::test]
async fn certificates_reload_when_the_files_change() {
    let gw = Gateway::start(&echo_config(true));
    assert_eq!(get_tls(gw.addr(), &gw.ca(), false, "/").await.status, 200);
    // A new CA and server certificate, made elsewhere, then moved into place
    // the way cert-manager does (write, then rename over).
    let other = agentmux_tests::TempDir::new("newcerts");
    let (cert, key) = (other.path().join("server.crt"), other.path().join("server.key"));
    agentmux_certs::dev::ensure_dev_certs(&cert, &key).unwrap();
    let live = gw.dir.path().join("certs/dev");
    for (from, to) in [(&key, "server.key"), (&cert, "server.crt")] {
        let tmp = live.join(format!("{to}.tmp"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, live.join(to)).unwrap();
    }
    let new_ca = other.path().join("ca.crt");
    agentmux_tests::eventually(Duration::from_secs(20), || {
        let new_ca = new_ca.clone();
        let addr = gw.addr();
        async move {
            let config = agentmux_tests::client::tls_config(&new_ca, &[b"http/1.1"]);
            let tcp = TcpStream::connect(addr).await.ok()?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
            connector.connect(name, tcp).await.ok().map(|_| ())
        }
    })
    .await;
    assert_eq!(get_tls(gw.addr(), &new_ca, true, "/").await.status, 200);
}

/// Sends one request on `c` and returns the response head and what came
/// with it (bounded wait).
async fn request_on(c: &mut TcpStream) -> String {
    c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut chunk))
            .await
            .expect("no answer: the agent was left waiting")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn out_of_descriptors_agents_get_503_and_the_gateway_recovers() {
    let config = echo_config(false).replace("request_header_timeout = \"500ms\"", "request_header_timeout = \"60s\"");
    // What the gateway holds open before any agent arrives.
    let probe = Gateway::start(&config);
    let base = std::fs::read_dir(format!("/proc/{}/fd", probe.pid())).unwrap().count() as u64;
    drop(probe);
    let gw = Gateway::start_with_fd_limit(&config, base + 8);

    // Agents keep their connections until the gateway has no descriptor
    // left; the next one is told so instead of waiting in the backlog.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..64 {
        let mut c = TcpStream::connect(gw.addr()).await.unwrap();
        let head = request_on(&mut c).await;
        if head.starts_with("HTTP/1.1 200") {
            held.push(c);
        } else {
            refused = Some(head);
            break;
        }
    }
    let refused = refused.expect("the fd limit was never reached");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("overloaded"), "{refused}");
    assert!(!held.is_empty());

    // Agents leave; the gateway serves again without a restart.
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        let mut c = TcpStream::connect(gw.addr()).await.unwrap();
        if request_on(&mut c).await.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the gateway did not recover once descriptors were free");
}
