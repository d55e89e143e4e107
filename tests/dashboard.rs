//! The live dashboard in a real browser: headless Chromium loads
//! `/dashboard` from the admin listener and the numbers on the page change
//! while traffic flows through the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use agentmux_tests::browser::Browser;
use agentmux_tests::{Gateway, client, ws};

const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"
token = "dashboard-test-token-0123"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
name = "sessions"
match = { path_prefix = "/ws" }
mode = "websocket"
cluster = "echo"
[[routes]]
name = "api"
cluster = "echo"
[clusters.echo]
kind = "echo"
"#;

const TOKEN: &str = "dashboard-test-token-0123";

/// Text of the "now" tiles on the page.
async fn tiles(b: &mut Browser) -> String {
    b.eval("document.getElementById('tiles').innerText")
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn dashboard_numbers_change_while_traffic_flows() {
    let gw = Gateway::start(CONFIG);
    let url = format!("http://{}/dashboard", gw.admin);
    let Some(mut browser) = Browser::open(&url).await else {
        return;
    };
    browser.log_in(TOKEN).await;
    // Steady traffic: 4 WebSocket sessions echoing, bounded in count and time.
    let addr = gw.addr();
    let traffic = tokio::spawn(async move {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(ws::connect(addr, None, "/ws", None).await.unwrap().0);
        }
        for i in 0..400 {
            for c in &mut clients {
                c.send(Message::text(format!("tick {i}"))).await.unwrap();
                c.next().await.unwrap().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    // The page goes live and shows the open sessions (polled, bounded).
    let mut first = None;
    for _ in 0..150 {
        let status = browser.eval("document.getElementById('status').innerText").await;
        let t = tiles(&mut browser).await;
        if status.as_str().is_some_and(|s| s.starts_with("live")) && t.contains("sessions\n4") {
            first = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = first.expect("the page never showed 4 live sessions");
    // A few seconds on, the rates have moved.
    let mut later = None;
    for _ in 0..150 {
        let t = tiles(&mut browser).await;
        if t != first {
            later = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let later = later.expect("the numbers on the page did not change");
    assert!(later.contains("messages/s"), "{later}");
    let shot = std::env::var("AGENTMUX_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| gw.dir.path().join("dashboard.png"));
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    traffic.abort();
}

#[tokio::test]
async fn dashboard_data_needs_the_token() {
    let gw = Gateway::start(CONFIG);
    let (status, _) = gw.admin_get("/dashboard/history?window=1h").await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let r = client::get_plain(gw.admin, "/dashboard/history?window=1h", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Never in the URL: an old bookmark learns where the token goes.
    let (status, body) = gw
        .admin_get(&format!("/dashboard/history?window=1h&token={TOKEN}"))
        .await;
    assert_eq!(status, 400, "{body}");
    // Without a session the page is the login form; the static files hold
    // no data and load without one.
    let (status, body) = gw.admin_get("/dashboard").await;
    assert_eq!(status, 200);
    assert!(body.contains("/dashboard/login"), "{body}");
    let r = client::get_plain(gw.admin, "/dashboard", &[("authorization", &bearer)]).await;
    assert!(r.text().contains("uPlot"), "the vendored chart library is referenced");
    let (status, _) = gw.admin_get("/dashboard/uPlot.iife.min.js").await;
    assert_eq!(status, 200);
}
