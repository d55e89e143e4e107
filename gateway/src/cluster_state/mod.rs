//! State shared by several gateway instances through Redis:
//! `[cluster_state]`.
//!
//! One process is the embedded default and needs none of this. Several
//! instances behind an L4 load balancer behave as one gateway when they
//! share, through one Redis:
//!
//! - **global rate limits** (`scope = "global"`): a batched GCRA in a Lua
//!   script hands each instance leases of cells that it spends locally
//!   (`lease`; the limiter itself is the filters crate's
//!   `rate_limit::global`);
//! - **the session registry**: session id → instance, route, endpoint, last
//!   acknowledged sequence, mux session id, with a TTL ([`registry`]):
//!   affinity for reconnecting WebSocket agents, and the takeover of a mux
//!   session by another instance when the one holding it dies;
//! - **pub/sub** ([`pubsub`]): a reload on one instance announces the
//!   config file's hash and the others reload their own copy of the file
//!   when theirs matches; a circuit that opens is announced and peers open
//!   the same circuit on their own timers.
//!
//! # How it fails
//!
//! Redis is never required. Every command is bounded by
//! `command_timeout`; one that fails or times out marks the link down at
//! once (`link`), and from then on nothing waits on Redis: global limits
//! enforce the local share (rate / instances), the registry is skipped (the
//! balancer picks), announcements are dropped. The change is logged once,
//! and `agentmux_cluster_state_connected` reads 0. A heartbeat (every
//! `heartbeat_interval`) probes Redis; when it answers, the link comes back
//! up (logged once, gauge 1) and the instance resyncs: rewrites its live
//! sessions, resubscribes, and catches up with a config version announced
//! meanwhile.
//!
//! # Assumption
//!
//! Instances load the same config file contents (a Kubernetes ConfigMap, a
//! file pushed by configuration management). Pub/sub carries only the
//! file's hash: each instance reloads its own copy, and only once that
//! copy has the announced hash.

mod lease;
mod link;
pub mod pubsub;
pub mod registry;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use agentmux_filters::rate_limit::global::LeaseSource;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use link::{LinkError, Unavailable};
pub use pubsub::PeerEvent;
pub use registry::{Claim, SessionEntry, SessionHold, valid_session_id};

use crate::config::{ClusterStateConfig, ConfigVersion};
use crate::metrics::Metrics;
use link::Link;
use pubsub::Body;
use registry::LiveSessions;

/// Announces this instance and counts the live ones. `KEYS[1]` the
/// instance set; `ARGV` id, liveness in ms. Returns the live count.
const HEARTBEAT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - tonumber(ARGV[2])))
return redis.call('ZCARD', KEYS[1])
";

static HEARTBEAT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(HEARTBEAT_SCRIPT));

/// An instance that missed this many heartbeats no longer counts as live.
const LIVENESS_HEARTBEATS: u32 = 3;

/// This instance's handle on the shared state.
pub struct ClusterState {
    config: ClusterStateConfig,
    instance: Arc<str>,
    keys: Keys,
    link: Link,
    /// Live instances seen at the last heartbeat (0: never seen).
    live_instances: AtomicU32,
    live: Mutex<LiveSessions>,
    outbox: mpsc::Sender<Body>,
    /// Makes the subscriber reconnect (after the link came back).
    resubscribe: Arc<Notify>,
    /// This instance's own config version, until an announcement of it
    /// reached Redis: a reload during an outage is announced on resync.
    unannounced: Mutex<Option<String>>,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("instance", &self.instance)
            .field("link", &self.link)
            .finish()
    }
}

impl ClusterState {
    /// Starts the link, the heartbeat, the publisher and the subscriber.
    /// Returns at once (Redis may well be down); what peers announce
    /// arrives on the returned receiver.
    pub fn start(
        config: &ClusterStateConfig,
        metrics: &Metrics,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, mpsc::Receiver<PeerEvent>), LinkError> {
        let cluster_metrics = metrics.cluster_state().cloned().ok_or(LinkError::NoMetrics)?;
        let link = Link::new(config, cluster_metrics)?;
        let (outbox, outbox_rx) = mpsc::channel(1024);
        let (inbox, inbox_rx) = mpsc::channel(256);
        let state = Arc::new(Self {
            instance: config.instance_id.resolve(),
            keys: Keys(config.key_prefix.clone()),
            config: config.clone(),
            link,
            live_instances: AtomicU32::new(0),
            live: Mutex::new(HashMap::new()),
            outbox,
            resubscribe: Arc::new(Notify::new()),
            unannounced: Mutex::new(None),
        });
        tracing::info!(
            instance = &*state.instance,
            redis = %config.redis,
            "sharing state with other instances through Redis"
        );
        let weak = Arc::downgrade(&state);
        tokio::spawn(pubsub::publish(weak.clone(), outbox_rx));
        tokio::spawn(pubsub::subscribe(weak.clone(), inbox.clone(), shutdown.clone()));
        tokio::spawn(heartbeat(weak, inbox, shutdown));
        Ok((state, inbox_rx))
    }

    /// This instance's name.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Whether Redis answers (see the module docs for what changes when
    /// it does not).
    pub fn connected(&self) -> bool {
        self.link.is_up()
    }

    /// Instances sharing the global limits: the larger of
    /// `expected_instances` and the live instances last seen in Redis.
    pub fn instances(&self) -> u32 {
        self.config
            .expected_instances
            .max(self.live_instances.load(Ordering::Relaxed))
            .max(1)
    }

