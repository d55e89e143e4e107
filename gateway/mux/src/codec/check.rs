//! The invariants every frame satisfies, checked once for both directions:
//! the encoder refuses to write a frame that breaks one and the decoder
//! refuses to return one, so what one side sends the other accepts.

use super::FrameError;
use crate::frame::{
    Frame, FrameType, MAX_CLOSE_REASON, MAX_ERROR_MESSAGE, MAX_FRAME_PAYLOAD, MAX_OPEN_HEADERS, MAX_OPEN_LEN,
    MAX_SUBPROTOCOLS, Open, is_valid_close_code,
};

/// Checks `frame` against the protocol's invariants.
pub(super) fn check(frame: &Frame) -> Result<(), FrameError> {
    let frame_type = frame.frame_type();
    if frame.session() == 0 && frame_type != FrameType::Error {
        return Err(FrameError::ZeroSession { frame_type });
    }
    match frame {
        Frame::Open { open, .. } => check_open(open),
        Frame::OpenOk { subprotocol, .. } => match subprotocol {
            Some(p) if p.is_empty() => Err(FrameError::EmptyField("subprotocol")),
            Some(p) => max_len("subprotocol", p.len(), usize::from(u16::MAX)),
            None => Ok(()),
        },
        Frame::Data { seq, payload, .. } => {
            first_seq(frame_type, *seq)?;
            max_len("payload", payload.len(), MAX_FRAME_PAYLOAD)
        }
        Frame::Close { seq, code, reason, .. } => {
            first_seq(frame_type, *seq)?;
            if !is_valid_close_code(*code) {
                return Err(FrameError::BadCloseCode(*code));
            }
            max_len("close reason", reason.len(), MAX_CLOSE_REASON)
        }
        Frame::Error { message, .. } => max_len("error message", message.len(), MAX_ERROR_MESSAGE),
        Frame::TakeoverOk(t) => match &t.subprotocol {
            Some(p) if p.is_empty() => Err(FrameError::EmptyField("subprotocol")),
            Some(p) => max_len("subprotocol", p.len(), usize::from(u16::MAX)),
            None => Ok(()),
        },
        Frame::Ack { .. } | Frame::Window { .. } | Frame::Resume { .. } | Frame::Takeover { .. } => Ok(()),
    }
}

/// DATA and CLOSE are numbered from 1; 0 means "nothing" in ACK/RESUME.
fn first_seq(frame_type: FrameType, seq: u64) -> Result<(), FrameError> {
    if seq == 0 {
        return Err(FrameError::BadSequence { frame_type, seq });
    }
    Ok(())
}

pub(super) fn check_open(open: &Open) -> Result<(), FrameError> {
    if open.headers.len() > MAX_OPEN_HEADERS {
        return Err(FrameError::TooManyEntries {
            field: "headers",
            count: open.headers.len(),
            max: MAX_OPEN_HEADERS,
        });
    }
    if open.subprotocols.len() > MAX_SUBPROTOCOLS {
        return Err(FrameError::TooManyEntries {
            field: "subprotocols",
            count: open.subprotocols.len(),
            max: MAX_SUBPROTOCOLS,
        });
    }
    if open.subprotocols.iter().any(String::is_empty) {
        return Err(FrameError::EmptyField("subprotocol"));
    }
    // The total bounds every field too: each is shorter than the whole.
    max_len("open payload", open_payload_len(open), MAX_OPEN_LEN)
}

fn max_len(field: &'static str, len: usize, max: usize) -> Result<(), FrameError> {
    if len > max {
        return Err(FrameError::TooLong { field, len, max });
    }
    Ok(())
}

/// Encoded size of an OPEN payload.
pub(super) fn open_payload_len(open: &Open) -> usize {
    let strings = [&open.route, &open.identity, &open.path]
        .iter()
        .map(|s| 2 + s.len())
        .sum::<usize>();
    let headers = open
        .headers
        .iter()
        .map(|(n, v)| 4 + n.as_str().len() + v.len())
        .sum::<usize>();
    let subprotocols = open.subprotocols.iter().map(|s| 2 + s.len()).sum::<usize>();
    4 + strings + 2 + headers + 2 + subprotocols
}

/// Encoded size of a frame's payload.
pub(super) fn payload_len(frame: &Frame) -> usize {
    match frame {
        Frame::Open { open, .. } => open_payload_len(open),
        Frame::OpenOk { subprotocol, .. } => 6 + subprotocol.as_ref().map_or(0, String::len),
        Frame::Data { payload, .. } => payload.len(),
        Frame::Ack { .. } => 0,
        Frame::Window { .. } | Frame::Resume { .. } => 8,
        Frame::Takeover { .. } => 4,
        Frame::TakeoverOk(t) => 7 * 8 + 2 + t.subprotocol.as_ref().map_or(0, String::len),
        Frame::Close { reason, .. } => 2 + reason.len(),
        Frame::Error { message, .. } => 2 + message.len(),
    }
}
