//! The frames of `agentmux.v1` as typed values, with the protocol's
//! constants and error codes.
//!
//! A [`Frame`] is what the codec decodes from and encodes into a binary
//! WebSocket message; the wire layout lives in `PROTOCOL.md` and in
//! [`codec`](super::codec). Every invariant a frame must satisfy (session 0
//! only for connection-wide errors, sequence numbers only where they mean
//! something, sizes within the limits) is checked by the codec in both
//! directions, so a `Frame` that decoded is always one that encodes.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// The WebSocket subprotocol of this version; the only one this library
/// speaks. Later versions are `agentmux.v2`, ...
pub const PROTOCOL: &str = "agentmux.v1";

/// Bytes of the fixed frame header: type, flags, session, sequence, length.
pub const HEADER_LEN: usize = 22;
/// Largest payload of one frame (1 MiB). Larger messages go as fragments.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;
/// Largest WebSocket message (all its frames, headers included: 4 MiB).
pub const MAX_MESSAGE_LEN: usize = 4 << 20;
/// Most frames one WebSocket message may carry.
pub const MAX_FRAMES_PER_MESSAGE: usize = 1024;
/// Longest CLOSE reason in bytes (the WebSocket close frame limit).
pub const MAX_CLOSE_REASON: usize = 123;
/// Longest ERROR message in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;
/// Largest OPEN payload (route, identity, path, headers, subprotocols).
pub const MAX_OPEN_LEN: usize = 64 << 10;
/// Most request headers one OPEN may carry.
pub const MAX_OPEN_HEADERS: usize = 128;
/// Most subprotocols one OPEN may offer.
pub const MAX_SUBPROTOCOLS: usize = 32;
/// Most DATA frames a sender keeps unacknowledged per session (its CLOSE
/// may come on top); at the bound it waits for ACKs (credit counts bytes,
/// and empty DATA frames cost none, so frames need a bound of their own).
pub const MAX_UNACKED_FRAMES: usize = 4096;
/// Most DATA frames a receiver holds per session that its application has
/// not taken; one more fails the session with `FLOW_CONTROL`. A receiver
/// acknowledges on arrival only the first `MAX_HELD_FRAMES -
/// MAX_UNACKED_FRAMES` of them (the rest as they are taken), so a sender
/// within [`MAX_UNACKED_FRAMES`] never reaches this bound.
pub const MAX_HELD_FRAMES: usize = 2 * MAX_UNACKED_FRAMES;

/// DATA flag: last fragment of a message.
pub(crate) const FLAG_FIN: u8 = 0x01;
/// DATA flag: the message is text (UTF-8), not binary. On TAKEOVER_OK:
/// the partly received message is text.
pub(crate) const FLAG_TEXT: u8 = 0x02;
/// TAKEOVER_OK flag: a message from the gateway is partly received.
pub(crate) const FLAG_PARTIAL: u8 = 0x04;

/// The type byte of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Gateway → upstream: a new session.
    Open = 0x01,
    /// Upstream → gateway: the session is accepted.
    OpenOk = 0x02,
    /// A fragment of a message, numbered in the session's stream.
    Data = 0x03,
    /// Cumulative acknowledgement of received DATA and CLOSE frames.
    Ack = 0x04,
    /// Credit: how many payload bytes the peer may send in total.
    Window = 0x05,
    /// The end of one direction of a session, numbered like DATA.
    Close = 0x06,
    /// Re-attach a session to this connection after another one died.
    Resume = 0x07,
    /// A session (or, with session 0, the connection) has failed.
    Error = 0x08,
    /// Gateway → upstream: another gateway instance takes the session over.
    Takeover = 0x09,
    /// Upstream → gateway: the takeover is accepted, with where both
    /// streams stand.
    TakeoverOk = 0x0A,
}

impl FrameType {
    /// The type for a wire byte, if it names one.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Open,
            0x02 => Self::OpenOk,
            0x03 => Self::Data,
            0x04 => Self::Ack,
            0x05 => Self::Window,
            0x06 => Self::Close,
            0x07 => Self::Resume,
            0x08 => Self::Error,
            0x09 => Self::Takeover,
            0x0A => Self::TakeoverOk,
            _ => return None,
        })
    }
}

/// What an OPEN carries: everything the upstream needs to accept an
/// agent's WebSocket session as if the agent had connected directly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Open {
    /// Initial credit, in payload bytes, the opener grants for DATA towards
    /// it (see `WINDOW`).
    pub window: u32,
    /// Name of the gateway route the agent matched.
    pub route: String,
    /// The agent's identity as the gateway established it (API key name,
    /// mTLS subject, client address); may be empty.
    pub identity: String,
    /// Path and query of the agent's request.
    pub path: String,
    /// Selected request headers, in the order the agent sent them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Subprotocols the agent offered, in its order of preference.
    pub subprotocols: Vec<String>,
}

