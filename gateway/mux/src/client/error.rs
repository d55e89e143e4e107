//! Why a client call failed: connecting, opening or taking over a
//! session, resuming one.

use crate::frame::PROTOCOL;
use crate::message::SessionError;

/// Why [`MuxClient::connect`](super::MuxClient::connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The WebSocket handshake failed (transport, HTTP status, headers).
    #[error("mux WebSocket handshake failed: {0}")]
    Handshake(#[from] fastwebsockets::WebSocketError),
    /// The upstream did not select `agentmux.v1`.
    #[error("upstream selected subprotocol {selected:?}, not {PROTOCOL}")]
    Version {
        /// What it selected, if anything.
        selected: Option<String>,
    },
    /// The request could not be built (bad host or path).
    #[error("bad upgrade request: {0}")]
    Request(#[from] http::Error),
}

/// Why [`MuxClientConnection::open`](super::MuxClientConnection::open) gave no session.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Session id 0 is reserved for the connection.
    #[error("session id 0 is reserved")]
    ZeroId,
    /// The OPEN cannot be encoded (too many or too large headers, too
    /// many subprotocols): nothing was sent. See [`check_open`](crate::check_open).
    #[error("OPEN cannot be sent: {0}")]
    Invalid(#[from] crate::FrameError),
    /// The id is already open on a connection of this client.
    #[error("session id {0} is already in use")]
    InUse(u64),
    /// The upstream refused with a CLOSE.
    #[error("upstream refused the session: {code} {reason}")]
    Refused {
        /// Its close code.
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// The upstream answered ERROR (e.g. `TOO_MANY_SESSIONS`: try another
    /// connection).
    #[error(transparent)]
    Failed(SessionError),
    /// The connection ended before OPEN_OK: send OPEN again, with the same
    /// id, on another connection.
    #[error("connection lost before the session was accepted")]
    ConnectionLost,
}

/// Why [`MuxClientConnection::resume`](super::MuxClientConnection::resume) did not re-attach the session.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The session has ended, or is already on (or resuming to) this
    /// connection.
    #[error("session cannot be resumed: {0}")]
    NotResumable(SessionError),
    /// The upstream could not resume it; the session has failed with this
    /// error (close the agent with its close code, 1011).
    #[error("upstream could not resume the session: {0}")]
    Failed(SessionError),
    /// This connection ended too before the answer: try another.
    #[error("connection lost before the resume was answered")]
    ConnectionLost,
}
