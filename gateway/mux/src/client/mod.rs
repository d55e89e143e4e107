//! The gateway side of a mux connection: open sessions on an upstream's
//! mux WebSocket, and resume them on another connection when this one dies.
//!
//! This is the protocol half only. The session table, the choice of
//! connection (least loaded), the pool and the agents' sockets belong to
//! the gateway's mux mode, which drives these calls:
//!
//! - [`MuxClient::connect`] upgrades a transport (offering `agentmux.v1`,
//!   refusing an upstream that does not select it);
//! - [`MuxClientConnection::open`] sends OPEN and returns the session once
//!   OPEN_OK arrives (or why not);
//! - [`MuxClientConnection::closed`] reports the end of a connection with
//!   the sessions it left detached; for each, [`MuxClientConnection::resume`]
//!   on another connection replays what the upstream lacks and continues;
//! - [`MuxClientConnection::take_over`] takes on a session another gateway
//!   instance carried (TAKEOVER), positioned by the agent's message count.
//!
//! How it fails: typed errors per call ([`ConnectError`], [`OpenError`],
//! [`ResumeError`]); a connection ends on malformed input (its sessions
//! detach), a session fails alone on violations within it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::conn::{ConnShared, ConnectionEnd};
use super::frame::{Frame, Open, PROTOCOL};
use super::message::{SessionEnd, SessionError};
use super::session::registry::Registry;
use super::session::shared::{Shared, Start};
use super::session::state::{Phase, ReplayBudget, SessionParams, TakeoverWaiter, Waiter};
use super::session::{MuxSession, SessionHandle};

mod error;
mod role;

pub use super::message::Takeover;
pub use error::{ConnectError, OpenError, ResumeError};

/// Settings of a [`MuxClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Unacknowledged bytes kept per session for replay; sending waits at
    /// the bound (default 1 MiB).
    pub replay_limit: usize,
    /// Replay memory shared by every session of this client (and of any
    /// other client given a clone of the same budget); sending waits while
    /// it is spent. `None` (the default): only the per-session bound.
    pub replay_budget: Option<ReplayBudget>,
    /// Largest message `recv` reassembles (default 16 MiB).
    pub max_message: usize,
    /// WebSocket ping interval; three silent intervals end the connection
    /// (default 15 s; `None`: no keepalive).
    pub keepalive: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            replay_limit: 1 << 20,
            replay_budget: None,
            max_message: 16 << 20,
            keepalive: Some(Duration::from_secs(15)),
        }
    }
}

/// Connects to mux upstreams. Its connections share one session
/// registry, so a session can move between them. Cheap to clone.
#[derive(Clone, Default)]
pub struct MuxClient {
    config: ClientConfig,
    registry: Arc<Registry>,
}

impl MuxClient {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            registry: Arc::default(),
        }
    }

    /// Sessions open now, attached or detached, on all connections.
    pub fn session_count(&self) -> usize {
        self.registry.len()
    }

    /// Upgrades `io` (already connected, TLS done) to a mux connection:
    /// `GET path` with `Host: authority`, offering `agentmux.v1`.
    pub async fn connect<IO>(&self, io: IO, authority: &str, path: &str) -> Result<MuxClientConnection, ConnectError>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let req = Request::get(path)
            .header(header::HOST, authority)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "upgrade")
            .header(header::SEC_WEBSOCKET_KEY, fastwebsockets::handshake::generate_key())
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
            .body(Empty::<Bytes>::new())?;
        let (ws, resp) = fastwebsockets::handshake::client(&TokioExecutor::new(), req, io).await?;
        let selected = resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
        if selected != Some(&HeaderValue::from_static(PROTOCOL)) {
            return Err(ConnectError::Version {
                selected: selected.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            });
        }
        let role = role::ClientRole {
            registry: self.registry.clone(),
        };
        let conn = super::conn::spawn(ws, role, self.config.keepalive);
        Ok(MuxClientConnection {
            conn,
            config: self.config.clone(),
            registry: self.registry.clone(),
        })
    }
}

/// One mux connection to an upstream. Cheap to clone.
#[derive(Clone)]
pub struct MuxClientConnection {
    conn: Arc<ConnShared>,
    config: ClientConfig,
    registry: Arc<Registry>,
}