impl Open {
    /// The headers as an [`http::HeaderMap`].
    pub fn header_map(&self) -> http::HeaderMap {
        self.headers.iter().cloned().collect()
    }
}

/// One frame of `agentmux.v1`.
///
/// `session` is never 0 except in a connection-wide [`Frame::Error`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A new session (boxed: it is rare and large, DATA is common).
    Open {
        /// Session id, chosen by the gateway, unique on this upstream.
        session: u64,
        /// Route, identity, headers, subprotocols, initial window.
        open: Box<Open>,
    },
    /// The upstream accepts the session.
    OpenOk {
        /// Session id.
        session: u64,
        /// Initial credit the upstream grants for DATA towards it.
        window: u32,
        /// The subprotocol it chose from the offered ones, if any.
        subprotocol: Option<String>,
    },
    /// A message or a fragment of one.
    Data {
        /// Session id.
        session: u64,
        /// Position in the sender's stream of this session, from 1.
        seq: u64,
        /// Text (UTF-8) rather than binary; the same on every fragment.
        text: bool,
        /// Last fragment of the message.
        fin: bool,
        /// The bytes (a slice of the received message when decoded).
        payload: Bytes,
    },
    /// All frames up to `seq` of the peer's stream have arrived.
    Ack {
        /// Session id.
        session: u64,
        /// Highest sequence received with nothing missing before it.
        seq: u64,
    },
    /// The peer may send DATA until its total payload bytes reach `limit`.
    Window {
        /// Session id.
        session: u64,
        /// Absolute credit limit in bytes since the session opened.
        limit: u64,
    },
    /// The sender will send no more DATA on this session.
    Close {
        /// Session id.
        session: u64,
        /// Position in the sender's stream (after its last DATA).
        seq: u64,
        /// WebSocket close code.
        code: u16,
        /// WebSocket close reason (UTF-8, at most 123 bytes).
        reason: String,
    },
    /// Re-attach request (gateway) or answer (upstream).
    Resume {
        /// Session id.
        session: u64,
        /// Highest sequence of the peer's stream the sender has received.
        last_seq: u64,
        /// The sender's current credit limit for the peer (as in WINDOW).
        limit: u64,
    },
    /// Another gateway instance takes the session over (PROTOCOL.md
    /// section 8.1): it knows only what the agent says it received.
    Takeover {
        /// Session id.
        session: u64,
        /// Complete messages of the upstream the agent has received.
        messages: u64,
        /// Credit the new gateway grants beyond the replay point.
        window: u32,
    },
    /// The upstream accepts a takeover: where both streams stand.
    TakeoverOk(Box<TakeoverOk>),
    /// A failure of one session, or of the connection when `session` is 0.
    Error {
        /// Session id, or 0 for the whole connection.
        session: u64,
        /// What failed.
        code: ErrorCode,
        /// Human-readable detail (UTF-8, at most 1024 bytes).
        message: String,
    },
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Open { .. } => FrameType::Open,
            Self::OpenOk { .. } => FrameType::OpenOk,
            Self::Data { .. } => FrameType::Data,
            Self::Ack { .. } => FrameType::Ack,
            Self::Window { .. } => FrameType::Window,
            Self::Close { .. } => FrameType::Close,
            Self::Resume { .. } => FrameType::Resume,
            Self::Error { .. } => FrameType::Error,
            Self::Takeover { .. } => FrameType::Takeover,
            Self::TakeoverOk(_) => FrameType::TakeoverOk,
        }
    }

    /// The session the frame belongs to (0: the connection).
    pub fn session(&self) -> u64 {
        match self {
            Self::Open { session, .. }
            | Self::OpenOk { session, .. }
            | Self::Data { session, .. }
            | Self::Ack { session, .. }
            | Self::Window { session, .. }
            | Self::Close { session, .. }
            | Self::Resume { session, .. }
            | Self::Error { session, .. }
            | Self::Takeover { session, .. } => *session,
            Self::TakeoverOk(t) => t.session,
        }
    }
}

