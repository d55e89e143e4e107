//! Configuration: TOML parsed once into validated runtime types.
//!
//! A file is read in two steps. [`spec`] holds serde structs that mirror the
//! file (unknown keys are errors, values kept as written); validation then
//! builds the runtime types below, collecting every problem with the key
//! path and offending value (`clusters.llm.pool.max_connections: must be >=
//! min_connections (2), got 1`). After that nothing downstream parses a
//! string, reads an `Option` meaning "unset" or converts seconds.
//!
//! Relative file paths (certificates, CA bundles) are relative to the
//! working directory of the process, like the default config path
//! `config/agentmux.toml`.

mod admin;
mod cidr;
mod cluster;
mod cluster_state;
mod duration;
mod edge;
mod error;
mod filter;
mod listener;
mod route;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use admin::{AdminConfig, AllowedHosts, HostName, InvalidHost};
pub use cidr::{Cidr, InvalidCidr};
pub use cluster::{
    ClusterConfig, ClusterKind, EndpointAddr, EndpointConfig, HashKey, HealthCheckConfig, HealthProbe, MuxParams,
    PoolParams, Strategy, UpstreamProtocol, UpstreamTls,
};
pub use cluster::{InvalidAddress, InvalidHashKey};
pub use cluster_state::{ClusterStateConfig, ClusterStateSpec, InstanceId, RedisUrl};
pub use duration::{InvalidDuration, format_duration, parse_duration};
pub use edge::{BodyParams, EdgePolicy, EscapedSlashes, ForwardPath, PathPolicy};
pub use error::{ConfigError, ConfigErrors};
pub use filter::{BreakerConfig, FilterConfig, FilterSpec, MessageRates, RateLimitConfig, RetryConfig};
pub use listener::{ListenerConfig, ListenerTls};
pub use route::{HeaderMatch, HostMatch, Mode, RouteConfig, RouteMatch, WebSocketParams};

use error::Errors;
use spec::ConfigSpec;

/// The path `agentmux` and `agentmux run` use without `--config`.
pub const DEFAULT_CONFIG_PATH: &str = "config/agentmux.toml";

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The admin listener.
    pub admin: AdminConfig,
    /// Where agents connect.
    pub listeners: Vec<ListenerConfig>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
    /// Upstream clusters by name.
    pub clusters: BTreeMap<Arc<str>, ClusterConfig>,
    /// Filters by name.
    pub filters: BTreeMap<Arc<str>, FilterConfig>,
    /// Log output.
    pub log: LogConfig,
    /// OpenTelemetry tracing; `None`: off.
    pub telemetry: Option<TelemetryConfig>,
    /// Analytics; `None`: off.
    pub analytics: Option<AnalyticsConfig>,
    /// Count WebSocket messages and bytes as they flow.
    pub message_metrics: bool,
    /// State shared with other instances; `None`: this instance alone.
    pub cluster_state: Option<ClusterStateConfig>,
    /// How long work in flight may finish at shutdown.
    pub drain_timeout: Duration,
    /// Runtime threads; `None`: one per CPU.
    pub worker_threads: Option<usize>,
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `tracing` filter directive.
    pub level: String,
    /// JSON lines instead of human-readable text.
    pub json: bool,
    /// One line per request and per session.
    pub access_log: bool,
}

/// Analytics settings; `None` in [`Config`] when off.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsConfig {
    /// URL alerts are POSTed to.
    pub webhook: Option<String>,
    /// PEM CA bundle for an https webhook.
    pub webhook_ca: Option<std::path::PathBuf>,
    /// Cost of one CPU core busy for a second.
    pub cpu_core_second_cost: f64,
    /// Cost of one pooled connection held for an hour.
    pub connection_hour_cost: f64,
    /// Currency label shown with costs.
    pub currency: String,
}

/// OpenTelemetry tracing; `None` in [`Config`] when off.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector URL.
    pub endpoint: String,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Share of new traces recorded.
    pub sampling_ratio: f64,
}

/// The version of a config file: the SHA-256 of its bytes, in hex. Two
/// instances with equal versions loaded the same file contents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigVersion(Arc<str>);

impl ConfigVersion {
    /// The version of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        Self(hex::encode(Sha256::digest(bytes)).into())
    }

    /// The version of the file at `path` as it is now.
    pub fn of_file(path: &Path) -> std::io::Result<Self> {
        std::fs::read(path).map(|b| Self::of(&b))
    }

    /// 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The first 12 digits are plenty to tell versions apart in logs.
        f.write_str(self.0.get(..12).unwrap_or(&self.0))
    }
}

