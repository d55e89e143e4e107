//! The connection to Redis and whether it is usable.
//!
//! One multiplexed connection (the redis crate's `ConnectionManager`,
//! created lazily so the gateway starts while Redis is down) carries every
//! command. Each call is bounded by `command_timeout`; a call that fails
//! for a connection reason or times out marks the link **down** at once,
//! so later requests stop asking a dead or slow Redis and decide on local
//! state. Only the heartbeat brings the link back **up**, after a
//! successful round trip, and then its owner resyncs. The state change is
//! logged once each way and shown in `agentmux_cluster_state_connected`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult};

use crate::config::{ClusterStateConfig, RedisUrl};
use crate::metrics::ClusterStateMetrics;
use crate::metrics::CommandResult;

/// Redis did not answer (down, unreachable or slower than the timeout), or
/// the link is known to be down and the command was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Redis is unavailable")]
pub struct Unavailable;

/// The shared Redis connection and its health.
pub(crate) struct Link {
    pub(super) client: redis::Client,
    manager: ConnectionManager,
    url: RedisUrl,
    command_timeout: Duration,
    heartbeat_timeout: Duration,
    up: AtomicBool,
    ever_up: AtomicBool,
    warned_unreachable: AtomicBool,
    /// Times the link went from up to down.
    outages: AtomicU64,
    pub(super) metrics: ClusterStateMetrics,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("redis", &self.url)
            .field("up", &self.is_up())
            .finish()
    }
}

/// Why the Redis link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The Redis client refused the URL (validation checks its shape; the
    /// client knows more).
    #[error("redis: invalid Redis URL {url}: {source}")]
    Url {
        /// The URL, password masked.
        url: String,
        /// The client's reason.
        #[source]
        source: redis::RedisError,
    },
    /// The connection manager could not be built.
    #[error("redis: {0}")]
    Client(#[source] redis::RedisError),
    /// The gateway's metrics were built without the cluster-state families.
    #[error("metrics were built without the cluster_state families")]
    NoMetrics,
}

impl Link {
    /// A link that connects on first use; starts **down** until the first
    /// heartbeat answers.
    pub(crate) fn new(config: &ClusterStateConfig, metrics: ClusterStateMetrics) -> Result<Self, LinkError> {
        let client = redis::Client::open(config.redis.as_secret_str()).map_err(|source| LinkError::Url {
            url: config.redis.to_string(),
            source,
        })?;
        // Reconnects are driven by the heartbeat; the manager itself tries
        // once per failed command, within the bounds below.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.heartbeat_interval);
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config).map_err(LinkError::Client)?;
        metrics.connected.set(0);
        Ok(Self {
            client,
            manager,
            url: config.redis.clone(),
            command_timeout: config.command_timeout,
            heartbeat_timeout: config.connect_timeout + config.command_timeout,
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            warned_unreachable: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            metrics,
        })
    }

    /// Whether Redis answered last time it was asked.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// How many times the link went down so far: a connection opened
    /// before the latest outage may be a dead one.
    pub(crate) fn outages(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// The bound on one command.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Runs one command while the link is up, within `command_timeout`.
    /// Not sent at all while it is down.
    pub(crate) async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            self.metrics.command(what, CommandResult::Skipped);
            return Err(Unavailable);
        }
        self.send(what, self.command_timeout, f).await
    }

    /// The heartbeat's call: sent whatever the state, with room to
    /// reconnect first; success brings the link up.
    pub(crate) async fn probe<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let result = self.send(what, self.heartbeat_timeout, f).await;
        if result.is_ok() {
            self.mark_up();
        }
        result
    }

    async fn send<T, F, Fut>(&self, what: &'static str, limit: Duration, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match tokio::time::timeout(limit, f(self.manager.clone())).await {
            Ok(Ok(v)) => {
                self.metrics.command(what, CommandResult::Ok);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.metrics.command(what, CommandResult::Error);
                if is_connection_error(&e) {
                    self.mark_down(&e.to_string());
                } else {
                    tracing::debug!(command = what, error = %e, "Redis command failed");
                }
                Err(Unavailable)
            }
            Err(_) => {
                self.metrics.command(what, CommandResult::Timeout);
                self.mark_down(&format!("no answer within {limit:?}"));
                Err(Unavailable)
            }
        }
    }

    /// Marks the link down, logging only the change (and, before Redis
    /// ever answered, the first failure).
    pub(crate) fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::AcqRel);
            self.metrics.connected.set(0);
            tracing::warn!(
                redis = %self.url,
                reason,
                "lost the connection to Redis; running on local state (global limits at the local share, no session registry, no peer announcements) until it answers again"
            );
        } else if !self.ever_up.load(Ordering::Acquire) && !self.warned_unreachable.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                redis = %self.url,
                reason,
                "cannot reach Redis; running on local state until it answers"
            );
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.connected.set(1);
            if self.ever_up.swap(true, Ordering::AcqRel) {
                tracing::info!(redis = %self.url, "Redis answers again; resyncing shared state");
            } else {
                tracing::info!(redis = %self.url, "connected to Redis; sharing state with other instances");
            }
        }
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}
