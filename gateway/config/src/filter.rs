//! `[filters.NAME]` tables: the filter kinds and their settings.
//!
//! Each kind's values are checked here through the filters crate's own
//! validating constructors, so `agentmux validate` reports exactly what the
//! running gateway would refuse, with the key path.

use std::collections::BTreeMap;
use std::time::Duration;

use agentmux_filters::InvalidParam;
use serde::Deserialize;

use super::error::Errors;
use super::parse_duration;

/// A filter as written. `kind` picks the variant.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FilterSpec {
    /// GCRA limits keyed by agent.
    RateLimit {
        /// `"client-ip"`, `"api-key"` or `"header:NAME"`. Default `"client-ip"`.
        key: Option<String>,
        /// Requests (and WebSocket upgrades) per second per key.
        requests_per_second: Option<f64>,
        /// Requests allowed in a burst. Default: the rate rounded up, at least 1.
        burst: Option<u32>,
        /// WebSocket messages per second per session (agent to upstream).
        messages_per_second: Option<f64>,
        /// Message burst per session. Default: the rate rounded up.
        message_burst: Option<u32>,
        /// WebSocket messages per second per key, all its sessions together.
        key_messages_per_second: Option<f64>,
        /// Message burst per key. Default: the rate rounded up.
        key_message_burst: Option<u32>,
        /// How long excess messages may be held back before the session is
        /// closed with 1008. Default `"1s"`.
        max_message_delay: Option<String>,
        /// Concurrent WebSocket sessions per key.
        max_sessions: Option<u32>,
        /// `"local"` (default) or `"global"` (shared through Redis).
        scope: Option<String>,
    },
    /// Fail fast while a cluster or endpoint keeps failing.
    CircuitBreaker {
        /// Consecutive failures that open the circuit. Default 5.
        consecutive_failures: Option<u32>,
        /// Failure share over `window` that opens it (0 < r ≤ 1). Default 0.5.
        failure_rate: Option<f64>,
        /// The failure-rate window. Default `"10s"`.
        window: Option<String>,
        /// Requests in the window before the rate counts. Default 20.
        min_requests: Option<u32>,
        /// Time open before probing. Default `"5s"`.
        open_duration: Option<String>,
        /// Cap on the open time as it grows with failed probes. Default `"60s"`.
        max_open_duration: Option<String>,
        /// Requests let through while half-open. Default 1.
        half_open_probes: Option<u32>,
        /// Response statuses that count as failures. Default `[502, 503, 504]`.
        failure_statuses: Option<Vec<u16>>,
    },
    /// Jittered retries paid for by a budget.
    Retry {
        /// Attempts in all, the first included (1..=20). Default 3.
        max_attempts: Option<u32>,
        /// First backoff ceiling. Default `"25ms"`.
        backoff_base: Option<String>,
        /// Largest backoff. Default `"1s"`.
        backoff_cap: Option<String>,
        /// Retries per request the budget allows (0..=1). Default 0.2.
        budget_ratio: Option<f64>,
        /// Retries per second always allowed. Default 10.
        budget_min_per_sec: Option<u32>,
        /// How long requests count toward the budget. Default `"10s"`.
        budget_ttl: Option<String>,
        /// Largest request body buffered for replay; larger bodies are sent
        /// once. Default 65536.
        max_body_bytes: Option<usize>,
        /// Statuses retried for idempotent requests. Default `[502, 503, 504]`.
        statuses: Option<Vec<u16>>,
    },
    /// Deadlines.
    Timeout {
        /// Time to response headers, retries included.
        request: Option<String>,
        /// Longest gap between body frames of a streaming response.
        idle: Option<String>,
    },
    /// API keys or mTLS identities.
    Auth {
        /// Key name → `"sha256:<hex>"` (from `agentmux hash-key`).
        #[serde(default)]
        api_keys: BTreeMap<String, String>,
        /// mTLS client identities let in.
        #[serde(default)]
        allowed_identities: Vec<String>,
        /// Pass the verified API key header upstream. Default false.
        #[serde(default)]
        forward_credentials: bool,
    },
    /// Bounded in-flight work per route.
    LoadShed {
        /// Requests in flight at most; more get 503.
        max_in_flight: Option<usize>,
    },
}

