//! Forwarding headers, set once at the edge for every mode.
//!
//! An upstream learns who the agent is from `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and RFC 7239 `Forwarded`. Only
//! what a trusted proxy in front of the gateway said may be kept: from a
//! peer in `listeners[].trusted_proxies`, earlier hops are appended to
//! (and its proto and host kept); from anyone else they are replaced, so
//! an agent cannot claim another address by sending the header itself.
//! `Forwarded` is only rewritten when the request carries one (most
//! upstreams read the `X-Forwarded-*` family).

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the edge knows about the hop it forwards.
#[derive(Clone, Copy, Debug)]
pub struct Hop<'a> {
    /// The agent's (or the trusted proxy's) address.
    pub client: IpAddr,
    /// Whether the agent's connection is TLS.
    pub tls: bool,
    /// The request's one authority.
    pub host: Option<&'a str>,
    /// Whether `client` is a trusted proxy.
    pub trusted: bool,
}

/// Rewrites the forwarding headers for `hop` (see the module docs).
pub fn set(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let proto = if hop.tls { "https" } else { "http" };
    let earlier = hop.trusted.then(|| joined(headers, &XFF)).flatten();
    let xff = match earlier {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", hop.client)).ok(),
        // The usual case: the address alone, written without a String.
        None => {
            let mut buf = [0u8; 48];
            let mut w = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(w, "{}", hop.client);
            let n = usize::try_from(w.position()).unwrap_or(0);
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
    };
    replace(headers, XFF, xff);
    if !(hop.trusted && headers.contains_key(&XFP)) {
        replace(headers, XFP, Some(HeaderValue::from_static(proto)));
    }
    if !(hop.trusted && headers.contains_key(&XFH)) {
        // The edge left one `Host`, equal to the authority: share its bytes.
        let value = match (hop.host, headers.get(header::HOST)) {
            (Some(h), Some(v)) if v.as_bytes() == h.as_bytes() => Some(v.clone()),
            (h, _) => h.and_then(|h| HeaderValue::from_str(h).ok()),
        };
        replace(headers, XFH, value);
    }
    if headers.contains_key(header::FORWARDED) {
        let element = element(hop.client, proto, hop.host);
        let value = match hop.trusted.then(|| joined(headers, &header::FORWARDED)).flatten() {
            Some(prev) => format!("{prev}, {element}"),
            None => element,
        };
        replace(headers, header::FORWARDED, HeaderValue::from_str(&value).ok());
    }
}

/// Every line of a list header joined with commas; `None` when absent,
/// empty or not text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out = String::new();
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?.trim();
        if v.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
    }
    (!out.is_empty()).then_some(out)
}

fn replace(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// One RFC 7239 element; IPv6 nodes and hosts with a port are quoted.
fn element(client: IpAddr, proto: &str, host: Option<&str>) -> String {
    let node = match client {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("\"[{a}]\""),
    };
    let mut e = format!("for={node};proto={proto}");
    if let Some(h) = host {
        if h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
            e.push_str(&format!(";host={h}"));
        } else {
            e.push_str(&format!(";host=\"{h}\""));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(trusted: bool) -> Hop<'static> {
        Hop {
            client: "192.0.2.7".parse().unwrap(),
            tls: true,
            host: Some("api.example.com"),
            trusted,
        }
    }

    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        h
    }

    #[test]
    fn an_untrusted_peer_s_claims_are_replaced() {
        let mut h = forged();
        set(&mut h, &hop(false));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=https;host=api.example.com");
    }

    #[test]
    fn a_trusted_proxy_s_chain_is_appended_to() {
        let mut h = forged();
        set(&mut h, &hop(true));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "gopher");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.1, for=192.0.2.7;proto=https;host=api.example.com"
        );
    }

    #[test]
    fn without_earlier_headers_the_gateway_starts_the_chain() {
        let mut h = HeaderMap::new();
        let v6 = Hop {
            client: "2001:db8::1".parse().unwrap(),
            tls: false,
            host: Some("localhost:8443"),
            trusted: true,
        };
        set(&mut h, &v6);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "localhost:8443");
        assert!(h.get(header::FORWARDED).is_none());
        assert_eq!(
            element(v6.client, "http", v6.host),
            "for=\"[2001:db8::1]\";proto=http;host=\"localhost:8443\""
        );
    }
}
