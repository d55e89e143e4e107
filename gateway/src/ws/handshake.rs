//! The upstream WebSocket opening handshake: our own upgrade on a pooled
//! upstream transport (the agent's side is `crate::session::upgrade`).
//!
//! The upstream handshake is written and parsed here rather than through
//! hyper's client so the session keeps the pooled transport itself (no
//! extra boxing or buffering layer on the relay path) and so bytes the
//! upstream sends right after its `101` are not lost: they seed the relay.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::body::Body;
use crate::session::upgrade::{AgentHandshake, accept_key, has_token};

/// Largest upstream `101` head we read.
const MAX_HEAD: usize = 16 * 1024;

use crate::connect::UpstreamIo;
use crate::edge::headers::{add_via, strip_hop_by_hop};

/// Our upgrade request toward the upstream.
pub(crate) struct UpstreamUpgrade {
    bytes: Vec<u8>,
    accept: String,
    offered: Vec<String>,
}

impl UpstreamUpgrade {
    /// Builds the request: the agent's path and end-to-end headers, its
    /// subprotocol offer, a fresh key, no extensions (a frame relay cannot
    /// carry compressed frames it does not decompress). The forwarding
    /// headers are the ones the edge set; `host` is the request's one
    /// authority.
    pub(crate) fn new<B>(req: &Request<B>, host: Option<&str>) -> Self {
        let Forwarded { headers, offered } = Forwarded::from(req);
        let key = STANDARD.encode(rand::random::<[u8; 16]>());
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(format!("GET {target} HTTP/1.1\r\n").as_bytes());
        if let Some(host) = host {
            bytes.extend_from_slice(format!("host: {host}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n");
        bytes.extend_from_slice(format!("sec-websocket-key: {key}\r\n").as_bytes());
        for (name, value) in &headers {
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        Self {
            accept: accept_key(key.as_bytes()),
            bytes,
            offered,
        }
    }
}

/// What of the agent's request goes upstream, whichever way the session is
/// opened there (an HTTP/1.1 upgrade or an HTTP/2 extended CONNECT): its
/// end-to-end headers and subprotocol offer, no extensions (a frame relay
/// cannot carry compressed frames it does not decompress), none of the
/// agent's own handshake. The forwarding headers are the ones the edge set.
pub(crate) struct Forwarded {
    pub(crate) headers: HeaderMap,
    /// The subprotocols offered, for checking the upstream's choice.
    pub(crate) offered: Vec<String>,
}

impl<B> From<&Request<B>> for Forwarded {
    fn from(req: &Request<B>) -> Self {
        let mut headers = req.headers().clone();
        strip_hop_by_hop(&mut headers);
        for name in [
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_EXTENSIONS,
            header::SEC_WEBSOCKET_ACCEPT,
            header::HOST,
            header::CONTENT_LENGTH,
        ] {
            headers.remove(name);
        }
        add_via(&mut headers, req.version());
        let offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        Self { headers, offered }
    }
}

/// How the upstream handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The connection closed or reset before any response byte: safe to
    /// try again on a fresh connection (a pooled one may have gone stale).
    #[error("upstream closed the connection before answering the upgrade")]
    NoResponse,
    /// I/O failed mid-way.
    #[error("upstream I/O failed during the upgrade: {0}")]
    Io(#[source] std::io::Error),
    /// No complete answer within the handshake timeout.
    #[error("upstream did not answer the upgrade within {0:?}")]
    Timeout(Duration),
    /// The upstream answered with another status.
    #[error("upstream refused the WebSocket upgrade with status {0}")]
    Refused(u16),
    /// The `101` broke the protocol (bad accept key, unoffered
    /// subprotocol, extensions, oversized head).
    #[error("upstream upgrade response is invalid: {0}")]
    Invalid(&'static str),
}

/// The upstream's accepted upgrade.
pub(crate) struct Accepted {
    /// The subprotocol it selected, if any.
    pub(crate) protocol: Option<HeaderValue>,
    /// Its other end-to-end response headers, for the agent.
    pub(crate) headers: HeaderMap,
    /// WebSocket bytes that arrived with the head.
    pub(crate) leftover: Vec<u8>,
}

/// Sends the upgrade on `io` and checks the answer.
pub(crate) async fn perform(
    io: &mut UpstreamIo,
    up: &UpstreamUpgrade,
    limit: Duration,
) -> Result<Accepted, HandshakeError> {
    match tokio::time::timeout(limit, exchange(io, up)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout(limit)),
    }
}

async fn exchange(io: &mut UpstreamIo, up: &UpstreamUpgrade) -> Result<Accepted, HandshakeError> {
    let stale = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted => HandshakeError::NoResponse,
        _ => HandshakeError::Io(e),
    };
    io.write_all(&up.bytes).await.map_err(stale)?;
    io.flush().await.map_err(stale)?;
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        let mut chunk = [0u8; 2048];
        let n = io.read(&mut chunk).await.map_err(|e| {
            if buf.is_empty() {
                stale(e)
            } else {
                HandshakeError::Io(e)
            }
        })?;
        if n == 0 {
            return Err(if buf.is_empty() {
                HandshakeError::NoResponse
            } else {
                HandshakeError::Invalid("truncated response head")
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(HandshakeError::Invalid("response head too large"));
        }
    };
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut raw);
    match resp.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HandshakeError::Invalid("malformed response head")),
    }
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Refused(status));
    }
    let mut headers = HeaderMap::new();
    for h in resp.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(n, v);
        }
    }
    let accepted = verify(headers, up)?;
    Ok(Accepted {
        leftover: buf[head_len..].to_vec(),
        ..accepted
    })
}

