#![doc = include_str!("PROTOCOL.md")]
//!
//! # This module
//!
//! Mux mode carries many agent sessions over few upstream WebSockets. This
//! module is the protocol: the frame types and codec ([`Frame`],
//! [`encode`], [`Decoder`]).
//!
//! How it fails: malformed input is a typed [`DecodeError`] that ends the
//! connection it arrived on; nothing a peer sends can panic this code.

pub mod codec;
mod frame;

pub use codec::{Batch, DecodeError, Decoder, FrameError, decode_message, encode, encoded_len};
pub use frame::{
    ErrorCode, Frame, FrameType, HEADER_LEN, MAX_CLOSE_REASON, MAX_ERROR_MESSAGE,
    MAX_FRAME_PAYLOAD, MAX_FRAMES_PER_MESSAGE, MAX_MESSAGE_LEN, MAX_OPEN_HEADERS, MAX_OPEN_LEN,
    MAX_SUBPROTOCOLS, Open, PROTOCOL, is_valid_close_code,
};
