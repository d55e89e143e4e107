//! The request head path: bytes → HTTP/1.1 head (as hyper parses it) →
//! `edge::admit` → router → hop-by-hop strip and `Via`, as
//! `proxy::handle` and `proxy::http::forward` run them.
//!
//! Input: the first byte picks the edge policy and the peer (bit 0
//! `merge_slashes = false`, bit 1 `escaped_slashes = "keep"`, bit 2
//! `normalize_path = false`, bit 3 peer is a trusted proxy, bit 4 IPv6
//! peer, bit 5 TLS; `0` is the default policy); the rest is the head.
//!
//! Invariants, beyond "no panic":
//! - a refused request is a 400 or 405;
//! - an admitted request has exactly one `Host`, equal to the authority
//!   returned, and an origin-form target;
//! - with normalization on, the path is `*` only for `OPTIONS`, otherwise
//!   starts with `/`, is a fixed point of `normalize`, has no `.`/`..`
//!   segments, no empty ones with `merge_slashes`, no escape of an
//!   unreserved character, upper-case hex, no escaped slash or backslash
//!   unless kept, and equals what a byte-wise reference normalizer makes
//!   of the agent's path (which must also refuse what the edge refused);
//! - a route is found, the same one twice, and a path `/admin` or under
//!   `/admin/` always gets an auth-filtered route;
//! - from an untrusted peer the forwarding headers are exactly ours;
//! - after the hop-by-hop strip no hop-by-hop header is left (`TE` only
//!   as `trailers`), every header named in `Connection` is gone except
//!   those the edge set (`Host`, `X-Forwarded-*`, `Forwarded`), which are
//!   unchanged, every other header is untouched, and `Via` is one line
//!   ending in this hop after every earlier entry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use crate::config::{Config, EdgePolicy, EscapedSlashes, PathPolicy};
use crate::edge::headers::{add_via, strip_hop_by_hop};
use crate::edge::{self, Peer};
use crate::router::Router;

/// hyper's limits for a request head.
const MAX_HEADERS: usize = 100;
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// Routes to fuzz against: admin (auth) with and without a host, an exact
/// host, a wildcard host with a prefix, a WebSocket prefix, a header
/// route and the catch-all.
const ROUTES: &str = r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:8443"

[filters.auth]
kind = "auth"
api_keys = { ops = "sha256:8d1c0f0d9cd6bdb0a3d3a4e48e1c3f0f7c0a1a8e1e5f0b9b1c1d2e3f4a5b6c7d" }

[[routes]]
name = "all"
cluster = "backend"

[[routes]]
name = "admin"
match = { path_prefix = "/admin" }
filters = ["auth"]
cluster = "backend"

[[routes]]
name = "api"
match = { host = "api.example.com" }
cluster = "backend"

[[routes]]
name = "api-admin"
match = { host = "api.example.com", path_prefix = "/admin" }
filters = ["auth"]
cluster = "backend"

[[routes]]
name = "tenants"
match = { host = "*.tenant.example", path_prefix = "/v1" }
cluster = "backend"

[[routes]]
name = "sessions"
match = { path_prefix = "/ws" }
mode = "websocket"
cluster = "backend"

[[routes]]
name = "canary"
match = { path_prefix = "/v1", headers = [{ name = "x-canary", value = "1" }] }
cluster = "backend"

[clusters.backend]
endpoints = ["127.0.0.1:18080"]
"#;

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Runs one request head through the edge, the router and the header
/// rewrite, asserting the invariants in the module docs.
pub fn request_head(data: &[u8]) {
    let Some((&switches, head)) = data.split_first() else {
        return;
    };
    let Some(mut parts) = parse(head) else {
        return;
    };
    let (policy, peer) = setup(switches);
    let agent_path = parts.uri.path().to_owned();
    let agent_connection = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect::<Vec<_>>();
    let admitted = match edge::admit(&mut parts, peer, &policy) {
        Ok(a) => a,
        Err(e) => {
            assert!(matches!(e.status().as_u16(), 400 | 405), "refused with {}", e.status());
            return;
        }
    };
    let host = admitted.host.as_ref().map(http::uri::Authority::as_str);
    check_host(&parts.headers, host);
    assert!(
        parts.uri.scheme().is_none() && parts.uri.authority().is_none(),
        "target not in origin form: {}",
        parts.uri
    );
    let path = parts.uri.path();
    if policy.path.normalize {
        check_path(&parts.method, path, &policy.path);
        assert_eq!(
            reference(&agent_path, &policy.path).as_deref(),
            Some(path),
            "normalized {agent_path:?}"
        );
    }
    check_route(host, path, &parts.headers, policy.path.normalize);
    check_forwarding(&parts.headers, peer, &policy, host);
    check_rewrite(&mut parts, &agent_connection);
}

