//! Header rewriting between agent and upstream: hop-by-hop removal and
//! `via` (the forwarding headers are the edge's: `crate::edge::forwarded`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop's connection and must not be forwarded
/// (RFC 9110 §7.6.1), besides those the `Connection` header lists.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Headers the edge sets on every request (`crate::edge`): the one
/// authority and the forwarding chain.
const EDGE_SET: [HeaderName; 5] = [
    header::HOST,
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
];

/// Removes hop-by-hop headers, including every header named in
/// `Connection`, and `Upgrade` (upgrades go through WebSocket routes).
/// `TE: trailers` survives: it is the one TE value HTTP/2 allows and gRPC
/// needs. What the edge set survives too: `Connection: x-forwarded-for`
/// must not let an agent hide its address from the upstream (or drop
/// `Host`).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !EDGE_SET.contains(name))
        .collect();
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")))
    });
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Appends this hop to `Via` (RFC 9110 §7.6.3).
pub(crate) fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let proto = match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    // The usual case, no proxy before us: a static value, no allocation.
    if !headers.contains_key(header::VIA) {
        let ours = match version {
            http::Version::HTTP_2 => "2 agentmux",
            http::Version::HTTP_10 => "1.0 agentmux",
            _ => "1.1 agentmux",
        };
        headers.insert(header::VIA, HeaderValue::from_static(ours));
        return;
    }
    // Every earlier entry, from every line: a proxy before us may have
    // added a line of its own instead of appending to the first.
    let mut value = String::new();
    for prev in headers.get_all(header::VIA).iter().filter_map(|v| v.to_str().ok()) {
        let prev = prev.trim();
        if !prev.is_empty() {
            value.push_str(prev);
            value.push_str(", ");
        }
    }
    value.push_str(proto);
    value.push_str(" agentmux");
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none() && h.get(header::UPGRADE).is_none());
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    /// Found by the `request_head` fuzz target: `Connection: k,
    /// x-forwarded-for` removed the address the edge had just set.
    #[test]
    fn connection_cannot_drop_what_the_edge_set() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("host, X-Forwarded-For, x-forwarded-proto, x-forwarded-host, forwarded, x-other"),
        );
        for name in [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "x-other",
        ] {
            h.insert(name, HeaderValue::from_static("set"));
        }
        strip_hop_by_hop(&mut h);
        for name in [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
        ] {
            assert_eq!(h[name], "set", "{name}");
        }
        assert!(h.get("x-other").is_none() && h.get(header::CONNECTION).is_none());
    }

    #[test]
    fn via_appends_this_hop() {
        let mut h = HeaderMap::new();
        add_via(&mut h, http::Version::HTTP_2);
        add_via(&mut h, http::Version::HTTP_11);
        assert_eq!(h[header::VIA], "2 agentmux, 1.1 agentmux");
    }

    /// Found by the `request_head` fuzz target: with two `Via` lines only
    /// the first was kept.
    #[test]
    fn via_keeps_every_earlier_line() {
        let mut h = HeaderMap::new();
        h.append(header::VIA, HeaderValue::from_static("1.0 edge, 1.1 lb"));
        h.append(header::VIA, HeaderValue::from_static(" "));
        h.append(header::VIA, HeaderValue::from_static("1.1 cdn"));
        add_via(&mut h, http::Version::HTTP_11);
        assert_eq!(h.get_all(header::VIA).iter().count(), 1);
        assert_eq!(h[header::VIA], "1.0 edge, 1.1 lb, 1.1 cdn, 1.1 agentmux");
    }
}