impl MuxClientConnection {
    /// Opens session `id` (unique on the upstream: the gateway combines an
    /// instance prefix with a counter) and waits for OPEN_OK. `open.window`
    /// is the credit granted to the upstream. An OPEN that cannot be
    /// encoded is refused at once ([`OpenError::Invalid`]).
    ///
    /// There is no deadline here: the caller puts one around the call
    /// (the gateway uses the route's `websocket.handshake_timeout`). A
    /// call cancelled before the answer gives the session up: ERROR
    /// `INTERNAL` goes to the upstream (which forgets the session) and
    /// the session is forgotten here, so an OPEN_OK arriving later finds
    /// nothing and is answered `UNKNOWN_SESSION`.
    pub async fn open(&self, id: u64, open: Open) -> Result<MuxSession, OpenError> {
        let (waiter, answer) = oneshot::channel();
        let Started { session, shared } = self.start(id, open, Ask::Open(waiter))?;
        // Declared after `session`, so it runs first when the call is
        // cancelled: the session fails before its drop would send CLOSE.
        let _abandon = Abandon {
            shared: &shared,
            give_up: Shared::abandon_open,
        };
        match answer.await {
            Ok(Ok(())) => Ok(session),
            // The upstream's CLOSE is answered by dropping the session.
            Ok(Err(SessionEnd::Closed { code, reason })) => Err(OpenError::Refused { code, reason }),
            Ok(Err(SessionEnd::Failed(e))) => Err(OpenError::Failed(e)),
            Err(_) => {
                // Forget it here so OPEN can be repeated with the same id.
                shared.fail(SessionError::Aborted("connection lost while opening".into()));
                Err(OpenError::ConnectionLost)
            }
        }
    }

    /// Takes over session `id` that another gateway instance carried (it
    /// died, or lost its agent): sends TAKEOVER with the number of
    /// complete upstream messages the agent has received and waits for
    /// TAKEOVER_OK. The upstream then replays every message after those;
    /// the returned [`Takeover`] says which of the agent's messages the
    /// upstream already has, so the agent resends the rest. `open` is
    /// kept as the session's request (route, identity); it is not sent.
    ///
    /// As for [`open`](Self::open), the caller sets the deadline. A call
    /// cancelled before the answer leaves the session *parked*: nothing
    /// is sent for it (not even a CLOSE), a late TAKEOVER_OK leaves it as
    /// it was upstream for the agent's next try, and it is forgotten here
    /// when its connection ends. A new takeover of it on this client is
    /// refused ([`OpenError::InUse`]) until the late answer came.
    pub async fn take_over(&self, id: u64, open: Open, messages: u64) -> Result<(MuxSession, Takeover), OpenError> {
        let (waiter, answer) = oneshot::channel();
        let Started { session, shared } = self.start(id, open, Ask::Takeover { messages, waiter })?;
        let _abandon = Abandon {
            shared: &shared,
            give_up: Shared::abandon_takeover,
        };
        match answer.await {
            Ok(Ok(at)) => Ok((session, at)),
            Ok(Err(SessionEnd::Closed { code, reason })) => Err(OpenError::Refused { code, reason }),
            Ok(Err(SessionEnd::Failed(e))) => Err(OpenError::Failed(e)),
            Err(_) => {
                shared.fail(SessionError::Aborted("connection lost while taking over".into()));
                Err(OpenError::ConnectionLost)
            }
        }
    }

