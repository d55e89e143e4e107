//! One authority per request: the host the router, the filters, the
//! upstream, the logs and the traces all see.
//!
//! HTTP offers a client several places to name a host — the `Host`
//! header (more than once), an absolute-form request target, HTTP/2's
//! `:authority` — and a gateway that routes on one while forwarding
//! another lets the client pick the route. The rules (RFC 9112 §3.2,
//! §3.2.2; RFC 9113 §8.3.1):
//!
//! - more than one `Host` → 400; a `Host` that is not a valid
//!   `host[:port]` (or carries userinfo) → 400;
//! - an absolute-form target (`GET http://a/x`) wins over `Host`, which
//!   is replaced; an authority-form target (`GET a:80`) is CONNECT's alone
//!   (RFC 9112 §3.2.3) → 400 on any other method;
//! - HTTP/2 `:authority` and a `host` that names another host → 400;
//! - HTTP/1.1 without `Host` → 400 (HTTP/1.0 and HTTP/2 may omit it).
//!
//! The request leaves with exactly one `Host` header holding the chosen
//! authority (filters that key on headers see it) and an origin-form URI.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Version};

/// Why a request's authority was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// More than one `Host` header.
    #[error("more than one Host header")]
    TwoHosts,
    /// An HTTP/1.1 request without `Host`.
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    /// A `Host` or target authority that is not `host[:port]`.
    #[error("invalid Host or request-target authority")]
    Invalid,
    /// HTTP/2 `:authority` and `host` name different hosts.
    #[error(":authority and host name different hosts")]
    Mismatch,
    /// An authority-form target (`host:port`) on a method other than
    /// CONNECT.
    #[error("authority-form request target on a method other than CONNECT")]
    AuthorityForm,
}

/// Settles the request on one authority (see the module docs) and
/// returns it as the agent wrote it.
pub fn settle(parts: &mut Parts) -> Result<Option<Authority>, AuthorityError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::TwoHosts);
    }
    let host = host.map(parse_host).transpose()?;
    // hyper takes `GET a:80` as a URI with an authority and no scheme;
    // settled like an absolute form it would replace `Host` with no path
    // of its own.
    if parts.uri.authority().is_some() && parts.uri.scheme().is_none() && parts.method != Method::CONNECT {
        return Err(AuthorityError::AuthorityForm);
    }
    let target = parts.uri.authority().cloned().map(checked).transpose()?;
    let chosen = match (target, host) {
        (Some(t), Some(h)) if parts.version == Version::HTTP_2 => {
            if !same_host(&t, &h, parts.uri.scheme_str()) {
                return Err(AuthorityError::Mismatch);
            }
            Some(t)
        }
        // Absolute form: the target wins and `Host` is replaced.
        (Some(t), _) => Some(t),
        (None, Some(h)) => Some(h),
        (None, None) if parts.version == Version::HTTP_11 && parts.method != Method::CONNECT => {
            return Err(AuthorityError::MissingHost);
        }
        (None, None) => None,
    };
    parts.headers.remove(header::HOST);
    if let Some(a) = &chosen {
        let value = HeaderValue::from_str(a.as_str()).map_err(|_| AuthorityError::Invalid)?;
        parts.headers.insert(header::HOST, value);
    }
    // Origin form from here on: the authority lives in `Host` alone.
    if parts.uri.authority().is_some() && parts.method != Method::CONNECT {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
        // `http://a` has an empty path, which origin form writes `/`
        // (RFC 9112 §3.2.1); kept empty, it would be routed and forwarded
        // as no path at all.
        if parts.uri.path().is_empty() {
            parts.uri = Uri::from(PathAndQuery::from_static("/"));
        }
    }
    Ok(chosen)
}

fn parse_host(v: &HeaderValue) -> Result<Authority, AuthorityError> {
    checked(Authority::try_from(v.as_bytes()).map_err(|_| AuthorityError::Invalid)?)
}

/// `host[:port]` with a numeric port and no userinfo.
fn checked(a: Authority) -> Result<Authority, AuthorityError> {
    // `Authority` accepts any port text; a port must be a number.
    let has_port = a.as_str().len() != a.host().len();
    if a.as_str().contains('@') || a.host().is_empty() || (has_port && a.port_u16().is_none()) {
        return Err(AuthorityError::Invalid);
    }
    Ok(a)
}