/// A validated filter. Plain values, so a reload can tell whether a
/// filter changed and keep its state when it did not.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterConfig {
    /// See [`FilterSpec::RateLimit`].
    RateLimit(RateLimitConfig),
    /// See [`FilterSpec::CircuitBreaker`].
    CircuitBreaker(BreakerConfig),
    /// See [`FilterSpec::Retry`].
    Retry(RetryConfig),
    /// See [`FilterSpec::Timeout`].
    Timeout {
        /// Request deadline.
        request: Option<Duration>,
        /// Idle gap for streaming bodies.
        idle: Option<Duration>,
    },
    /// See [`FilterSpec::Auth`].
    Auth {
        /// Key name and hash.
        api_keys: Vec<(String, String)>,
        /// Allowed mTLS identities.
        allowed_identities: Vec<String>,
        /// Forward the key upstream.
        forward_credentials: bool,
    },
    /// See [`FilterSpec::LoadShed`].
    LoadShed {
        /// In-flight bound.
        max_in_flight: usize,
    },
}

/// Per-session `(rate, burst)`, per-key `(rate, burst)` and the longest
/// delay before closing.
pub type MessageRates = ((f64, u32), (f64, u32), Duration);

/// Rate limit settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// What identifies an agent (`header:NAME`, `client-ip`, `api-key`).
    pub key: String,
    /// `(rate, burst)` for requests.
    pub requests: Option<(f64, u32)>,
    /// Per-session and per-key message limits.
    pub messages: Option<MessageRates>,
    /// Concurrent WebSocket sessions per key at most.
    pub max_sessions: Option<u32>,
    /// `scope = "global"`: the request rate is shared through Redis.
    pub global: bool,
}

/// Circuit breaker settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// Failure rate over the window that opens the circuit.
    pub failure_rate: Option<(f64, Duration, u32)>,
    /// How long the circuit stays open before probing.
    pub open_duration: Duration,
    /// Longest open time after repeated failed probes.
    pub max_open_duration: Duration,
    /// Requests let through while half-open.
    pub half_open_probes: u32,
    /// Response statuses that count as failures.
    pub failure_statuses: Vec<u16>,
}

/// Retry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Base and cap of the full-jitter backoff.
    pub backoff: (Duration, Duration),
    /// Retry budget: ratio of retries to requests, floor per second, window.
    pub budget: (f64, u32, Duration),
    /// Largest request body kept for replay.
    pub max_body_bytes: usize,
    /// Response statuses that are retried.
    pub statuses: Vec<u16>,
}

fn dur(errs: &mut Errors, at: &str, key: &str, v: &Option<String>, default: Duration) -> Option<Duration> {
    match v {
        None => Some(default),
        Some(s) => errs.check(format!("{at}.{key}"), parse_duration(s)),
    }
}

/// Records a filters-crate parameter error at its key path.
fn param<T>(errs: &mut Errors, at: &str, r: Result<T, InvalidParam>) -> Option<T> {
    param_as(errs, at, "", r)
}

/// Like [`param`] for constructors whose parameter names the config
/// prefixes (`ratio` is written `budget_ratio`).
fn param_as<T>(errs: &mut Errors, at: &str, prefix: &str, r: Result<T, InvalidParam>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let p = e.param();
            let key = if p.starts_with(prefix) {
                p.to_owned()
            } else {
                format!("{prefix}{p}")
            };
            errs.push(format!("{at}.{key}"), e.reason().to_owned());
            None
        }
    }
}

fn statuses(errs: &mut Errors, at: &str, key: &str, v: &Option<Vec<u16>>) -> Vec<u16> {
    let list = v.clone().unwrap_or_else(|| vec![502, 503, 504]);
    for s in &list {
        if http::StatusCode::from_u16(*s).is_err() {
            errs.push(format!("{at}.{key}"), format!("{s} is not an HTTP status"));
        }
    }
    list
}

fn default_burst(rate: f64) -> u32 {
    (rate.ceil() as u32).max(1)
}

