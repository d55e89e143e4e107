//! Encoding and decoding of `agentmux.v1` frames.
//!
//! [`encode`] appends one frame to a `BytesMut`; a [`Batch`] packs several
//! into one WebSocket message within the per-message limits. [`Decoder`]
//! walks a received message (a `Bytes`) frame by frame and hands out DATA
//! payloads as slices of it, so decoding copies no payload bytes.
//!
//! Validation is strict and shared by both directions: unknown types, unknown flag
//! bits, session 0 outside a connection-wide ERROR, a sequence number where
//! none belongs, oversized fields, invalid UTF-8 and truncated frames are
//! typed [`DecodeError`]s, each with the [`ErrorCode`] the receiver sends
//! back. The decoder never panics on any input (property-tested and
//! fuzzed).

mod check;
mod decode;
#[cfg(test)]
mod tests;

use bytes::{BufMut, BytesMut};

pub use decode::{Decoder, decode_message};

use super::frame::{
    ErrorCode, FLAG_FIN, FLAG_PARTIAL, FLAG_TEXT, Frame, FrameType, HEADER_LEN, MAX_FRAMES_PER_MESSAGE, MAX_MESSAGE_LEN,
};

/// A frame that breaks one of the protocol's invariants; returned by
/// [`encode`] for frames it will not write and (inside [`DecodeError`]) by
/// the decoder for frames it will not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Only a connection-wide ERROR may use session 0.
    #[error("{frame_type:?} frame with session id 0")]
    ZeroSession {
        /// The frame's type.
        frame_type: FrameType,
    },
    /// A sequence number where the type has none, or 0 on DATA/CLOSE.
    #[error("{frame_type:?} frame with invalid sequence number {seq}")]
    BadSequence {
        /// The frame's type.
        frame_type: FrameType,
        /// The offending value.
        seq: u64,
    },
    /// A field or payload over its limit.
    #[error("{field} of {len} bytes is over the limit of {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list with more entries than allowed.
    #[error("{count} {field} are more than the limit of {max}")]
    TooManyEntries {
        /// Which list.
        field: &'static str,
        /// Its length.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A field that must not be empty is.
    #[error("empty {0}")]
    EmptyField(&'static str),
    /// A close code that may not be sent in a close frame.
    #[error("close code {0} may not be sent")]
    BadCloseCode(u16),
}

impl FrameError {
    /// The ERROR code a receiver answers this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLong { field: "payload", .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::Protocol,
        }
    }
}

/// Why a received message was refused. Every variant is fatal to the
/// connection it arrived on: the message is discarded whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A message with no frame at all.
    #[error("empty message")]
    EmptyMessage,
    /// A message over [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes is over the {MAX_MESSAGE_LEN}-byte limit")]
    MessageTooLarge {
        /// Its length.
        len: usize,
    },
    /// More than [`MAX_FRAMES_PER_MESSAGE`] frames in one message.
    #[error("more than {MAX_FRAMES_PER_MESSAGE} frames in one message")]
    TooManyFrames,
    /// The message ends inside a frame header or payload.
    #[error("truncated frame: {needed} bytes needed, {available} left")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the message has left.
        available: usize,
    },
    /// A type byte this version does not define.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// Flag bits the frame type does not define.
    #[error("{frame_type:?} frame with unknown flags {flags:#04x}")]
    BadFlags {
        /// The frame's type.
        frame_type: FrameType,
        /// Its flags byte.
        flags: u8,
    },
    /// A length field over [`MAX_FRAME_PAYLOAD`](super::frame::MAX_FRAME_PAYLOAD).
    #[error("frame payload of {len} bytes is over the limit")]
    FrameTooLarge {
        /// The declared length.
        len: usize,
    },
    /// A payload that does not parse as its type's layout.
    #[error("malformed {frame_type:?} payload: {what}")]
    BadPayload {
        /// The frame's type.
        frame_type: FrameType,
        /// What is wrong.
        what: &'static str,
    },
    /// An ERROR frame with a code this version does not define.
    #[error("unknown error code {0}")]
    UnknownErrorCode(u16),
    /// A well-formed frame that breaks an invariant.
    #[error(transparent)]
    Invalid(#[from] FrameError),
}

impl DecodeError {
    /// The ERROR code the receiver sends before closing the connection.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MessageTooLarge { .. } | Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::TooManyFrames => ErrorCode::TooManyFrames,
            Self::UnknownType(_) => ErrorCode::UnknownType,
            Self::Invalid(e) => e.code(),
            Self::EmptyMessage
            | Self::Truncated { .. }
            | Self::BadFlags { .. }
            | Self::BadPayload { .. }
            | Self::UnknownErrorCode(_) => ErrorCode::Protocol,
        }
    }
}

/// Checks that an OPEN with these fields can be encoded (as [`encode`]
/// checks before writing): at most
/// [`MAX_OPEN_HEADERS`](super::frame::MAX_OPEN_HEADERS) headers,
/// [`MAX_SUBPROTOCOLS`](super::frame::MAX_SUBPROTOCOLS) non-empty
/// subprotocols and [`MAX_OPEN_LEN`](super::frame::MAX_OPEN_LEN) bytes.
/// For callers that must refuse what cannot be sent before any other
/// work (an OPEN carrying an agent's headers).
pub fn check_open(open: &super::frame::Open) -> Result<(), FrameError> {
    check::check_open(open)
}

