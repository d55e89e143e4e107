//! The webhook sink against real loopback receivers, plain and TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

use super::support::{Load, Sim, at};
use crate::analytics::{AlertKind, AlertStats, AnalyticsParams, ScopeKey, Severity, Tick, WebhookParams, spawn};

type Bodies = Arc<Mutex<Vec<String>>>;

/// Reads one HTTP/1.1 request (head and Content-Length body), answers
/// `status`, and returns the body.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, status: u16) -> Option<String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    let body = loop {
        let n = sock.read(&mut buf[len..]).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        len += n;
        let text = String::from_utf8_lossy(&buf[..len]).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let want: usize = head
            .lines()
            .filter_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(str::to_owned)
            })
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if body.len() >= want {
            assert!(head.starts_with("POST /hooks/agentmux HTTP/1.1"), "{head}");
            assert!(head.to_ascii_lowercase().contains("content-type: application/json"));
            break body.to_owned();
        }
    };
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
    let _ = sock.write_all(reply.as_bytes()).await;
    let _ = sock.flush().await;
    Some(body)
}

/// A loopback receiver answering `statuses` in turn (then 200). With
/// `tls`, it speaks TLS with that acceptor.
async fn receiver(statuses: Vec<u16>, tls: Option<TlsAcceptor>) -> (u16, Bodies) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies: Bodies = Arc::default();
    let seen = bodies.clone();
    let calls = AtomicUsize::new(0);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let status = statuses
                .get(calls.fetch_add(1, Ordering::SeqCst))
                .copied()
                .unwrap_or(200);
            let body = match &tls {
                Some(acceptor) => match acceptor.accept(sock).await {
                    Ok(s) => answer(s, status).await,
                    Err(_) => None,
                },
                None => answer(sock, status).await,
            };
            seen.lock().await.extend(body);
        }
    });
    (port, bodies)
}

fn quick(mut p: WebhookParams) -> WebhookParams {
    p.backoff_base = Duration::from_millis(5);
    p.backoff_max = Duration::from_millis(20);
    p.timeout = Duration::from_secs(5);
    p.attempts = 4;
    p
}

/// A warmed engine's traffic dropping to zero: one critical alert.
fn drop_ticks() -> Vec<Tick> {
    let mut sim = Sim::new(2);
    (0..700)
        .map(|i| {
            let l = if i < 600 {
                Load::default()
            } else {
                Load {
                    rps: 0.0,
                    msgs: 0.0,
                    ..Load::default()
                }
            };
            Tick {
                at: at(i),
                cpu_us: 0,
                scopes: vec![(ScopeKey::Global, sim.sample(&l))],
            }
        })
        .collect()
}

async fn deliver(hook: WebhookParams, bodies: Bodies) -> (Vec<String>, Arc<AlertStats>) {
    let (tx, handle) = spawn(AnalyticsParams::default(), Some(quick(hook)));
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

async fn plain(statuses: Vec<u16>) -> (Vec<String>, Arc<AlertStats>) {
    let (port, bodies) = receiver(statuses, None).await;
    let url = format!("http://127.0.0.1:{port}/hooks/agentmux");
    deliver(WebhookParams::new(&url, None).unwrap(), bodies).await
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let (bodies, stats) = plain(vec![503, 500]).await;
    assert_eq!(bodies.len(), 3, "two failures and a success: {bodies:?}");
    assert_eq!((stats.webhook_sent_total(), stats.webhook_failed_total()), (1, 0));
    let v: serde_json::Value = serde_json::from_str(&bodies[2]).unwrap();
    assert_eq!(v["source"], "agentmux");
    assert_eq!(v["change"], "raised");
    assert_eq!(v["alert"]["kind"], "traffic_drop");
    assert_eq!(v["alert"]["scope"], "global");
    assert_eq!(v["alert"]["severity"], "critical");
    assert_eq!(stats.raised_total(AlertKind::TrafficDrop, Severity::Critical), 1);
    assert_eq!(stats.active(Severity::Critical), 1);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let (bodies, stats) = plain(vec![400]).await;
    assert_eq!(bodies.len(), 1);
    assert_eq!((stats.webhook_sent_total(), stats.webhook_failed_total()), (0, 1));
}

#[tokio::test]
async fn https_receivers_are_verified_with_the_given_ca() {
    let dir = std::env::temp_dir().join(format!("agentmux-webhook-{}", std::process::id()));
    let (cert, key): (PathBuf, PathBuf) = (dir.join("server.crt"), dir.join("server.key"));
    agentmux_certs::dev::ensure_dev_certs(&cert, &key).unwrap();
    let paths = agentmux_certs::CertPaths { cert, key };
    let certified = agentmux_certs::load_certified_key(&paths).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(agentmux_certs::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let (port, bodies) = receiver(Vec::new(), Some(TlsAcceptor::from(Arc::new(config)))).await;
    let url = format!("https://localhost:{port}/hooks/agentmux");
    let hook = WebhookParams::new(&url, Some(&dir.join("ca.crt"))).unwrap();
    let (got, stats) = deliver(hook, bodies).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(stats.webhook_sent_total(), 1);
}

#[test]
fn webhook_urls_are_checked() {
    assert!(WebhookParams::new("ftp://x/", None).is_err());
    assert!(WebhookParams::new("not a url", None).is_err());
    assert!(WebhookParams::new("/relative", None).is_err());
    assert!(WebhookParams::new("https://hooks.example.com/a?b=c", None).is_ok());
    assert!(WebhookParams::new("http://user:pw@hooks.example.com/", None).is_err());
    let err = WebhookParams::new("https://h/", Some(std::path::Path::new("/nonexistent/ca.pem")));
    assert!(err.unwrap_err().to_string().starts_with("TLS: "));
}
