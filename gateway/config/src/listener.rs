//! Listener settings: address, TLS files and downstream limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentmux_certs::CertPaths;

use super::error::Errors;
use super::spec::{ListenerSpec, TlsSpec};
use super::{parse_duration, parse_socket_addr};

/// A validated `[[listeners]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The listener's name (logs, metrics).
    pub name: Arc<str>,
    /// The address it binds.
    pub addr: SocketAddr,
    /// TLS files; `None`: plaintext.
    pub tls: Option<ListenerTls>,
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time allowed for a request head (or the HTTP/2 preface and SETTINGS).
    pub request_header_timeout: Duration,
    /// Largest request head accepted (431 beyond).
    pub max_request_header_bytes: usize,
    /// Open agent connections at most.
    pub max_connections: usize,
    /// HTTP/2 streams per agent connection.
    pub h2_max_concurrent_streams: u32,
    /// Whether HTTP/2 agents may open WebSocket sessions as extended
    /// CONNECT streams (RFC 8441; offered only while a route takes them).
    pub h2_websockets: bool,
    /// Time with nothing in flight after which a connection is closed.
    pub idle_timeout: Duration,
    /// TCP keepalive idle time on agent sockets; `None`: off.
    pub tcp_keepalive: Option<Duration>,
    /// Path normalization and trusted proxies.
    pub edge: super::EdgePolicy,
}

/// TLS files of a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// The default certificate first, then the SNI ones.
    pub certs: Vec<CertPaths>,
    /// Generate a development CA and certificate when the files are missing.
    pub generate_dev_certs: bool,
    /// PEM CA bundle for client certificates (mTLS); `None`: none asked.
    pub client_ca: Option<PathBuf>,
    /// Refuse agents without a valid client certificate.
    pub require_client_cert: bool,
}

impl ListenerConfig {
    pub(super) fn from_spec(i: usize, spec: &ListenerSpec, errs: &mut Errors) -> Option<Self> {
        let at = |key: &str| format!("listeners[{i}].{key}");
        let name: Arc<str> = spec.name.clone().unwrap_or_else(|| format!("listener-{i}")).into();
        let addr = match &spec.listen {
            Some(s) => errs.check(at("listen"), parse_socket_addr(s)),
            None => {
                errs.push(at("listen"), "required (ip:port to bind)");
                None
            }
        };
        let tls = spec
            .tls
            .as_ref()
            .and_then(|t| ListenerTls::from_spec(&at("tls"), t, errs));
        let duration = |key: &str, v: &Option<String>, default: u64, errs: &mut Errors| match v {
            Some(s) => errs.check(at(key), parse_duration(s)),
            None => Some(Duration::from_secs(default)),
        };
        let handshake = duration("tls_handshake_timeout", &spec.tls_handshake_timeout, 10, errs);
        let header = duration("request_header_timeout", &spec.request_header_timeout, 10, errs);
        let idle = duration("idle_timeout", &spec.idle_timeout, 60, errs);
        let keepalive = duration("tcp_keepalive", &spec.tcp_keepalive, 60, errs);
        let edge = super::edge::edge_policy(&format!("listeners[{i}]"), spec, errs);
        let max_header = spec.max_request_header_bytes.unwrap_or(16 * 1024);
        if max_header < 8192 {
            errs.push(
                at("max_request_header_bytes"),
                format!("must be at least 8192, got {max_header}"),
            );
        }
        let max_connections = spec.max_connections.unwrap_or(16_384);
        if max_connections == 0 {
            errs.push(at("max_connections"), "must be at least 1, got 0");
        }
        let streams = spec.h2_max_concurrent_streams.unwrap_or(256);
        if streams == 0 {
            errs.push(at("h2_max_concurrent_streams"), "must be at least 1, got 0");
        }
        for (key, d) in [
            ("tls_handshake_timeout", handshake),
            ("request_header_timeout", header),
            ("idle_timeout", idle),
        ] {
            if d == Some(Duration::ZERO) {
                errs.push(at(key), "must be longer than 0s");
            }
        }
        Some(Self {
            name,
            addr: addr?,
            tls: if spec.tls.is_some() { Some(tls?) } else { None },
            tls_handshake_timeout: handshake?,
            request_header_timeout: header?,
            max_request_header_bytes: max_header,
            max_connections,
            h2_max_concurrent_streams: streams,
            h2_websockets: spec.h2_websockets.unwrap_or(true),
            idle_timeout: idle?,
            tcp_keepalive: Some(keepalive?).filter(|d| !d.is_zero()),
            edge: edge?,
        })
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it binds.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it terminates TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Its edge policy (path normalization, trusted proxies).
    pub fn edge(&self) -> &super::EdgePolicy {
        &self.edge
    }
}

impl ListenerTls {
    fn from_spec(at: &str, spec: &TlsSpec, errs: &mut Errors) -> Option<Self> {
        let pair = |prefix: String, cert: &Option<String>, key: &Option<String>, errs: &mut Errors| match (cert, key) {
            (Some(c), Some(k)) => Some(CertPaths {
                cert: PathBuf::from(c),
                key: PathBuf::from(k),
            }),
            (c, k) => {
                if c.is_none() {
                    errs.push(format!("{prefix}cert"), "required (PEM certificate chain file)");
                }
                if k.is_none() {
                    errs.push(format!("{prefix}key"), "required (PEM private key file)");
                }
                None
            }
        };
        let default = pair(format!("{at}."), &spec.cert, &spec.key, errs);
        let sni: Vec<_> = spec
            .sni
            .iter()
            .enumerate()
            .map(|(j, s)| pair(format!("{at}.sni[{j}]."), &s.cert, &s.key, errs))
            .collect();
        if spec.require_client_cert && spec.client_ca.is_none() {
            errs.push(
                format!("{at}.require_client_cert"),
                "needs client_ca to verify client certificates",
            );
        }
        let mut certs = vec![default?];
        for s in sni {
            certs.push(s?);
        }
        Some(Self {
            certs,
            generate_dev_certs: spec.generate_dev_certs,
            client_ca: spec.client_ca.as_ref().map(PathBuf::from),
            require_client_cert: spec.require_client_cert,
        })
    }

    /// Loads every file once to prove it is usable. A default pair that
    /// will be generated at start (`generate_dev_certs`) is not required yet.
    pub(super) fn check_files(&self, at: &str, errs: &mut Errors) {
        for (j, pair) in self.certs.iter().enumerate() {
            let pending = j == 0 && self.generate_dev_certs && !pair.cert.exists() && !pair.key.exists();
            if pending {
                continue;
            }
            let key = if j == 0 {
                format!("{at}.cert")
            } else {
                format!("{at}.sni[{}].cert", j - 1)
            };
            errs.check(key, agentmux_certs::load_certified_key(pair));
        }
        if let Some(ca) = &self.client_ca {
            errs.check(format!("{at}.client_ca"), agentmux_certs::load_roots(ca));
        }
    }

    /// Whether the listener asks for development certificates at start.
    pub fn generate_dev_certs(&self) -> bool {
        self.generate_dev_certs
    }
}
