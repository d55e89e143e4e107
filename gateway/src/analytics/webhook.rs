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
//! HTTP/1.1 over plain TCP or TLS, one connection per delivery
//! ([`crate::outbound`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use tokio::sync::mpsc;

use super::alert::{AlertEvent, AlertStats};
use crate::outbound::Target;

/// Why a webhook could not be set up.
pub type WebhookError = crate::outbound::TargetError;

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

impl WebhookParams {
    /// Parses and checks `url`; for `https`, trusts `ca` (a PEM file) or,
    /// without one, the webpki roots.
    pub fn new(url: &str, ca: Option<&Path>) -> Result<Self, WebhookError> {
        Ok(Self {
            target: Target::parse(url, ca)?,
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
        let result = p.target.send(request(&p.target, body.clone()), p.timeout).await;
        let retry = match result.map(|r| r.status()) {
            Ok(s) if s.is_success() => return true,
            Ok(s) => {
                let retryable =
                    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT;
                tracing::warn!(status = s.as_u16(), attempt, "alert webhook answered an error");
                retryable
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "alert webhook delivery failed");
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

fn request(t: &Target, body: Bytes) -> Request<Bytes> {
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::POST;
    if let Ok(uri) = t.path.parse() {
        *req.uri_mut() = uri;
    }
    let h = req.headers_mut();
    h.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    h.insert(header::USER_AGENT, http::HeaderValue::from_static("agentmux-analytics"));
    req
}
