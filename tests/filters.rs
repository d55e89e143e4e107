//! Filters end to end: rate limits, auth, circuit breaking, retries with a
//! budget, load shedding and per-message WebSocket limits, through the real
//! binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Response, StatusCode};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use agentmux_tests::client::get_plain;
use agentmux_tests::upstream::{full, spawn_http};
use agentmux_tests::{Gateway, ws};

fn gateway(endpoint: &str, mode: &str, filters: &str, defs: &str) -> Gateway {
    let cluster = if endpoint == "echo" {
        "kind = \"echo\"".to_owned()
    } else {
        format!("endpoints = [\"{endpoint}\"]")
    };
    Gateway::start(&format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "r"
mode = "{mode}"
cluster = "up"
filters = [{filters}]
[clusters.up]
{cluster}
{defs}
"#
    ))
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_per_key() {
    let gw = gateway(
        "echo",
        "http",
        "\"limit\"",
        "[filters.limit]\nkind = \"rate-limit\"\nkey = \"header:x-agent\"\nrequests_per_second = 1\nburst = 3\n",
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get_plain(gw.addr(), "/", &[("x-agent", "a")]).await);
    }
    let ok = statuses.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 3, "burst of 3 admitted");
    let limited = statuses.iter().find(|r| r.status == 429).expect("a 429");
    assert_eq!(limited.json()["error"], "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));
    // Another key is not affected by a's flood.
    assert_eq!(get_plain(gw.addr(), "/", &[("x-agent", "b")]).await.status, 200);
}

#[tokio::test]
async fn auth_gives_401_403_and_lets_good_keys_in() {
    let hash = std::process::Command::new(agentmux_tests::gateway_bin())
        .args(["hash-key", "sk-test-0123456789"])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("sha256:"), "{hash}");
    let defs = format!("[filters.keys]\nkind = \"auth\"\napi_keys = {{ ci = \"{hash}\" }}\n");
    let gw = gateway("echo", "http", "\"keys\"", &defs);
    assert_eq!(get_plain(gw.addr(), "/", &[]).await.status, 401);
    assert_eq!(get_plain(gw.addr(), "/", &[("x-api-key", "wrong")]).await.status, 403);
    let ok = get_plain(gw.addr(), "/", &[("authorization", "Bearer sk-test-0123456789")]).await;
    assert_eq!(ok.status, 200);
    // The gateway's key is not forwarded upstream.
    assert!(ok.json()["headers"].get("authorization").is_none());

    // WebSocket upgrades are checked the same way.
    let ws_gw = gateway("echo", "websocket", "\"keys\"", &defs);
    let (_, head) = ws::raw_client(ws_gw.addr(), "/", "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (_, head) = ws::raw_client(ws_gw.addr(), "/", "x-api-key: sk-test-0123456789\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

#[tokio::test]
async fn circuit_opens_fails_fast_and_closes_on_its_own() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hits = Arc::new(AtomicU64::new(0));
    let (h2, c2) = (healthy.clone(), hits.clone());
    let up = spawn_http(move |_req| {
        let (healthy, hits) = (h2.clone(), c2.clone());
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let mut r = Response::new(full("x"));
            if !healthy.load(Ordering::SeqCst) {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await;
    let gw = gateway(
        &up.to_string(),
        "http",
        "\"breaker\"",
        "[filters.breaker]\nkind = \"circuit-breaker\"\nconsecutive_failures = 3\nopen_duration = \"300ms\"\n",
    );
    for _ in 0..3 {
        assert_eq!(get_plain(gw.addr(), "/", &[]).await.status, 503);
    }
    // Open: answered by the gateway without touching the upstream.
    let before = hits.load(Ordering::SeqCst);
    let r = agentmux_tests::eventually(Duration::from_secs(5), || async {
        let r = get_plain(gw.addr(), "/", &[]).await;
        (r.status == 503 && r.text().contains("circuit_open")).then_some(r)
    })
    .await;
    assert_eq!(r.json()["error"], "circuit_open");
    assert!(hits.load(Ordering::SeqCst) <= before + 1);
    // The upstream recovers; a probe closes the circuit.
    healthy.store(true, Ordering::SeqCst);
    agentmux_tests::eventually(Duration::from_secs(10), || async {
        (get_plain(gw.addr(), "/", &[]).await.status == 200).then_some(())
    })
    .await;
    let (_, body) = gw.admin_get("/api/circuits").await;
    assert!(body.contains("\"closed\""), "{body}");
}

/// An upstream failing every other request.
async fn flapping() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let addr = spawn_http(move |_req| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut r = Response::new(full("ok"));
            if i.is_multiple_of(2) {
                *r.status_mut() = StatusCode::BAD_GATEWAY;
            }
            r
        }
    })
    .await;
    (addr, n)
}

