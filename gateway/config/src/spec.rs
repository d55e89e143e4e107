//! The configuration file as written: serde `*Spec` structs.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently
//! ignored key. Values stay as written here (durations and addresses are
//! strings); `super::validate` turns them into runtime types once.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/api`).
    #[serde(default)]
    pub admin: AdminSpec,
    /// Where agents connect. At least one.
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    /// Routes, matched most specific first.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Upstream clusters by name.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Filters by name, applied by the routes that list them.
    #[serde(default)]
    pub filters: BTreeMap<String, super::filter::FilterSpec>,
    /// Logging.
    #[serde(default)]
    pub log: LogSpec,
    /// OpenTelemetry tracing.
    #[serde(default)]
    pub telemetry: TelemetrySpec,
    /// Live analytics, alerts and the dashboard.
    #[serde(default)]
    pub analytics: AnalyticsSpec,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownSpec,
    /// The async runtime the gateway runs on.
    #[serde(default)]
    pub runtime: RuntimeSpec,
    /// State shared with other gateway instances through Redis; absent:
    /// this instance keeps all its state to itself.
    pub cluster_state: Option<super::cluster_state::ClusterStateSpec>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    /// Address of the admin listener. Default `"127.0.0.1:9901"`.
    pub listen: Option<String>,
    /// Bearer token required on every admin request except `/healthz`
    /// (sent as `Authorization: Bearer`, or typed once into the
    /// dashboard's login page, which sets a session cookie; never in a
    /// URL). Mandatory when `listen` is not a loopback address, at least 16
    /// characters. Default: none.
    pub token: Option<String>,
    /// Host names the admin listener answers to besides its own addresses
    /// (`name` or `name:port`; without a port, the bound port or none).
    /// Requests whose `Host`, and state changes whose `Origin`, name another
    /// host are refused (DNS rebinding). Always allowed: the bound
    /// `ip:port`; `localhost` and loopback addresses on a loopback or
    /// unspecified bind; any IP address on an unspecified bind (`0.0.0.0`,
    /// `::`), so probes that send the pod IP pass. `["*"]` turns the check
    /// off. Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Time allowed to receive each request head, which also bounds how
    /// long a keep-alive connection may sit idle between requests (the
    /// connection is closed), and the body of a state-changing request.
    /// Default `"10s"`.
    pub request_header_timeout: Option<String>,
    /// Open admin connections at most; further ones wait in the kernel's
    /// accept queue. Default 64, at least 1.
    pub max_connections: Option<usize>,
    /// How long a dashboard login (its session cookie) lasts. Default
    /// `"12h"`.
    pub session_ttl: Option<String>,
}

/// `[[listeners]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// A name for logs and metrics. Default `"listener-<index>"`.
    pub name: Option<String>,
    /// `ip:port` to bind. Required.
    pub listen: Option<String>,
    /// TLS settings; omit for plaintext.
    pub tls: Option<TlsSpec>,
    /// Time allowed for the TLS handshake. Default `"10s"`.
    pub tls_handshake_timeout: Option<String>,
    /// Time allowed to receive a request's headers (slowloris guard; 408).
    /// Default `"10s"`.
    pub request_header_timeout: Option<String>,
    /// Largest request head accepted, in bytes (431 beyond). Default 16384,
    /// at least 8192.
    pub max_request_header_bytes: Option<usize>,
    /// Open downstream connections at most; further ones wait in the
    /// kernel's accept queue. Default 16384.
    pub max_connections: Option<usize>,
    /// HTTP/2 streams per agent connection. Default 256.
    pub h2_max_concurrent_streams: Option<u32>,
    /// Offer WebSocket sessions over HTTP/2 (RFC 8441 extended CONNECT,
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL`) when a route takes them.
    /// Default true.
    pub h2_websockets: Option<bool>,
    /// Close a connection with nothing in flight for this long: an idle
    /// HTTP/1.1 keep-alive connection is closed, an HTTP/2 connection with
    /// no open stream gets GOAWAY. Default `"60s"`.
    pub idle_timeout: Option<String>,
    /// TCP keepalive on agent sockets: probes start after this much
    /// silence (then every 10 s, 3 unanswered end the connection), so a
    /// vanished agent's socket is found. `"0s"` turns it off. Default
    /// `"60s"`.
    pub tcp_keepalive: Option<String>,
    /// Peers (IP addresses or CIDR ranges) whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` headers are
    /// kept and appended to; from anyone else they are replaced. Default:
    /// none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Normalize request paths before routing and forward the normalized
    /// path: percent-decoded unreserved characters, dot segments removed.
    /// `false` routes and forwards paths as received. Default `true`.
    pub normalize_path: Option<bool>,
    /// Merge runs of slashes (`//a` → `/a`) while normalizing. Default
    /// `true`.
    pub merge_slashes: Option<bool>,
    /// `"reject"` (default: `%2F`, `%5C` or `\` in a path is answered 400)
    /// or `"keep"` (passed through as ordinary characters, never as
    /// segment separators).
    pub escaped_slashes: Option<String>,
}

