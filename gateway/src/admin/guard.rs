//! The admin listener's checks, as pure predicates over request headers:
//! whose host a request names (DNS rebinding), whether a state change
//! comes from another site (CSRF), whether a URL carries a token, and the
//! token comparison itself.
//!
//! Why each check exists: a page the operator's browser opens can send
//! requests to `127.0.0.1:9901`. It cannot read the answers (no CORS
//! headers here), but a form POST or a `fetch` in `no-cors` mode still
//! *reaches* the server, so state changes must tell a cross-site request
//! apart (`Origin`, `Sec-Fetch-Site`). A DNS-rebinding page goes further:
//! its own name resolves to 127.0.0.1, so its requests are same-origin to
//! the browser and it can read answers — only the `Host` header, which
//! still carries the attacker's name, gives it away.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{HOST, ORIGIN};
use subtle::ConstantTimeEq;

use crate::config::{AllowedHosts, HostName};

/// The names this admin listener answers to: its bound address and
/// `admin.allowed_hosts`.
#[derive(Debug)]
pub(super) struct OwnNames {
    bound: SocketAddr,
    allowed: AllowedHosts,
}

impl OwnNames {
    pub(super) fn new(bound: SocketAddr, allowed: AllowedHosts) -> Self {
        Self { bound, allowed }
    }

    /// Whether `authority` (a `Host` value, or the host of an `Origin`)
    /// names this listener. A missing port is accepted for an own name:
    /// browsers send a port whenever it is not the scheme's default, and a
    /// rebinding page is told apart by its name, not its port.
    pub(super) fn accepts(&self, authority: &str) -> bool {
        if self.allowed == AllowedHosts::Any {
            return true;
        }
        let Ok(name) = HostName::parse(authority) else {
            return false;
        };
        let own_port = name.port().is_none_or(|p| p == self.bound.port());
        let bound_ip = self.bound.ip();
        let ip = name
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        // The listener's own addresses. An IP literal cannot be rebound:
        // a page at http://10.1.2.3:9901 is served by whoever has that
        // address, so on an unspecified bind every literal with our port
        // is ours (probes send the pod IP).
        let own_address = match ip {
            Some(ip) => ip == bound_ip || bound_ip.is_unspecified() || (bound_ip.is_loopback() && ip.is_loopback()),
            None => name.host() == "localhost" && (bound_ip.is_loopback() || bound_ip.is_unspecified()),
        };
        if own_address && own_port {
            return true;
        }
        let AllowedHosts::Listed(listed) = &self.allowed else {
            return false;
        };
        listed.iter().any(|a| {
            a.host() == name.host()
                && match a.port() {
                    Some(p) => name.port() == Some(p),
                    None => own_port,
                }
        })
    }

    /// Checks every authority the request names — `Host`, and an
    /// absolute-form URI's authority (which wins over `Host` in HTTP/1.1) —
    /// and fails on the first that is not ours, or when it names none.
    pub(super) fn check_host(&self, uri: &http::Uri, headers: &HeaderMap) -> Result<(), HostProblem> {
        let mut named = false;
        if let Some(a) = uri.authority() {
            named = true;
            if !self.accepts(a.as_str()) {
                return Err(HostProblem::Foreign(a.as_str().to_owned()));
            }
        }
        for h in headers.get_all(HOST) {
            named = true;
            let value = h.to_str().unwrap_or("");
            if !self.accepts(value) {
                return Err(HostProblem::Foreign(String::from_utf8_lossy(h.as_bytes()).into_owned()));
            }
        }
        if named { Ok(()) } else { Err(HostProblem::Missing) }
    }

    /// Whether an `Origin` value is this listener: `http://` (or
    /// `https://`, for a TLS proxy in front that an `allowed_hosts` entry
    /// names) and a host we accept. `null` and anything else are foreign.
    pub(super) fn is_own_origin(&self, origin: &str) -> bool {
        let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        !rest.is_empty() && self.accepts(rest)
    }

