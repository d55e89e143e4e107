//! The upstream side: accept the gateway's mux WebSockets and get the
//! agent sessions they carry.
//!
//! One [`MuxServer`] serves every connection of an upstream process: its
//! registry keeps each session, so a session whose connection dies keeps
//! its state (received messages, unacknowledged sends) for
//! [`ServerConfig::resume_grace`], and when the gateway re-attaches it on
//! another connection with RESUME, the same [`MuxSession`] object carries
//! on with nothing lost or duplicated. Sessions not resumed in time fail
//! with [`SessionError::Expired`](super::SessionError::Expired).
//!
//! ```no_run
//! # async fn run(listener: tokio::net::TcpListener) {
//! use agentmux_mux::{Message, MuxServer, ServerConfig};
//! let server = MuxServer::new(ServerConfig::default());
//! loop {
//!     let Ok((tcp, _)) = listener.accept().await else { continue };
//!     let server = server.clone();
//!     tokio::spawn(async move {
//!         let Ok(mut conn) = server.accept(tcp).await else { return };
//!         while let Some(mut session) = conn.next_session().await {
//!             tokio::spawn(async move {
//!                 while let Some(msg) = session.recv().await {
//!                     if session.send(msg).await.is_err() { break; }
//!                 }
//!             });
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! How it fails: a request that is not a WebSocket upgrade offering
//! `agentmux.v1` is answered `400` and [`accept`](MuxServer::accept)
//! returns [`AcceptError`]; protocol errors on a connection end it (its
//! sessions detach); errors of one session fail that session only.

mod role;
mod upgrade;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

pub use upgrade::{AcceptError, PendingConnection, UpgradeRefused};

use super::conn::{ConnShared, ConnectionEnd};
use super::session::MuxSession;
use super::session::registry::Registry;
use super::session::state::{ReplayBudget, SessionParams};

/// Settings of a [`MuxServer`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Credit granted to the gateway per session, in bytes (default 256 KiB).
    pub window: u32,
    /// Unacknowledged bytes kept per session for replay; `send` waits at
    /// the bound (default 1 MiB).
    pub replay_limit: usize,
    /// Replay memory shared by all sessions of this server; `send` waits
    /// while it is spent. `None` (the default): only the per-session bound.
    pub replay_budget: Option<ReplayBudget>,
    /// Largest message `recv` reassembles (default 16 MiB).
    pub max_message: usize,
    /// Most sessions one connection may carry (default 16384).
    pub max_sessions_per_connection: usize,
    /// How long a detached session waits to be resumed (default 30 s).
    pub resume_grace: Duration,
    /// WebSocket ping interval; three silent intervals end the connection
    /// (default 15 s; `None`: no keepalive).
    pub keepalive: Option<Duration>,
    /// Subprotocols this server speaks, in preference order; `None` takes
    /// the first one the agent offered (default `None`).
    pub subprotocols: Option<Vec<String>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            window: 256 << 10,
            replay_limit: 1 << 20,
            replay_budget: None,
            max_message: 16 << 20,
            max_sessions_per_connection: 16384,
            resume_grace: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(15)),
            subprotocols: None,
        }
    }
}

impl ServerConfig {
    fn session_params(&self) -> SessionParams {
        SessionParams {
            window: self.window.max(1),
            replay_limit: self.replay_limit.max(1),
            max_message: self.max_message,
            budget: self.replay_budget.clone(),
            ack_on_take: false,
        }
    }

    fn choose_subprotocol(&self, offered: &[String]) -> Option<String> {
        match &self.subprotocols {
            None => offered.first().cloned(),
            Some(ours) => ours.iter().find(|p| offered.contains(p)).cloned(),
        }
    }
}

/// Counters of a [`MuxServer`] since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sessions opened.
    pub opened: u64,
    /// Re-attachments (RESUME or repeated OPEN) accepted.
    pub resumed: u64,
    /// Sessions another gateway instance took over (TAKEOVER).
    pub taken_over: u64,
    /// Sessions that failed because they were not resumed in time.
    pub expired: u64,
    /// Sessions failed because the gateway broke the protocol on them
    /// (DATA past the credit or frame bound, a sequence gap, ...): ERROR
    /// sent, the connection and its other sessions untouched.
    pub violations: u64,
    /// Sessions known now (open, detached, or closing).
    pub sessions: usize,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    resumed: AtomicU64,
    taken_over: AtomicU64,
    expired: AtomicU64,
    violations: AtomicU64,
}

struct ServerInner {
    config: ServerConfig,
    registry: Arc<Registry>,
    stats: Counters,
}

/// An upstream mux server: accepts connections, keeps the session registry
/// they share. Cheap to clone.
#[derive(Clone)]
pub struct MuxServer {
    inner: Arc<ServerInner>,
}

impl MuxServer {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            inner: Arc::new(ServerInner {
                config,
                registry: Arc::new(Registry::default()),
                stats: Counters::default(),
            }),
        }
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Counters since start.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.stats;
        ServerStats {
            opened: c.opened.load(Ordering::Relaxed),
            resumed: c.resumed.load(Ordering::Relaxed),
            taken_over: c.taken_over.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            violations: c.violations.load(Ordering::Relaxed),
            sessions: self.inner.registry.len(),
        }
    }

    fn start<S>(&self, ws: fastwebsockets::WebSocket<S>) -> MuxConnection
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let role = role::ServerRole {
            server: self.inner.clone(),
            sessions: tx,
        };
        let conn = super::conn::spawn(ws, role, self.inner.config.keepalive);
        MuxConnection { conn, sessions: rx }
    }
}

/// One accepted mux connection: yields the sessions the gateway opens on
/// it. Sessions resumed onto it are not yielded again — the application
/// already holds them.
pub struct MuxConnection {
    conn: Arc<ConnShared>,
    sessions: mpsc::UnboundedReceiver<MuxSession>,
}

impl MuxConnection {
    /// The next new session; `None` once the connection has ended.
    pub async fn next_session(&mut self) -> Option<MuxSession> {
        self.sessions.recv().await
    }

    /// A process-unique id of this connection.
    pub fn id(&self) -> u64 {
        self.conn.id
    }

    /// Sessions the connection carries now.
    pub fn session_count(&self) -> usize {
        self.conn.session_count()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Waits for the end of the connection.
    pub async fn closed(&self) -> ConnectionEnd {
        self.conn.closed().await
    }

    /// Drops the connection at once, as if the network failed: its sessions
    /// detach and wait to be resumed (for chaos tests and shutdown).
    pub fn abort(&self) {
        self.conn.abort();
    }
}

impl std::fmt::Debug for MuxConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxConnection").field("id", &self.conn.id).finish()
    }
}

impl std::fmt::Debug for MuxServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxServer").field("stats", &self.stats()).finish()
    }
}
