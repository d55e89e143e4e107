//! Filter state that outlives a reload: limiters, breakers, budgets and
//! in-flight counts are built once per filter and reused for as long as
//! the filter's settings do not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentmux_filters::FilterMetrics;
use agentmux_filters::StatusSet;
use agentmux_filters::auth::{AuthLayer, AuthParams};
use agentmux_filters::circuit_breaker::{BreakerParams, CircuitBreaker};
use agentmux_filters::load_shed::{LoadShedLayer, LoadShedParams};
use agentmux_filters::rate_limit::global::{GlobalLimitParams, GlobalLimiter};
use agentmux_filters::rate_limit::{
    KeySource, MessageLimitParams, MessageLimiter, RateLimitParams, RequestLimiter, SessionLimitParams, SessionLimiter,
};
use agentmux_filters::retry::{Backoff, DefaultClassifier, RetryBudget, RetryBudgetParams, RetryLayer, RetryParams};
use agentmux_filters::timeout::{IdleTimeoutParams, TimeoutParams};
use http::StatusCode;

use crate::cluster_state::ClusterState;
use crate::config::{BreakerConfig, FilterConfig, RateLimitConfig, RetryConfig};
use crate::error::ProxyError;
use crate::metrics::{FilterCounters, Metrics, OpenHook};

/// Why a route's stack could not be built (validation refuses these
/// configs, so they mean a bug or a changed filter crate).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A filter refused its parameters.
    #[error("filters.{filter}: {source}")]
    Filter {
        /// The filter's name.
        filter: Arc<str>,
        /// What it refused.
        #[source]
        source: agentmux_filters::InvalidParam,
    },
    /// A route names a filter the config does not define.
    #[error("routes.{route}: no filter {filter}")]
    NoFilter {
        /// The route.
        route: Arc<str>,
        /// The filter it names.
        filter: Arc<str>,
    },
    /// A mux route's cluster has no mux connections.
    #[error("routes.{route}: its cluster has no mux connections")]
    NoMux {
        /// The route.
        route: Arc<str>,
    },
}

/// A filter made live.
pub(crate) enum Built {
    RateLimit(RateLimitState),
    Breaker(Arc<BreakerSet>),
    Retry {
        layer: RetryLayer,
        max_body: usize,
    },
    Timeout {
        request: Option<TimeoutParams>,
        idle: Option<IdleTimeoutParams>,
        metrics: Arc<dyn FilterMetrics>,
    },
    Auth(AuthLayer),
    LoadShed(LoadShedLayer),
}

/// The parts of a rate-limit filter.
pub(crate) struct RateLimitState {
    pub(crate) key: KeySource,
    pub(crate) requests: Option<RequestLimiter>,
    /// `scope = "global"`: the request rate shared through Redis (instead
    /// of `requests`).
    pub(crate) global: Option<GlobalLimiter>,
    pub(crate) messages: Option<MessageLimiter>,
    pub(crate) sessions: Option<SessionLimiter>,
}

/// One breaker filter's circuits: one per cluster and one per endpoint,
/// created on first use, each with its own controller task.
pub(crate) struct BreakerSet {
    name: Arc<str>,
    params: BreakerParams,
    pub(crate) statuses: StatusSet,
    metrics: Arc<Metrics>,
    circuits: Mutex<HashMap<String, CircuitBreaker>>,
    /// Where local opens are announced to peers.
    cluster: Option<Arc<ClusterState>>,
}

impl BreakerSet {
    /// The circuit for `scope` (`cluster:NAME` or `endpoint:ADDR`).
    pub(crate) fn circuit(&self, scope: &str) -> CircuitBreaker {
        let mut map = self.circuits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(scope.to_owned())
            .or_insert_with(|| {
                let mut counters = FilterCounters::new(&self.metrics, &self.name, scope);
                if let Some(cluster) = &self.cluster {
                    let (cluster, filter, scope) = (cluster.clone(), self.name.clone(), scope.to_owned());
                    counters = counters.with_open_hook(OpenHook(Box::new(move || {
                        cluster.announce_circuit_open(&filter, &scope);
                    })));
                }
                let counters: Arc<dyn FilterMetrics> = Arc::new(counters);
                CircuitBreaker::new(self.params.clone(), counters)
            })
            .clone()
    }

    /// The per-endpoint circuits of `cluster`, aligned with its endpoints
    /// (created on first use, kept across reloads by scope name).
    pub(crate) fn endpoint_circuits(&self, cluster: &crate::upstream::Cluster) -> crate::endpoint::EndpointCircuits {
        crate::endpoint::EndpointCircuits {
            circuits: cluster
                .endpoints()
                .iter()
                .map(|e| self.circuit(&format!("endpoint:{}/{}", cluster.name(), e.label())))
                .collect(),
            statuses: self.statuses,
        }
    }

    /// The circuit for `scope` if it exists (peers' announcements never
    /// create circuits).
    pub(crate) fn existing(&self, scope: &str) -> Option<CircuitBreaker> {
        let map = self.circuits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(scope).cloned()
    }

