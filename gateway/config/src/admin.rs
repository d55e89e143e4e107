//! `[admin]`: where the admin listener binds, its token, the host names it
//! answers to and its connection limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::error::Errors;
use super::spec::AdminSpec;
use super::{parse_duration, parse_socket_addr};

/// The admin listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address the admin listener binds.
    pub listen: SocketAddr,
    /// Bearer token required on every request but `/healthz`; `None`: none (loopback only).
    pub token: Option<Arc<str>>,
    /// Host names accepted besides the listener's own (DNS-rebinding guard).
    pub allowed_hosts: AllowedHosts,
    /// Time allowed for each request head (and an idle keep-alive gap).
    pub request_header_timeout: Duration,
    /// Admin connections open at most; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Lifetime of a dashboard login session.
    pub session_ttl: Duration,
}

/// Host names, besides the listener's own addresses, that admin requests
/// may carry in `Host` and `Origin` (`admin.allowed_hosts`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Only the listed names (none by default).
    #[default]
    Own,
    /// The listed names too.
    Listed(Vec<HostName>),
    /// `"*"`: every `Host`; the DNS-rebinding check is off.
    Any,
}

/// One `admin.allowed_hosts` entry: a lowercase host (a DNS name, an IPv4
/// address or a bracketed IPv6 address) and, when written, a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostName {
    /// The host name, lower-case.
    pub host: Box<str>,
    /// The port, if the name carries one.
    pub port: Option<u16>,
}

/// A value that is not `host` or `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("invalid host {0:?} (expected a name, or name:port, e.g. \"admin.example.com\" or \"admin.example.com:9901\")")]
pub struct InvalidHost(String);

impl HostName {
    /// Parses `host` or `host:port` as it appears in a `Host` header or an
    /// `allowed_hosts` entry: no user info, no path, host lowercased.
    pub fn parse(text: &str) -> Result<Self, InvalidHost> {
        let bad = || InvalidHost(text.to_owned());
        if text.is_empty() || text.contains(['@', '/', '?', '#']) {
            return Err(bad());
        }
        let authority: http::uri::Authority = text.parse().map_err(|_| bad())?;
        let host = authority.host().to_ascii_lowercase();
        let name_ok = host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if host.is_empty() || !name_ok {
            return Err(bad());
        }
        // `Authority` takes "host:" and "host:99999" apart without a port.
        let port = authority.port_u16();
        if port.is_none() && text.rsplit_once(']').map_or(text, |(_, tail)| tail).contains(':') {
            return Err(bad());
        }
        Ok(Self {
            host: host.into(),
            port,
        })
    }

    /// The host, lowercase; IPv6 addresses keep their brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, when one was written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl AdminConfig {
    /// The token every admin request but `/healthz` must carry, when set.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

pub(super) fn validate(spec: &AdminSpec, errs: &mut Errors) -> Option<AdminConfig> {
    let listen = match spec.listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
        Some(s) => errs.check("admin.listen", parse_socket_addr(s)),
    };
    let token = spec.token.as_deref().map(Arc::<str>::from);
    if let Some(t) = &token {
        if t.len() < 16 {
            errs.push("admin.token", "must be at least 16 characters");
        }
    } else if let Some(listen) = listen
        && !listen.ip().is_loopback()
    {
        errs.push(
            "admin.token",
            format!("required when admin.listen ({listen}) is not a loopback address"),
        );
    }
    let allowed_hosts = allowed_hosts(&spec.allowed_hosts, errs);
    let duration = |key: &str, v: &Option<String>, default: Duration, errs: &mut Errors| {
        let d = match v {
            Some(s) => errs.check(format!("admin.{key}"), parse_duration(s))?,
            None => default,
        };
        if d.is_zero() {
            errs.push(format!("admin.{key}"), "must be longer than 0s");
        }
        Some(d)
    };
    let header = duration(
        "request_header_timeout",
        &spec.request_header_timeout,
        Duration::from_secs(10),
        errs,
    );
    let session_ttl = duration("session_ttl", &spec.session_ttl, Duration::from_secs(12 * 3600), errs);
    let max_connections = spec.max_connections.unwrap_or(64);
    if max_connections == 0 {
        errs.push("admin.max_connections", "must be at least 1, got 0");
    }
    Some(AdminConfig {
        listen: listen?,
        token,
        allowed_hosts,
        request_header_timeout: header?,
        max_connections,
        session_ttl: session_ttl?,
    })
}