    /// The lease source for global rate limits.
    pub fn lease_source(self: &Arc<Self>) -> Arc<dyn LeaseSource> {
        Arc::new(lease::RedisLeases(self.clone()))
    }

    /// The settings.
    pub fn config(&self) -> &ClusterStateConfig {
        &self.config
    }

    /// Announces that this instance reloaded to `version`. While Redis is
    /// down the announcement waits: [`take_unannounced`](Self::take_unannounced)
    /// gives it back when the link returns.
    pub fn announce_config(&self, version: &ConfigVersion) {
        let version = version.as_str().to_owned();
        *self.unannounced.lock().unwrap_or_else(PoisonError::into_inner) = Some(version.clone());
        self.send(Body::Config { version });
    }

    /// This instance's config version if its last announcement never
    /// reached Redis (the reload happened during an outage).
    pub fn take_unannounced(&self) -> Option<String> {
        self.unannounced.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// An announcement of `version` reached Redis.
    fn announced(&self, version: &str) {
        let mut pending = self.unannounced.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.as_deref() == Some(version) {
            *pending = None;
        }
    }

    /// Announces a version given back by [`take_unannounced`](Self::take_unannounced).
    pub fn reannounce_config(&self, version: String) {
        *self.unannounced.lock().unwrap_or_else(PoisonError::into_inner) = Some(version.clone());
        self.send(Body::Config { version });
    }

    /// Announces that a circuit opened on this instance's own outcomes.
    pub fn announce_circuit_open(&self, filter: &str, scope: &str) {
        self.send(Body::CircuitOpen {
            filter: filter.to_owned(),
            scope: scope.to_owned(),
        });
    }

    /// The config version last announced by any instance, if Redis answers.
    pub async fn announced_config(&self) -> Result<Option<String>, Unavailable> {
        let key = self.keys.config_version();
        let stored: Option<String> = self
            .link
            .call("config", |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(stored.filter(|v| pubsub::is_config_version(v)))
    }

    /// Records `version` as the cluster's when none is recorded yet (an
    /// instance joining a fleet that never reloaded).
    pub async fn record_config_if_unset(&self, version: &ConfigVersion) -> Result<(), Unavailable> {
        let (key, v) = (self.keys.config_version(), version.as_str().to_owned());
        self.link
            .call("config", |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(v)
                    .arg("NX")
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// Leaves the instance set (at shutdown), within the command timeout.
    pub async fn leave(&self) {
        let (key, me) = (self.keys.instances(), self.instance.to_string());
        let _ = self
            .link
            .call("heartbeat", |mut conn| async move {
                redis::cmd("ZREM").arg(key).arg(me).query_async::<()>(&mut conn).await
            })
            .await;
    }

    fn send(&self, body: Body) {
        if !self.connected() {
            return;
        }
        if self.outbox.try_send(body).is_err() {
            tracing::debug!("cluster-state outbox full; dropped an announcement");
        }
    }

    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    fn keys(&self) -> &Keys {
        &self.keys
    }

    fn live_sessions(&self) -> MutexGuard<'_, LiveSessions> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One heartbeat: announces this instance, counts the live ones, and
    /// (through the link) notices Redis coming back.
    async fn beat(&self) {
        let key = self.keys.instances();
        let me = self.instance.to_string();
        let liveness = self.config.heartbeat_interval * LIVENESS_HEARTBEATS;
        let liveness_ms = u64::try_from(liveness.as_millis()).unwrap_or(u64::MAX);
        let live: Result<u32, _> = self
            .link
            .probe("heartbeat", |mut conn| async move {
                let mut call = HEARTBEAT.prepare_invoke();
                call.key(key).arg(me).arg(liveness_ms);
                call.invoke_async(&mut conn).await
            })
            .await;
        if let Ok(n) = live {
            self.live_instances.store(n, Ordering::Relaxed);
            self.link.metrics.instances.set(i64::from(n));
        }
    }
}

/// Heartbeats; resyncs when the link comes back; refreshes the registry.
async fn heartbeat(state: std::sync::Weak<ClusterState>, inbox: mpsc::Sender<PeerEvent>, shutdown: CancellationToken) {
    let Some(first) = state.upgrade() else { return };
    let mut every = tokio::time::interval(first.config.heartbeat_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_refresh = Instant::now() + first.refresh_every();
    drop(first);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let Some(s) = state.upgrade() else { return };
        let was_up = s.connected();
        s.beat().await;
        if s.connected() && !was_up {
            // Back (or up for the first time): catch up with what was
            // missed, and make the subscriber start afresh.
            s.resubscribe.notify_waiters();
            s.refresh_sessions().await;
            next_refresh = Instant::now() + s.refresh_every();
            let _ = inbox.try_send(PeerEvent::Resync);
        } else if s.connected() && Instant::now() >= next_refresh {
            s.refresh_sessions().await;
            next_refresh = Instant::now() + s.refresh_every();
        }
    }
}

/// Names of keys and channels under the prefix.
#[derive(Debug)]
struct Keys(Arc<str>);

impl Keys {
    fn rate_limit(&self, limit: &str, key_hex: &str) -> String {
        format!("{}rl:{limit}:{key_hex}", self.0)
    }

    fn session(&self, id: &str) -> String {
        format!("{}session:{}", self.0, registry::digest(id))
    }

    fn instances(&self) -> String {
        format!("{}instances", self.0)
    }

    fn channel(&self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    fn config_version(&self) -> String {
        format!("{}config:version", self.0)
    }
}
