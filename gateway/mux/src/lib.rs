#![doc = include_str!("../PROTOCOL.md")]
//!
//! # This module
//!
//! Mux mode carries many agent sessions over few upstream WebSockets. This
//! module is the protocol: the frame types and codec ([`Frame`],
//! [`encode`], [`Decoder`]), the upstream side ([`server`]: accept
//! connections, get sessions, resume them) and the gateway side's
//! connection ([`client`]: open and resume sessions). Both sides share the
//! session machinery ([`MuxSession`]): sequence numbers, credit windows,
//! ACKs, replay buffers.
//!
//! How it fails: malformed input is a typed [`DecodeError`] that ends the
//! connection it arrived on (its sessions detach and can be resumed);
//! violations within one session fail that session only
//! ([`SessionError`]); nothing a peer sends can panic this code.

pub mod client;
pub mod codec;
mod conn;
mod frame;
mod message;
pub mod server;
mod session;
#[cfg(test)]
mod tests;

pub use client::{ClientConfig, ConnectError, MuxClient, MuxClientConnection, OpenError, ResumeError, Takeover};
pub use codec::{Batch, DecodeError, Decoder, FrameError, check_open, decode_message, encode, encoded_len};
pub use conn::{ConnectionEnd, EndReason};
pub use frame::{
    ErrorCode, Frame, FrameType, HEADER_LEN, MAX_CLOSE_REASON, MAX_ERROR_MESSAGE, MAX_FRAME_PAYLOAD,
    MAX_FRAMES_PER_MESSAGE, MAX_HELD_FRAMES, MAX_MESSAGE_LEN, MAX_OPEN_HEADERS, MAX_OPEN_LEN, MAX_SUBPROTOCOLS,
    MAX_UNACKED_FRAMES, Open, PROTOCOL, PartialMessage, TakeoverOk, is_valid_close_code,
};
pub use message::{Chunk, Message, SessionEnd, SessionError};
pub use server::{MuxConnection, MuxServer, ServerConfig, ServerStats};
pub use session::state::ReplayBudget;
pub use session::{MuxSession, SessionHandle, SessionReceiver, SessionSender};