fn verify(headers: HeaderMap, up: &UpstreamUpgrade) -> Result<Accepted, HandshakeError> {
    if !has_token(&headers, header::UPGRADE, "websocket") || !has_token(&headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::Invalid("missing Upgrade/Connection headers"));
    }
    if headers.get(header::SEC_WEBSOCKET_ACCEPT).map(HeaderValue::as_bytes) != Some(up.accept.as_bytes()) {
        return Err(HandshakeError::Invalid("wrong Sec-WebSocket-Accept"));
    }
    accept_headers(headers, &up.offered)
}

/// The checks every opening answer gets (an HTTP/1.1 `101` or the `200` to
/// an extended CONNECT): no extensions, a subprotocol only from the offer;
/// what is left of its headers goes to the agent.
pub(crate) fn accept_headers(mut headers: HeaderMap, offered: &[String]) -> Result<Accepted, HandshakeError> {
    if headers.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(HandshakeError::Invalid("extensions were not offered"));
    }
    let protocol = headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    if let Some(p) = &protocol {
        let ok = p.to_str().is_ok_and(|p| offered.iter().any(|o| o == p.trim()));
        if !ok {
            return Err(HandshakeError::Invalid("subprotocol was not offered"));
        }
    }
    strip_hop_by_hop(&mut headers);
    for name in [
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    Ok(Accepted {
        protocol,
        headers,
        leftover: Vec::new(),
    })
}

/// The agent's answer (`101`, or `200` to an extended CONNECT) with the
/// upstream's end-to-end headers.
pub(crate) fn switching_protocols(handshake: &AgentHandshake, accepted: &Accepted) -> Response<Body> {
    let mut r = crate::session::upgrade::switching_protocols_to(handshake, None);
    let h = r.headers_mut();
    for (name, value) in &accepted.headers {
        // The opening headers are the gateway's own (an HTTP/2 answer
        // has none of them).
        if !matches!(
            *name,
            header::UPGRADE | header::CONNECTION | header::SEC_WEBSOCKET_ACCEPT
        ) {
            h.append(name.clone(), value.clone());
        }
    }
    if let Some(p) = &accepted.protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade() -> http::request::Builder {
        Request::get("/ws")
            .version(http::Version::HTTP_11)
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn upstream_request_drops_extensions_and_keeps_protocols() {
        let req = upgrade()
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("sec-websocket-protocol", "chat.v2, chat.v1")
            .header("x-agent", "7")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .unwrap();
        let up = UpstreamUpgrade::new(&req, Some("gw.test"));
        let text = String::from_utf8(up.bytes.clone()).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\nhost: gw.test\r\n"), "{text}");
        assert!(!text.contains("permessage-deflate"));
        assert!(
            !text.contains("dGhlIHNhbXBsZSBub25jZQ=="),
            "agent key must not be reused"
        );
        assert!(text.contains("x-agent: 7\r\n") && text.contains("x-forwarded-for: 10.0.0.1\r\n"));
        assert_eq!(up.offered, ["chat.v2", "chat.v1"]);
    }
}