    /// Refuses a state-changing request that a browser sent from another
    /// origin: `Sec-Fetch-Site` other than `same-origin` / `none` (a typed
    /// URL), or an `Origin` that is not ours. A request with neither header
    /// comes from a non-browser client (curl, scripts) and passes.
    ///
    /// We do not also refuse "simple" content types
    /// (`application/x-www-form-urlencoded`, `multipart/form-data`,
    /// `text/plain`): every browser in use sends `Origin` on cross-origin
    /// POSTs (forms included) and most send `Sec-Fetch-Site`, so the check
    /// above already sees them, while `curl -d ''` and the dashboard's own
    /// login form send exactly those types. Without a token, loopback is
    /// the only exposure; with one, the session cookie is `SameSite=Strict`
    /// and a bearer token is never attached by a browser on its own.
    pub(super) fn check_same_origin(&self, headers: &HeaderMap) -> Result<(), CrossSite> {
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("");
            if !matches!(site, "same-origin" | "none") {
                return Err(CrossSite::FetchSite(site.to_owned()));
            }
        }
        for origin in headers.get_all(ORIGIN) {
            let value = origin.to_str().unwrap_or("");
            if !self.is_own_origin(value) {
                return Err(CrossSite::Origin(value.to_owned()));
            }
        }
        Ok(())
    }
}

/// Why a request's host is refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HostProblem {
    /// No `Host` header and no absolute-form URI.
    Missing,
    /// A host that is not one of ours (the value as sent).
    Foreign(String),
}

/// Why a state-changing request is refused as cross-site.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CrossSite {
    /// `Sec-Fetch-Site` said so (`cross-site`, `same-site`).
    FetchSite(String),
    /// `Origin` named another origin (or `null`).
    Origin(String),
}

impl std::fmt::Display for CrossSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FetchSite(v) => write!(f, "Sec-Fetch-Site is {v:?}"),
            Self::Origin(v) => write!(f, "Origin {v:?} is not this admin listener"),
        }
    }
}

/// Whether a method may change state (anything but GET, HEAD, OPTIONS).
pub(super) fn changes_state(method: &http::Method) -> bool {
    !matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

/// Whether the query has a `token` parameter (the dashboard took one once;
/// tokens in URLs end up in logs, history and `Referer`).
pub(super) fn has_query_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some("token")))
}

/// Compares a presented token with the configured one in constant time;
/// comparing digests also hides the configured token's length.
pub(super) fn token_matches(got: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    bool::from(Sha256::digest(got.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())))
}

