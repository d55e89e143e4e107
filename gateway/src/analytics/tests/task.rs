//! The task (paused time) and the webhook sink (real loopback sockets).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::support::{Load, Sim, at};
use crate::analytics::{
    AlertKind, AnalyticsParams, ScopeKey, Severity, Tick, WebhookParams, Window, spawn,
    spawn_polling,
};

#[tokio::test(start_paused = true)]
async fn the_polling_task_publishes_every_tick_and_answers_history() {
    let mut sim = Sim::new(1);
    let mut second = 0;
    let handle = spawn_polling(AnalyticsParams::default(), None, move || {
        second += 1;
        let scopes = vec![(ScopeKey::Global, sim.sample(&Load::default()))];
        Tick {
            at: at(second),
            cpu_us: 10_000,
            scopes,
        }
    });
    let mut feed = handle.subscribe();
    let start = tokio::time::Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        feed.changed().await.unwrap();
        seen.push((start.elapsed(), feed.borrow_and_update().seq));
    }
    // One update per tick, one tick per second: the page gets each second
    // as soon as it is measured.
    for w in seen.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1);
        assert_eq!(w[1].0 - w[0].0, Duration::from_secs(1));
    }
    let latest = handle.latest();
    let json: serde_json::Value = serde_json::from_str(&latest.json).unwrap();
    assert_eq!(json["scopes"][0]["scope"], "global");
    let h = handle.history(Window::Hour, None).await.unwrap();
    assert!(h.series.t.len() >= 10);
    assert!(
        handle
            .history(Window::Hour, Some(ScopeKey::route("x")))
            .await
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn the_task_stops_when_the_producer_goes() {
    let (tx, handle) = spawn(AnalyticsParams::default(), None);
    tx.send(Tick {
        at: at(1),
        cpu_us: 0,
        scopes: Vec::new(),
    })
    .await
    .unwrap();
    drop(tx);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(handle.history(Window::Hour, None).await.is_none());
}

/// A loopback HTTP server answering with `statuses` in turn (then 200),
/// recording request bodies.
async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/agentmux", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let calls = AtomicUsize::new(0);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let mut len = 0;
            // Read until the whole body named by Content-Length is in.
            let body = loop {
                let n = sock.read(&mut buf[len..]).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                len += n;
                let text = String::from_utf8_lossy(&buf[..len]).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let want: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= want {
                        assert!(head.starts_with("POST /hooks/agentmux HTTP/1.1"), "{head}");
                        break Some(body.to_owned());
                    }
                }
            };
            let i = calls.fetch_add(1, Ordering::SeqCst);
            seen.lock().await.extend(body);
            let status = statuses.get(i).copied().unwrap_or(200);
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (url, bodies)
}

fn quick(url: &str) -> WebhookParams {
    let mut p = WebhookParams::new(url, None).unwrap();
    p.backoff_base = Duration::from_millis(5);
    p.backoff_max = Duration::from_millis(20);
    p.timeout = Duration::from_secs(5);
    p.attempts = 4;
    p
}

/// Runs a warmed engine into a traffic drop so one critical alert fires.
fn drop_ticks() -> Vec<Tick> {
    let mut sim = Sim::new(2);
    let mut ticks = Vec::new();
    for i in 0..700 {
        let l = if i < 600 {
            Load::default()
        } else {
            Load {
                rps: 0.0,
                msgs: 0.0,
                ..Load::default()
            }
        };
        let s = sim.sample(&l);
        ticks.push(Tick {
            at: at(i),
            cpu_us: 0,
            scopes: vec![(ScopeKey::Global, s)],
        });
    }
    ticks
}

async fn run_hook(statuses: Vec<u16>) -> (Vec<String>, Arc<crate::analytics::AlertStats>) {
    let (url, bodies) = receiver(statuses).await;
    let (tx, handle) = spawn(AnalyticsParams::default(), Some(quick(&url)));
    for t in drop_ticks() {
        tx.send(t).await.unwrap();
    }
    let stats = handle.stats();
    for _ in 0..200 {
        if stats.webhook_sent_total() + stats.webhook_failed_total() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = bodies.lock().await.clone();
    (got, stats)
}

#[tokio::test]
async fn the_webhook_retries_server_errors_then_delivers() {
    let (bodies, stats) = run_hook(vec![503, 500]).await;
    assert_eq!(bodies.len(), 3, "two failures and a success: {bodies:?}");
    assert_eq!(
        (stats.webhook_sent_total(), stats.webhook_failed_total()),
        (1, 0)
    );
    let v: serde_json::Value = serde_json::from_str(&bodies[2]).unwrap();
    assert_eq!(v["source"], "agentmux");
    assert_eq!(v["change"], "raised");
    assert_eq!(v["alert"]["kind"], "traffic_drop");
    assert_eq!(v["alert"]["scope"], "global");
    assert_eq!(v["alert"]["severity"], "critical");
    assert_eq!(
        stats.raised_total(AlertKind::TrafficDrop, Severity::Critical),
        1
    );
    assert_eq!(stats.active(Severity::Critical), 1);
}

#[tokio::test]
async fn the_webhook_does_not_retry_a_client_error() {
    let (bodies, stats) = run_hook(vec![400]).await;
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        (stats.webhook_sent_total(), stats.webhook_failed_total()),
        (0, 1)
    );
}

#[test]
fn webhook_urls_are_checked() {
    assert!(WebhookParams::new("ftp://x/", None).is_err());
    assert!(WebhookParams::new("not a url", None).is_err());
    assert!(WebhookParams::new("/relative", None).is_err());
    assert!(WebhookParams::new("https://hooks.example.com/a?b=c", None).is_ok());
    assert!(WebhookParams::new("http://user:pw@hooks.example.com/", None).is_err());
    let err = WebhookParams::new(
        "https://h/",
        Some(std::path::Path::new("/nonexistent/ca.pem")),
    );
    assert!(err.unwrap_err().to_string().contains("webhook TLS"));
}
