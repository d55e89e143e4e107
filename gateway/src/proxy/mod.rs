//! `mode = "http"`: forwards requests over pooled upstream connections and
//! streams both bodies through.

mod body;

use std::net::IpAddr;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{Body, boxed};
use crate::config::HashKey;
use crate::conn::ConnInfo;
use crate::edge::headers::{add_via, strip_hop_by_hop};
use crate::error::{Cause, ProxyError};
use crate::pool::{HttpLease, SendError};
use crate::stack::{ProxyBody, RequestHost, Terminal};
use crate::upstream::hash_bytes;
use body::{FirstByte, LeaseBody};

/// Sends the request to an endpoint of the route's cluster and returns its
/// response with the body still streaming.
pub(crate) async fn forward(t: &Terminal, req: Request<ProxyBody>) -> Result<Response<Body>, ProxyError> {
    let conn = req
        .extensions()
        .get::<Arc<ConnInfo>>()
        .cloned()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "request without connection info"))?;
    let host = req.extensions().get::<RequestHost>().and_then(|h| h.0.clone());
    let cluster = &t.cluster;
    let key = cluster.hash_key().and_then(|k| affinity_key(k, &req, conn.client.ip()));
    let picked = t.pick(key)?;
    let endpoint = picked.endpoint.clone();
    let pool = endpoint
        .http
        .as_ref()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "cluster has no HTTP pool"))?;
    let active = endpoint.track();
    let started = Instant::now();
    let deadline = started + t.route.request_timeout;
    let tls_upstream = cluster.config().tls.is_some();
    let (mut parts, body) = req.into_parts();
    let downstream_version = parts.version;
    // The edge already set the forwarding headers and the one `Host`.
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, downstream_version);
    let mut req = Request::from_parts(parts, body.into_body());
    let threshold = cluster.config().health.unhealthy_threshold;

    let mut lease = match pool.acquire_http().await {
        Ok(l) => l,
        Err(e) => {
            endpoint.report(false, None, threshold);
            picked.record(None);
            return Err(ProxyError::from(e));
        }
    };
    t.acquire.observe(started.elapsed());
    let result = loop {
        set_upstream_target(&mut req, lease.is_h2(), tls_upstream, host.as_deref())?;
        match tokio::time::timeout_at(deadline, lease.send(req)).await {
            Err(_) => {
                lease.mark_broken();
                endpoint.report(false, None, threshold);
                picked.record(None);
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
                lease = pool.acquire_fresh_http().await?;
            }
            Ok(other) => break other,
        }
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            // The agent's body was cut (too large, too slow): the agent's
            // failure, not the endpoint's.
            let agent = match &e {
                SendError::Failed(c) | SendError::NotSent { cause: Some(c), .. } => ProxyError::from_agent_body(c),
                SendError::NotSent { cause: None, .. } => None,
            };
            if let Some(agent) = agent {
                picked.record(Some(agent.status()));
                return Err(agent);
            }
            endpoint.report(false, None, threshold);
            picked.record(None);
            let cause = match &e {
                SendError::NotSent { cause: Some(c), .. } | SendError::Failed(c) => Some(c.to_string()),
                SendError::NotSent { cause: None, .. } => None,
            };
            return Err(ProxyError::new(Cause::UpstreamProtocol, "upstream connection failed")
                .with_source(cause.unwrap_or_else(|| "connection unusable".into())));
        }
    };
    endpoint.report(!resp.status().is_server_error(), Some(started.elapsed()), threshold);
    picked.record(Some(resp.status()));
    let first_byte = FirstByte {
        histogram: t.metrics.first_byte_seconds.clone(),
        since: started,
    };
    Ok(into_downstream(resp, lease, active, downstream_version, first_byte))
}

/// Points the request at the upstream: origin-form for HTTP/1.1 (with a
/// `Host` header, which an HTTP/2 agent does not send), absolute form for
/// HTTP/2 (which needs `:scheme` and `:authority`).
fn set_upstream_target(req: &mut Request<Body>, h2: bool, tls: bool, host: Option<&str>) -> Result<(), ProxyError> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let bad = |_| ProxyError::new(Cause::BadRequest, "invalid request target");
    if h2 {
        let authority: Authority = host.unwrap_or("localhost").parse().map_err(bad)?;
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
            && let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok())
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
    active: crate::upstream::ActiveGuard,
    version: Version,
    first_byte: FirstByte,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    parts.version = version;
    Response::from_parts(parts, boxed(LeaseBody::new(body, lease, active, first_byte)))
}

/// The session key's hash for consistent hashing; `None` when the request
/// does not carry the key (the balancer then spreads it).
pub(crate) fn affinity_key<B>(key: &HashKey, req: &Request<B>, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(hash_bytes(client.to_string().as_bytes())),
        HashKey::Header(name) => req.headers().get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| hash_bytes(v.as_bytes())),
    }
}