impl Config {
    /// Reads and validates a file. File references inside it (certificates)
    /// are checked too, so a config that loads will start.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::load_versioned(path).map(|(c, _)| c)
    }

    /// Like [`Config::load`], also returning the version of exactly the
    /// bytes that were loaded.
    pub fn load_versioned(path: &Path) -> Result<(Self, ConfigVersion), ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::new(&origin, vec![ConfigError::new("", format!("cannot read file: {e}"))]))?;
        let config = Self::parse(&text, &origin)?;
        config.check_files().map_err(|errs| ConfigErrors::new(&origin, errs))?;
        Ok((config, ConfigVersion::of(text.as_bytes())))
    }

    /// Parses and validates TOML text without touching the file system.
    /// `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigErrors> {
        let spec = parse_spec(text).map_err(|e| ConfigErrors::new(origin, vec![e]))?;
        Self::from_spec(spec).map_err(|errs| ConfigErrors::new(origin, errs))
    }

    fn from_spec(spec: ConfigSpec) -> Result<Self, Vec<ConfigError>> {
        let mut errs = Errors::default();
        let admin = admin::validate(&spec.admin, &mut errs);
        if spec.listeners.is_empty() {
            errs.push("listeners", "at least one [[listeners]] entry is required");
        }
        let listeners: Vec<_> = spec
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| ListenerConfig::from_spec(i, l, &mut errs))
            .collect();
        check_unique(
            spec.listeners
                .iter()
                .enumerate()
                .map(|(i, l)| l.name.clone().unwrap_or_else(|| format!("listener-{i}"))),
            "listeners",
            &mut errs,
        );
        let clusters: BTreeMap<Arc<str>, ClusterConfig> = spec
            .clusters
            .iter()
            .filter_map(|(name, c)| ClusterConfig::from_spec(name, c, &mut errs))
            .map(|c| (c.name.clone(), c))
            .collect();
        if spec.routes.is_empty() {
            errs.push("routes", "at least one [[routes]] entry is required");
        }
        let routes: Vec<_> = spec
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| RouteConfig::from_spec(i, r, &spec.clusters, &spec.filters, &mut errs))
            .collect();
        check_unique(spec.routes.iter().filter_map(|r| r.name.clone()), "routes", &mut errs);
        let filters: BTreeMap<Arc<str>, FilterConfig> = spec
            .filters
            .iter()
            .filter_map(|(name, f)| FilterConfig::from_spec(name, f, &mut errs).map(|c| (Arc::from(name.as_str()), c)))
            .collect();
        let log = validate_log(&spec.log, &mut errs);
        let telemetry = validate_telemetry(&spec.telemetry, &mut errs);
        let analytics = validate_analytics(&spec.analytics, &mut errs);
        let cluster_state = cluster_state::validate(spec.cluster_state.as_ref(), &mut errs);
        check_global_limits(&filters, spec.cluster_state.is_some(), &mut errs);
        let drain_timeout = spec
            .shutdown
            .drain_timeout
            .as_deref()
            .map_or(Some(Duration::from_secs(30)), |s| {
                errs.check("shutdown.drain_timeout", parse_duration(s))
            });
        let worker_threads = spec.runtime.worker_threads;
        if worker_threads == Some(0) {
            errs.push("runtime.worker_threads", "must be at least 1, got 0");
        }
        match (admin, log, drain_timeout) {
            (Some(admin), Some(log), Some(drain_timeout)) if errs.is_empty() => Ok(Self {
                admin,
                listeners,
                routes,
                clusters,
                filters,
                log,
                telemetry,
                analytics,
                message_metrics: spec.telemetry.message_metrics.unwrap_or(true),
                cluster_state,
                drain_timeout,
                worker_threads,
            }),
            _ => Err(errs.into_vec()),
        }
    }

    /// Checks that every file the config names can be loaded: listener
    /// certificates and keys (unless they will be generated), client CA
    /// bundles and upstream CA bundles.
    pub fn check_files(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Errors::default();
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(tls) = &l.tls {
                tls.check_files(&format!("listeners[{i}].tls"), &mut errs);
            }
        }
        for c in self.clusters.values() {
            c.check_files(&mut errs);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs.into_vec()) }
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.listen
    }

    /// The listeners, in file order.
    pub fn listeners(&self) -> &[ListenerConfig] {
        &self.listeners
    }

    /// The routes, in file order.
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// The clusters by name.
    pub fn clusters(&self) -> &BTreeMap<Arc<str>, ClusterConfig> {
        &self.clusters
    }

    /// The filters by name.
    pub fn filters(&self) -> &BTreeMap<Arc<str>, FilterConfig> {
        &self.filters
    }

    /// Grace period for in-flight work at shutdown.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Runtime worker threads, when the file sets them (`None`: one per
    /// CPU the process may use).
    pub fn worker_threads(&self) -> Option<usize> {
        self.worker_threads
    }

    /// The `tracing` filter directive.
    pub fn log_level(&self) -> &str {
        &self.log.level
    }

    /// Whether logs are JSON lines.
    pub fn log_json(&self) -> bool {
        self.log.json
    }

    /// Whether access lines are logged.
    pub fn access_log(&self) -> bool {
        self.log.access_log
    }

    /// Analytics settings, when on.
    pub fn analytics(&self) -> Option<&AnalyticsConfig> {
        self.analytics.as_ref()
    }

    /// Tracing settings, when on.
    pub fn telemetry(&self) -> Option<&TelemetryConfig> {
        self.telemetry.as_ref()
    }

    /// State shared with other instances, when configured.
    pub fn cluster_state(&self) -> Option<&ClusterStateConfig> {
        self.cluster_state.as_ref()
    }
}

