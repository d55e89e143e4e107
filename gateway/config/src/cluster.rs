//! Cluster settings: endpoints, balancing strategy, upstream TLS, the warm
//! pool and health checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use rustls_pki_types::ServerName;

use super::error::Errors;
use super::parse_duration;
use super::spec::{ClusterSpec, EndpointSpec, HealthCheckSpec, MuxSpec, PoolSpec, UpstreamTlsSpec};

/// A validated `[clusters.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's name (its key in `[clusters]`).
    pub name: Arc<str>,
    /// Where its endpoints come from.
    pub kind: ClusterKind,
    /// How requests and sessions are spread over its endpoints.
    pub strategy: Strategy,
    /// HTTP version spoken to its endpoints.
    pub protocol: UpstreamProtocol,
    /// Time allowed for TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// TCP keepalive idle time on upstream sockets; `None`: off.
    pub tcp_keepalive: Option<Duration>,
    /// Upstream TLS; `None`: plaintext.
    pub tls: Option<UpstreamTls>,
    /// The warm pool of each endpoint.
    pub pool: PoolParams,
    /// Active and passive health checking.
    pub health: HealthCheckConfig,
    /// Mux connections (routes in `mode = "mux"`).
    pub mux: MuxParams,
}

/// Mux connection settings of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuxParams {
    /// Mux connections kept open per endpoint.
    pub connections: usize,
    /// Path of the upstream's mux WebSocket.
    pub path: String,
    /// Credit each session grants the upstream, in bytes.
    pub window_bytes: u32,
    /// Unacknowledged bytes each session keeps for replay.
    pub replay_bytes: usize,
    /// Unacknowledged bytes all sessions on one endpoint keep together.
    pub replay_total_bytes: usize,
    /// How long a session whose connection died may take to be resumed.
    pub resume_timeout: Duration,
}

impl MuxParams {
    fn from_spec(at: &str, spec: &MuxSpec, errs: &mut Errors) -> Option<Self> {
        let connections = spec.connections.unwrap_or(2);
        if connections == 0 || connections > 64 {
            errs.push(
                format!("{at}.connections"),
                format!("must be within 1..=64, got {connections}"),
            );
        }
        let path = spec.path.clone().unwrap_or_else(|| "/agentmux".to_owned());
        if !path.starts_with('/') {
            errs.push(format!("{at}.path"), format!("must start with '/', got {path:?}"));
        }
        let window_bytes = spec.window_bytes.unwrap_or(256 * 1024);
        if window_bytes < 1024 {
            errs.push(
                format!("{at}.window_bytes"),
                format!("must be at least 1024, got {window_bytes}"),
            );
        }
        let replay_bytes = spec.replay_bytes.unwrap_or(1 << 20);
        if replay_bytes < 1024 {
            errs.push(
                format!("{at}.replay_bytes"),
                format!("must be at least 1024, got {replay_bytes}"),
            );
        }
        let replay_total_bytes = spec.replay_total_bytes.unwrap_or(256 << 20);
        if replay_total_bytes < replay_bytes {
            errs.push(
                format!("{at}.replay_total_bytes"),
                format!("must be at least replay_bytes ({replay_bytes}), got {replay_total_bytes}"),
            );
        }
        let resume_timeout = duration(
            errs,
            format!("{at}.resume_timeout"),
            &spec.resume_timeout,
            Duration::from_secs(10),
        );
        Some(Self {
            connections,
            path,
            window_bytes,
            replay_bytes,
            replay_total_bytes,
            resume_timeout: resume_timeout?,
        })
    }
}

/// Where a cluster's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterKind {
    /// A fixed list of network endpoints.
    Static(Vec<EndpointConfig>),
    /// The built-in echo upstream, served in-process.
    Echo,
}

/// One upstream endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Where the endpoint is.
    pub addr: EndpointAddr,
    /// Relative weight for the `weighted` strategy.
    pub weight: u32,
}

/// An endpoint address: an IP, or a DNS name resolved at connect time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointAddr {
    /// `ip:port`
    Ip(SocketAddr),
    /// `host:port`
    Dns {
        /// The DNS name.
        host: Arc<str>,
        /// The port.
        port: u16,
    },
}

impl std::fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Load-balancing strategy across a cluster's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Each endpoint in turn.
    RoundRobin,
    /// The endpoint with the fewest connections in use.
    LeastConnections,
    /// Smooth weighted round robin.
    Weighted,
    /// Affinity: the same session key lands on the same endpoint.
    ConsistentHash(HashKey),
    /// Power of two choices over a latency EWMA.
    P2cEwma,
}

