//! Active health checks and passive ejection of one endpoint.
//!
//! One task per endpoint owns the decision: it probes every
//! `health_check_interval` (a TCP+TLS connect, or `GET path` answered with
//! 2xx/3xx), ejects the endpoint after `unhealthy_threshold` consecutive
//! failures — failed probes, or failed requests the data path counted —
//! and restores it after `healthy_threshold` consecutive good probes. An
//! ejected endpoint is probed every `min(interval, 5s)` so it returns soon
//! after it recovers.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

use super::endpoint::Endpoint;
use crate::config::{HealthCheckConfig, HealthProbe, UpstreamProtocol};
use crate::connect::Connector;

/// Runs the health controller of one endpoint until cancelled.
pub(crate) async fn run(
    endpoint: Arc<Endpoint>,
    connector: Connector,
    protocol: UpstreamProtocol,
    config: HealthCheckConfig,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut good = 0u32;
    let mut bad = 0u32;
    loop {
        let wait = if endpoint.is_ejected() {
            interval.min(Duration::from_secs(5))
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = endpoint.health_wake.notified() => {
                // The data path saw `unhealthy_threshold` failed requests.
                if endpoint.passive_failures() >= config.unhealthy_threshold && !endpoint.is_ejected() {
                    tracing::warn!(endpoint = endpoint.label(), "ejecting endpoint after consecutive failed requests");
                    endpoint.set_ejected(true);
                    good = 0;
                }
                continue;
            }
            _ = shutdown.cancelled() => return,
        }
        let ok = probe(&connector, protocol, &config, &endpoint).await;
        if ok {
            good += 1;
            bad = 0;
            if endpoint.is_ejected() && good >= config.healthy_threshold {
                tracing::info!(endpoint = endpoint.label(), "endpoint healthy again, back in rotation");
                endpoint.reset_passive_failures();
                endpoint.set_ejected(false);
            }
        } else {
            bad += 1;
            good = 0;
            if !endpoint.is_ejected() && bad >= config.unhealthy_threshold {
                tracing::warn!(
                    endpoint = endpoint.label(),
                    failures = bad,
                    "ejecting endpoint after failed health checks"
                );
                endpoint.set_ejected(true);
            }
        }
    }
}

/// One probe within the probe timeout.
async fn probe(connector: &Connector, protocol: UpstreamProtocol, config: &HealthCheckConfig, ep: &Endpoint) -> bool {
    let attempt = async {
        let io = connector.connect().await.ok()?;
        let HealthProbe::Http(path) = &config.probe else {
            return Some(true);
        };
        let h2 = protocol == UpstreamProtocol::Http2 || io.alpn_is_h2();
        let req = Request::get(path.as_str())
            .header(http::header::HOST, ep.label())
            .header(http::header::USER_AGENT, "agentmux-health-check")
            .body(crate::body::empty())
            .ok()?;
        let status = if h2 {
            let (mut send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.ok()?;
            tokio::spawn(conn);
            let mut req = req;
            *req.uri_mut() = format!("http://{}{}", ep.label(), path).parse().ok()?;
            send.send_request(req).await.ok()?.status()
        } else {
            let (mut send, conn) = http1::handshake(TokioIo::new(io)).await.ok()?;
            tokio::spawn(conn);
            send.send_request(req).await.ok()?.status()
        };
        Some(status.is_success() || status.is_redirection() || status == StatusCode::NOT_MODIFIED)
    };
    matches!(tokio::time::timeout(config.timeout, attempt).await, Ok(Some(true)))
}
