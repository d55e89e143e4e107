//! `[cluster_state]`: the optional Redis backend several gateway instances
//! share (global rate limits, the session registry, pub/sub of reloads and
//! circuit opens). Absent: every instance runs on its own state alone.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use super::error::Errors;
use super::{format_duration, parse_duration};

/// `[cluster_state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStateSpec {
    /// Redis URL: `"redis://[user:password@]host:port[/db]"` or
    /// `"redis+unix:///path/to/socket"`. Required. Point it at the Redis
    /// master (for Sentinel, at a proxy that follows the master; see
    /// `config/DEPLOYMENT.md`).
    pub redis: Option<String>,
    /// This instance's name in the registry and on pub/sub: letters,
    /// digits and `._:-`, at most 64. Default: `<hostname>-<pid>`.
    pub instance_id: Option<String>,
    /// Prefix of every key and channel, so several gateway fleets can share
    /// one Redis. Default `"agentmux:"`.
    pub key_prefix: Option<String>,
    /// Longest wait for one Redis command (a lease, a registry lookup, a
    /// publish); past it the gateway carries on with local state.
    /// Default `"50ms"`.
    pub command_timeout: Option<String>,
    /// Longest wait to open a connection to Redis. Default `"1s"`.
    pub connect_timeout: Option<String>,
    /// How often the instance announces itself and checks that Redis
    /// answers (and, while it does not, tries again). Default `"1s"`.
    pub heartbeat_interval: Option<String>,
    /// Instances sharing the global limits. While Redis is unreachable each
    /// instance enforces `rate / N` of every global limit, where N is the
    /// larger of this and the number of live instances last seen in Redis.
    /// Default 1.
    pub expected_instances: Option<u32>,
    /// How much of its share of a global rate an instance leases from
    /// Redis at once, as time: longer means fewer round trips, shorter
    /// less skew when traffic shifts between instances. Default `"100ms"`.
    pub lease_window: Option<String>,
    /// How long a session registry entry outlives the session's last sign
    /// of life on its instance (the window in which a reconnecting agent
    /// returns to the same endpoint). Default `"10m"`.
    pub session_ttl: Option<String>,
    /// Header carrying the agent's session id. A WebSocket upgrade with it
    /// goes to the endpoint the registry holds for that id, on whichever
    /// instance it arrives. Default `"x-session-id"`.
    pub session_header: Option<String>,
}

/// Validated `[cluster_state]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStateConfig {
    /// The Redis server shared by the instances.
    pub redis: RedisUrl,
    /// This instance's id among its peers.
    pub instance_id: InstanceId,
    /// Prefix of every Redis key this gateway writes.
    pub key_prefix: Arc<str>,
    /// Longest wait for one Redis command before carrying on locally.
    pub command_timeout: Duration,
    /// Time allowed to connect to Redis.
    pub connect_timeout: Duration,
    /// How often this instance says it is alive.
    pub heartbeat_interval: Duration,
    /// Instances expected to share the limits (each takes its share while Redis is away).
    pub expected_instances: u32,
    /// How much of a global limit an instance leases at a time.
    pub lease_window: Duration,
    /// How long a session registry entry outlives its last activity.
    pub session_ttl: Duration,
    /// The request header carrying an agent's session id.
    pub session_header: HeaderName,
}

/// A Redis URL that parses; its `Debug` and `Display` hide a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL as written, password included (for the client only).
    pub fn as_secret_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://[user:password@]rest → scheme://[user:***@]rest
        match (self.0.split_once("://"), self.0.rfind('@')) {
            (Some((scheme, rest)), Some(at)) if at > scheme.len() => {
                let creds = &rest[..at - scheme.len() - 3];
                let user = creds.split_once(':').map_or("", |(u, _)| u);
                write!(f, "{scheme}://{user}:***@{}", &self.0[at + 1..])
            }
            _ => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// How the instance is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceId {
    /// `<hostname>-<pid>`, worked out at start.
    HostnamePid,
    /// As configured.
    Named(Arc<str>),
}

impl InstanceId {
    /// The name to use: the configured one, or `<hostname>-<pid>` (the
    /// hostname from the kernel, else `$HOSTNAME`, else `agentmux`).
    pub fn resolve(&self) -> Arc<str> {
        match self {
            Self::Named(n) => n.clone(),
            Self::HostnamePid => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty() && h.chars().all(id_char))
                    .unwrap_or_else(|| "agentmux".to_owned());
                format!("{host}-{}", std::process::id()).into()
            }
        }
    }
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

impl ClusterStateConfig {
    /// The Redis URL (its `Display` hides a password).
    pub fn redis(&self) -> &RedisUrl {
        &self.redis
    }

    /// The instance name setting.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }

    /// Prefix of keys and channels.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Bound on one Redis command.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Bound on opening a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Period of heartbeats and health checks.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Instances assumed to share global limits, at least.
    pub fn expected_instances(&self) -> u32 {
        self.expected_instances
    }

    /// Lease window of global limits.
    pub fn lease_window(&self) -> Duration {
        self.lease_window
    }

