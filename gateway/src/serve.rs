//! The request path: settle a request at the edge, route it, run the
//! route's stack (filters, then the session kind), and turn any failure
//! into its HTTP answer here, in one place.

use std::sync::Arc;

use agentmux_filters::{ClientAddr, PeerIdentity};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::body::Body;
use crate::body::ProxyBody;
use crate::config::ForwardPath;
use crate::conn::ConnInfo;
use crate::edge;
use crate::edge::RequestHost;
use crate::error::{Cause, ProxyError};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::telemetry::Tracing;

/// Answers one agent request: settles it at the edge, routes it and runs
/// the route's stack; every failure becomes its mapped HTTP answer here.
pub(crate) async fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    tracing: Option<&Tracing>,
    access_log: bool,
    gateway_metrics: &Metrics,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let peer = edge::Peer {
        addr: conn.client.ip(),
        tls: conn.tls,
    };
    let admitted = match edge::admit(&mut parts, peer, conn.settings.edge()) {
        Ok(a) => a,
        Err(e) => return refuse_at_edge(gateway_metrics, &conn, e),
    };
    let host = admitted.host.as_ref().map(|a| a.as_str());
    let Some((route, index)) = rt.router().find(host, parts.uri.path(), &parts.headers) else {
        let msg = format!("no route for host {:?} path {:?}", host.unwrap_or(""), parts.uri.path());
        return refuse_at_edge(gateway_metrics, &conn, ProxyError::new(Cause::NoRoute, msg));
    };
    let Some(stack) = rt.stack(index) else {
        return ProxyError::new(Cause::Internal, "route has no stack").into_response();
    };
    let metrics = &stack.metrics;
    let started = Instant::now();
    let body = match edge::admit_body(body, route.body_limits()) {
        Ok(b) => b,
        Err(e) => {
            metrics.error(e.cause());
            metrics.status(e.status());
            return e.into_response();
        }
    };
    if route.forward_path() == ForwardPath::Raw
        && let Some(edge::RawPath(raw)) = parts.extensions.remove::<edge::RawPath>()
    {
        parts.uri = Uri::from(raw);
    }
    let host = admitted.host;
    let method = parts.method.clone();
    let span = tracing.map(|t| {
        let span = t.start("agentmux.request", route.name(), &mut parts.headers);
        span.set("http.request.method", method.to_string());
        span.set("agentmux.mode", route.mode().as_str());
        if let Some(h) = &host {
            span.set("server.address", h.as_str().to_owned());
        }
        span
    });
    if let Some(s) = &span {
        parts.extensions.insert(s.clone());
    }
    parts.extensions.insert(ClientAddr(conn.client));
    if let Some(id) = &conn.peer_identity {
        parts.extensions.insert(PeerIdentity(id.to_string()));
    }
    parts.extensions.insert(RequestHost(host));
    let conn_addr = conn.client;
    let request_bytes = http_body::Body::size_hint(&body).exact().unwrap_or(0);
    parts.extensions.insert(conn);
    // Nothing of the body is read here: filters that decide on the head
    // alone (auth, rate limits, circuits, shedding) run before any byte of
    // it is, and a retry filter replays what passed (`ProxyBody`).
    let body = ProxyBody::new(body, stack.replay_limit);
    let resp = stack.service().oneshot(Request::from_parts(parts, body)).await;
    let resp = resp.unwrap_or_else(|e| {
        let e = ProxyError::from_box(e);
        tracing::debug!(route = route.name(), cause = e.cause().as_str(), error = %e, "request failed");
        metrics.error(e.cause());
        e.into_response()
    });
    metrics.status(resp.status());
    let elapsed = started.elapsed();
    metrics.request_seconds.observe(elapsed);
    if let Some(s) = span {
        s.set("http.response.status_code", i64::from(resp.status().as_u16()));
        if resp.status().is_server_error() {
            s.error(resp.status().to_string());
        }
    }
    if access_log {
        tracing::info!(
            target: "access",
            client = %conn_addr,
            route = route.name(),
            cluster = route.cluster(),
            method = %method,
            status = resp.status().as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_bytes = request_bytes,
            response_bytes = resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            "request"
        );
    }
    resp
}

/// Answers a request refused before it reached a route, counted per
/// listener and cause.
fn refuse_at_edge(metrics: &Metrics, conn: &ConnInfo, e: ProxyError) -> Response<Body> {
    tracing::debug!(listener = %conn.listener, client = %conn.client, cause = e.cause().as_str(), error = %e, "request refused at the edge");
    metrics.edge_rejected(&conn.listener, e.cause());
    e.into_response()
}