/// The session key for consistent hashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The agent's IP address.
    ClientIp,
}

/// Which HTTP version to speak to upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/2 if TLS ALPN selects it, HTTP/1.1 otherwise.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (prior knowledge when plaintext).
    Http2,
}

/// Upstream TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA bundle verifying upstream certificates; `None`: the webpki roots.
    pub ca: Option<PathBuf>,
    /// Server name sent and verified; `None`: the endpoint's host.
    pub sni: Option<ServerName<'static>>,
}

/// The warm pool's settings (DESIGN.md "Warm pool").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolParams {
    /// Connections opened at start and kept with no traffic.
    pub min_connections: usize,
    /// Upstream connections per endpoint at most.
    pub max_connections: usize,
    /// Age at which a connection is replaced.
    pub connection_ttl: Duration,
    /// Unused time after which a connection above the minimum is closed.
    pub idle_timeout: Duration,
    /// Longest wait for a connection (then 503 / 1013).
    pub acquire_timeout: Duration,
    /// Period of active health checks.
    pub health_check_interval: Duration,
    /// Streams per HTTP/2 connection before another is opened.
    pub max_streams_per_connection: u32,
    /// Open connections ahead of a forecast ramp.
    pub predictive: bool,
}

impl Default for PoolParams {
    fn default() -> Self {
        Self {
            min_connections: 2,
            max_connections: 100,
            connection_ttl: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(5 * 60),
            acquire_timeout: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(30),
            max_streams_per_connection: 100,
            predictive: true,
        }
    }
}

/// Health checking of endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// What a health probe does.
    pub probe: HealthProbe,
    /// Time allowed for one probe.
    pub timeout: Duration,
    /// Consecutive failures (probes or requests) that eject an endpoint.
    pub unhealthy_threshold: u32,
    /// Consecutive successful probes that bring it back.
    pub healthy_threshold: u32,
}

/// What an active health check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthProbe {
    /// Open a TCP (+TLS) connection.
    Connect,
    /// `GET path`; any 2xx or 3xx is healthy.
    Http(String),
}

impl ClusterConfig {
    pub(super) fn from_spec(name: &str, spec: &ClusterSpec, errs: &mut Errors) -> Option<Self> {
        let at = |key: &str| format!("clusters.{name}.{key}");
        let kind = match spec.kind.as_deref() {
            None | Some("static") => {
                if spec.endpoints.is_empty() {
                    errs.push(at("endpoints"), "at least one endpoint is required");
                }
                let eps: Vec<_> = spec
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| EndpointConfig::from_spec(&at(&format!("endpoints[{i}]")), e, errs))
                    .collect();
                eps.into_iter().collect::<Option<Vec<_>>>().map(ClusterKind::Static)
            }
            Some("echo") => {
                if !spec.endpoints.is_empty() {
                    errs.push(
                        at("endpoints"),
                        "an echo cluster is served in-process and takes no endpoints",
                    );
                }
                if spec.tls.is_some() {
                    errs.push(at("tls"), "an echo cluster is served in-process and takes no tls");
                }
                Some(ClusterKind::Echo)
            }
            Some(other) => {
                errs.push(
                    at("kind"),
                    format!("unknown kind {other:?} (expected \"static\" or \"echo\")"),
                );
                None
            }
        };
        let strategy = Strategy::from_spec(&at(""), spec, errs);
        let protocol = match spec.protocol.as_deref() {
            None | Some("auto") => Some(UpstreamProtocol::Auto),
            Some("http1") => Some(UpstreamProtocol::Http1),
            Some("http2") => Some(UpstreamProtocol::Http2),
            Some(other) => {
                errs.push(
                    at("protocol"),
                    format!("unknown protocol {other:?} (expected \"auto\", \"http1\" or \"http2\")"),
                );
                None
            }
        };
        let connect_timeout = duration(
            errs,
            at("connect_timeout"),
            &spec.connect_timeout,
            Duration::from_secs(5),
        );
        let tcp_keepalive = duration(errs, at("tcp_keepalive"), &spec.tcp_keepalive, Duration::from_secs(60));
        let tls = match &spec.tls {
            None => Some(None),
            Some(t) => UpstreamTls::from_spec(&at("tls"), t, errs).map(Some),
        };
        let pool = PoolParams::from_spec(&at("pool"), &spec.pool, errs);
        let health = HealthCheckConfig::from_spec(&at("health_check"), &spec.health_check, errs);
        let mux = MuxParams::from_spec(&at("mux"), &spec.mux, errs);
        Some(Self {
            name: name.into(),
            kind: kind?,
            strategy: strategy?,
            protocol: protocol?,
            connect_timeout: connect_timeout?,
            tcp_keepalive: Some(tcp_keepalive?).filter(|d| !d.is_zero()),
            tls: tls?,
            pool: pool?,
            health: health?,
            mux: mux?,
        })
    }

    pub(super) fn check_files(&self, errs: &mut Errors) {
        if let Some(UpstreamTls { ca: Some(ca), .. }) = &self.tls {
            errs.check(format!("clusters.{}.tls.ca", self.name), agentmux_certs::load_roots(ca));
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pool settings.
    pub fn pool(&self) -> &PoolParams {
        &self.pool
    }
}

fn duration(errs: &mut Errors, path: String, value: &Option<String>, default: Duration) -> Option<Duration> {
    match value {
        None => Some(default),
        Some(s) => errs.check(path, parse_duration(s)),
    }
}

impl EndpointConfig {
    fn from_spec(at: &str, spec: &EndpointSpec, errs: &mut Errors) -> Option<Self> {
        let weight = spec.weight.unwrap_or(1);
        if weight == 0 {
            errs.push(format!("{at}.weight"), "must be at least 1, got 0");
        }
        let addr = errs.check(at, EndpointAddr::parse(&spec.address));
        Some(Self { addr: addr?, weight })
    }

    /// The endpoint's address.
    pub fn addr(&self) -> &EndpointAddr {
        &self.addr
    }
}

/// An address that is not `ip:port` or `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAddress {
    /// Neither a socket address nor a host name with a port.
    #[error("invalid address {0:?} (expected ip:port or host:port, e.g. \"127.0.0.1:18080\")")]
    HostPort(String),
    /// Not a socket address (listeners bind IP addresses only).
    #[error("invalid address {0:?} (expected ip:port, e.g. \"127.0.0.1:8443\")")]
    IpPort(String),
}