impl FilterConfig {
    pub(super) fn from_spec(name: &str, spec: &FilterSpec, errs: &mut Errors) -> Option<Self> {
        let at = format!("filters.{name}");
        let at = at.as_str();
        match spec {
            FilterSpec::RateLimit { .. } => rate_limit(at, spec, errs).map(Self::RateLimit),
            FilterSpec::CircuitBreaker { .. } => breaker(at, spec, errs).map(Self::CircuitBreaker),
            FilterSpec::Retry { .. } => retry(at, spec, errs).map(Self::Retry),
            FilterSpec::Timeout { request, idle } => {
                let request = request
                    .as_ref()
                    .and_then(|s| errs.check(format!("{at}.request"), parse_duration(s)));
                let idle = idle
                    .as_ref()
                    .and_then(|s| errs.check(format!("{at}.idle"), parse_duration(s)));
                if let Some(r) = request {
                    param(errs, at, agentmux_filters::timeout::TimeoutParams::new(r))?;
                }
                if let Some(i) = idle {
                    param(errs, at, agentmux_filters::timeout::IdleTimeoutParams::new(i))?;
                }
                if request.is_none() && idle.is_none() {
                    errs.push(at, "a timeout filter needs `request` or `idle`");
                    return None;
                }
                Some(Self::Timeout { request, idle })
            }
            FilterSpec::Auth {
                api_keys,
                allowed_identities,
                forward_credentials,
            } => {
                let keys: Vec<(String, String)> = api_keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                param(
                    errs,
                    at,
                    agentmux_filters::auth::AuthParams::new(
                        keys.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        allowed_identities.iter().map(String::as_str),
                    ),
                )?;
                Some(Self::Auth {
                    api_keys: keys,
                    allowed_identities: allowed_identities.clone(),
                    forward_credentials: *forward_credentials,
                })
            }
            FilterSpec::LoadShed { max_in_flight } => {
                let Some(n) = *max_in_flight else {
                    errs.push(format!("{at}.max_in_flight"), "required");
                    return None;
                };
                param(errs, at, agentmux_filters::load_shed::LoadShedParams::new(n))?;
                Some(Self::LoadShed { max_in_flight: n })
            }
        }
    }

    /// The kind's name as written in config.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimit(_) => "rate-limit",
            Self::CircuitBreaker(_) => "circuit-breaker",
            Self::Retry(_) => "retry",
            Self::Timeout { .. } => "timeout",
            Self::Auth { .. } => "auth",
            Self::LoadShed { .. } => "load-shed",
        }
    }
}

fn rate_limit(at: &str, spec: &FilterSpec, errs: &mut Errors) -> Option<RateLimitConfig> {
    let FilterSpec::RateLimit {
        key,
        requests_per_second,
        burst,
        messages_per_second,
        message_burst,
        key_messages_per_second,
        key_message_burst,
        max_message_delay,
        max_sessions,
        scope,
    } = spec
    else {
        return None;
    };
    let key = key.clone().unwrap_or_else(|| "client-ip".to_owned());
    let source = param(errs, at, key.parse::<agentmux_filters::rate_limit::KeySource>());
    let requests = requests_per_second.map(|r| (r, burst.unwrap_or_else(|| default_burst(r))));
    if let (Some((r, b)), Some(src)) = (requests, source.clone()) {
        param(errs, at, agentmux_filters::rate_limit::RateLimitParams::new(src, r, b));
    }
    let delay = dur(errs, at, "max_message_delay", max_message_delay, Duration::from_secs(1))?;
    let messages = match (messages_per_second, key_messages_per_second) {
        (None, None) => None,
        (s, k) => {
            // An unset side is effectively unlimited.
            let s = s.map_or((1e9, u32::MAX), |r| {
                (r, message_burst.unwrap_or_else(|| default_burst(r)))
            });
            let k = k.map_or((1e9, u32::MAX), |r| {
                (r, key_message_burst.unwrap_or_else(|| default_burst(r)))
            });
            param(
                errs,
                at,
                agentmux_filters::rate_limit::MessageLimitParams::new(s.0, s.1, k.0, k.1, delay),
            )?;
            Some((s, k, delay))
        }
    };
    if let Some(n) = max_sessions {
        param(errs, at, agentmux_filters::rate_limit::SessionLimitParams::new(*n));
    }
    let global = match scope.as_deref() {
        None | Some("local") => false,
        Some("global") => true,
        Some(other) => {
            errs.push(
                format!("{at}.scope"),
                format!("must be \"local\" or \"global\", got {other:?}"),
            );
            false
        }
    };
    if requests.is_none() && messages.is_none() && max_sessions.is_none() {
        errs.push(
            at,
            "a rate-limit filter needs requests_per_second, messages_per_second, key_messages_per_second or max_sessions",
        );
        return None;
    }
    source?;
    Some(RateLimitConfig {
        key,
        requests,
        messages,
        max_sessions: *max_sessions,
        global,
    })
}

