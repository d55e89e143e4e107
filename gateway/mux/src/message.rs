//! What an application sends and receives on a session, and how a session
//! ends.

use bytes::Bytes;

use super::frame::{ErrorCode, PartialMessage};

/// A whole WebSocket-like message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(s) => s.as_bytes(),
            Self::Binary(b) => b,
        }
    }

    /// Whether it is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

/// One fragment of a message, as DATA carries it: for relays that pass
/// fragments on without reassembling messages (the gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The message is text; the same on every fragment of a message.
    pub text: bool,
    /// Last fragment of the message.
    pub fin: bool,
    /// The fragment's bytes. Text fragments are not checked for UTF-8 one
    /// by one (a code point may straddle two of them).
    pub payload: Bytes,
}

/// How a session ended, as [`MuxSession::end`](super::MuxSession::end)
/// reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The peer closed its direction with a CLOSE frame.
    Closed {
        /// WebSocket close code.
        code: u16,
        /// WebSocket close reason.
        reason: String,
    },
    /// The session failed.
    Failed(SessionError),
}

/// Where the agent's stream stands after
/// [`MuxClientConnection::take_over`](super::MuxClientConnection::take_over).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// Complete agent messages the upstream has received: the agent
    /// resends from this one on (counting from 0).
    pub messages: u64,
    /// The next message, if the upstream has part of it: its TEXT bit and
    /// how many of its first bytes it has (skip them in the resent copy).
    pub partial: Option<PartialMessage>,
}

/// Why a session failed or refused an operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// This side already sent its CLOSE: no more messages.
    #[error("session already closed by this side")]
    Closed,
    /// The peer ended the session with an ERROR frame.
    #[error("peer failed the session: {code}: {message}")]
    Peer {
        /// The peer's error code.
        code: ErrorCode,
        /// The peer's message.
        message: String,
    },
    /// The peer broke the protocol on this session; an ERROR was sent.
    #[error("peer broke the protocol: {0}")]
    Protocol(ErrorCode),
    /// The session stayed detached (its connection gone) past the grace
    /// period without being resumed.
    #[error("session was not resumed within the grace period")]
    Expired,
    /// Resuming failed: the peer no longer knows the session or lacks
    /// frames to replay.
    #[error("session could not be resumed: {0}")]
    Lost(ErrorCode),
    /// This side gave the session up ([`SessionHandle::abort`](super::SessionHandle::abort)).
    #[error("session aborted: {0}")]
    Aborted(String),
    /// A close code that may not be sent, or a chunk that breaks message
    /// framing (text flag changed mid-message).
    #[error("invalid use: {0}")]
    InvalidInput(&'static str),
}

impl SessionError {
    /// The WebSocket close code an agent behind this session should see.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Closed => 1000,
            Self::Peer { code, .. } | Self::Protocol(code) | Self::Lost(code) => code.close_code(),
            Self::Expired | Self::Aborted(_) | Self::InvalidInput(_) => 1011,
        }
    }
}