/// A `hash_key` that is not `header:NAME`, `cookie:NAME` or `client-ip`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHashKey {
    /// `header:` with an invalid header name.
    #[error("invalid header name in {0:?}")]
    Header(String),
    /// `cookie:` with an invalid cookie name.
    #[error("invalid cookie name in {0:?}")]
    Cookie(String),
    /// Another kind of key.
    #[error("unknown key {0:?} (expected \"header:NAME\", \"cookie:NAME\" or \"client-ip\")")]
    Unknown(String),
}

impl EndpointAddr {
    /// Parses `ip:port`, `[v6]:port` or `host:port`.
    pub fn parse(s: &str) -> Result<Self, InvalidAddress> {
        let bad = || InvalidAddress::HostPort(s.to_owned());
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self::Ip(a));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !valid || port == 0 {
            return Err(bad());
        }
        Ok(Self::Dns {
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }

    /// The host part, used as TLS server name by default.
    pub fn host(&self) -> String {
        match self {
            Self::Ip(a) => a.ip().to_string(),
            Self::Dns { host, .. } => host.to_string(),
        }
    }
}

impl Strategy {
    fn from_spec(at: &str, spec: &ClusterSpec, errs: &mut Errors) -> Option<Self> {
        let strategy = match spec.strategy.as_deref() {
            None | Some("least-connections") => Self::LeastConnections,
            Some("round-robin") => Self::RoundRobin,
            Some("weighted") => Self::Weighted,
            Some("p2c-ewma") => Self::P2cEwma,
            Some("consistent-hash") => {
                let key = match spec.hash_key.as_deref() {
                    None | Some("client-ip") => Some(HashKey::ClientIp),
                    Some(k) => errs.check(format!("{at}hash_key"), HashKey::parse(k)),
                };
                return key.map(Self::ConsistentHash);
            }
            Some(other) => {
                errs.push(
                    format!("{at}strategy"),
                    format!(
                        "unknown strategy {other:?} (expected round-robin, least-connections, weighted, consistent-hash or p2c-ewma)"
                    ),
                );
                return None;
            }
        };
        if spec.hash_key.is_some() {
            errs.push(format!("{at}hash_key"), "only used with strategy = \"consistent-hash\"");
        }
        Some(strategy)
    }
}

impl HashKey {
    fn parse(s: &str) -> Result<Self, InvalidHashKey> {
        if let Some(h) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(h.as_bytes())
                .map(Self::Header)
                .map_err(|_| InvalidHashKey::Header(s.to_owned()));
        }
        if let Some(c) = s.strip_prefix("cookie:") {
            if !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic() && b != b'=' && b != b';') {
                return Ok(Self::Cookie(c.to_owned()));
            }
            return Err(InvalidHashKey::Cookie(s.to_owned()));
        }
        Err(InvalidHashKey::Unknown(s.to_owned()))
    }
}