fn breaker(at: &str, spec: &FilterSpec, errs: &mut Errors) -> Option<BreakerConfig> {
    let FilterSpec::CircuitBreaker {
        consecutive_failures,
        failure_rate,
        window,
        min_requests,
        open_duration,
        max_open_duration,
        half_open_probes,
        failure_statuses,
    } = spec
    else {
        return None;
    };
    let cfg = BreakerConfig {
        consecutive_failures: consecutive_failures.unwrap_or(5),
        failure_rate: Some((
            failure_rate.unwrap_or(0.5),
            dur(errs, at, "window", window, Duration::from_secs(10))?,
            min_requests.unwrap_or(20),
        )),
        open_duration: dur(errs, at, "open_duration", open_duration, Duration::from_secs(5))?,
        max_open_duration: dur(
            errs,
            at,
            "max_open_duration",
            max_open_duration,
            Duration::from_secs(60),
        )?,
        half_open_probes: half_open_probes.unwrap_or(1),
        failure_statuses: statuses(errs, at, "failure_statuses", failure_statuses),
    };
    param(errs, at, cfg.params())?;
    Some(cfg)
}

impl BreakerConfig {
    /// The filters crate's parameters.
    pub fn params(&self) -> Result<agentmux_filters::circuit_breaker::BreakerParams, InvalidParam> {
        let mut p =
            agentmux_filters::circuit_breaker::BreakerParams::new(self.consecutive_failures, self.open_duration)?;
        p = match self.failure_rate {
            Some((rate, window, min)) => p.with_failure_rate(rate, window, min)?,
            None => p.without_failure_rate(),
        };
        p.with_max_open_duration(self.max_open_duration)?
            .with_half_open_probes(self.half_open_probes)
    }
}

fn retry(at: &str, spec: &FilterSpec, errs: &mut Errors) -> Option<RetryConfig> {
    let FilterSpec::Retry {
        max_attempts,
        backoff_base,
        backoff_cap,
        budget_ratio,
        budget_min_per_sec,
        budget_ttl,
        max_body_bytes,
        statuses: st,
    } = spec
    else {
        return None;
    };
    let cfg = RetryConfig {
        max_attempts: max_attempts.unwrap_or(3),
        backoff: (
            dur(errs, at, "backoff_base", backoff_base, Duration::from_millis(25))?,
            dur(errs, at, "backoff_cap", backoff_cap, Duration::from_secs(1))?,
        ),
        budget: (
            budget_ratio.unwrap_or(0.2),
            budget_min_per_sec.unwrap_or(10),
            dur(errs, at, "budget_ttl", budget_ttl, Duration::from_secs(10))?,
        ),
        max_body_bytes: max_body_bytes.unwrap_or(64 * 1024),
        statuses: statuses(errs, at, "statuses", st),
    };
    let backoff = param_as(
        errs,
        at,
        "backoff_",
        agentmux_filters::retry::Backoff::new(cfg.backoff.0, cfg.backoff.1),
    )?;
    param(
        errs,
        at,
        agentmux_filters::retry::RetryParams::new(cfg.max_attempts, backoff),
    )?;
    param_as(
        errs,
        at,
        "budget_",
        agentmux_filters::retry::RetryBudgetParams::new(cfg.budget.0, cfg.budget.1, cfg.budget.2),
    )?;
    Some(cfg)
}