/// `listeners[].tls`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM certificate chain of the default certificate. Required.
    pub cert: Option<String>,
    /// PEM private key of the default certificate. Required.
    pub key: Option<String>,
    /// More certificates, chosen by the DNS names in their subjectAltName
    /// when an agent's SNI matches. Default: none.
    #[serde(default)]
    pub sni: Vec<CertSpec>,
    /// Generate a development CA and server certificate at `cert`/`key`
    /// when the files do not exist yet. Default `false`.
    #[serde(default)]
    pub generate_dev_certs: bool,
    /// PEM CA bundle; when set, agents may present client certificates
    /// signed by it (mTLS identity for auth). Default: none.
    pub client_ca: Option<String>,
    /// Refuse agents without a valid client certificate. Default `false`.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// One certificate + key pair.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSpec {
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
}

/// `[[routes]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Name for logs, metrics and the admin API. Required, unique.
    pub name: Option<String>,
    /// What requests this route takes. Default: everything.
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    /// `"http"` (default), `"websocket"` or `"mux"`.
    pub mode: Option<String>,
    /// Name of a cluster in `[clusters]`. Required.
    pub cluster: Option<String>,
    /// Time from sending a request upstream until its response headers
    /// arrive (504 beyond). Streaming bodies are not cut. Default `"60s"`.
    pub request_timeout: Option<String>,
    /// WebSocket relay settings (modes `websocket` and `mux`).
    #[serde(default)]
    pub websocket: WebSocketSpec,
    /// Largest request body accepted, in bytes: a larger `Content-Length`
    /// is answered 413 before anything else runs, a streamed body is cut
    /// when it passes the limit (413 if no response has started).
    /// Default 33554432 (32 MiB).
    pub max_request_body_bytes: Option<u64>,
    /// Time from a request's head to the last byte of its body (408
    /// beyond, if no response has started). `"0s"` turns it off. Default
    /// `"60s"`.
    pub request_body_timeout: Option<String>,
    /// `"normalized"` (default: the path the route matched) or `"raw"`
    /// (the path exactly as the agent sent it, for upstreams that need
    /// it; routing still uses the normalized path).
    pub forward_path: Option<String>,
    /// Names of `[filters.NAME]` entries, applied in this order (the first
    /// sees the request first). Default: none.
    #[serde(default)]
    pub filters: Vec<String>,
}

/// `routes[].match`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Exact host (`api.example.com`) or suffix wildcard (`*.example.com`).
    pub host: Option<String>,
    /// Path prefix on segment boundaries: `/ws` takes `/ws` and `/ws/x`,
    /// not `/wsx`. Default `/`.
    pub path_prefix: Option<String>,
    /// Headers that must be present (and equal `value` when given).
    #[serde(default)]
    pub headers: Vec<HeaderMatchSpec>,
}

/// `routes[].match.headers[]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchSpec {
    /// Header name (case-insensitive).
    pub name: Option<String>,
    /// Exact value; omit to match on presence alone.
    pub value: Option<String>,
}

