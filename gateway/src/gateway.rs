//! Starting, running and stopping the gateway as a whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::Body;
use crate::cluster_state::{ClusterState, PeerEvent};
use crate::config::{Config, ConfigVersion, ListenerConfig};
use crate::listener::{self, ConnInfo};
use crate::metrics::Metrics;
use crate::runtime::{BuildCtx, Runtime};
use crate::stack::FilterStates;
use crate::ws::drain::Drain;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("listeners[{index}] ({name}): cannot listen on {addr}: {source}")]
    Bind {
        /// The listener's index in the file.
        index: usize,
        /// Its name.
        name: String,
        /// The address.
        addr: SocketAddr,
        /// The cause (in use, permission).
        source: std::io::Error,
    },
    /// The admin address could not be bound.
    #[error("admin.listen: cannot listen on {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificates could not be loaded or generated.
    #[error("{path}: {message}")]
    Tls {
        /// The key path in the config.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A cluster could not be started.
    #[error("{0}")]
    Cluster(String),
}

/// The gateway's shared state, reachable from every connection task.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    /// Where the config came from, for reloads.
    config_path: Option<std::path::PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    started: Instant,
    sessions: Sessions,
    metrics: Arc<Metrics>,
    filters: FilterStates,
    tracing: Option<Arc<crate::telemetry::Tracing>>,
    access_log: bool,
    analytics: Option<crate::analytics::AnalyticsHandle>,
    /// State shared with other instances, when `[cluster_state]` is set.
    cluster: Option<Arc<ClusterState>>,
    /// The version (file hash) of the config running now, when it came
    /// from a file.
    config_version: std::sync::Mutex<Option<ConfigVersion>>,
}

/// Where long-lived sessions (WebSocket relays) run: tracked so a drain
/// waits for them, and told to close with 1001 when the drain starts.
#[derive(Clone, Debug)]
pub(crate) struct Sessions {
    pub(crate) tracker: TaskTracker,
    pub(crate) drain: Arc<Drain>,
    pub(crate) registry: Arc<crate::sessions::Registry>,
    /// The cross-instance session registry, when `[cluster_state]` is set.
    pub(crate) cluster: Option<Arc<ClusterState>>,
}

impl Gateway {
    /// The runtime serving new requests now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Answers one agent request with the current runtime.
    pub(crate) async fn handle(&self, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
        crate::proxy::handle(
            self.runtime(),
            conn,
            req,
            self.tracing.as_deref(),
            self.access_log,
            &self.metrics,
        )
        .await
    }

    /// Swaps in a new configuration: clusters whose settings did not
    /// change keep their warm pools; work in flight finishes on the old one.
    pub fn swap_config(&self, config: Config) -> Result<(), String> {
        let old = self.runtime();
        let ctx = BuildCtx {
            metrics: &self.metrics,
            filters: &self.filters,
            sessions: &self.sessions,
        };
        let next = Arc::new(Runtime::build(Arc::new(config), Some(&old), &ctx)?);
        self.runtime.store(next.clone());
        old.retire(&next);
        Ok(())
    }

    /// The live sessions.
    pub fn sessions(&self) -> &Arc<crate::sessions::Registry> {
        &self.sessions.registry
    }

    /// Re-reads the config file and swaps it in: validated first (nothing
    /// changes when it fails, and the errors name the key paths), clusters
    /// with unchanged settings keep their warm pools, filters keep their
    /// state, sessions under way continue. Listener, admin and
    /// cluster-state settings need a restart; a reload that changes them
    /// is refused. With `[cluster_state]`, a successful reload is announced
    /// to the other instances, which reload their own copy of the file.
    pub async fn reload(&self) -> Result<ReloadReport, crate::config::ConfigErrors> {
        let (report, version) = self.reload_file().await?;
        if let Some(c) = &self.cluster {
            c.announce_config(&version);
        }
        Ok(report)
    }

