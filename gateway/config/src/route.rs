//! Route settings: what a route matches, its mode and its cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::error::Errors;
use super::filter::FilterSpec;
use super::parse_duration;
use super::spec::{ClusterSpec, MatchSpec, RouteSpec, WebSocketSpec};

/// How a route carries sessions (DESIGN.md "Session kinds").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain and streaming HTTP over pooled upstream connections.
    Http,
    /// One upstream WebSocket per agent session, relayed frame by frame.
    WebSocket,
    /// Many agent sessions multiplexed over a few upstream connections.
    Mux,
}

impl Mode {
    /// The name used in config files and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::WebSocket => "websocket",
            Self::Mux => "mux",
        }
    }
}

/// A validated `[[routes]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Name for logs, metrics and the admin API.
    pub name: Arc<str>,
    /// What requests the route takes.
    pub matcher: RouteMatch,
    /// How the route carries sessions.
    pub mode: Mode,
    /// The cluster it sends to.
    pub cluster: Arc<str>,
    /// Time to the upstream's response headers (504 beyond).
    pub request_timeout: Duration,
    /// WebSocket relay limits.
    pub websocket: WebSocketParams,
    /// Filter names, in the order they run.
    pub filters: Vec<Arc<str>>,
    /// Request body bounds.
    pub body: super::BodyParams,
    /// Which path is forwarded.
    pub forward_path: super::ForwardPath,
}

/// What requests a route takes. All given conditions must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    /// Host condition; `None`: any host.
    pub host: Option<HostMatch>,
    /// Normalised: starts with `/`, no trailing `/` unless it is `/`.
    pub path_prefix: String,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderMatch>,
}

/// Host condition, lower-cased, without port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches one or more
    /// labels in front of the suffix, not the bare suffix.
    Suffix(String),
}

/// Header condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name.
    pub name: HeaderName,
    /// Exact value; `None`: presence alone.
    pub value: Option<HeaderValue>,
}

/// WebSocket relay limits of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocketParams {
    /// Largest message relayed (1009 beyond).
    pub max_message_bytes: usize,
    /// Bytes held for a slow reader before the other side is no longer read.
    pub max_buffered_bytes: usize,
    /// Ping an agent silent this long; `None`: off.
    pub keepalive_interval: Option<Duration>,
    /// Time allowed for the upstream's `101` (or OPEN_OK).
    pub handshake_timeout: Duration,
}