/// The upstream's answer to a takeover (boxed in [`Frame`]: rare and
/// large). Sequence numbers and byte counts are those of the session's
/// life so far, across every gateway that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeoverOk {
    /// Session id.
    pub session: u64,
    /// Highest sequence of the gateway's stream received (the new gateway
    /// numbers on from here).
    pub last_seq: u64,
    /// DATA payload bytes received from the gateway through `last_seq`.
    pub received_bytes: u64,
    /// Complete messages received from the gateway: the agent resends
    /// from this one (counting from 0).
    pub messages: u64,
    /// The message after those, if partly received: its TEXT bit and its
    /// bytes received (the resent copy's first bytes are skipped).
    pub partial: Option<PartialMessage>,
    /// The upstream's credit limit for the gateway (as in WINDOW).
    pub limit: u64,
    /// The upstream's frames up to this sequence count as delivered; the
    /// replay that follows starts after it.
    pub replay_seq: u64,
    /// DATA payload bytes the upstream sent through `replay_seq`.
    pub replay_bytes: u64,
    /// The credit limit the upstream now has from the gateway: the
    /// takeover's window past `replay_bytes`, or more if the upstream had
    /// already sent more.
    pub granted: u64,
    /// The subprotocol chosen when the session opened.
    pub subprotocol: Option<String>,
}

/// A message received in part: its TEXT bit and how many of its first
/// payload bytes arrived. A takeover positions the agent's resent copy of
/// it by these (TAKEOVER_OK, [`Takeover`](crate::Takeover)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialMessage {
    /// Whether it is a text message.
    pub text: bool,
    /// Payload bytes of it received so far.
    pub bytes: u64,
}

/// Why a session or a connection failed, as carried by ERROR frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// A malformed frame or message (connection-wide).
    Protocol = 1,
    /// A frame type this version does not define (connection-wide).
    UnknownType = 2,
    /// A frame or message over the size limits (connection-wide).
    FrameTooLarge = 3,
    /// More than [`MAX_FRAMES_PER_MESSAGE`] frames in a message.
    TooManyFrames = 4,
    /// The receiver holds as many sessions on this connection as it will.
    TooManySessions = 5,
    /// The session id is not known on this connection.
    UnknownSession = 6,
    /// DATA beyond the credit the receiver granted.
    FlowControl = 7,
    /// A sequence number that skips ahead, or an ACK of unsent frames.
    Sequence = 8,
    /// A frame not allowed in the session's state (DATA after CLOSE, ...).
    InvalidState = 9,
    /// RESUME asked for frames the sender no longer holds.
    ReplayUnavailable = 10,
    /// A reassembled message over the receiver's message size limit.
    MessageTooLarge = 11,
    /// A text message that is not valid UTF-8.
    InvalidUtf8 = 12,
    /// A bug or resource failure on the sender's side.
    Internal = 13,
    /// The sender is shutting down (connection-wide): resume elsewhere.
    GoingAway = 14,
}

impl ErrorCode {
    /// The code for a wire value, if it names one.
    pub fn from_u16(v: u16) -> Option<Self> {
        use ErrorCode::*;
        const ALL: [ErrorCode; 14] = [
            Protocol,
            UnknownType,
            FrameTooLarge,
            TooManyFrames,
            TooManySessions,
            UnknownSession,
            FlowControl,
            Sequence,
            InvalidState,
            ReplayUnavailable,
            MessageTooLarge,
            InvalidUtf8,
            Internal,
            GoingAway,
        ];
        ALL.into_iter().find(|c| *c as u16 == v)
    }

    /// The WebSocket close code an agent sees when its session ends with
    /// this error (the gateway's edge mapping, see STYLE.md).
    pub fn close_code(self) -> u16 {
        match self {
            Self::Protocol | Self::UnknownType | Self::InvalidState | Self::Sequence => 1002,
            Self::FrameTooLarge | Self::TooManyFrames | Self::MessageTooLarge => 1009,
            Self::InvalidUtf8 => 1007,
            Self::TooManySessions => 1013,
            Self::GoingAway => 1001,
            Self::UnknownSession | Self::FlowControl | Self::ReplayUnavailable | Self::Internal => 1011,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Protocol => "protocol error",
            Self::UnknownType => "unknown frame type",
            Self::FrameTooLarge => "frame too large",
            Self::TooManyFrames => "too many frames in one message",
            Self::TooManySessions => "too many sessions on this connection",
            Self::UnknownSession => "unknown session",
            Self::FlowControl => "data beyond the credit window",
            Self::Sequence => "bad sequence number",
            Self::InvalidState => "frame not allowed in the session state",
            Self::ReplayUnavailable => "frames to replay are no longer held",
            Self::MessageTooLarge => "message too large",
            Self::InvalidUtf8 => "text message is not valid UTF-8",
            Self::Internal => "internal error",
            Self::GoingAway => "going away",
        };
        f.write_str(name)
    }
}

/// Whether `code` may travel in a CLOSE frame: the codes an endpoint may
/// send in a WebSocket close frame (RFC 6455 §7.4): 1000–1003, 1007–1014,
/// 3000–4999. (1005, 1006 and 1015 are never sent on the wire.)
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