    async fn reload_file(&self) -> Result<(ReloadReport, ConfigVersion), crate::config::ConfigErrors> {
        let _one = self.reloading.lock().await;
        let Some(path) = self.config_path.clone() else {
            return Err(crate::config::ConfigErrors::single(
                "<none>",
                "",
                "the gateway was not started from a file",
            ));
        };
        let loaded = tokio::task::spawn_blocking(move || Config::load_versioned(&path)).await;
        let loaded = match loaded {
            Ok(r) => r,
            Err(e) => Err(crate::config::ConfigErrors::single("<reload>", "", e.to_string())),
        };
        let result = loaded.and_then(|(c, v)| self.apply(c).map(|r| (r, v)));
        self.metrics.reload(result.is_ok());
        if let Ok((_, v)) = &result {
            *self.version_slot() = Some(v.clone());
        }
        result
    }

    fn version_slot(&self) -> std::sync::MutexGuard<'_, Option<ConfigVersion>> {
        self.config_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The version (SHA-256 of the file) of the config running now, when it
    /// came from a file.
    pub fn config_version(&self) -> Option<ConfigVersion> {
        self.version_slot().clone()
    }

    /// Moves to config `version`, announced by a peer: reloads when this
    /// instance's file has that version, else reports that it does not
    /// (yet: a ConfigMap update reaches each pod's volume in its own time).
    async fn follow(&self, version: &str) -> Follow {
        if self.config_version().is_some_and(|v| v.as_str() == version) {
            return Follow::Done;
        }
        let Some(path) = self.config_path.clone() else {
            return Follow::Done;
        };
        let file = tokio::task::spawn_blocking(move || ConfigVersion::of_file(&path)).await;
        if !matches!(file, Ok(Ok(v)) if v.as_str() == version) {
            return Follow::NotYet;
        }
        match self.reload_file().await {
            Ok((r, v)) => {
                tracing::info!(
                    version = %v,
                    kept = r.clusters_kept,
                    started = r.clusters_started,
                    "configuration reloaded to the version a peer announced"
                );
                if v.as_str() == version {
                    Follow::Done
                } else {
                    Follow::NotYet
                }
            }
            Err(e) => {
                tracing::warn!(
                    "a peer announced a config version this instance refuses; the running configuration stays: {e}"
                );
                Follow::Done
            }
        }
    }

    /// Opens the circuit `scope` of breaker `filter` because a peer's
    /// opened (circuits this instance does not have are left alone).
    fn trip(&self, filter: &str, scope: &str) {
        for (name, set) in self.filters.breakers() {
            if &*name == filter
                && let Some(c) = set.existing(scope)
            {
                tracing::debug!(filter, scope, "opening a circuit a peer opened");
                c.trip();
            }
        }
    }

    /// State shared with other instances, when configured.
    pub fn cluster_state(&self) -> Option<&Arc<ClusterState>> {
        self.cluster.as_ref()
    }

    fn apply(&self, config: Config) -> Result<ReloadReport, crate::config::ConfigErrors> {
        let old = self.runtime();
        let origin = self
            .config_path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string());
        if config.listeners() != old.config().listeners() || config.admin != old.config().admin {
            return Err(crate::config::ConfigErrors::single(
                &origin,
                "listeners",
                "listener and admin settings apply at start; restart the gateway to change them",
            ));
        }
        if config.cluster_state != old.config().cluster_state {
            return Err(crate::config::ConfigErrors::single(
                &origin,
                "cluster_state",
                "cluster_state settings apply at start; restart the gateway to change them",
            ));
        }
        let kept = config
            .clusters()
            .iter()
            .filter(|(n, c)| old.cluster(n).is_some_and(|o| o.config() == *c))
            .count();
        let total = config.clusters().len();
        self.swap_config(config)
            .map_err(|e| crate::config::ConfigErrors::single(&origin, "", e))?;
        Ok(ReloadReport {
            clusters_kept: kept,
            clusters_started: total - kept,
        })
    }

    /// Every circuit-breaker filter's circuits.
    pub(crate) fn circuit_breakers(&self) -> Vec<(Arc<str>, Arc<crate::stack::BreakerSet>)> {
        self.filters.breakers()
    }

    /// The analytics engine's handle, when analytics is on.
    pub fn analytics(&self) -> Option<&crate::analytics::AnalyticsHandle> {
        self.analytics.as_ref()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How long the gateway has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What a reload changed.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ReloadReport {
    /// Clusters carried over with their warm pools.
    pub clusters_kept: usize,
    /// Clusters started anew (new or changed).
    pub clusters_started: usize,
}

/// A started gateway: bound listeners and the handles to stop it.
pub struct Running {
    gateway: Arc<Gateway>,
    listeners: Vec<(Arc<str>, SocketAddr, bool)>,
    admin: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    drain_timeout: Duration,
    _cert_watchers: Vec<agentmux_certs::CertWatcher>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the drain timeout.
    Clean,
    /// The timeout passed with this many connections still open.
    TimedOut(usize),
}

/// Starts the gateway: generates development certificates if asked,
/// starts clusters (pools begin warming), binds every listener and the
/// admin listener, and begins accepting.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with_path(config, None).await
}