    /// Lifetime of a registry entry after the session's last sign of life.
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }

    /// The session id header.
    pub fn session_header(&self) -> &HeaderName {
        &self.session_header
    }
}

/// Validates `[cluster_state]`; `None` when the table is absent.
pub(super) fn validate(spec: Option<&ClusterStateSpec>, errs: &mut Errors) -> Option<ClusterStateConfig> {
    let spec = spec?;
    let at = |k: &str| format!("cluster_state.{k}");
    let redis = match spec.redis.as_deref() {
        None => {
            errs.push(at("redis"), "required (e.g. \"redis://127.0.0.1:6379\")");
            None
        }
        Some(url) => errs.check(at("redis"), redis_url(url)),
    };
    let instance_id = match spec.instance_id.as_deref() {
        None => Some(InstanceId::HostnamePid),
        Some(id) if !id.is_empty() && id.len() <= 64 && id.chars().all(id_char) => Some(InstanceId::Named(id.into())),
        Some(id) => {
            errs.push(
                at("instance_id"),
                format!("must be 1 to 64 letters, digits or ._:- (got {id:?})"),
            );
            None
        }
    };
    let key_prefix = spec.key_prefix.clone().unwrap_or_else(|| "agentmux:".to_owned());
    if key_prefix.is_empty() || key_prefix.len() > 64 || key_prefix.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        errs.push(
            at("key_prefix"),
            format!("must be 1 to 64 characters without spaces (got {key_prefix:?})"),
        );
    }
    let mut dur = |key: &str, v: &Option<String>, default: u64, min: Duration, max: Duration| {
        let d = match v {
            None => Duration::from_millis(default),
            Some(s) => errs.check(at(key), parse_duration(s))?,
        };
        if d < min || d > max {
            errs.push(
                at(key),
                format!(
                    "must be within {}..={} (got {})",
                    format_duration(min),
                    format_duration(max),
                    format_duration(d)
                ),
            );
            return None;
        }
        Some(d)
    };
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    let command_timeout = dur("command_timeout", &spec.command_timeout, 50, ms(1), secs(10));
    let connect_timeout = dur("connect_timeout", &spec.connect_timeout, 1000, ms(10), secs(60));
    let heartbeat_interval = dur("heartbeat_interval", &spec.heartbeat_interval, 1000, ms(100), secs(60));
    let lease_window = dur("lease_window", &spec.lease_window, 100, ms(1), secs(10));
    let session_ttl = dur("session_ttl", &spec.session_ttl, 600_000, secs(1), secs(7 * 86_400));
    let expected_instances = spec.expected_instances.unwrap_or(1);
    if !(1..=1000).contains(&expected_instances) {
        errs.push(
            at("expected_instances"),
            format!("must be within 1..=1000 (got {expected_instances})"),
        );
    }
    let header = spec.session_header.as_deref().unwrap_or("x-session-id");
    let session_header = errs.check(
        at("session_header"),
        HeaderName::try_from(header).map_err(|_| format!("invalid header name {header:?}")),
    );
    Some(ClusterStateConfig {
        redis: redis?,
        instance_id: instance_id?,
        key_prefix: key_prefix.into(),
        command_timeout: command_timeout?,
        connect_timeout: connect_timeout?,
        heartbeat_interval: heartbeat_interval?,
        expected_instances,
        lease_window: lease_window?,
        session_ttl: session_ttl?,
        session_header: session_header?,
    })
}

/// A `cluster_state.redis` value the gateway cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidRedisUrl {
    /// `rediss://`: no TLS client in this build.
    #[error("rediss:// (TLS) is not supported by this build; reach Redis over a private network or a TLS tunnel")]
    Tls,
    /// Another scheme.
    #[error("must be a redis:// or redis+unix:// URL (got {0:?})")]
    Scheme(String),
    /// A redis URL of the wrong shape.
    #[error("invalid Redis URL {url}: {why}")]
    Shape {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn redis_url(url: &str) -> Result<RedisUrl, InvalidRedisUrl> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis" | "redis+unix" | "unix") => {}
        Some("rediss") => return Err(InvalidRedisUrl::Tls),
        _ => return Err(InvalidRedisUrl::Scheme(RedisUrl(url.to_owned()).to_string())),
    }
    check_redis_url(url)
        .map(|()| RedisUrl(url.to_owned()))
        .map_err(|why| InvalidRedisUrl::Shape {
            url: RedisUrl(url.to_owned()).to_string(),
            why,
        })
}

/// What the Redis client accepts (redis-rs parses URLs with the `url`
/// crate the same way): a host and an optional port and database number
/// for `redis://`, a socket path for the unix schemes.
fn check_redis_url(url: &str) -> Result<(), &'static str> {
    let parsed = url::Url::parse(url).map_err(|_| "not a URL")?;
    match parsed.scheme() {
        "unix" | "redis+unix" => {
            if parsed.path().is_empty() || parsed.path() == "/" {
                return Err("no socket path");
            }
        }
        _ => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err("no host");
            }
            let db = parsed.path().trim_start_matches('/');
            if !db.is_empty() && db.parse::<i64>().is_err() {
                return Err("the path must be a database number");
            }
        }
    }
    Ok(())
}