/// `routes[].websocket`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSpec {
    /// Largest message (all fragments together) relayed, in bytes; larger
    /// ones close the session with 1009. Default 16 MiB.
    pub max_message_bytes: Option<usize>,
    /// Bytes a session may hold in the gateway waiting for a slow reader
    /// before it stops reading the other side. Default 1 MiB.
    pub max_buffered_bytes: Option<usize>,
    /// Send a ping to an agent silent this long and close the session
    /// (1001) when two in a row go unanswered; `"0s"` turns it off.
    /// Default `"30s"`.
    pub keepalive_interval: Option<String>,
    /// Time allowed for the upstream's `101` answer (mux mode: for its
    /// OPEN_OK or TAKEOVER_OK; then 504). Default `"10s"`.
    pub handshake_timeout: Option<String>,
}

/// `[clusters.NAME]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// `"static"` (default: the `endpoints` list) or `"echo"` (a built-in
    /// upstream served in-process that echoes requests and messages).
    pub kind: Option<String>,
    /// `"ip:port"` / `"host:port"` strings or `{ address, weight }` tables.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// `round-robin`, `least-connections` (default), `weighted`,
    /// `consistent-hash` or `p2c-ewma`.
    pub strategy: Option<String>,
    /// Session key for `consistent-hash`: `"header:NAME"`, `"cookie:NAME"`
    /// or `"client-ip"`. Default `"client-ip"`.
    pub hash_key: Option<String>,
    /// `"auto"` (default: HTTP/2 when TLS ALPN offers it, else HTTP/1.1),
    /// `"http1"` or `"http2"` (prior knowledge, also without TLS). With
    /// `"http2"`, websocket routes open their sessions as RFC 8441 extended
    /// CONNECT streams of the pooled HTTP/2 connections.
    pub protocol: Option<String>,
    /// Time allowed for TCP connect plus TLS handshake. Default `"5s"`.
    pub connect_timeout: Option<String>,
    /// TCP keepalive on upstream sockets: probes start after this much
    /// silence (then every 10 s, 3 unanswered end the connection), so a
    /// pooled connection to a vanished host is found. `"0s"` turns it off.
    /// Default `"60s"`.
    pub tcp_keepalive: Option<String>,
    /// Upstream TLS; omit for plaintext upstreams.
    pub tls: Option<UpstreamTlsSpec>,
    /// The warm pool of each endpoint.
    #[serde(default)]
    pub pool: PoolSpec,
    /// Active and passive health checking of each endpoint.
    #[serde(default)]
    pub health_check: HealthCheckSpec,
    /// Mux connections (routes in `mode = "mux"`).
    #[serde(default)]
    pub mux: MuxSpec,
}

/// `clusters.NAME.mux`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuxSpec {
    /// Mux connections kept open per endpoint. Default 2.
    pub connections: Option<usize>,
    /// Path of the upstream's mux WebSocket. Default `"/agentmux"`.
    pub path: Option<String>,
    /// Credit each session grants the upstream, in bytes. Default 262144.
    pub window_bytes: Option<u32>,
    /// Unacknowledged bytes each session keeps for replay after a lost
    /// connection; sending waits at the bound. Default 1048576.
    pub replay_bytes: Option<usize>,
    /// Unacknowledged bytes all sessions on one endpoint keep together; a
    /// session sending while it is spent waits (its agent is not read)
    /// until ACKs free some. Per endpoint, so one whose connections stall
    /// cannot hold up the others. At least `replay_bytes`. Default
    /// 268435456 (256 MiB).
    pub replay_total_bytes: Option<usize>,
    /// How long a session whose connection died may take to be resumed on
    /// another before its agent is closed with 1011. Default `"10s"`.
    pub resume_timeout: Option<String>,
}