impl UpstreamTls {
    fn from_spec(at: &str, spec: &UpstreamTlsSpec, errs: &mut Errors) -> Option<Self> {
        let sni = match &spec.sni {
            None => Some(None),
            Some(s) => errs
                .check(
                    format!("{at}.sni"),
                    ServerName::try_from(s.clone()).map_err(|_| format!("invalid server name {s:?}")),
                )
                .map(Some),
        };
        Some(Self {
            ca: spec.ca.as_ref().map(PathBuf::from),
            sni: sni?,
        })
    }
}

impl PoolParams {
    fn from_spec(at: &str, spec: &PoolSpec, errs: &mut Errors) -> Option<Self> {
        let d = PoolParams::default();
        let min = spec.min_connections.unwrap_or(d.min_connections);
        let max = spec.max_connections.unwrap_or(d.max_connections);
        if max == 0 {
            errs.push(format!("{at}.max_connections"), "must be at least 1, got 0");
        } else if max < min {
            errs.push(
                format!("{at}.max_connections"),
                format!("must be >= min_connections ({min}), got {max}"),
            );
        }
        let streams = spec.max_streams_per_connection.unwrap_or(d.max_streams_per_connection);
        if streams == 0 {
            errs.push(format!("{at}.max_streams_per_connection"), "must be at least 1, got 0");
        }
        let mut positive = |key: &str, v: &Option<String>, default: Duration| {
            let r = duration(errs, format!("{at}.{key}"), v, default);
            if r == Some(Duration::ZERO) {
                errs.push(format!("{at}.{key}"), "must be longer than 0s");
                return None;
            }
            r
        };
        let ttl = positive("connection_ttl", &spec.connection_ttl, d.connection_ttl);
        let idle = positive("idle_timeout", &spec.idle_timeout, d.idle_timeout);
        let acquire = positive("acquire_timeout", &spec.acquire_timeout, d.acquire_timeout);
        let hc = positive(
            "health_check_interval",
            &spec.health_check_interval,
            d.health_check_interval,
        );
        Some(Self {
            min_connections: min,
            max_connections: max,
            connection_ttl: ttl?,
            idle_timeout: idle?,
            acquire_timeout: acquire?,
            health_check_interval: hc?,
            max_streams_per_connection: streams,
            predictive: spec.predictive.unwrap_or(d.predictive),
        })
    }

    /// Connections kept open without traffic.
    pub fn min_connections(&self) -> usize {
        self.min_connections
    }

    /// Connections per endpoint at most.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Whether forecasts may raise the pool above its minimum.
    pub fn predictive(&self) -> bool {
        self.predictive
    }
}

impl HealthCheckConfig {
    fn from_spec(at: &str, spec: &HealthCheckSpec, errs: &mut Errors) -> Option<Self> {
        let probe = match spec.kind.as_deref() {
            None | Some("connect") => {
                if spec.path.is_some() {
                    errs.push(format!("{at}.path"), "only used with kind = \"http\"");
                }
                Some(HealthProbe::Connect)
            }
            Some("http") => {
                let path = spec.path.clone().unwrap_or_else(|| "/healthz".to_owned());
                if path.starts_with('/') {
                    Some(HealthProbe::Http(path))
                } else {
                    errs.push(format!("{at}.path"), format!("must start with '/', got {path:?}"));
                    None
                }
            }
            Some(other) => {
                errs.push(
                    format!("{at}.kind"),
                    format!("unknown kind {other:?} (expected \"connect\" or \"http\")"),
                );
                None
            }
        };
        let timeout = duration(errs, format!("{at}.timeout"), &spec.timeout, Duration::from_secs(2));
        let unhealthy = spec.unhealthy_threshold.unwrap_or(3);
        let healthy = spec.healthy_threshold.unwrap_or(2);
        for (key, v) in [("unhealthy_threshold", unhealthy), ("healthy_threshold", healthy)] {
            if v == 0 {
                errs.push(format!("{at}.{key}"), "must be at least 1, got 0");
            }
        }
        Some(Self {
            probe: probe?,
            timeout: timeout?,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        })
    }
}
