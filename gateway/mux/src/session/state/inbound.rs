//! The peer's stream: admission by sequence, the credit this side grants,
//! and what waits for the application.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::frame::{ErrorCode, MAX_HELD_FRAMES, MAX_UNACKED_FRAMES, PartialMessage, TakeoverOk};
use crate::message::Chunk;

/// Held frames a receiver that acknowledges on arrival acknowledges at
/// once; frames past these wait for the application to take them, so a
/// sender within [`MAX_UNACKED_FRAMES`] stays within [`MAX_HELD_FRAMES`].
const ACK_AHEAD: usize = MAX_HELD_FRAMES - MAX_UNACKED_FRAMES;

/// The peer's CLOSE.
#[derive(Clone, Debug)]
pub(crate) struct PeerClose {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// The application saw it (`recv` ended on it).
    taken: bool,
}

/// Who takes what arrives.
enum Reader {
    /// The application, through `recv`: arrived fragments wait here.
    Application(VecDeque<Chunk>),
    /// Nobody: every handle is gone, so what arrives is acknowledged at
    /// once and dropped.
    Gone,
}

/// What the receiving side of a takeover is told about this stream.
pub(super) struct Received {
    /// Highest sequence received with nothing missing.
    pub(super) last_seq: u64,
    /// DATA bytes received through it.
    pub(super) bytes: u64,
    /// Complete messages received.
    pub(super) messages: u64,
    /// The message under way, if any.
    pub(super) partial: Option<PartialMessage>,
    /// The credit limit granted.
    pub(super) granted: u64,
}

/// What the peer sends, from admission to the application.
pub(super) struct Inbound {
    /// Sequence the next new frame must carry.
    next_seq: u64,
    /// DATA bytes received (what credit counts) and taken by the
    /// application (what regrants count from).
    received_bytes: u64,
    consumed_bytes: u64,
    /// The credit limit granted to the peer.
    granted: u64,
    /// Complete messages received, and the one under way.
    messages: u64,
    under_way: Option<PartialMessage>,
    reader: Reader,
    close: Option<PeerClose>,
}

impl Inbound {
    pub(super) fn new(window: u32) -> Self {
        Self {
            next_seq: 1,
            received_bytes: 0,
            consumed_bytes: 0,
            granted: u64::from(window),
            messages: 0,
            under_way: None,
            reader: Reader::Application(VecDeque::new()),
            close: None,
        }
    }

    /// Highest sequence received with nothing missing.
    pub(super) fn ack_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The credit limit granted to the peer.
    pub(super) fn granted(&self) -> u64 {
        self.granted
    }

    /// The credit not used yet.
    pub(super) fn credit_left(&self) -> u64 {
        self.granted - self.received_bytes
    }

    /// The peer's CLOSE, if it arrived.
    pub(super) fn close(&self) -> Option<&PeerClose> {
        self.close.as_ref()
    }

    /// Fragments waiting for the application.
    fn held(&self) -> usize {
        match &self.reader {
            Reader::Application(inbox) => inbox.len(),
            Reader::Gone => 0,
        }
    }

    /// Held frames not acknowledged on arrival (beyond [`ACK_AHEAD`]).
    pub(super) fn held_back(&self) -> usize {
        self.held().saturating_sub(ACK_AHEAD)
    }

    /// What to acknowledge: everything received but the held frames past
    /// [`ACK_AHEAD`], or with `ack_on_take` what the application took
    /// (the peer's CLOSE once `recv` ended on it), until the handles are
    /// gone. Never decreases: a frame taken frees one held back.
    pub(super) fn ack_point(&self, ack_on_take: bool) -> u64 {
        if matches!(self.reader, Reader::Gone) {
            return self.ack_seq();
        }
        let waiting = if ack_on_take {
            let close_waiting = self.close.as_ref().is_some_and(|c| !c.taken);
            self.held() as u64 + u64::from(close_waiting)
        } else {
            self.held_back() as u64
        };
        self.ack_seq().saturating_sub(waiting)
    }

    /// Whether the DATA frame that just arrived is acknowledged now.
    pub(super) fn acks_on_arrival(&self, ack_on_take: bool) -> bool {
        matches!(self.reader, Reader::Gone) || (!ack_on_take && self.held_back() == 0)
    }

    /// Whether a frame with this sequence is new (true), a duplicate
    /// (false) or skips ahead (error).
    fn admit(&self, seq: u64) -> Result<bool, ErrorCode> {
        if seq < self.next_seq {
            return Ok(false);
        }
        if seq > self.next_seq {
            return Err(ErrorCode::Sequence);
        }
        if self.close.is_some() {
            return Err(ErrorCode::InvalidState);
        }
        Ok(true)
    }

