//! RFC 8441 toward upstreams: a websocket route whose cluster says
//! `protocol = "http2"` opens each agent session as an extended CONNECT
//! stream (`:protocol websocket`) on the endpoint's pooled HTTP/2
//! connections, instead of an HTTP/1.1 upgrade on a connection of its own.
//! Many sessions share one upstream connection; a connection at the peer's
//! `MAX_CONCURRENT_STREAMS` gets no more, and the pool opens another (the
//! same accounting as HTTP/2 requests: a session holds its stream's slot
//! until it ends). Each stream has HTTP/2 flow control of its own, so a slow
//! agent holds back its own stream and no other: the relay stops reading a
//! side it cannot write, as over a TCP connection. Until a new connection's
//! SETTINGS arrive the pool assumes 100 streams (hyper's default); a
//! session opened past a lower real limit in that first round trip waits
//! for a stream to free, or for the handshake timeout (504).
//!
//! The upstream must have sent `SETTINGS_ENABLE_CONNECT_PROTOCOL`; one that
//! did not gets no stream (the request fails before a byte goes out) and
//! the agent a 502. The answer is checked like a `101`: 2xx, no extensions,
//! a subprotocol only from the agent's offer.

use std::str::FromStr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use super::handshake::{Accepted, Forwarded, accept_headers};
use crate::body::Body;
use crate::endpoint::EndpointGuard;
use crate::error::{Cause, ProxyError};
use crate::pool::{HttpLease, SendError};

/// An open upstream WebSocket stream: its transport, the lease that holds
/// its stream slot (dropped when the session ends), and the answer.
pub(crate) struct Opened {
    pub(crate) io: TokioIo<Upgraded>,
    pub(crate) lease: HttpLease,
    pub(crate) accepted: Accepted,
}

/// The extended CONNECT for the agent's request, and the subprotocols it
/// offers (built before any await: the agent's request is not `Sync`).
pub(crate) fn request<B>(
    req: &Request<B>,
    host: Option<&str>,
    tls: bool,
) -> Result<(Request<Body>, Vec<String>), ProxyError> {
    let Forwarded { headers, offered } = Forwarded::from(req);
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = host
        .and_then(|h| Authority::from_str(h).ok())
        .unwrap_or_else(|| Authority::from_static("localhost"));
    let uri = Uri::builder()
        .scheme(if tls { Scheme::HTTPS } else { Scheme::HTTP })
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::new(Cause::BadRequest, "invalid request target"))?;
    let mut up = Request::new(crate::body::empty());
    *up.method_mut() = Method::CONNECT;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_2;
    *up.headers_mut() = headers;
    up.headers_mut()
        .insert(header::SEC_WEBSOCKET_VERSION, http::HeaderValue::from_static("13"));
    up.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    Ok((up, offered))
}

/// Opens the session upstream as an extended CONNECT stream (`up` from
/// [`request`]).
pub(crate) async fn open(
    up: Request<Body>,
    offered: &[String],
    guard: &mut EndpointGuard,
    limit: Duration,
) -> Result<Opened, ProxyError> {
    let started = tokio::time::Instant::now();
    let mut lease = guard.acquire_http(false).await?;
    if !lease.is_h2() {
        guard.failed();
        return Err(ProxyError::new(
            Cause::UpstreamProtocol,
            "the upstream connection is HTTP/1.1; protocol = \"http2\" needs an HTTP/2 upstream",
        ));
    }
    let left = limit.saturating_sub(started.elapsed());
    let response = match tokio::time::timeout(left, lease.send(up)).await {
        Err(_) => {
            guard.failed();
            lease.mark_broken();
            return Err(ProxyError::new(
                Cause::UpstreamTimeout,
                format!("upstream did not answer the extended CONNECT within {limit:?}"),
            ));
        }
        Ok(Err(e)) => {
            guard.failed();
            let cause = match e {
                SendError::Failed(c) | SendError::NotSent { cause: Some(c), .. } => Some(c),
                SendError::NotSent { cause: None, .. } => None,
            };
            let e = ProxyError::new(
                Cause::UpstreamProtocol,
                "the upstream took no extended CONNECT (did it send SETTINGS_ENABLE_CONNECT_PROTOCOL?)",
            );
            return Err(match cause {
                Some(c) => e.with_source(c),
                None => e,
            });
        }
        Ok(Ok(r)) => r,
    };
    if !response.status().is_success() {
        guard.refused();
        return Err(ProxyError::new(
            Cause::UpgradeRefused,
            format!(
                "upstream refused the WebSocket stream with status {}",
                response.status().as_u16()
            ),
        ));
    }
    let accepted = accept_headers(response.headers().clone(), offered).map_err(|e| {
        guard.failed();
        ProxyError::new(Cause::UpstreamProtocol, e.to_string())
    })?;
    let left = limit.saturating_sub(started.elapsed());
    let io = match tokio::time::timeout(left, hyper::upgrade::on(response)).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => {
            guard.failed();
            return Err(ProxyError::new(Cause::UpstreamProtocol, "upstream stream did not open").with_source(e));
        }
        Err(_) => {
            guard.failed();
            return Err(ProxyError::new(
                Cause::UpstreamTimeout,
                format!("upstream stream did not open within {limit:?}"),
            ));
        }
    };
    Ok(Opened {
        io: TokioIo::new(io),
        lease,
        accepted,
    })
}