/// One endpoint: a string address or a table with a weight.
#[derive(Debug)]
pub struct EndpointSpec {
    /// `ip:port` or `host:port`.
    pub address: String,
    /// Relative weight for `weighted` (default 1).
    pub weight: Option<u32>,
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            address: String,
            weight: Option<u32>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EndpointSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address string or a table { address = \"..\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EndpointSpec, E> {
                Ok(EndpointSpec {
                    address: v.to_owned(),
                    weight: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<EndpointSpec, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(EndpointSpec {
                    address: t.address,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `clusters.NAME.tls`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    /// PEM CA bundle to verify upstream certificates; default: the Mozilla
    /// roots (webpki-roots).
    pub ca: Option<String>,
    /// Server name sent as SNI and verified; default: the endpoint's host.
    pub sni: Option<String>,
}

/// `clusters.NAME.pool`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Connections opened at start and kept open without traffic. Default 2.
    pub min_connections: Option<usize>,
    /// Upstream connections per endpoint at most. Default 100.
    pub max_connections: Option<usize>,
    /// Age at which a connection is replaced. Default `"30m"`.
    pub connection_ttl: Option<String>,
    /// Unused time after which a connection above the minimum is closed.
    /// Default `"5m"`.
    pub idle_timeout: Option<String>,
    /// Longest wait for a connection before failing (503 / 1013).
    /// Default `"5s"`.
    pub acquire_timeout: Option<String>,
    /// Period of active health checks. Default `"30s"`.
    pub health_check_interval: Option<String>,
    /// Streams per HTTP/2 connection before another is opened. Default 100.
    pub max_streams_per_connection: Option<u32>,
    /// Open connections ahead of a forecast ramp (analytics must be on),
    /// between min and max. Default `true`.
    pub predictive: Option<bool>,
}

/// `clusters.NAME.health_check`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// `"connect"` (default: TCP + TLS connect) or `"http"`.
    pub kind: Option<String>,
    /// Path probed with GET when `kind = "http"`. Default `"/healthz"`.
    pub path: Option<String>,
    /// Time allowed for one probe. Default `"2s"`.
    pub timeout: Option<String>,
    /// Consecutive failures (probes or requests) that eject an endpoint.
    /// Default 3.
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive successful probes that bring it back. Default 2.
    pub healthy_threshold: Option<u32>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// `tracing` filter directive, e.g. `"info"` or `"agentmux=debug"`.
    /// Default `"info"`; the `RUST_LOG` environment variable wins.
    pub level: Option<String>,
    /// `"human"` (default) or `"json"`.
    pub format: Option<String>,
    /// One line per request and per WebSocket session (route, cluster,
    /// status, durations, bytes) on the `access` target. Default `false`.
    #[serde(default)]
    pub access_log: bool,
}

/// `[analytics]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSpec {
    /// Run the analytics engine (windows, anomaly alerts, recommendations,
    /// predictive pool sizing, the dashboard's data). Default `true`.
    pub enabled: Option<bool>,
    /// URL alerts are POSTed to as JSON (http or https). Default: none.
    pub webhook: Option<String>,
    /// PEM CA bundle for an https webhook; default: the Mozilla roots.
    pub webhook_ca: Option<String>,
    /// Cost of one CPU core busy for one second, for cost per task. Default 0.
    pub cpu_core_second_cost: Option<f64>,
    /// Cost of one pooled connection held for an hour. Default 0.
    pub connection_hour_cost: Option<f64>,
    /// Currency label shown with costs. Default `""`.
    pub currency: Option<String>,
}

/// `[telemetry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySpec {
    /// OTLP/HTTP (protobuf) collector URL, e.g. `"http://127.0.0.1:4318"`
    /// (`/v1/traces` is added when no path is given). Jaeger accepts OTLP on
    /// port 4318. Default: tracing off.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans. Default `"agentmux"`.
    pub service_name: Option<String>,
    /// Share of new traces recorded (0.0..=1.0); traces an agent started
    /// follow the agent's sampling decision. Default 0.01.
    pub sampling_ratio: Option<f64>,
    /// Count WebSocket messages and bytes and time relay bursts as they
    /// flow (a few atomic operations per read). `false` leaves only
    /// per-session figures. Default `true`.
    pub message_metrics: Option<bool>,
}

/// `[shutdown]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSpec {
    /// How long in-flight requests and sessions may finish after SIGTERM
    /// or SIGINT before the process exits. Default `"30s"`.
    pub drain_timeout: Option<String>,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// Threads that run connections and sessions. `1` runs everything on
    /// one thread with no work stealing (the cheapest per message, like one
    /// nginx worker); more spread sessions over that many threads. Default:
    /// the number of CPUs the process may run on. Read at start only.
    pub worker_threads: Option<usize>,
}
