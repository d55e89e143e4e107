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
use crate::runtime::Runtime;
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
    started: Instant,
    sessions: Sessions,
}

/// Where long-lived sessions (WebSocket relays) run: tracked so a drain
/// waits for them, and told to close with 1001 when the drain starts.
#[derive(Clone, Debug)]
pub(crate) struct Sessions {
    pub(crate) tracker: TaskTracker,
    pub(crate) drain: Arc<Drain>,
}

impl Gateway {
    /// The runtime serving new requests now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Answers one agent request with the current runtime.
    pub(crate) async fn handle(
        &self,
        conn: Arc<ConnInfo>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        crate::proxy::handle(self.runtime(), conn, req, &self.sessions).await
    }

    /// Swaps in a new configuration: clusters whose settings did not
    /// change keep their warm pools; work in flight finishes on the old one.
    pub fn swap_config(&self, config: Config) -> Result<(), String> {
        let old = self.runtime();
        let next = Arc::new(Runtime::build(Arc::new(config), Some(&old))?);
        self.runtime.store(next.clone());
        old.retire(&next);
        Ok(())
    }

    /// How long the gateway has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
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
    let runtime = Runtime::build(Arc::new(config.clone()), None).map_err(StartError::Cluster)?;
    let gateway = Arc::new(Gateway {
        runtime: ArcSwap::from_pointee(runtime),
        started: Instant::now(),
        sessions: Sessions {
            tracker: tracker.clone(),
            drain: Arc::new(Drain::default()),
        },
    });
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
    let admin_socket =
        listener::bind(config.admin.listen).map_err(|source| StartError::AdminBind {
            addr: config.admin.listen,
            source,
        })?;
    let admin = admin_socket.local_addr().unwrap_or(config.admin.listen);
    let mut listeners = Vec::new();
    for ((socket, addr), (l, tls)) in bound
        .into_iter()
        .zip(config.listeners().iter().zip(acceptors))
    {
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
        match agentmux_certs::dev::ensure_dev_certs(&default.cert, &default.key)
            .map_err(err(format!("{at}.cert")))?
        {
            agentmux_certs::dev::DevCerts::Generated { ca_path } => {
                tracing::info!(ca = %ca_path.display(), "generated development certificates; trust the CA file to verify the gateway");
            }
            agentmux_certs::dev::DevCerts::Existing => {}
        }
    }
    let resolver =
        agentmux_certs::SniResolver::load(tls.certs.clone()).map_err(err(format!("{at}.cert")))?;
    let client_auth = match (&tls.client_ca, tls.require_client_cert) {
        (None, _) => agentmux_certs::ClientAuth::None,
        (Some(ca), true) => agentmux_certs::ClientAuth::Required(ca.clone()),
        (Some(ca), false) => agentmux_certs::ClientAuth::Optional(ca.clone()),
    };
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = agentmux_certs::server_config(resolver.clone(), alpn, &client_auth)
        .map_err(err(format!("{at}.client_ca")))?;
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
        match drained {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::TimedOut(self.tracker.len()),
        }
    }
}
