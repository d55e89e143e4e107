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
use crate::config::{Config, ListenerConfig};
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
}

/// Where long-lived sessions (WebSocket relays) run: tracked so a drain
/// waits for them, and told to close with 1001 when the drain starts.
#[derive(Clone, Debug)]
pub(crate) struct Sessions {
    pub(crate) tracker: TaskTracker,
    pub(crate) drain: Arc<Drain>,
    pub(crate) registry: Arc<crate::sessions::Registry>,
}

impl Gateway {
    /// The runtime serving new requests now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Answers one agent request with the current runtime.
    pub(crate) async fn handle(&self, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
        crate::proxy::handle(self.runtime(), conn, req, self.tracing.as_deref(), self.access_log).await
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
    /// state, sessions under way continue. Listener and admin settings
    /// need a restart; a reload that changes them is refused.
    pub async fn reload(&self) -> Result<ReloadReport, crate::config::ConfigErrors> {
        let _one = self.reloading.lock().await;
        let Some(path) = self.config_path.clone() else {
            return Err(crate::config::ConfigErrors::single(
                "<none>",
                "",
                "the gateway was not started from a file",
            ));
        };
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let config = match loaded {
            Ok(r) => r,
            Err(e) => Err(crate::config::ConfigErrors::single("<reload>", "", e.to_string())),
        };
        let result = config.and_then(|c| self.apply(c));
        self.metrics.reload(result.is_ok());
        result
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
            crate::telemetry::Tracing::new(t).map_err(StartError::Cluster)?,
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
    let metrics = Arc::new(Metrics::new());
    let filters = FilterStates::new(metrics.clone());
    let sessions = Sessions {
        tracker: tracker.clone(),
        drain: Arc::new(Drain::default()),
        registry: Arc::default(),
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
    });
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
        config.admin.token.clone(),
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