fn allowed_hosts(entries: &[String], errs: &mut Errors) -> AllowedHosts {
    if entries.iter().any(|e| e == "*") {
        if entries.len() > 1 {
            errs.push("admin.allowed_hosts", "\"*\" allows every host: list it alone");
        }
        return AllowedHosts::Any;
    }
    let names: Vec<HostName> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| errs.check(format!("admin.allowed_hosts[{i}]"), HostName::parse(e)))
        .collect();
    if names.is_empty() {
        AllowedHosts::Own
    } else {
        AllowedHosts::Listed(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const BASE: &str = "[[listeners]]\nlisten = \"127.0.0.1:8443\"\n[[routes]]\nname = \"all\"\ncluster = \"c\"\n[clusters.c]\nendpoints = [\"127.0.0.1:18080\"]\n";

    fn admin(block: &str) -> Result<AdminConfig, Vec<String>> {
        Config::parse(&format!("[admin]\n{block}\n{BASE}"), "test.toml")
            .map(|c| c.admin)
            .map_err(|e| e.errors().iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_are_safe() {
        let a = admin("").unwrap();
        assert_eq!(a.listen, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(a.allowed_hosts, AllowedHosts::Own);
        assert_eq!(a.request_header_timeout, Duration::from_secs(10));
        assert_eq!(a.max_connections, 64);
        assert_eq!(a.session_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(a.token, None);
    }

    #[test]
    fn errors_name_the_key() {
        let errs = admin(
            "max_connections = 0\nrequest_header_timeout = \"0s\"\nsession_ttl = \"soon\"\nallowed_hosts = [\"ok.example\", \"http://x\", \"a b\"]",
        )
        .unwrap_err();
        let has = |s: &str| errs.iter().any(|e| e.contains(s));
        assert!(has("admin.max_connections: must be at least 1, got 0"), "{errs:?}");
        assert!(has("admin.request_header_timeout: must be longer than 0s"), "{errs:?}");
        assert!(has("admin.session_ttl: invalid duration \"soon\""), "{errs:?}");
        assert!(has("admin.allowed_hosts[1]: invalid host \"http://x\""), "{errs:?}");
        assert!(has("admin.allowed_hosts[2]: invalid host \"a b\""), "{errs:?}");
        let errs = admin("allowed_hosts = [\"*\", \"x.example\"]").unwrap_err();
        assert!(
            errs.iter().any(|e| e.contains("admin.allowed_hosts: \"*\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn allowed_hosts_parse() {
        let a = admin("allowed_hosts = [\"Admin.Example.com\", \"gw.internal:9901\", \"[FD00::1]\"]").unwrap();
        let AllowedHosts::Listed(names) = a.allowed_hosts else {
            panic!("listed")
        };
        let got: Vec<(&str, Option<u16>)> = names.iter().map(|n| (n.host(), n.port())).collect();
        assert_eq!(
            got,
            [
                ("admin.example.com", None),
                ("gw.internal", Some(9901)),
                ("[fd00::1]", None)
            ]
        );
        assert_eq!(
            admin("allowed_hosts = [\"*\"]").unwrap().allowed_hosts,
            AllowedHosts::Any
        );
        for bad in ["", "x:", "x:99999", "user@x", "x/y", "[::1", "ex ample"] {
            assert!(HostName::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