    /// A DATA frame from the peer. Ok(false): duplicate, dropped.
    ///
    /// Credit bounds the inbox in bytes; [`MAX_HELD_FRAMES`] bounds it in
    /// frames (an empty DATA frame costs no credit but a slot). A peer
    /// past either fails the session with `FLOW_CONTROL`.
    pub(super) fn on_data(&mut self, seq: u64, chunk: Chunk) -> Result<bool, ErrorCode> {
        if !self.admit(seq)? {
            return Ok(false);
        }
        if self.under_way.is_some_and(|p| p.text != chunk.text) {
            return Err(ErrorCode::InvalidState);
        }
        let len = chunk.payload.len() as u64;
        if self.received_bytes + len > self.granted {
            return Err(ErrorCode::FlowControl);
        }
        if matches!(&self.reader, Reader::Application(inbox) if inbox.len() >= MAX_HELD_FRAMES) {
            return Err(ErrorCode::FlowControl);
        }
        self.received_bytes += len;
        self.next_seq += 1;
        if chunk.fin {
            self.messages += 1;
            self.under_way = None;
        } else {
            let so_far = self.under_way.map_or(0, |p| p.bytes);
            self.under_way = Some(PartialMessage {
                text: chunk.text,
                bytes: so_far + len,
            });
        }
        if let Reader::Application(inbox) = &mut self.reader {
            inbox.push_back(Chunk {
                payload: own_copy(&chunk.payload),
                ..chunk
            });
        }
        Ok(true)
    }

    /// A CLOSE frame from the peer. Ok(false): duplicate, dropped.
    pub(super) fn on_close(&mut self, seq: u64, code: u16, reason: String) -> Result<bool, ErrorCode> {
        if !self.admit(seq)? {
            return Ok(false);
        }
        self.next_seq += 1;
        self.close = Some(PeerClose {
            code,
            reason,
            taken: false,
        });
        Ok(true)
    }

    /// The next fragment for the application.
    pub(super) fn take(&mut self) -> Option<Chunk> {
        let Reader::Application(inbox) = &mut self.reader else {
            return None;
        };
        let chunk = inbox.pop_front()?;
        self.consumed_bytes += chunk.payload.len() as u64;
        Some(chunk)
    }

    /// Grants the peer more credit once half the window has been consumed
    /// (so WINDOW frames stay rare); returns the new limit if it grew.
    pub(super) fn regrant(&mut self, window: u32) -> Option<u64> {
        let window = u64::from(window);
        if self.granted - self.consumed_bytes > window / 2 {
            return None;
        }
        self.granted = self.consumed_bytes + window;
        Some(self.granted)
    }

    /// Whether the application has everything: the peer closed, and all
    /// it sent before was taken.
    pub(super) fn is_done(&self) -> bool {
        self.held() == 0 && self.close.is_some()
    }

    /// `recv` ended on the peer's CLOSE; returns whether it had not yet.
    pub(super) fn take_close(&mut self) -> bool {
        match &mut self.close {
            Some(close) if !close.taken => {
                close.taken = true;
                true
            }
            _ => false,
        }
    }

    /// Drops what waits for the application (the session failed).
    pub(super) fn clear(&mut self) {
        if let Reader::Application(inbox) = &mut self.reader {
            inbox.clear();
        }
    }

    /// Every handle is gone: what waits is dropped, and what arrives from
    /// now on is acknowledged at once.
    pub(super) fn reader_gone(&mut self) {
        self.reader = Reader::Gone;
    }

    /// Where this stream stands, for the TAKEOVER_OK answering a takeover.
    pub(super) fn received(&self) -> Received {
        Received {
            last_seq: self.ack_seq(),
            bytes: self.received_bytes,
            messages: self.messages,
            partial: self.under_way,
            granted: self.granted,
        }
    }

    /// Gateway, after a takeover: the stream goes on from the upstream's
    /// replay point, with the credit it has. Nothing may have arrived
    /// before the answer; if it did, it goes.
    pub(super) fn continue_from(&mut self, t: &TakeoverOk) {
        self.clear();
        self.under_way = None;
        self.close = None;
        self.next_seq = t.replay_seq + 1;
        self.received_bytes = t.replay_bytes;
        self.consumed_bytes = t.replay_bytes;
        self.granted = t.granted;
    }
}

/// The bytes of a payload the inbox keeps, in an allocation of their own.
///
/// A decoded DATA payload is a slice of its WebSocket message, and the
/// message a slice of the transport's read buffer (fastwebsockets splits
/// each frame off a buffer that grows to the largest frame read, up to
/// 4 MiB). Kept as it is, a one-byte chunk waiting for a slow application
/// would pin that whole buffer — and `Bytes` does not tell how large the
/// allocation behind a slice is, so "small relative to its buffer" cannot
/// be decided here. Copying costs one `memcpy` of the payload, next to a
/// system call per write on the way out; a retained chunk then holds
/// exactly its own bytes.
fn own_copy(payload: &Bytes) -> Bytes {
    if payload.is_empty() {
        return Bytes::new();
    }
    Bytes::copy_from_slice(payload)
}
