//! Starting, running and stopping the gateway as a whole: certificates,
//! listeners, the admin listener and the background tasks (peer events,
//! the analytics feed), wired around the shared [`Gateway`] state.
//!
//! The top of the module graph: it builds everything and nothing below
//! calls back into it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster_state::{ClusterState, PeerEvent};
use crate::config::{Config, ConfigVersion, ListenerConfig};
use crate::gateway::{Follow, Gateway};
use crate::listener;
use crate::metrics::Metrics;
use crate::runtime::{BuildCtx, Runtime};
use crate::session::SessionCtx;
use crate::session::drain::Drain;
use crate::stack::FilterStates;

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
    /// The configuration could not be made live.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// Tracing could not start.
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::TracingError),
    /// The analytics webhook could not be set up.
    #[error("analytics.webhook: {0}")]
    Webhook(#[from] crate::analytics::WebhookError),
    /// The cross-instance state could not start.
    #[error("cluster_state: {0}")]
    ClusterState(#[source] crate::cluster_state::LinkError),
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
        Some(t) => Some(Arc::new(crate::telemetry::Tracing::new(t)?)),
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
            let (state, inbox) =
                ClusterState::start(c, &metrics, shutdown.clone()).map_err(StartError::ClusterState)?;
            (Some(state), Some(inbox))
        }
        None => (None, None),
    };
    // The version of the file as it is now (main loaded it a moment ago).
    let config_version = config_path.and_then(|p| ConfigVersion::of_file(p).ok());
    let filters = FilterStates::new(metrics.clone(), cluster.clone());
    let sessions = SessionCtx {
        tracker: tracker.clone(),
        drain: Arc::new(Drain::default()),
        list: Arc::default(),
        registry: cluster.clone(),
        access_log,
    };
    let ctx = BuildCtx {
        metrics: &metrics,
        filters: &filters,
        sessions: &sessions,
    };
    let runtime = Runtime::build(Arc::new(config.clone()), None, &ctx).map_err(StartError::Runtime)?;
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
        .map_err(StartError::Webhook)
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
        self.gateway.runtime().close();
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
