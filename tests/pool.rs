//! The warm pool seen from outside: connections exist before the first
//! agent, a full pool answers 503 in time, dead endpoints leave rotation
//! and come back on their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentmux_tests::ws::{self, Script};
use agentmux_tests::{Gateway, eventually};

fn endpoint_health(clusters: &serde_json::Value, addr: &str) -> Option<bool> {
    clusters["clusters"][0]["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["address"] == addr)
        .and_then(|e| e["healthy"].as_bool())
}

#[tokio::test]
async fn pools_are_warm_before_the_first_agent() {
    let (up, log) = ws::spawn_upstream(Script::Echo).await;
    let gw = Gateway::start(&format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "ws"
match = {{ path_prefix = "/ws" }}
mode = "websocket"
cluster = "up"
[[routes]]
name = "http"
cluster = "up"
[clusters.up]
endpoints = ["{up}"]
[clusters.up.pool]
min_connections = 3
"#
    ));
    // No agent has connected; the upstream already holds 3 + 3 connections
    // (the WebSocket pool's transports and the HTTP pool's connections).
    eventually(Duration::from_secs(10), || async {
        (log.lock().unwrap().accepted == 6).then_some(())
    })
    .await;
    let (status, body) = gw.admin_get("/api/clusters").await;
    assert_eq!(status, 200);
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pools = &j["clusters"][0]["endpoints"][0]["pools"];
    assert_eq!(pools["websocket"]["ready"], 3, "{pools}");
    assert_eq!(pools["http"]["ready"], 3, "{pools}");
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
    // The first session uses a warm transport: no new connection needed
    // before the upgrade (a spare is opened after, to stay at 3).
    let (_c, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(log.lock().unwrap().heads.len(), 1);
}

#[tokio::test]
async fn a_full_pool_answers_503_after_acquire_timeout() {
    let (up, _) = ws::spawn_upstream(Script::Echo).await;
    let gw = Gateway::start(&format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "ws"
mode = "websocket"
cluster = "up"
[clusters.up]
endpoints = ["{up}"]
[clusters.up.pool]
min_connections = 0
max_connections = 1
acquire_timeout = "300ms"
"#
    ));
    let (_held, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.contains("pool_exhausted") || head.to_ascii_lowercase().contains("content-type: application/json"),
        "{head}"
    );
}

#[tokio::test]
async fn dead_endpoints_are_ejected_and_return_when_healthy() {
    let (alive, _) = ws::spawn_upstream(Script::Echo).await;
    let dead = agentmux_tests::upstream::closed_port();
    let gw = Gateway::start(&format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "ws"
mode = "websocket"
cluster = "up"
[clusters.up]
endpoints = ["{alive}", "{dead}"]
strategy = "round-robin"
connect_timeout = "500ms"
health_check = {{ kind = "connect", unhealthy_threshold = 2, healthy_threshold = 2, timeout = "500ms" }}
[clusters.up.pool]
min_connections = 1
health_check_interval = "200ms"
"#
    ));
    let dead_label = dead.to_string();
    let clusters = || async {
        let (_, body) = gw.admin_get("/api/clusters").await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    eventually(Duration::from_secs(20), || async {
        (endpoint_health(&clusters().await, &dead_label) == Some(false)).then_some(())
    })
    .await;
    // Ejected: every session lands on the live endpoint.
    for _ in 0..6 {
        let (_, head) = ws::raw_client(gw.addr(), "/", "").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    }
    // The endpoint comes back to life and is probed back into rotation.
    let _revived = tokio::net::TcpListener::bind(dead).await.unwrap();
    eventually(Duration::from_secs(20), || async {
        (endpoint_health(&clusters().await, &dead_label) == Some(true)).then_some(())
    })
    .await;
}