impl RouteConfig {
    pub(super) fn from_spec(
        i: usize,
        spec: &RouteSpec,
        clusters: &BTreeMap<String, ClusterSpec>,
        filters: &BTreeMap<String, FilterSpec>,
        errs: &mut Errors,
    ) -> Option<Self> {
        let at = |key: &str| format!("routes[{i}].{key}");
        let name = match &spec.name {
            Some(n) if !n.trim().is_empty() => Some(Arc::<str>::from(n.as_str())),
            Some(_) => {
                errs.push(at("name"), "must not be empty");
                None
            }
            None => {
                errs.push(at("name"), "required");
                None
            }
        };
        let matcher = RouteMatch::from_spec(&at("match"), &spec.matcher, errs);
        let mode = match spec.mode.as_deref() {
            None | Some("http") => Some(Mode::Http),
            Some("websocket") => Some(Mode::WebSocket),
            Some("mux") => Some(Mode::Mux),
            Some(other) => {
                errs.push(
                    at("mode"),
                    format!("unknown mode {other:?} (expected \"http\", \"websocket\" or \"mux\")"),
                );
                None
            }
        };
        let cluster = match &spec.cluster {
            None => {
                errs.push(at("cluster"), "required (name of a [clusters.NAME] table)");
                None
            }
            Some(c) if !clusters.contains_key(c) => {
                let known: Vec<_> = clusters.keys().map(String::as_str).collect();
                errs.push(
                    at("cluster"),
                    format!("no cluster named {c:?} (defined: {})", known.join(", ")),
                );
                None
            }
            Some(c) => Some(Arc::<str>::from(c.as_str())),
        };
        let request_timeout = match &spec.request_timeout {
            None => Some(Duration::from_secs(60)),
            Some(s) => errs.check(at("request_timeout"), parse_duration(s)),
        };
        if request_timeout == Some(Duration::ZERO) {
            errs.push(at("request_timeout"), "must be longer than 0s");
        }
        let websocket = WebSocketParams::from_spec(&at("websocket"), &spec.websocket, errs);
        let max_body = spec.max_request_body_bytes.unwrap_or(super::edge::DEFAULT_MAX_BODY);
        let body_timeout = match &spec.request_body_timeout {
            None => Some(Some(Duration::from_secs(60))),
            Some(s) => errs
                .check(at("request_body_timeout"), parse_duration(s))
                .map(|d| (!d.is_zero()).then_some(d)),
        };
        let forward_path = match spec.forward_path.as_deref() {
            None | Some("normalized") => Some(super::ForwardPath::Normalized),
            Some("raw") => Some(super::ForwardPath::Raw),
            Some(other) => {
                errs.push(
                    at("forward_path"),
                    format!("unknown value {other:?} (expected \"normalized\" or \"raw\")"),
                );
                None
            }
        };
        let mut names = Vec::new();
        for (j, f) in spec.filters.iter().enumerate() {
            if !filters.contains_key(f) {
                let known: Vec<_> = filters.keys().map(String::as_str).collect();
                errs.push(
                    format!("routes[{i}].filters[{j}]"),
                    format!(
                        "no filter named {f:?} (defined: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            } else if names.iter().any(|n: &Arc<str>| **n == **f) {
                errs.push(format!("routes[{i}].filters[{j}]"), format!("{f:?} is listed twice"));
            } else {
                names.push(Arc::from(f.as_str()));
            }
        }
        Some(Self {
            name: name?,
            matcher: matcher?,
            mode: mode?,
            cluster: cluster?,
            request_timeout: request_timeout?,
            websocket: websocket?,
            filters: names,
            body: super::BodyParams {
                max_bytes: max_body,
                timeout: body_timeout?,
            },
            forward_path: forward_path?,
        })
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The cluster it sends to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Its request body bounds.
    pub fn body_limits(&self) -> super::BodyParams {
        self.body
    }

    /// Which path it forwards.
    pub fn forward_path(&self) -> super::ForwardPath {
        self.forward_path
    }
}

impl RouteMatch {
    fn from_spec(at: &str, spec: &MatchSpec, errs: &mut Errors) -> Option<Self> {
        let host = spec
            .host
            .as_deref()
            .map(|h| errs.check(format!("{at}.host"), HostMatch::parse(h)));
        let path_prefix = match spec.path_prefix.as_deref() {
            None => Some("/".to_owned()),
            Some(p) if p.starts_with('/') && !p.contains(['?', '#', ' ']) => {
                let trimmed = p.trim_end_matches('/');
                if let Some(why) = not_normal(trimmed) {
                    errs.push(
                        format!("{at}.path_prefix"),
                        format!(
                            "must be a normalized path ({why}), got {p:?}: requests are matched after normalization"
                        ),
                    );
                }
                Some(if trimmed.is_empty() {
                    "/".to_owned()
                } else {
                    trimmed.to_owned()
                })
            }
            Some(p) => {
                errs.push(
                    format!("{at}.path_prefix"),
                    format!("must start with '/' and hold no '?', '#' or spaces, got {p:?}"),
                );
                None
            }
        };
        let headers: Vec<_> = spec
            .headers
            .iter()
            .enumerate()
            .map(|(j, h)| {
                let at = format!("{at}.headers[{j}]");
                let name = match &h.name {
                    None => {
                        errs.push(format!("{at}.name"), "required");
                        None
                    }
                    Some(n) => errs.check(
                        format!("{at}.name"),
                        HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}")),
                    ),
                };
                let value = match &h.value {
                    None => Some(None),
                    Some(v) => errs
                        .check(
                            format!("{at}.value"),
                            HeaderValue::from_str(v).map_err(|_| format!("invalid header value {v:?}")),
                        )
                        .map(Some),
                };
                Some(HeaderMatch {
                    name: name?,
                    value: value?,
                })
            })
            .collect();
        let host = match host {
            None => None,
            Some(h) => Some(h?),
        };
        Some(Self {
            host,
            path_prefix: path_prefix?,
            headers: headers.into_iter().collect::<Option<_>>()?,
        })
    }
}

/// Why a path prefix could never match a normalized request path
/// (the gateway's `edge::path`), if it could not.
fn not_normal(prefix: &str) -> Option<&'static str> {
    let segments = prefix.split('/').skip(1);
    for s in segments {
        match s {
            "" => return Some("no empty segments"),
            "." | ".." => return Some("no '.' or '..' segments"),
            _ => {}
        }
    }
    if prefix.contains('\\') {
        return Some("no backslash");
    }
    let b = prefix.as_bytes();
    for (i, _) in prefix.match_indices('%') {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        let Some(c) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            return Some("'%' must start a two-digit hex escape");
        };
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            return Some("write letters, digits and -._~ unescaped");
        }
        if hex.is_some_and(|h| h.bytes().any(|x| x.is_ascii_lowercase())) {
            return Some("escapes in upper-case hex");
        }
    }
    None
}

/// A `match.host` that is not a host name, IP address or `*.suffix`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid host {0:?} (expected a name like \"api.example.com\" or \"*.example.com\", no port)")]
pub(crate) struct InvalidHostMatch(String);

impl HostMatch {
    fn parse(h: &str) -> Result<Self, InvalidHostMatch> {
        let lower = h.trim().to_ascii_lowercase();
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if let Some(suffix) = lower.strip_prefix("*.") {
            if valid_name(suffix) {
                return Ok(Self::Suffix(format!(".{suffix}")));
            }
        } else if valid_name(&lower) || lower.parse::<std::net::IpAddr>().is_ok() {
            return Ok(Self::Exact(lower));
        }
        Err(InvalidHostMatch(h.to_owned()))
    }
}

impl WebSocketParams {
    fn from_spec(at: &str, spec: &WebSocketSpec, errs: &mut Errors) -> Option<Self> {
        let max_message_bytes = spec.max_message_bytes.unwrap_or(16 << 20);
        let max_buffered_bytes = spec.max_buffered_bytes.unwrap_or(1 << 20);
        if max_message_bytes == 0 {
            errs.push(format!("{at}.max_message_bytes"), "must be at least 1, got 0");
        }
        if max_buffered_bytes < 1024 {
            errs.push(
                format!("{at}.max_buffered_bytes"),
                format!("must be at least 1024, got {max_buffered_bytes}"),
            );
        }
        let keepalive = match &spec.keepalive_interval {
            None => Some(Some(Duration::from_secs(30))),
            Some(s) => errs
                .check(format!("{at}.keepalive_interval"), parse_duration(s))
                .map(|d| (!d.is_zero()).then_some(d)),
        };
        let handshake = match &spec.handshake_timeout {
            None => Some(Duration::from_secs(10)),
            Some(s) => errs.check(format!("{at}.handshake_timeout"), parse_duration(s)),
        };
        Some(Self {
            max_message_bytes,
            max_buffered_bytes,
            keepalive_interval: keepalive?,
            handshake_timeout: handshake?,
        })
    }
}
