//! `mode = "http"`: forwards requests over pooled upstream connections and
//! streams both bodies through.

mod body;

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::body::{Body, boxed};
use crate::conn::ConnInfo;
use crate::edge::RequestHost;
use crate::edge::headers::{add_via, strip_hop_by_hop};
use crate::endpoint::{EndpointGuard, EndpointLayer};
use crate::error::{Cause, ProxyError};
use crate::metrics::LatencyHistogram;
use crate::pool::{HttpLease, SendError};
use crate::upstream::ActiveGuard;
use body::{FirstByte, LeaseBody};

/// What an http route needs to forward a request.
pub(crate) struct HttpRoute {
    pub(crate) endpoints: EndpointLayer,
    /// To the upstream's response headers (504 beyond).
    pub(crate) request_timeout: Duration,
    /// Time to the first response body byte.
    pub(crate) first_byte: LatencyHistogram,
}

/// Sends the request to an endpoint of the route's cluster and returns its
/// response with the body still streaming.
pub(crate) async fn forward(route: &HttpRoute, req: Request<ProxyBody>) -> Result<Response<Body>, ProxyError> {
    let conn = req
        .extensions()
        .get::<Arc<ConnInfo>>()
        .cloned()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "request without connection info"))?;
    let host = req.extensions().get::<RequestHost>().and_then(|h| h.0.clone());
    let target = route.endpoints.target(req.headers(), conn.client.ip(), false);
    let mut guard = route.endpoints.pick(&target).await?;
    let started = Instant::now();
    let deadline = started + route.request_timeout;
    let tls_upstream = route.endpoints.cluster().config().tls.is_some();
    let (mut parts, body) = req.into_parts();
    let downstream_version = parts.version;
    // The edge already set the forwarding headers and the one `Host`.
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, downstream_version);
    let mut req = Request::from_parts(parts, body.into_body());
    let mut lease = guard.acquire_http(false).await?;
    let result = loop {
        set_upstream_target(&mut req, lease.is_h2(), tls_upstream, host.as_ref())?;
        match tokio::time::timeout_at(deadline, lease.send(req)).await {
            Err(_) => {
                lease.mark_broken();
                guard.failed();
                return Err(ProxyError::new(
                    Cause::UpstreamTimeout,
                    "upstream did not answer in time",
                ));
            }
            Ok(Err(SendError::NotSent { request, cause })) if !lease.is_fresh() => {
                // The pooled connection died before anything was written:
                // safe to send again, on a connection opened for it.
                tracing::debug!(error = ?cause, "pooled connection unusable, retrying on a fresh one");
                req = *request;
                lease = guard.acquire_http(true).await?;
            }
            Ok(other) => break other,
        }
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => return Err(send_failed(&mut guard, e)),
    };
    guard.answered(resp.status(), Some(started.elapsed()));
    let first_byte = FirstByte {
        histogram: route.first_byte.clone(),
        since: started,
    };
    let active = guard.take_active();
    Ok(into_downstream(resp, lease, active, downstream_version, first_byte))
}

/// Why an exchange failed, told to the endpoint guard: the agent's body
/// cut short (too large, too slow) is the agent's failure, not the
/// endpoint's.
fn send_failed(guard: &mut EndpointGuard, e: SendError) -> ProxyError {
    let cause = match e {
        SendError::Failed(c) | SendError::NotSent { cause: Some(c), .. } => Some(c),
        SendError::NotSent { cause: None, .. } => None,
    };
    if let Some(agent) = cause.as_ref().and_then(|c| ProxyError::from_agent_body(c)) {
        guard.forget();
        return agent;
    }
    guard.failed();
    let e = ProxyError::new(Cause::UpstreamProtocol, "upstream connection failed");
    match cause {
        Some(c) => e.with_source(c),
        None => e.with_source(crate::pool::Unusable),
    }
}

/// Points the request at the upstream: origin-form for HTTP/1.1 (with a
/// `Host` header, which an HTTP/2 agent does not send), absolute form for
/// HTTP/2 (which needs `:scheme` and `:authority`).
fn set_upstream_target(
    req: &mut Request<Body>,
    h2: bool,
    tls: bool,
    host: Option<&Authority>,
) -> Result<(), ProxyError> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if h2 {
        let authority = host.cloned().unwrap_or_else(|| Authority::from_static("localhost"));
        let scheme = if tls { Scheme::HTTPS } else { Scheme::HTTP };
        *req.uri_mut() = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::new(Cause::BadRequest, "invalid request target"))?;
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = Version::HTTP_2;
    } else {
        // The edge left exactly one `Host` (the request's authority);
        // an HTTP/2 agent's request has one too.
        if !req.headers().contains_key(header::HOST)
            && let Some(h) = host.and_then(|h| HeaderValue::from_str(h.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, h);
        }
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(())
}

fn into_downstream(
    resp: Response<Incoming>,
    lease: HttpLease,
    active: Option<ActiveGuard>,
    version: Version,
    first_byte: FirstByte,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    parts.version = version;
    Response::from_parts(parts, boxed(LeaseBody::new(body, lease, active, first_byte)))
}