/// A head as hyper's HTTP/1 server reads it, `None` where hyper refuses
/// it (or wants more bytes).
fn parse(head: &[u8]) -> Option<Parts> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(head).ok()? else {
        return None;
    };
    let target = req.path?;
    if target.len() > MAX_URI_LEN {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri = Uri::try_from(target.as_bytes()).ok()?;
    let version = if req.version? == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut map = HeaderMap::with_capacity(req.headers.len());
    let (mut te, mut chunked, mut length) = (false, false, None);
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        // hyper's body framing checks (RFC 9112 §6.3).
        if name == header::TRANSFER_ENCODING {
            if version != Version::HTTP_11 {
                return None;
            }
            te = true;
            chunked = value.to_str().is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case("chunked"))
            });
        } else if name == header::CONTENT_LENGTH && !te {
            let digits = value.as_bytes();
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
        map.append(name, value);
    }
    if te && !chunked {
        return None;
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = map;
    Some(parts)
}

fn setup(switches: u8) -> (EdgePolicy, Peer) {
    let bit = |n: u8| switches & (1 << n) != 0;
    let addr = if bit(4) {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    };
    let trusted = if bit(3) {
        let cidr = if bit(4) { "2001:db8::/32" } else { "192.0.2.0/24" };
        cidr.parse().into_iter().collect()
    } else {
        Vec::new()
    };
    let policy = EdgePolicy {
        path: PathPolicy {
            merge_slashes: !bit(0),
            escaped_slashes: if bit(1) {
                EscapedSlashes::Keep
            } else {
                EscapedSlashes::Reject
            },
            normalize: !bit(2),
        },
        trusted_proxies: trusted,
    };
    (policy, Peer { addr, tls: bit(5) })
}

fn check_host(headers: &HeaderMap, host: Option<&str>) {
    let hosts: Vec<&HeaderValue> = headers.get_all(header::HOST).iter().collect();
    match host {
        Some(h) => assert!(
            hosts.len() == 1 && hosts[0].as_bytes() == h.as_bytes(),
            "authority {h:?}, Host headers {hosts:?}"
        ),
        None => assert!(hosts.is_empty(), "no authority, Host headers {hosts:?}"),
    }
}

fn check_path(method: &Method, path: &str, policy: &PathPolicy) {
    if path == "*" {
        assert_eq!(method, Method::OPTIONS, "asterisk-form target with {method}");
        return;
    }
    assert!(
        path.starts_with('/'),
        "normalized path {path:?} does not start with '/'"
    );
    let again = edge::path::normalize(path, policy);
    assert!(
        again.as_deref() == Ok(path),
        "normalized path {path:?} is not a fixed point: {again:?}"
    );
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        assert!(*s != "." && *s != "..", "dot segment in {path:?}");
        assert!(
            !(s.is_empty() && policy.merge_slashes && i + 1 < segments.len()),
            "empty segment in {path:?}"
        );
    }
    assert!(
        policy.escaped_slashes == EscapedSlashes::Keep || !path.contains('\\'),
        "backslash in {path:?}"
    );
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
        let (Some(hex), Some(c)) = (hex, value) else {
            panic!("malformed escape in {path:?}");
        };
        assert_eq!(hex, hex.to_ascii_uppercase(), "lower-case escape in {path:?}");
        assert!(!unreserved(c), "escaped unreserved character in {path:?}");
        assert!(
            policy.escaped_slashes == EscapedSlashes::Keep || !matches!(c, b'/' | b'\\'),
            "escaped slash in {path:?}"
        );
    }
}

/// RFC 3986 §2.3.
fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// What the edge's normalization must make of `path`, written byte by
/// byte and independently of `edge::path`; `None` where it must refuse.
fn reference(path: &str, policy: &PathPolicy) -> Option<String> {
    if path == "*" {
        return Some(path.to_owned());
    }
    if !path.starts_with('/') {
        return None;
    }
    let keep = policy.escaped_slashes == EscapedSlashes::Keep;
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'\\' if keep => decoded.extend_from_slice(b"%5C"),
            b'\\' => return None,
            b'%' => {
                let [h, l, tail @ ..] = rest else { return None };
                rest = tail;
                let c = u8::from_str_radix(std::str::from_utf8(&[*h, *l]).ok()?, 16).ok()?;
                if unreserved(c) {
                    decoded.push(c);
                } else if matches!(c, b'/' | b'\\') && !keep {
                    return None;
                } else {
                    decoded.extend_from_slice(format!("%{c:02X}").as_bytes());
                }
            }
            other => decoded.push(other),
        }
    }
    let decoded = String::from_utf8(decoded).ok()?;
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let mut kept: Vec<&str> = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        match *s {
            "." => {}
            ".." => {
                kept.pop();
            }
            "" if policy.merge_slashes || i + 1 == segments.len() => {}
            s => kept.push(s),
        }
    }
    let trailing = matches!(segments.last(), Some(&("" | "." | "..")));
    let mut out = String::new();
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing || kept.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| match Config::parse(ROUTES, "fuzz routes") {
        Ok(c) => Router::new(c.routes()),
        Err(e) => panic!("the fuzz routes do not parse: {e}"),
    })
}