/// Bytes `frame` takes on the wire, header included.
pub fn encoded_len(frame: &Frame) -> usize {
    HEADER_LEN + check::payload_len(frame)
}

/// Appends `frame` to `dst`. Writes nothing and returns the broken
/// invariant if the frame is not one a peer would accept.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    check::check(frame)?;
    let payload_len = check::payload_len(frame);
    dst.reserve(HEADER_LEN + payload_len);
    dst.put_u8(frame.frame_type() as u8);
    dst.put_u8(flags(frame));
    dst.put_u64(frame.session());
    dst.put_u64(seq(frame));
    // check() bounded every payload to at most 1 MiB, so this cannot clip.
    dst.put_u32(u32::try_from(payload_len).unwrap_or(u32::MAX));
    put_payload(frame, dst);
    Ok(())
}

fn flags(frame: &Frame) -> u8 {
    match frame {
        Frame::Data { text, fin, .. } => (if *fin { FLAG_FIN } else { 0 }) | (if *text { FLAG_TEXT } else { 0 }),
        Frame::TakeoverOk(t) => match t.partial {
            Some(p) => FLAG_PARTIAL | if p.text { FLAG_TEXT } else { 0 },
            None => 0,
        },
        _ => 0,
    }
}

fn seq(frame: &Frame) -> u64 {
    match frame {
        Frame::Data { seq, .. } | Frame::Ack { seq, .. } | Frame::Close { seq, .. } => *seq,
        Frame::Resume { last_seq, .. } => *last_seq,
        Frame::Takeover { messages, .. } => *messages,
        Frame::TakeoverOk(t) => t.last_seq,
        _ => 0,
    }
}

fn put_payload(frame: &Frame, dst: &mut BytesMut) {
    match frame {
        Frame::Open { open, .. } => {
            dst.put_u32(open.window);
            put_str16(dst, open.route.as_bytes());
            put_str16(dst, open.identity.as_bytes());
            put_str16(dst, open.path.as_bytes());
            put_count(dst, open.headers.len());
            for (name, value) in &open.headers {
                put_str16(dst, name.as_str().as_bytes());
                put_str16(dst, value.as_bytes());
            }
            put_count(dst, open.subprotocols.len());
            for p in &open.subprotocols {
                put_str16(dst, p.as_bytes());
            }
        }
        Frame::OpenOk {
            window, subprotocol, ..
        } => {
            dst.put_u32(*window);
            put_str16(dst, subprotocol.as_deref().unwrap_or("").as_bytes());
        }
        Frame::Data { payload, .. } => dst.put_slice(payload),
        Frame::Ack { .. } => {}
        Frame::Window { limit, .. } | Frame::Resume { limit, .. } => dst.put_u64(*limit),
        Frame::Close { code, reason, .. } => {
            dst.put_u16(*code);
            dst.put_slice(reason.as_bytes());
        }
        Frame::Error { code, message, .. } => {
            dst.put_u16(*code as u16);
            dst.put_slice(message.as_bytes());
        }
        Frame::Takeover { window, .. } => dst.put_u32(*window),
        Frame::TakeoverOk(t) => {
            dst.put_u64(t.received_bytes);
            dst.put_u64(t.messages);
            dst.put_u64(t.partial.map_or(0, |p| p.bytes));
            dst.put_u64(t.limit);
            dst.put_u64(t.replay_seq);
            dst.put_u64(t.replay_bytes);
            dst.put_u64(t.granted);
            put_str16(dst, t.subprotocol.as_deref().unwrap_or("").as_bytes());
        }
    }
}

/// A length-prefixed field; check() bounded every field below 64 KiB.
fn put_str16(dst: &mut BytesMut, s: &[u8]) {
    put_count(dst, s.len());
    dst.put_slice(s);
}

fn put_count(dst: &mut BytesMut, n: usize) {
    dst.put_u16(u16::try_from(n).unwrap_or(u16::MAX));
}

/// Several frames packed into one WebSocket message, within
/// [`MAX_MESSAGE_LEN`] and [`MAX_FRAMES_PER_MESSAGE`].
#[derive(Debug, Default)]
pub struct Batch {
    buf: BytesMut,
    frames: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `frame` still fits in this message.
    pub fn fits(&self, frame: &Frame) -> bool {
        self.frames < MAX_FRAMES_PER_MESSAGE && self.buf.len() + encoded_len(frame) <= MAX_MESSAGE_LEN
    }

    /// Appends `frame`. The caller checks [`Batch::fits`] first (a frame
    /// that does not fit starts the next message); a frame that breaks an
    /// invariant is refused and the batch is left as it was.
    pub fn push(&mut self, frame: &Frame) -> Result<(), FrameError> {
        encode(frame, &mut self.buf)?;
        self.frames += 1;
        Ok(())
    }

    /// Frames in the batch.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Takes the message out, leaving the batch empty.
    pub fn take(&mut self) -> BytesMut {
        self.frames = 0;
        self.buf.split()
    }
}