/// The token of an `Authorization: Bearer` header, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn names(bound: &str, allowed: &[&str]) -> OwnNames {
        let allowed = match allowed {
            [] => AllowedHosts::Own,
            ["*"] => AllowedHosts::Any,
            list => AllowedHosts::Listed(list.iter().map(|h| HostName::parse(h).unwrap()).collect()),
        };
        OwnNames::new(bound.parse().unwrap(), allowed)
    }

    #[test]
    fn loopback_bind_accepts_its_own_names_only() {
        let n = names("127.0.0.1:9901", &[]);
        for ok in [
            "127.0.0.1:9901",
            "localhost:9901",
            "LOCALHOST:9901",
            "[::1]:9901",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(n.accepts(ok), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "evil.example",
            "localhost:9902",
            "127.0.0.1:80",
            "10.0.0.1:9901",
            "localhost.:9901",
            "a.localhost:9901",
            "user@localhost:9901",
            "",
            "localhost:9901/x",
        ] {
            assert!(!n.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn unspecified_bind_accepts_any_ip_literal_with_its_port() {
        let n = names("0.0.0.0:9901", &[]);
        for ok in ["10.1.2.3:9901", "localhost:9901", "[fd00::5]:9901", "192.168.0.7"] {
            assert!(n.accepts(ok), "{ok}");
        }
        for bad in ["10.1.2.3:9902", "gw.internal:9901", "rebind.evil.example:9901"] {
            assert!(!n.accepts(bad), "{bad}");
        }
        let n = names("10.1.2.3:9901", &[]);
        assert!(n.accepts("10.1.2.3:9901"));
        assert!(!n.accepts("10.1.2.4:9901") && !n.accepts("localhost:9901"));
    }

    #[test]
    fn allowed_hosts_add_names() {
        let n = names("0.0.0.0:9901", &["admin.example.com", "gw.internal:8080"]);
        for ok in ["admin.example.com", "Admin.Example.com:9901", "gw.internal:8080"] {
            assert!(n.accepts(ok), "{ok}");
        }
        for bad in [
            "admin.example.com:443",
            "gw.internal",
            "gw.internal:9901",
            "example.com:9901",
        ] {
            assert!(!n.accepts(bad), "{bad}");
        }
        assert!(names("127.0.0.1:9901", &["*"]).accepts("anything.example:1"));
    }

    #[test]
    fn host_header_and_absolute_uri_are_both_checked() {
        let n = names("127.0.0.1:9901", &[]);
        let mut h = HeaderMap::new();
        let origin_form: http::Uri = "/api/routes".parse().unwrap();
        assert_eq!(n.check_host(&origin_form, &h), Err(HostProblem::Missing));
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:9901"));
        assert_eq!(n.check_host(&origin_form, &h), Ok(()));
        let absolute: http::Uri = "http://evil.example:9901/api/routes".parse().unwrap();
        assert!(matches!(n.check_host(&absolute, &h), Err(HostProblem::Foreign(_))));
        h.append(HOST, HeaderValue::from_static("evil.example:9901"));
        assert_eq!(
            n.check_host(&origin_form, &h),
            Err(HostProblem::Foreign("evil.example:9901".into()))
        );
    }

    #[test]
    fn origins() {
        let n = names("127.0.0.1:9901", &[]);
        assert!(n.is_own_origin("http://127.0.0.1:9901"));
        assert!(n.is_own_origin("http://localhost:9901"));
        for bad in [
            "null",
            "http://evil.example",
            "http://localhost:3000",
            "http://127.0.0.1:9901/path",
            "file://",
            "",
            "http://",
        ] {
            assert!(!n.is_own_origin(bad), "{bad}");
        }
        let proxied = names("0.0.0.0:9901", &["admin.example.com"]);
        assert!(proxied.is_own_origin("https://admin.example.com"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_state_changes_are_refused() {
        let n = names("127.0.0.1:9901", &[]);
        // curl and scripts send neither header.
        assert_eq!(n.check_same_origin(&HeaderMap::new()), Ok(()));
        for ok in [
            &[("sec-fetch-site", "same-origin"), ("origin", "http://127.0.0.1:9901")][..],
            &[("sec-fetch-site", "none")][..],
            &[("origin", "http://localhost:9901")][..],
        ] {
            assert_eq!(n.check_same_origin(&headers(ok)), Ok(()), "{ok:?}");
        }
        for bad in [
            &[("origin", "http://evil.example")][..],
            &[("origin", "null")][..],
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site"), ("origin", "http://localhost:3000")][..],
            // A matching Sec-Fetch-Site does not excuse a foreign Origin.
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://evil.example:9901"),
            ][..],
        ] {
            assert!(n.check_same_origin(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn methods_queries_and_tokens() {
        assert!(changes_state(&http::Method::POST) && changes_state(&http::Method::DELETE));
        assert!(!changes_state(&http::Method::GET) && !changes_state(&http::Method::HEAD));
        assert!(has_query_token(Some("token=x")) && has_query_token(Some("window=1h&token")));
        assert!(!has_query_token(Some("tokens=1&x=token")) && !has_query_token(None));
        assert!(token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdeF", "0123456789abcdef") && !token_matches("", "x"));
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(bearer(&h), Some("abc"));
    }
}