    /// Re-attaches a session to this connection: sends RESUME with the
    /// last sequence received, waits for the upstream's RESUME, then
    /// replays what it lacks. The session's handles carry on. Usually the
    /// session is detached (its connection died); a session still attached
    /// elsewhere is moved (rebalancing, draining a connection).
    pub async fn resume(&self, session: &SessionHandle) -> Result<(), ResumeError> {
        let (tx, rx) = oneshot::channel();
        let frame = session
            .shared
            .begin_resume(&self.conn, tx)
            .map_err(ResumeError::NotResumable)?;
        // Undoes the pending state if this call is cancelled or fails early.
        let guard = CancelResume {
            shared: &session.shared,
            conn_id: self.conn.id,
        };
        if !self.conn.insert(session.shared.clone()) {
            return Err(ResumeError::ConnectionLost);
        }
        self.conn.send(frame);
        let outcome = rx.await;
        std::mem::forget(guard);
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(SessionEnd::Failed(e))) => Err(ResumeError::Failed(e)),
            Ok(Err(SessionEnd::Closed { .. })) => Ok(()),
            Err(_) => Err(ResumeError::ConnectionLost),
        }
    }

    /// Registers session `id` and sends its OPEN or TAKEOVER (`ask`, whose
    /// waiter gets the upstream's answer). A takeover may replace a
    /// session this client parked (its agent left on a subprotocol
    /// mismatch, or its taker gave up).
    fn start(&self, id: u64, open: Open, ask: Ask) -> Result<Started, OpenError> {
        if id == 0 {
            return Err(OpenError::ZeroId);
        }
        let frame = ask.frame(id, &open);
        // The writer would drop a frame it cannot encode, and the caller
        // would wait for an answer that never comes.
        if let Frame::Open { open, .. } = &frame {
            crate::check_open(open)?;
        }
        let takeover = matches!(ask, Ask::Takeover { .. });
        let start = Start {
            id,
            params: self.session_params(open.window),
            open,
            registry: Some(Arc::downgrade(&self.registry)),
        };
        let shared = Shared::new(start, ask.into_phase(self.conn.clone()));
        let registered = if takeover {
            self.registry.insert_over_parked(shared.clone()).map(|parked| {
                if let Some(p) = parked {
                    p.fail(SessionError::Aborted("taken over again".into()));
                }
            })
        } else {
            self.registry.insert(shared.clone())
        };
        if registered.is_err() {
            return Err(OpenError::InUse(id));
        }
        let session = MuxSession::new(shared.clone());
        if !self.conn.insert(shared.clone()) {
            shared.fail(SessionError::Aborted("connection closed".into()));
            return Err(OpenError::ConnectionLost);
        }
        self.conn.send(frame);
        Ok(Started { session, shared })
    }

    /// The settings of a session opened or taken over here. The gateway
    /// acknowledges what its application took, not what arrived: a
    /// takeover by another instance can then replay whatever the agent had
    /// not been given yet.
    fn session_params(&self, window: u32) -> SessionParams {
        SessionParams {
            window: window.max(1),
            replay_limit: self.config.replay_limit.max(1),
            max_message: self.config.max_message,
            budget: self.config.replay_budget.clone(),
            ack_on_take: true,
        }
    }

    /// A process-unique id of this connection.
    pub fn id(&self) -> u64 {
        self.conn.id
    }

    /// Sessions the connection carries now (for least-loaded placement).
    pub fn session_count(&self) -> usize {
        self.conn.session_count()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Waits for the end of the connection; the result lists the sessions
    /// left detached, to resume elsewhere.
    pub async fn closed(&self) -> ConnectionEnd {
        self.conn.closed().await
    }

    /// Drops the connection at once; its sessions detach.
    pub fn abort(&self) {
        self.conn.abort();
    }
}

impl std::fmt::Debug for MuxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxClient")
            .field("sessions", &self.registry.len())
            .finish()
    }
}

impl std::fmt::Debug for MuxClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxClientConnection")
            .field("id", &self.conn.id)
            .finish()
    }
}

/// The first frame of a session this client starts, and who waits for
/// the upstream's answer to it.
enum Ask {
    /// OPEN: answered by OPEN_OK.
    Open(Waiter),
    /// TAKEOVER, for an agent that received `messages` complete messages:
    /// answered by TAKEOVER_OK.
    Takeover { messages: u64, waiter: TakeoverWaiter },
}

impl Ask {
    fn frame(&self, id: u64, open: &Open) -> Frame {
        match self {
            Self::Open(_) => Frame::Open {
                session: id,
                open: Box::new(open.clone()),
            },
            Self::Takeover { messages, .. } => Frame::Takeover {
                session: id,
                messages: *messages,
                window: open.window.max(1),
            },
        }
    }

    /// The phase of a session that sent this on `link`.
    fn into_phase(self, link: Arc<ConnShared>) -> Phase {
        match self {
            Self::Open(waiter) => Phase::opening(link, waiter),
            Self::Takeover { waiter, .. } => Phase::taking_over(link, waiter),
        }
    }
}

/// A session just started, and its state (to wait on and give up).
struct Started {
    session: MuxSession,
    shared: Arc<Shared>,
}

/// Gives up an OPEN or TAKEOVER whose caller stopped waiting for the
/// answer (its deadline passed): see [`Shared::abandon_open`] and
/// [`Shared::abandon_takeover`].
struct Abandon<'a> {
    shared: &'a Shared,
    give_up: fn(&Shared),
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        (self.give_up)(self.shared);
    }
}

/// Gives up a pending RESUME when `resume` does not finish.
struct CancelResume<'a> {
    shared: &'a Shared,
    conn_id: u64,
}

impl Drop for CancelResume<'_> {
    fn drop(&mut self) {
        self.shared.cancel_resume(self.conn_id);
    }
}
