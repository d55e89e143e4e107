//! The edge: what every agent request goes through before routing, so
//! that the router, the filters, the upstream, the logs and the traces all
//! see the same request.
//!
//! ```text
//! listener → edge::admit (one authority, normalized path, forwarding
//!            headers) → router → edge::admit_body (size, deadline)
//!          → route stack
//! ```
//!
//! - [`authority`]: exactly one host per request (400 otherwise).
//! - [`path`]: the path routed is the path forwarded (400 for escaped
//!   slashes and backslashes by default).
//! - [`forwarded`]: `X-Forwarded-*` / `Forwarded` kept only from trusted
//!   proxies.
//! - [`body`]: `max_request_body_bytes` (413) and `request_body_timeout`
//!   (408), enforced as the body streams.
//!
//! Each refusal is a [`ProxyError`] with its cause, so it is answered and
//! counted like every other failure (`agentmux_edge_rejected_total`).

pub mod authority;
pub mod body;
pub mod forwarded;
pub mod headers;
pub mod path;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{Method, Uri};

pub use crate::config::{BodyParams, EdgePolicy, EscapedSlashes, PathPolicy};
use crate::error::{Cause, ProxyError};
pub use body::{BodyError, EdgeBody};

/// The request's one authority as the edge settled it, carried to the
/// session kinds in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequestHost(pub Option<Authority>);

/// The path as the agent sent it, kept (only when normalization changed
/// it) for routes with `forward_path = "raw"`.
#[derive(Clone, Debug)]
pub struct RawPath(pub PathAndQuery);

/// What the edge settled about a request.
#[derive(Debug)]
pub struct Admitted {
    /// The request's one authority.
    pub host: Option<Authority>,
}

/// Who sent the request, as the edge needs it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The connection's remote address.
    pub addr: std::net::IpAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Settles the request's authority, normalizes its path and sets the
/// forwarding headers (see the module docs). The request in `parts` is
/// the one routed and forwarded from here on.
pub fn admit(parts: &mut Parts, peer: Peer, policy: &EdgePolicy) -> Result<Admitted, ProxyError> {
    // A plain CONNECT asks for a tunnel: a forward proxy's job, not ours.
    if parts.method == Method::CONNECT && parts.extensions.get::<hyper::ext::Protocol>().is_none() {
        return Err(ProxyError::new(
            Cause::MethodNotAllowed,
            "CONNECT tunnels are not served by this gateway",
        ));
    }
    // An extended CONNECT (RFC 8441) opens a WebSocket session, nothing else.
    if let Some(p) = parts.extensions.get::<hyper::ext::Protocol>()
        && !p.as_str().eq_ignore_ascii_case("websocket")
    {
        return Err(ProxyError::new(
            Cause::UnsupportedProtocol,
            format!("extended CONNECT for {:?}: only websocket is served", p.as_str()),
        ));
    }
    // The asterisk form asks about the server itself, and only OPTIONS
    // may (RFC 9112 §3.2.4); routed, `GET *` would reach a catch-all.
    if parts.uri.path() == "*" && parts.method != Method::OPTIONS {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "asterisk-form request target on a method other than OPTIONS",
        ));
    }
    let host = authority::settle(parts).map_err(|e| ProxyError::new(Cause::BadRequest, e.to_string()))?;
    normalize_path(parts, &policy.path)?;
    let hop = forwarded::Hop {
        client: peer.addr,
        tls: peer.tls,
        host: host.as_ref().map(Authority::as_str),
        trusted: policy.trusts(peer.addr),
    };
    forwarded::set(&mut parts.headers, &hop);
    Ok(Admitted { host })
}

fn normalize_path(parts: &mut Parts, policy: &PathPolicy) -> Result<(), ProxyError> {
    let normal =
        path::normalize(parts.uri.path(), policy).map_err(|e| ProxyError::new(Cause::BadRequest, e.to_string()))?;
    if let std::borrow::Cow::Owned(normal) = normal {
        let with_query = match parts.uri.query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        let pq = PathAndQuery::try_from(with_query)
            .map_err(|_| ProxyError::new(Cause::BadRequest, "invalid request target"))?;
        if let Some(raw) = parts.uri.path_and_query().cloned() {
            parts.extensions.insert(RawPath(raw));
        }
        let mut uri = parts.uri.clone().into_parts();
        uri.path_and_query = Some(pq);
        parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::new(Cause::BadRequest, "invalid request target"))?;
    }
    Ok(())
}

/// Checks a declared body size against the route's limit before anything
/// runs, and wraps the body so the limit and deadline hold as it streams.
pub fn admit_body(body: hyper::body::Incoming, limits: BodyParams) -> Result<EdgeBody, ProxyError> {
    use http_body::Body as _;
    let declared = body.size_hint().lower();
    if declared > limits.max_bytes {
        return Err(ProxyError::new(
            Cause::TooLarge,
            format!(
                "request body of {declared} bytes is over the limit of {}",
                limits.max_bytes
            ),
        ));
    }
    Ok(EdgeBody::new(body, limits))
}

#[cfg(test)]
mod tests;
