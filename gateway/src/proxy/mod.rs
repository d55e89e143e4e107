//! The request path: route a request, run the route's stack (filters, then
//! the mode), and turn any failure into its HTTP answer at the edge.

mod body;
pub(crate) mod headers;
mod http;

use std::sync::Arc;

use ::http::{Request, Response};
use agentmux_filters::{ClientAddr, PeerIdentity};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::ServiceExt;

pub(crate) use http::{affinity_key, forward};

use crate::body::Body;
use crate::error::{Cause, ProxyError};
use crate::listener::ConnInfo;
use crate::runtime::Runtime;
use crate::stack::{ProxyBody, RequestHost};
use crate::telemetry::Tracing;

/// Answers one agent request: routes it and runs the route's stack; every
/// failure becomes its mapped HTTP answer here, at the edge.
pub(crate) async fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    tracing: Option<&Tracing>,
    access_log: bool,
) -> Response<Body> {
    let host = request_host(&req).map(str::to_owned);
    let Some((route, index)) = rt.router().find(host.as_deref(), req.uri().path(), req.headers()) else {
        let msg = format!(
            "no route for host {:?} path {:?}",
            host.as_deref().unwrap_or(""),
            req.uri().path()
        );
        return ProxyError::new(Cause::NoRoute, msg).into_response();
    };
    let Some(stack) = rt.stack(index) else {
        return ProxyError::new(Cause::Internal, "route has no stack").into_response();
    };
    let metrics = &stack.terminal.metrics;
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let span = tracing.map(|t| {
        let span = t.start("agentmux.request", route.name(), &mut parts.headers);
        span.set("http.request.method", method.to_string());
        span.set("agentmux.mode", route.mode().as_str());
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
    let resp = match ProxyBody::prepare(body, stack.replay_limit).await {
        Ok(body) => stack.service().oneshot(Request::from_parts(parts, body)).await,
        Err(e) => Err(ProxyError::new(Cause::BadRequest, "could not read the request body")
            .with_source(e)
            .into()),
    };
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
            response_bytes = resp.headers().get(::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            "request"
        );
    }
    resp
}

/// The host the agent asked for: `:authority` / absolute URI, else `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(::http::header::HOST).and_then(|h| h.to_str().ok()))
}