#[tokio::test]
async fn retries_hide_a_flapping_upstream() {
    let defs = "[filters.retries]\nkind = \"retry\"\nmax_attempts = 3\nbackoff_base = \"1ms\"\nbackoff_cap = \"5ms\"\nbudget_ratio = 0.5\n";
    let (up, _) = flapping().await;
    let without = gateway(&up.to_string(), "http", "", defs);
    let (up2, _) = flapping().await;
    let with = gateway(&up2.to_string(), "http", "\"retries\"", defs);
    let mut errors = [0, 0];
    for _ in 0..100 {
        errors[0] += usize::from(get_plain(without.addr(), "/", &[]).await.status != 200);
        errors[1] += usize::from(get_plain(with.addr(), "/", &[]).await.status != 200);
    }
    assert!(errors[0] >= 40, "the upstream should fail often: {errors:?}");
    assert!(
        errors[1] * 5 < errors[0],
        "retries should hide most failures: {errors:?}"
    );
}

#[tokio::test]
async fn a_down_upstream_gets_no_more_retries_than_the_budget_allows() {
    let hits = Arc::new(AtomicU64::new(0));
    let h2 = hits.clone();
    let up = spawn_http(move |_req| {
        h2.fetch_add(1, Ordering::SeqCst);
        async {
            let mut r = Response::new(full("down"));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    })
    .await;
    let gw = gateway(
        &up.to_string(),
        "http",
        "\"retries\"",
        "[filters.retries]\nkind = \"retry\"\nmax_attempts = 5\nbackoff_base = \"1ms\"\nbackoff_cap = \"2ms\"\nbudget_ratio = 0.1\nbudget_min_per_sec = 1\n",
    );
    let started = std::time::Instant::now();
    for _ in 0..200 {
        assert_eq!(get_plain(gw.addr(), "/", &[]).await.status, 503);
    }
    let secs = started.elapsed().as_secs_f64().ceil() + 10.0;
    let total = hits.load(Ordering::SeqCst) as f64;
    // 200 requests, 10% retries, plus the floor of 1/s over the run (the
    // budget's window is 10 s): far below 200 × 5 attempts.
    assert!(total <= 200.0 * 1.1 + secs + 5.0, "upstream saw {total} attempts");
    assert!(total < 400.0);
}

#[tokio::test]
async fn load_shed_refuses_past_max_in_flight() {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(AtomicU64::new(0));
    let (r2, a2) = (release.clone(), arrived.clone());
    let up = spawn_http(move |_req| {
        let r = r2.clone();
        a2.fetch_add(1, Ordering::SeqCst);
        async move {
            r.notified().await;
            Response::new(full("done"))
        }
    })
    .await;
    let gw = gateway(
        &up.to_string(),
        "http",
        "\"shed\"",
        "[filters.shed]\nkind = \"load-shed\"\nmax_in_flight = 2\n",
    );
    let addr = gw.addr();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_plain(addr, "/", &[]).await }))
        .collect();
    agentmux_tests::eventually(Duration::from_secs(10), || async {
        (arrived.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    // Both slots are taken: the third request is refused at once.
    let r = tokio::time::timeout(Duration::from_secs(10), get_plain(addr, "/", &[]))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "overloaded");
    release.notify_one();
    release.notify_one();
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn websocket_message_rate_delays_then_closes_with_1008() {
    let gw = gateway(
        "echo",
        "websocket",
        "\"limit\"",
        "[filters.limit]\nkind = \"rate-limit\"\nmessages_per_second = 20\nmessage_burst = 5\nmax_message_delay = \"300ms\"\n",
    );
    // Within the rate: everything arrives.
    let (mut c, _) = ws::connect(gw.addr(), None, "/", None).await.unwrap();
    for i in 0..10 {
        c.send(Message::text(format!("m{i}"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for i in 0..10 {
        let m = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m, Message::text(format!("m{i}")));
    }
    // A flood: delayed up to the bound, then closed with 1008.
    let (mut c, _) = ws::connect(gw.addr(), None, "/", None).await.unwrap();
    for i in 0..200 {
        if c.send(Message::text(format!("f{i}"))).await.is_err() {
            break;
        }
    }
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn concurrent_sessions_per_key_are_capped() {
    let gw = gateway(
        "echo",
        "websocket",
        "\"limit\"",
        "[filters.limit]\nkind = \"rate-limit\"\nkey = \"header:x-agent\"\nmax_sessions = 2\n",
    );
    let (_a, h1) = ws::raw_client(gw.addr(), "/", "x-agent: 7\r\n").await;
    let (_b, h2) = ws::raw_client(gw.addr(), "/", "x-agent: 7\r\n").await;
    let (_c, h3) = ws::raw_client(gw.addr(), "/", "x-agent: 7\r\n").await;
    let (_d, h4) = ws::raw_client(gw.addr(), "/", "x-agent: 8\r\n").await;
    assert!(h1.starts_with("HTTP/1.1 101") && h2.starts_with("HTTP/1.1 101"));
    assert!(h3.starts_with("HTTP/1.1 429"), "{h3}");
    assert!(h4.starts_with("HTTP/1.1 101"), "{h4}");
}