fn check_route(host: Option<&str>, path: &str, headers: &HeaderMap, normalized: bool) {
    let router = router();
    let first = router.find(host, path, headers);
    let second = router.find(host, path, headers);
    let (Some((route, i)), Some((_, j))) = (first, second) else {
        panic!("no route for {host:?} {path:?} despite a catch-all");
    };
    assert_eq!(i, j, "routing {host:?} {path:?} twice differs");
    if normalized && (path == "/admin" || path.starts_with("/admin/")) {
        assert!(
            route.filters.iter().any(|f| &**f == "auth"),
            "{host:?} {path:?} reached route {:?} without auth",
            route.name()
        );
    }
}

fn check_forwarding(headers: &HeaderMap, peer: Peer, policy: &EdgePolicy, host: Option<&str>) {
    let values = |name: &HeaderName| headers.get_all(name).iter().cloned().collect::<Vec<_>>();
    let client = peer.addr.to_string();
    let xff = values(&XFF);
    if policy.trusts(peer.addr) {
        let chain = xff.last().and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(
            xff.len() == 1 && chain.rsplit(", ").next() == Some(client.as_str()),
            "X-Forwarded-For {xff:?} does not end with {client}"
        );
        return;
    }
    assert_eq!(xff, [client.as_str()], "X-Forwarded-For");
    let proto = if peer.tls { "https" } else { "http" };
    assert_eq!(values(&XFP), [proto], "X-Forwarded-Proto");
    let xfh = values(&XFH);
    match host {
        Some(h) => assert_eq!(xfh, [h], "X-Forwarded-Host"),
        None => assert!(xfh.is_empty(), "X-Forwarded-Host {xfh:?} without an authority"),
    }
}

/// Headers the edge sets that no agent may remove by naming them in
/// `Connection`.
fn edge_set(name: &HeaderName) -> bool {
    *name == header::HOST || *name == XFF || *name == XFP || *name == XFH || *name == header::FORWARDED
}

fn check_rewrite(parts: &mut Parts, agent_connection: &[HeaderValue]) {
    let before = parts.headers.clone();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    let after = &parts.headers;
    let listed: Vec<HeaderName> = agent_connection
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let hop_by_hop = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    for name in hop_by_hop {
        assert!(!after.contains_key(name), "{name} survived the strip");
    }
    let te: Vec<_> = after.get_all(header::TE).iter().collect();
    assert!(
        te.is_empty() || te == [&HeaderValue::from_static("trailers")],
        "TE {te:?} survived"
    );
    for name in before.keys() {
        let (old, new) = (before.get_all(name), after.get_all(name));
        if *name == header::TE || *name == header::VIA || hop_by_hop.contains(&name.as_str()) {
            // Checked above and below.
        } else if edge_set(name) || !listed.contains(name) {
            assert!(old.iter().eq(new.iter()), "{name} changed by the rewrite");
        } else {
            assert!(new.iter().next().is_none(), "{name} named in Connection survived");
        }
    }
    for name in after.keys() {
        assert!(
            before.contains_key(name) || *name == header::VIA,
            "{name} added by the rewrite"
        );
    }
    let hop = match parts.version {
        Version::HTTP_10 => "1.0 agentmux",
        _ => "1.1 agentmux",
    };
    let earlier: Option<Vec<&str>> = before.get_all(header::VIA).iter().map(|v| v.to_str().ok()).collect();
    let vias: Vec<_> = after.get_all(header::VIA).iter().collect();
    assert_eq!(vias.len(), 1, "Via lines {vias:?}");
    let via = vias[0].to_str().unwrap_or("");
    // Earlier entries that are text are kept, in order, before this hop
    // (unless the agent named Via in Connection).
    if let Some(earlier) = earlier.filter(|_| !listed.contains(&header::VIA)) {
        let mut want: Vec<&str> = earlier.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).collect();
        want.push(hop);
        assert_eq!(via, want.join(", "), "Via entries");
    } else {
        assert!(via.ends_with(hop), "Via {via:?} does not end with this hop");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_normalizer_agrees_with_the_edge_s_documented_cases() {
        let default = PathPolicy::default();
        let norm = |p: &str| reference(p, &default);
        assert_eq!(norm("/x/../admin").as_deref(), Some("/admin"));
        assert_eq!(norm("/%2e%2e/%61dmin/").as_deref(), Some("/admin/"));
        assert_eq!(norm("//a//b/..").as_deref(), Some("/a/"));
        assert_eq!(norm("/a%3fb%7e").as_deref(), Some("/a%3Fb~"));
        assert_eq!(norm("/r%C3%A9/./é").as_deref(), Some("/r%C3%A9/é"));
        assert_eq!(norm("/a%2fb"), None);
        assert_eq!(norm("/a\\b"), None);
        assert_eq!(norm("/%4"), None);
        let keep = PathPolicy {
            escaped_slashes: EscapedSlashes::Keep,
            merge_slashes: false,
            ..default
        };
        assert_eq!(reference("/a\\b//%2f", &keep).as_deref(), Some("/a%5Cb//%2F"));
    }

    #[test]
    fn the_route_table_parses() {
        assert_eq!(router().routes().count(), 7);
    }
}