/// `scope = "global"` shares `requests_per_second` through
/// `[cluster_state]`: both must be there.
fn check_global_limits(filters: &BTreeMap<Arc<str>, FilterConfig>, shared: bool, errs: &mut Errors) {
    for (name, f) in filters {
        let FilterConfig::RateLimit(r) = f else { continue };
        if !r.global {
            continue;
        }
        if !shared {
            errs.push(
                format!("filters.{name}.scope"),
                "\"global\" needs a [cluster_state] table with a redis URL",
            );
        }
        if r.requests.is_none() {
            errs.push(
                format!("filters.{name}.scope"),
                "\"global\" shares requests_per_second, which is not set (message and session limits stay per instance)",
            );
        }
    }
}

/// Deserializes the file into specs, turning serde's error into one that
/// names the key path and the line.
fn parse_spec(text: &str) -> Result<ConfigSpec, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        ConfigError::new("", format!("not valid TOML: {}", e.message()))
            .with_line(e.span().map(|s| line_of(text, s.start)))
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| line_of(text, s.start));
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, inner.message().to_owned()).with_line(line)
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn validate_log(spec: &spec::LogSpec, errs: &mut Errors) -> Option<LogConfig> {
    let level = spec.level.clone().unwrap_or_else(|| "info".to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        errs.push("log.level", format!("invalid filter {level:?}: {e}"));
    }
    let json = match spec.format.as_deref() {
        None | Some("human") => false,
        Some("json") => true,
        Some(other) => {
            errs.push("log.format", format!("must be \"human\" or \"json\", got {other:?}"));
            return None;
        }
    };
    Some(LogConfig {
        level,
        json,
        access_log: spec.access_log,
    })
}

fn validate_analytics(spec: &spec::AnalyticsSpec, errs: &mut Errors) -> Option<AnalyticsConfig> {
    if spec.enabled == Some(false) {
        return None;
    }
    if let Some(url) = &spec.webhook {
        let ok = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            errs.push(
                "analytics.webhook",
                format!("must be an http:// or https:// URL, got {url:?}"),
            );
        }
    }
    let mut cost = |key: &str, v: Option<f64>| {
        let v = v.unwrap_or(0.0);
        if !v.is_finite() || v < 0.0 {
            errs.push(format!("analytics.{key}"), format!("must be a number >= 0, got {v}"));
        }
        v
    };
    Some(AnalyticsConfig {
        webhook: spec.webhook.clone(),
        webhook_ca: spec.webhook_ca.as_ref().map(std::path::PathBuf::from),
        cpu_core_second_cost: cost("cpu_core_second_cost", spec.cpu_core_second_cost),
        connection_hour_cost: cost("connection_hour_cost", spec.connection_hour_cost),
        currency: spec.currency.clone().unwrap_or_default(),
    })
}

fn validate_telemetry(spec: &spec::TelemetrySpec, errs: &mut Errors) -> Option<TelemetryConfig> {
    let endpoint = spec.otlp_endpoint.as_deref()?;
    let uri: http::Uri = match endpoint.parse() {
        Ok(u) => u,
        Err(_) => {
            errs.push("telemetry.otlp_endpoint", format!("invalid URL {endpoint:?}"));
            return None;
        }
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        errs.push(
            "telemetry.otlp_endpoint",
            format!("must be an http:// or https:// URL, got {endpoint:?}"),
        );
        return None;
    }
    let endpoint = if matches!(uri.path(), "" | "/") {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_owned()
    };
    let ratio = spec.sampling_ratio.unwrap_or(0.01);
    if !(0.0..=1.0).contains(&ratio) {
        errs.push(
            "telemetry.sampling_ratio",
            format!("must be within 0.0..=1.0, got {ratio}"),
        );
    }
    Some(TelemetryConfig {
        endpoint,
        service_name: spec.service_name.clone().unwrap_or_else(|| "agentmux".to_owned()),
        sampling_ratio: ratio.clamp(0.0, 1.0),
    })
}

/// Parses `ip:port`, with a message that shows the value.
pub(crate) fn parse_socket_addr(s: &str) -> Result<SocketAddr, InvalidAddress> {
    s.parse().map_err(|_| InvalidAddress::IpPort(s.to_owned()))
}

fn check_unique(names: impl Iterator<Item = String>, what: &str, errs: &mut Errors) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, n) in names.enumerate() {
        if seen.contains(&n) {
            errs.push(format!("{what}[{i}].name"), format!("duplicate name {n:?}"));
        }
        seen.insert(n);
    }
}
