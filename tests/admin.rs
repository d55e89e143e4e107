//! The admin listener against hostile browsers and clients, on the real
//! binary: cross-site state changes, DNS rebinding, tokens in URLs, the
//! dashboard login cookie, slow request heads, the connection cap and the
//! body bound. Each test fails if its default regresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use agentmux_tests::Gateway;
use agentmux_tests::client::{Resp, read, send_plain};

const TOKEN: &str = "admin-test-token-0123456789";

/// A gateway config with `admin` lines in its `[admin]` table and, when
/// `extra_route`, a second route (what a reload would add).
fn config(admin: &str, extra_route: bool) -> String {
    let extra = if extra_route {
        "[[routes]]\nname = \"added\"\nmatch = { path_prefix = \"/added\" }\ncluster = \"echo\"\n"
    } else {
        ""
    };
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n{extra}[[routes]]\nname = \"api\"\ncluster = \"echo\"\n[clusters.echo]\nkind = \"echo\"\n"
    )
}

/// One request to the admin listener; `Host` is the listener's own
/// address unless `headers` sets one.
async fn send(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
    read(send_plain(gw.admin, request(gw, method, path, headers, body)).await).await
}

fn request(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", gw.admin.to_string());
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

async fn route_names(gw: &Gateway, auth: &[(&str, &str)]) -> String {
    let r = send(gw, "GET", "/api/routes", auth, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[tokio::test]
async fn cross_site_state_changes_are_refused_and_change_nothing() {
    let gw = Gateway::start(&config("", false));
    gw.dir.write("gateway.toml", &config("", true));
    let port = gw.admin.port();
    let same_site = format!("http://localhost:{}", port.wrapping_add(1));
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site"), ("origin", same_site.as_str())],
    ] {
        let r = send(&gw, "POST", "/api/reload", &headers, "").await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
        assert_eq!(r.json()["error"], "cross_site");
        let r = send(&gw, "POST", "/api/clusters/echo/endpoints/x/drain", &headers, "").await;
        assert_eq!(r.status, 403, "drain {headers:?}: {}", r.text());
    }
    assert!(
        !route_names(&gw, &[]).await.contains("added"),
        "a refused reload changed the routes"
    );
    // The listener's own page may, and so may curl (no Origin at all).
    let own = format!("http://{}", gw.admin);
    let r = send(
        &gw,
        "POST",
        "/api/reload",
        &[("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(route_names(&gw, &[]).await.contains("added"));
    let r = send(&gw, "POST", "/api/reload", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn foreign_host_headers_are_refused() {
    let gw = Gateway::start(&config("", false));
    let port = gw.admin.port();
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1));
    let rebound = format!("evil.example:{port}");
    for host in [rebound.as_str(), "evil.example", other_port.as_str()] {
        for path in ["/api/routes", "/metrics", "/dashboard"] {
            let r = send(&gw, "GET", path, &[("host", host)], "").await;
            assert_eq!(r.status, 421, "{host} {path}: {}", r.text());
            assert_eq!(r.json()["error"], "unknown_host");
        }
        let r = send(&gw, "POST", "/api/reload", &[("host", host)], "").await;
        assert_eq!(r.status, 421, "{host}: {}", r.text());
    }
    let own = gw.admin.to_string();
    let localhost = format!("localhost:{port}");
    for host in [own.as_str(), localhost.as_str()] {
        let r = send(&gw, "GET", "/api/routes", &[("host", host)], "").await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    // Liveness answers whatever the Host: it tells nothing, and probes
    // send their own.
    let r = send(&gw, "GET", "/healthz", &[("host", rebound.as_str())], "").await;
    assert_eq!(r.status, 200);
    // No Host at all: HTTP/1.1 requires one; HTTP/1.0 health checks
    // (HAProxy's default) have none, and no browser sends such a request.
    for (version, status) in [("1.1", "400"), ("1.0", "200")] {
        let mut s = TcpStream::connect(gw.admin).await.unwrap();
        s.write_all(format!("GET /readyz HTTP/{version}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut s))
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(answer.split(' ').nth(1), Some(status), "HTTP/{version}: {answer}");
    }
}

#[tokio::test]
async fn allowed_hosts_admit_more_names() {
    let gw = Gateway::start(&config("allowed_hosts = [\"gw.internal\"]", false));
    let host = format!("gw.internal:{}", gw.admin.port());
    let r = send(&gw, "GET", "/api/routes", &[("host", host.as_str())], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let origin = format!("http://{host}");
    let r = send(
        &gw,
        "POST",
        "/api/reload",
        &[("host", host.as_str()), ("origin", origin.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn tokens_in_urls_are_refused() {
    let gw = Gateway::start(&config(&format!("token = \"{TOKEN}\""), false));
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        format!("/api/routes?token={TOKEN}"),
        format!("/dashboard?token={TOKEN}"),
        format!("/dashboard/feed?token={TOKEN}"),
        format!("/dashboard/history?window=1h&token={TOKEN}"),
    ] {
        let r = send(&gw, "GET", &path, &[], "").await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], "token_in_url");
        assert!(r.json()["message"].as_str().unwrap().contains("Authorization: Bearer"));
        assert!(!r.text().contains(TOKEN), "the token is echoed");
    }
    let r = send(&gw, "GET", "/api/routes", &[], "").await;
    assert_eq!(r.status, 401);
    let r = send(&gw, "GET", "/api/routes", &[("authorization", bearer.as_str())], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The `name=value` of a `Set-Cookie` header.
fn set_cookie(r: &Resp) -> String {
    r.headers
        .get("set-cookie")
        .expect("a set-cookie header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_dashboard_login_sets_a_session_cookie_not_the_token() {
    let gw = Gateway::start(&config(&format!("token = \"{TOKEN}\""), false));
    let own = format!("http://{}", gw.admin);
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", own.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    // Without a session the page is the login form, and it loads nothing.
    let r = send(&gw, "GET", "/dashboard", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("action=\"/dashboard/login\""), "{}", r.text());
    assert!(!r.text().contains("uPlot"));
    // A wrong token: 401 and no cookie.
    let r = send(
        &gw,
        "POST",
        "/dashboard/login",
        &form,
        "token=not-the-admin-token-at-all",
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("set-cookie").is_none());
    // Another site cannot log the browser in.
    let r = send(
        &gw,
        "POST",
        "/dashboard/login",
        &[("origin", "http://evil.example")],
        format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(r.status, 403);
    // The right token: a session cookie that is not the token.
    let r = send(&gw, "POST", "/dashboard/login", &form, format!("token={TOKEN}")).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.headers["location"], "/dashboard");
    let set = set_cookie(&r);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|a| a == attr), "{attr} missing: {set}");
    }
    assert!(!set.contains(TOKEN), "the cookie carries the token: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let with_cookie = [("cookie", cookie.as_str())];
    // The cookie opens the page, the feed (an EventSource sends nothing
    // else) and the API.
    let r = send(&gw, "GET", "/dashboard", &with_cookie, "").await;
    assert!(r.text().contains("uPlot") && r.text().contains("/dashboard/logout"));
    let feed = send_plain(gw.admin, request(&gw, "GET", "/dashboard/feed", &with_cookie, "")).await;
    assert_eq!(feed.status(), 200);
    assert_eq!(feed.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(10), feed.into_body().frame())
        .await
        .expect("a feed event")
        .unwrap()
        .unwrap();
    let first = first.into_data().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    assert!(route_names(&gw, &with_cookie).await.contains("api"));
    // A made-up session is nothing.
    let fake = format!("{}={}", cookie.split('=').next().unwrap(), "0".repeat(64));
    let r = send(&gw, "GET", "/api/routes", &[("cookie", fake.as_str())], "").await;
    assert_eq!(r.status, 401);
    // The cookie does not excuse a cross-site state change.
    let r = send(
        &gw,
        "POST",
        "/api/reload",
        &[("cookie", cookie.as_str()), ("origin", "http://evil.example")],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    // Logging out ends the session on the server, not just in the browser.
    let r = send(
        &gw,
        "POST",
        "/dashboard/logout",
        &[("cookie", cookie.as_str()), ("origin", own.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(set_cookie(&r).contains("Max-Age=0"));
    let r = send(&gw, "GET", "/api/routes", &with_cookie, "").await;
    assert_eq!(r.status, 401);
}

/// Reads until the peer closes (EOF or reset); returns the bytes read.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let gw = Gateway::start(&config("request_header_timeout = \"1s\"", false));
    // A generous deadline: only a missing timeout reaches it.
    let deadline = Duration::from_secs(30);
    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(gw.admin).await.unwrap();
    let head = format!("GET /api/routes HTTP/1.1\r\nHost: {}\r\nX-Slow: 1\r\n", gw.admin);
    slow.write_all(head.as_bytes()).await.unwrap();
    let got = tokio::time::timeout(deadline, read_until_closed(&mut slow))
        .await
        .expect("a half-sent head kept its connection open");
    assert!(got.is_empty(), "answered an incomplete head: {got:?}");
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(gw.admin).await.unwrap();
    tokio::time::timeout(deadline, read_until_closed(&mut silent))
        .await
        .expect("a silent connection stayed open");
    // A keep-alive connection idle after its request.
    let tcp = TcpStream::connect(gw.admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let r = read(
        sender
            .send_request(request(&gw, "GET", "/api/routes", &[], ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    tokio::time::timeout(deadline, conn)
        .await
        .expect("an idle keep-alive connection stayed open")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let gw = Gateway::start(&config("max_connections = 2\nrequest_header_timeout = \"60s\"", false));
    // Two idle keep-alive connections, each served once.
    let mut held = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(gw.admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        let conn = tokio::spawn(conn);
        let r = read(
            sender
                .send_request(request(&gw, "GET", "/healthz", &[], ""))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
        held.push((sender, conn));
    }
    // A third connects (the kernel queues it) but is not served.
    let mut third = TcpStream::connect(gw.admin).await.unwrap();
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        gw.admin
    );
    third.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
    assert!(early.is_err(), "a third connection was served past max_connections = 2");
    // One closes: the third is served.
    let (sender, conn) = held.remove(0);
    drop(sender);
    conn.abort();
    let answer = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut third))
        .await
        .expect("the waiting connection was never served");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn admin_bodies_are_bounded() {
    let gw = Gateway::start(&config("", false));
    let r = send(&gw, "POST", "/api/reload", &[], vec![b'x'; 80 * 1024]).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "body_too_large");
}