    /// Every circuit with its scope, for the admin API.
    pub(crate) fn circuits(&self) -> Vec<(String, CircuitBreaker)> {
        let map = self.circuits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A filter's settings and what they built.
type Entry = (FilterConfig, Arc<Built>);

/// The live filters, kept across reloads.
pub(crate) struct FilterStates {
    metrics: Arc<Metrics>,
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    cluster: Option<Arc<ClusterState>>,
}

impl FilterStates {
    pub(crate) fn new(metrics: Arc<Metrics>, cluster: Option<Arc<ClusterState>>) -> Self {
        Self {
            metrics,
            entries: Mutex::new(HashMap::new()),
            cluster,
        }
    }

    /// The live state of filter `name`, reused when its config is unchanged.
    pub(crate) fn get(&self, name: &Arc<str>, config: &FilterConfig) -> Result<Arc<Built>, StackError> {
        let mut map = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((c, b)) = map.get(name)
            && c == config
        {
            return Ok(b.clone());
        }
        let built = Arc::new(self.build(name, config).map_err(|source| StackError::Filter {
            filter: name.clone(),
            source,
        })?);
        map.insert(name.clone(), (config.clone(), built.clone()));
        Ok(built)
    }

    /// Forgets filters no longer configured.
    pub(crate) fn retain(&self, names: impl Fn(&str) -> bool) {
        let mut map = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|k, _| names(k));
    }

    /// Every live breaker set with its filter name.
    pub(crate) fn breakers(&self) -> Vec<(Arc<str>, Arc<BreakerSet>)> {
        let map = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter_map(|(k, (_, b))| match &**b {
                Built::Breaker(s) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect()
    }

    fn build(&self, name: &Arc<str>, config: &FilterConfig) -> Result<Built, agentmux_filters::InvalidParam> {
        let metrics: Arc<dyn FilterMetrics> = Arc::new(FilterCounters::new(&self.metrics, name, ""));
        Ok(match config {
            FilterConfig::RateLimit(c) => Built::RateLimit(rate_limit(name, c, self.cluster.as_ref(), metrics)?),
            FilterConfig::CircuitBreaker(c) => Built::Breaker(Arc::new(self.breaker(name, c)?)),
            FilterConfig::Retry(c) => retry(c, metrics)?,
            FilterConfig::Timeout { request, idle } => Built::Timeout {
                request: request.map(TimeoutParams::new).transpose()?,
                idle: idle.map(IdleTimeoutParams::new).transpose()?,
                metrics,
            },
            FilterConfig::Auth {
                api_keys,
                allowed_identities,
                forward_credentials,
            } => {
                let params = AuthParams::new(
                    api_keys.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    allowed_identities.iter().map(String::as_str),
                )?
                .with_forward_credentials(*forward_credentials);
                Built::Auth(AuthLayer::new(params, metrics))
            }
            FilterConfig::LoadShed { max_in_flight } => {
                Built::LoadShed(LoadShedLayer::new(LoadShedParams::new(*max_in_flight)?, metrics))
            }
        })
    }

    fn breaker(&self, name: &Arc<str>, c: &BreakerConfig) -> Result<BreakerSet, agentmux_filters::InvalidParam> {
        Ok(BreakerSet {
            name: name.clone(),
            params: c.params()?,
            statuses: status_set(&c.failure_statuses),
            metrics: self.metrics.clone(),
            circuits: Mutex::new(HashMap::new()),
            cluster: self.cluster.clone(),
        })
    }
}

fn status_set(codes: &[u16]) -> StatusSet {
    codes.iter().filter_map(|c| StatusCode::from_u16(*c).ok()).collect()
}

fn rate_limit(
    name: &str,
    c: &RateLimitConfig,
    cluster: Option<&Arc<ClusterState>>,
    metrics: Arc<dyn FilterMetrics>,
) -> Result<RateLimitState, agentmux_filters::InvalidParam> {
    let key: KeySource = c.key.parse()?;
    let (requests, global) = match (c.requests, c.global, cluster) {
        (Some((rate, burst)), true, Some(cluster)) => {
            let params = GlobalLimitParams::new(name, key.clone(), rate, burst)?
                .with_lease_window(cluster.config().lease_window())?;
            let limiter = GlobalLimiter::new(params, cluster.lease_source(), metrics.clone());
            (None, Some(limiter))
        }
        (Some(_), true, None) => {
            // Validation refuses this; say so rather than limit locally.
            return Err(agentmux_filters::InvalidParam::new(
                "scope",
                "\"global\" needs [cluster_state]",
            ));
        }
        (Some((rate, burst)), false, _) => (
            Some(RequestLimiter::new(
                RateLimitParams::new(key.clone(), rate, burst)?,
                metrics.clone(),
            )),
            None,
        ),
        (None, _, _) => (None, None),
    };
    let messages = match c.messages {
        Some(((r, b), (kr, kb), delay)) => Some(MessageLimiter::new(
            MessageLimitParams::new(r, b, kr, kb, delay)?,
            metrics.clone(),
        )),
        None => None,
    };
    let sessions = match c.max_sessions {
        Some(n) => Some(SessionLimiter::new(SessionLimitParams::new(n)?, metrics)),
        None => None,
    };
    Ok(RateLimitState {
        key,
        requests,
        global,
        messages,
        sessions,
    })
}

fn retry(c: &RetryConfig, metrics: Arc<dyn FilterMetrics>) -> Result<Built, agentmux_filters::InvalidParam> {
    let params = RetryParams::new(c.max_attempts, Backoff::new(c.backoff.0, c.backoff.1)?)?;
    let budget = RetryBudget::new(RetryBudgetParams::new(c.budget.0, c.budget.1, c.budget.2)?);
    // Errors are retried only when the request never left the gateway: a
    // failed connect. Anything later may have reached the upstream.
    let classifier = DefaultClassifier::new()
        .with_statuses(status_set(&c.statuses))
        .with_never_sent(|e| ProxyError::never_sent(e));
    Ok(Built::Retry {
        layer: RetryLayer::new(params, budget, classifier, metrics),
        max_body: c.max_body_bytes,
    })
}