/// Same host and port, ignoring case, a trailing dot and a port that is
/// the scheme's default written on one side only.
fn same_host(a: &Authority, b: &Authority, scheme: Option<&str>) -> bool {
    let host = |x: &Authority| x.host().trim_end_matches('.').to_ascii_lowercase();
    let default = match scheme {
        Some("http") => Some(80),
        _ => Some(443),
    };
    let port = |x: &Authority| x.port_u16().or(default);
    host(a) == host(b) && port(a) == port(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, uri: &str, hosts: &[&str]) -> Parts {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn absolute_form_replaces_host() {
        let mut p = parts(Version::HTTP_11, "http://open.example/x?q=1", &["api.example"]);
        let a = settle(&mut p).unwrap().unwrap();
        assert_eq!(a.as_str(), "open.example");
        assert_eq!(p.headers.get_all(header::HOST).iter().count(), 1);
        assert_eq!(p.headers[header::HOST], "open.example");
        assert_eq!(p.uri.to_string(), "/x?q=1");
    }

    /// Found by the `request_head` fuzz target: `GET http://a.example#x`
    /// left the edge with an empty path.
    #[test]
    fn an_absolute_form_without_a_path_gets_slash() {
        for (target, want) in [
            ("http://open.example#x/y", "/"),
            ("http://open.example", "/"),
            ("http://open.example:8080", "/"),
            ("http://open.example?q=1", "/?q=1"),
        ] {
            let mut p = parts(Version::HTTP_11, target, &[]);
            settle(&mut p).unwrap();
            assert_eq!(p.uri.path(), "/", "{target}");
            assert_eq!(p.uri.to_string(), want, "{target}");
        }
    }

    #[test]
    fn two_hosts_or_none_on_http11_are_refused() {
        let mut p = parts(Version::HTTP_11, "/x", &["a.example", "b.example"]);
        assert_eq!(settle(&mut p), Err(AuthorityError::TwoHosts));
        let mut p = parts(Version::HTTP_11, "/x", &["a.example", "a.example"]);
        assert_eq!(settle(&mut p), Err(AuthorityError::TwoHosts));
        let mut p = parts(Version::HTTP_11, "/x", &[]);
        assert_eq!(settle(&mut p), Err(AuthorityError::MissingHost));
        let mut p = parts(Version::HTTP_10, "/x", &[]);
        assert_eq!(settle(&mut p), Ok(None));
    }

    #[test]
    fn h2_authority_and_host_must_agree() {
        let mut p = parts(Version::HTTP_2, "https://a.example/x", &["b.example"]);
        assert_eq!(settle(&mut p), Err(AuthorityError::Mismatch));
        let mut p = parts(Version::HTTP_2, "https://A.example:443/x", &["a.example"]);
        assert_eq!(settle(&mut p).unwrap().unwrap().as_str(), "A.example:443");
        let mut p = parts(Version::HTTP_2, "https://a.example:8443/x", &["a.example"]);
        assert_eq!(settle(&mut p), Err(AuthorityError::Mismatch));
        let mut p = parts(Version::HTTP_2, "https://a.example/x", &[]);
        assert_eq!(settle(&mut p).unwrap().unwrap().as_str(), "a.example");
        assert_eq!(p.headers[header::HOST], "a.example");
    }

    /// Found by the `request_head` fuzz target: `OSNITP O* HTTP/1.1` was
    /// settled on the authority `O*`, replacing `Host`, with an empty path.
    #[test]
    fn authority_form_is_only_for_connect() {
        for target in ["evil.example:80", "O*"] {
            let mut p = parts(Version::HTTP_11, target, &["api.example"]);
            assert_eq!(settle(&mut p), Err(AuthorityError::AuthorityForm), "{target}");
        }
        let mut b = Request::builder().method(Method::CONNECT).uri("a.example:443");
        b = b.header(header::HOST, "a.example:443");
        let mut p = b.body(()).unwrap().into_parts().0;
        assert_eq!(settle(&mut p).unwrap().unwrap().as_str(), "a.example:443");
    }

    #[test]
    fn malformed_hosts_and_userinfo_are_refused() {
        for bad in ["a b", "", "user@a.example", "a.example:99999x"] {
            let mut p = parts(Version::HTTP_11, "/x", &[bad]);
            assert_eq!(settle(&mut p), Err(AuthorityError::Invalid), "{bad:?}");
        }
        let mut p = parts(Version::HTTP_11, "http://user@a.example/x", &[]);
        assert_eq!(settle(&mut p), Err(AuthorityError::Invalid));
        let mut p = parts(Version::HTTP_11, "http://a.example:8x/x", &[]);
        assert_eq!(settle(&mut p), Err(AuthorityError::Invalid));
    }
}
