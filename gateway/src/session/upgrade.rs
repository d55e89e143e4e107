//! The agent's side of a WebSocket opening handshake, shared by every
//! session kind that relays WebSockets: checking the agent's request and
//! building the answer it gets. Two forms open the same session:
//!
//! - an HTTP/1.1 upgrade (RFC 6455 §4.2): `GET` with `Upgrade: websocket`
//!   and a `Sec-WebSocket-Key`, answered `101` with its accept key;
//! - an HTTP/2 extended CONNECT (RFC 8441): `:method CONNECT`, `:protocol
//!   websocket`, no key (the stream is the handshake), answered `200`.
//!   The listener offers it (`SETTINGS_ENABLE_CONNECT_PROTOCOL`) only when
//!   a route takes WebSocket sessions; the session on the stream is the
//!   same as on an upgraded connection, many of them per agent connection.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use sha1::{Digest, Sha1};

use crate::body::Body;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    STANDARD.encode(h.finalize())
}

/// Why an agent's request cannot be upgraded.
#[derive(Debug)]
pub(crate) enum Reject {
    /// Not an upgrade request at all: 426 Upgrade Required.
    NotUpgrade,
    /// An unsupported `Sec-WebSocket-Version`: 426 naming version 13.
    Version,
    /// A malformed upgrade: 400 with the reason.
    Malformed(&'static str),
}

impl Reject {
    /// The answer to the agent.
    pub(crate) fn into_response(self) -> Response<Body> {
        let (status, error, message) = match self {
            Self::NotUpgrade => (
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                "this route takes WebSocket upgrades",
            ),
            Self::Version => (
                StatusCode::UPGRADE_REQUIRED,
                "bad_request",
                "unsupported Sec-WebSocket-Version (13 only)",
            ),
            Self::Malformed(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
        };
        let body = serde_json::json!({ "error": error, "message": message });
        let mut r = Response::new(crate::body::full(format!("{body}\n")));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::UPGRADE_REQUIRED {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        r
    }
}

pub(crate) fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How the agent asked for its session.
#[derive(Debug, Clone)]
pub(crate) enum AgentHandshake {
    /// An HTTP/1.1 upgrade with this `Sec-WebSocket-Key`.
    Upgrade(HeaderValue),
    /// An HTTP/2 extended CONNECT (RFC 8441).
    ExtendedConnect,
}

impl AgentHandshake {
    /// How the session reached the gateway, for the session list.
    pub(crate) fn transport(&self) -> &'static str {
        match self {
            Self::Upgrade(_) => "http/1.1",
            Self::ExtendedConnect => "h2",
        }
    }
}

/// Whether `req` is an RFC 8441 extended CONNECT for a WebSocket (the
/// edge refused every other CONNECT).
pub(crate) fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Checks an agent's request for a WebSocket session: an HTTP/1.1 upgrade
/// (returns its key) or an HTTP/2 extended CONNECT.
pub(crate) fn check_agent<B>(req: &Request<B>) -> Result<AgentHandshake, Reject> {
    if is_extended_connect(req) {
        return check_extended_connect(req);
    }
    check_upgrade(req).map(AgentHandshake::Upgrade)
}

/// RFC 8441 §5: version 13, and none of the HTTP/1.1 handshake's key.
fn check_extended_connect<B>(req: &Request<B>) -> Result<AgentHandshake, Reject> {
    let h = req.headers();
    match h.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) {
        Some(b"13") => {}
        Some(_) => return Err(Reject::Version),
        None => return Err(Reject::Malformed("missing sec-websocket-version")),
    }
    if h.contains_key(header::SEC_WEBSOCKET_KEY) {
        return Err(Reject::Malformed(
            "sec-websocket-key belongs to the HTTP/1.1 handshake, not an extended CONNECT",
        ));
    }
    Ok(AgentHandshake::ExtendedConnect)
}

/// Checks an agent's HTTP/1.1 upgrade request; returns its key.
fn check_upgrade<B>(req: &Request<B>) -> Result<HeaderValue, Reject> {
    let h = req.headers();
    if !has_token(h, header::UPGRADE, "websocket") {
        return Err(Reject::NotUpgrade);
    }
    if req.method() != http::Method::GET {
        return Err(Reject::Malformed("a WebSocket upgrade must be a GET"));
    }
    if req.version() != http::Version::HTTP_11 {
        return Err(Reject::Malformed("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !has_token(h, header::CONNECTION, "upgrade") {
        return Err(Reject::Malformed("missing Connection: Upgrade"));
    }
    match h.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) {
        Some(b"13") => {}
        Some(_) => return Err(Reject::Version),
        None => return Err(Reject::Malformed("missing Sec-WebSocket-Version")),
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(Reject::Malformed("missing Sec-WebSocket-Key"))?;
    match STANDARD.decode(key.as_bytes()) {
        Ok(raw) if raw.len() == 16 => Ok(key.clone()),
        _ => Err(Reject::Malformed("Sec-WebSocket-Key must be 16 bytes in base64")),
    }
}

/// The agent's answer opening its session, without headers from an
/// upstream (mux mode): `101` with the accept key for an upgrade, `200`
/// for an extended CONNECT (RFC 8441 §5: a 2xx opens the stream).
pub(crate) fn switching_protocols_to(handshake: &AgentHandshake, protocol: Option<&str>) -> Response<Body> {
    let mut r = Response::new(crate::body::empty());
    let h = r.headers_mut();
    match handshake {
        AgentHandshake::Upgrade(agent_key) => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Ok(v) = HeaderValue::from_str(&accept_key(agent_key.as_bytes())) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        }
        AgentHandshake::ExtendedConnect => *r.status_mut() = StatusCode::OK,
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        r.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    fn upgrade() -> http::request::Builder {
        Request::get("/ws")
            .version(http::Version::HTTP_11)
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn agent_requests_are_checked() {
        assert!(check_agent(&upgrade().body(()).unwrap()).is_ok());
        let r = Request::get("/ws")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "c2hvcnQ=")
            .body(())
            .unwrap();
        assert!(matches!(check_agent(&r), Err(Reject::Malformed(_))));
        let v8 = Request::get("/ws")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-version", "8")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        assert!(matches!(check_agent(&v8), Err(Reject::Version)));
        assert!(matches!(
            check_agent(&Request::get("/ws").body(()).unwrap()),
            Err(Reject::NotUpgrade)
        ));
        let post = Request::post("/ws").header("upgrade", "websocket").body(()).unwrap();
        assert!(matches!(check_agent(&post), Err(Reject::Malformed(_))));
    }

    fn extended_connect(protocol: &'static str) -> http::request::Builder {
        let mut r = Request::connect("https://agents.example/ws").version(http::Version::HTTP_2);
        r.extensions_mut()
            .unwrap()
            .insert(hyper::ext::Protocol::from_static(protocol));
        r
    }

    #[test]
    fn extended_connects_are_checked() {
        let ok = extended_connect("websocket")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        assert!(matches!(check_agent(&ok), Ok(AgentHandshake::ExtendedConnect)));
        let no_version = extended_connect("websocket").body(()).unwrap();
        assert!(matches!(check_agent(&no_version), Err(Reject::Malformed(_))));
        let v8 = extended_connect("websocket")
            .header("sec-websocket-version", "8")
            .body(())
            .unwrap();
        assert!(matches!(check_agent(&v8), Err(Reject::Version)));
        let keyed = extended_connect("websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        assert!(matches!(check_agent(&keyed), Err(Reject::Malformed(_))));
        // Another protocol is not a WebSocket handshake (the edge answers
        // it 501 before a route sees it).
        let other = extended_connect("connect-udp").body(()).unwrap();
        assert!(matches!(check_agent(&other), Err(Reject::NotUpgrade)));
        let r = switching_protocols_to(&AgentHandshake::ExtendedConnect, Some("mcp"));
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::SEC_WEBSOCKET_ACCEPT).is_none());
        assert_eq!(r.headers()[header::SEC_WEBSOCKET_PROTOCOL], "mcp");
    }
}