/// Like [`start`], remembering the file the config came from so the admin
/// API and SIGHUP can reload it.
pub async fn start_with_path(config: Config, config_path: Option<&std::path::Path>) -> Result<Running, StartError> {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut acceptors = Vec::new();
    let mut watchers = Vec::new();
    for (i, l) in config.listeners().iter().enumerate() {
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let (acceptor, watcher) = tls_acceptor(i, t)?;
                watchers.push(watcher);
                Some(acceptor)
            }
        };
        acceptors.push(tls);
    }
    let tracing = match config.telemetry() {
        Some(t) => Some(Arc::new(
            crate::telemetry::Tracing::new(t).map_err(|e| StartError::Cluster(e.to_string()))?,
        )),
        None => None,
    };
    let access_log = config.access_log();
    let (ticks, analytics) = match config.analytics() {
        Some(a) => {
            let (tx, handle) = crate::analytics::spawn(analytics_params(a), webhook(a)?);
            (Some(tx), Some(handle))
        }
        None => (None, None),
    };
    let metrics = Arc::new(match config.cluster_state() {
        Some(_) => Metrics::with_cluster_state(),
        None => Metrics::new(),
    });
    let (cluster, inbox) = match config.cluster_state() {
        Some(c) => {
            let (state, inbox) = ClusterState::start(c, &metrics, shutdown.clone()).map_err(StartError::Cluster)?;
            (Some(state), Some(inbox))
        }
        None => (None, None),
    };
    // The version of the file as it is now (main loaded it a moment ago).
    let config_version = config_path.and_then(|p| ConfigVersion::of_file(p).ok());
    let filters = FilterStates::new(metrics.clone(), cluster.clone());
    let sessions = Sessions {
        tracker: tracker.clone(),
        drain: Arc::new(Drain::default()),
        registry: Arc::default(),
        cluster: cluster.clone(),
    };
    let ctx = BuildCtx {
        metrics: &metrics,
        filters: &filters,
        sessions: &sessions,
    };
    let runtime = Runtime::build(Arc::new(config.clone()), None, &ctx).map_err(StartError::Cluster)?;
    let gateway = Arc::new(Gateway {
        runtime: ArcSwap::from_pointee(runtime),
        config_path: config_path.map(std::path::Path::to_path_buf),
        reloading: tokio::sync::Mutex::new(()),
        started: Instant::now(),
        sessions,
        metrics,
        filters,
        tracing,
        access_log,
        analytics,
        cluster,
        config_version: std::sync::Mutex::new(config_version),
    });
    if let Some(inbox) = inbox {
        tokio::spawn(follow_peers(Arc::downgrade(&gateway), inbox, shutdown.clone()));
    }
    if let Some(tx) = ticks {
        tokio::spawn(sample_every_second(Arc::downgrade(&gateway), tx, shutdown.clone()));
    }
    let mut bound = Vec::new();
    for (index, l) in config.listeners().iter().enumerate() {
        let socket = listener::bind(l.addr).map_err(|source| StartError::Bind {
            index,
            name: l.name.to_string(),
            addr: l.addr,
            source,
        })?;
        let addr = socket.local_addr().unwrap_or(l.addr);
        bound.push((socket, addr));
    }
    let admin_socket = listener::bind(config.admin.listen).map_err(|source| StartError::AdminBind {
        addr: config.admin.listen,
        source,
    })?;
    let admin = admin_socket.local_addr().unwrap_or(config.admin.listen);
    let mut listeners = Vec::new();
    for ((socket, addr), (l, tls)) in bound.into_iter().zip(config.listeners().iter().zip(acceptors)) {
        listeners.push((l.name.clone(), addr, tls.is_some()));
        tokio::spawn(listener::serve(
            socket,
            ListenerConfig::clone(l),
            tls,
            gateway.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    tokio::spawn(crate::admin::serve(
        admin_socket,
        gateway.clone(),
        config.admin.clone(),
        shutdown.clone(),
    ));
    Ok(Running {
        gateway,
        listeners,
        admin,
        shutdown,
        tracker,
        drain_timeout: config.drain_timeout,
        _cert_watchers: watchers,
    })
}

fn analytics_params(a: &crate::config::AnalyticsConfig) -> crate::analytics::AnalyticsParams {
    let mut p = crate::analytics::AnalyticsParams::default();
    p.cost.cpu_core_second = a.cpu_core_second_cost;
    p.cost.connection_hour = a.connection_hour_cost;
    p.cost.currency = a.currency.clone();
    p
}

fn webhook(a: &crate::config::AnalyticsConfig) -> Result<Option<crate::analytics::WebhookParams>, StartError> {
    a.webhook
        .as_deref()
        .map(|url| crate::analytics::WebhookParams::new(url, a.webhook_ca.as_deref()))
        .transpose()
        .map_err(|e| StartError::Cluster(format!("analytics.webhook: {e}")))
}

/// What following a peer's config version came to.
enum Follow {
    /// Running that version now, or it cannot be followed (refused, no file).
    Done,
    /// This instance's file does not have that version yet.
    NotYet,
}

/// How long an instance waits for its own copy of the config file to reach
/// a version a peer announced (ConfigMap volumes update within about a
/// minute) before giving up on it.
const FOLLOW_WINDOW: Duration = Duration::from_secs(120);

/// Acts on what peers announce: trips circuits, and follows config
/// versions (one at a time, the newest wins, retried each second while
/// this instance's file lags behind).
async fn follow_peers(
    gateway: std::sync::Weak<Gateway>,
    mut inbox: tokio::sync::mpsc::Receiver<PeerEvent>,
    shutdown: CancellationToken,
) {
    let (wanted_tx, wanted_rx) = tokio::sync::watch::channel(None);
    tokio::spawn(follow_config(gateway.clone(), wanted_rx, shutdown.clone()));
    loop {
        let msg = tokio::select! {
            m = inbox.recv() => m,
            () = shutdown.cancelled() => return,
        };
        let (Some(msg), Some(gw)) = (msg, gateway.upgrade()) else {
            return;
        };
        match msg {
            PeerEvent::Config { version } => {
                wanted_tx.send_replace(Some(version));
            }
            PeerEvent::CircuitOpen { filter, scope } => gw.trip(&filter, &scope),
            PeerEvent::Resync => {
                let Some(cluster) = gw.cluster.clone() else { continue };
                // A reload here while Redis was down: the others learn it
                // now (the latest reload wins, as it would have then).
                if let Some(version) = cluster.take_unannounced() {
                    cluster.reannounce_config(version);
                    continue;
                }
                match cluster.announced_config().await {
                    Ok(Some(version)) => {
                        wanted_tx.send_replace(Some(version));
                    }
                    Ok(None) => {
                        if let Some(v) = gw.config_version() {
                            let _ = cluster.record_config_if_unset(&v).await;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

async fn follow_config(
    gateway: std::sync::Weak<Gateway>,
    mut wanted: tokio::sync::watch::Receiver<Option<String>>,
    shutdown: CancellationToken,
) {
    let mut target: Option<(String, Instant)> = None;
    loop {
        let retry = async {
            match &target {
                Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Some(v) = wanted.borrow_and_update().clone() {
                    target = Some((v, Instant::now() + FOLLOW_WINDOW));
                }
            }
            () = retry => {}
            () = shutdown.cancelled() => return,
        }
        let Some((version, deadline)) = target.clone() else {
            continue;
        };
        let Some(gw) = gateway.upgrade() else { return };
        match gw.follow(&version).await {
            Follow::Done => target = None,
            Follow::NotYet if Instant::now() >= deadline => {
                tracing::warn!(
                    announced = %version.get(..12).unwrap_or(&version),
                    running = %gw.config_version().map(|v| v.to_string()).unwrap_or_default(),
                    "this instance's config file never reached the version a peer announced; keeping the running configuration (do all instances load the same file?)"
                );
                target = None;
            }
            Follow::NotYet => {}
        }
    }
}

/// Feeds the analytics engine one tick a second and applies its pool-size
/// forecasts to pools that allow it.
async fn sample_every_second(
    gateway: std::sync::Weak<Gateway>,
    ticks: tokio::sync::mpsc::Sender<crate::analytics::Tick>,
    shutdown: CancellationToken,
) {
    let mut sampler = crate::analytics::sampler::Sampler::default();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(gw) = gateway.upgrade() else { return };
        let rt = gw.runtime();
        // A full queue means the engine is behind: skip a second rather
        // than wait (the engine tolerates gaps).
        let _ = ticks.try_send(sampler.tick(&rt));
        let Some(handle) = gw.analytics() else { continue };
        for hint in crate::analytics::sampler::pool_targets(&handle.latest()) {
            let Some(c) = rt.cluster(&hint.cluster) else { continue };
            if !c.config().pool().predictive() {
                continue;
            }
            let endpoints = c.endpoints().len();
            for ep in c.endpoints() {
                for p in ep.pools() {
                    p.set_target_hint(crate::analytics::sampler::hint_for(p, &hint, endpoints));
                }
            }
        }
    }
}

fn tls_acceptor(
    index: usize,
    tls: &crate::config::ListenerTls,
) -> Result<(TlsAcceptor, agentmux_certs::CertWatcher), StartError> {
    let at = format!("listeners[{index}].tls");
    let err = |path: String| {
        move |e: agentmux_certs::CertError| StartError::Tls {
            path,
            message: e.to_string(),
        }
    };
    if tls.generate_dev_certs {
        let default = &tls.certs[0];
        match agentmux_certs::dev::ensure_dev_certs(&default.cert, &default.key).map_err(err(format!("{at}.cert")))? {
            agentmux_certs::dev::DevCerts::Generated { ca_path } => {
                tracing::info!(ca = %ca_path.display(), "generated development certificates; trust the CA file to verify the gateway");
            }
            agentmux_certs::dev::DevCerts::Existing => {}
        }
    }
    let resolver = agentmux_certs::SniResolver::load(tls.certs.clone()).map_err(err(format!("{at}.cert")))?;
    let client_auth = match (&tls.client_ca, tls.require_client_cert) {
        (None, _) => agentmux_certs::ClientAuth::None,
        (Some(ca), true) => agentmux_certs::ClientAuth::Required(ca.clone()),
        (Some(ca), false) => agentmux_certs::ClientAuth::Optional(ca.clone()),
    };
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server =
        agentmux_certs::server_config(resolver.clone(), alpn, &client_auth).map_err(err(format!("{at}.client_ca")))?;
    let watcher = agentmux_certs::watch(resolver).map_err(err(format!("{at}.cert")))?;
    Ok((TlsAcceptor::from(Arc::new(server)), watcher))
}

impl Running {
    /// The shared gateway state.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Each listener's name, bound address and whether it is TLS.
    pub fn listeners(&self) -> &[(Arc<str>, SocketAddr, bool)] {
        &self.listeners
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Stops accepting, lets connections finish up to the drain timeout,
    /// and reports whether they all did.
    pub async fn shutdown(self) -> Drained {
        self.shutdown.cancel();
        self.gateway.sessions.drain.start();
        self.tracker.close();
        let drained = tokio::time::timeout(self.drain_timeout, self.tracker.wait()).await;
        if let Some(c) = &self.gateway.cluster {
            c.leave().await;
        }
        for c in self.gateway.runtime().clusters().values() {
            c.close();
        }
        if let Some(t) = self.gateway.tracing.clone() {
            // Flushing spans blocks on the exporter's HTTP call.
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
        match drained {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::TimedOut(self.tracker.len()),
        }
    }
}
