//! The webhook sink: each alert event is POSTed as JSON to a configured URL,
//! with retries, by one delivery task behind a bounded queue.
//!
//! Body: `{"source":"agentmux","change":"raised|escalated|reopened|cleared",
//! "alert":{…Alert…}}`. A 2xx answer is success; 408, 429, 5xx, connect
//! errors and timeouts are retried up to `attempts` times with exponential
//! backoff (`backoff_base · 2ⁿ`, capped at `backoff_max`, "equal jitter":
//! half fixed, half random, so retries neither synchronise nor hammer);
//! other 4xx answers are final. Events are delivered one at a time in
//! order; while the receiver is down the queue (`queue` events) fills and
//! further events are dropped and counted rather than held without bound.
//!
//! HTTP/1.1 over plain TCP or TLS (tokio-rustls with the ring provider via
//! `agentmux_certs::client_config`: the webpki roots, or a CA file). One
//! connection per delivery: alerts are rare, and a fresh connection never
//! fails on a stale keep-alive.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use super::alert::{AlertEvent, AlertStats};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an absolute `http://` or `https://` URL with a host.
    #[error("webhook url {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The TLS client configuration could not be built (CA file).
    #[error("webhook TLS: {0}")]
    Tls(#[from] agentmux_certs::CertError),
}

/// Where and how to deliver alert events.
#[derive(Clone, Debug)]
pub struct WebhookParams {
    target: Target,
    /// Deliveries tried per event (default 5).
    pub attempts: u32,
    /// First retry delay (default 1 s).
    pub backoff_base: Duration,
    /// Longest retry delay (default 60 s).
    pub backoff_max: Duration,
    /// Limit per attempt: connect, TLS, request and response head (default 10 s).
    pub timeout: Duration,
    /// Events queued for delivery before new ones are dropped (default 64).
    pub queue: usize,
}

#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl WebhookParams {
    /// Parses and checks `url`; for `https`, trusts `ca` (a PEM file) or,
    /// without one, the webpki roots.
    pub fn new(url: &str, ca: Option<&Path>) -> Result<Self, WebhookError> {
        let bad = |why| WebhookError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            // It would travel in the Host header; put a token in the path.
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let tls = if https {
            let name = ServerName::try_from(host.to_owned()).map_err(|_| bad("bad host name"))?;
            let config = agentmux_certs::client_config(ca, vec![b"http/1.1".to_vec()])?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            target: Target {
                host: host.to_owned(),
                port,
                authority: authority.as_str().to_owned(),
                path,
                tls,
            },
            attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            queue: 64,
        })
    }

    /// The delay before retry `n` (1-based).
    fn backoff(&self, n: u32) -> Duration {
        let exp = self.backoff_base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
        let cap = exp.min(self.backoff_max);
        cap / 2 + cap.mul_f64(rand::random::<f64>() / 2.0)
    }
}

/// Starts the delivery task; returns its queue.
pub(crate) fn spawn(params: WebhookParams, stats: Arc<AlertStats>) -> mpsc::Sender<AlertEvent> {
    let (tx, mut rx) = mpsc::channel::<AlertEvent>(params.queue.max(1));
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let body = serde_json::json!({
                "source": "agentmux",
                "change": event.change,
                "alert": event.alert,
            });
            let body = Bytes::from(body.to_string());
            let counter = if deliver(&params, body).await {
                &stats.webhook_sent
            } else {
                &stats.webhook_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    tx
}

/// Tries one event up to `attempts` times. True on a 2xx answer.
async fn deliver(p: &WebhookParams, body: Bytes) -> bool {
    for attempt in 1..=p.attempts.max(1) {
        let result = tokio::time::timeout(p.timeout, post(&p.target, body.clone())).await;
        let retry = match result {
            Ok(Ok(s)) if s.is_success() => return true,
            Ok(Ok(s)) => {
                let retryable =
                    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT;
                tracing::warn!(status = s.as_u16(), attempt, "alert webhook answered an error");
                retryable
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, attempt, "alert webhook delivery failed");
                true
            }
            Err(_) => {
                tracing::warn!(attempt, "alert webhook timed out");
                true
            }
        };
        if !retry {
            return false;
        }
        if attempt < p.attempts {
            tokio::time::sleep(p.backoff(attempt)).await;
        }
    }
    false
}

async fn post(t: &Target, body: Bytes) -> Result<StatusCode, BoxError> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    tcp.set_nodelay(true)?;
    let req = Request::post(t.path.as_str())
        .header(header::HOST, t.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "agentmux-analytics")
        .body(Full::new(body))?;
    match &t.tls {
        Some((connector, name)) => {
            let io = connector.connect(name.clone(), tcp).await?;
            send(io, req).await
        }
        None => send(tcp, req).await,
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<StatusCode, BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    let conn = tokio::spawn(conn);
    let status = sender.send_request(req).await.map(|r| r.status());
    // One request per connection: close it whatever the outcome.
    conn.abort();
    Ok(status?)
}
