//! This side's stream: numbering, the peer's credit, the replay buffer,
//! and how far the peer has acknowledged it.

use std::collections::VecDeque;

use super::ReplayBudget;
use crate::frame::{ErrorCode, Frame, MAX_FRAME_PAYLOAD, MAX_UNACKED_FRAMES, TakeoverOk};
use crate::message::Chunk;

/// Whether this side may still send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    /// Messages may follow. `under_way`: the TEXT bit of a message begun
    /// and not finished, which its later fragments must repeat.
    Open { under_way: Option<bool> },
    /// This side's CLOSE is numbered: nothing may follow it.
    Closed,
}

/// Where the acknowledged part of the stream ends: its last sequence, the
/// DATA bytes and complete messages through it, and whether it ends
/// inside a message (what a takeover by message count needs).
#[derive(Clone, Copy, Debug, Default)]
struct Acked {
    seq: u64,
    bytes: u64,
    messages: u64,
    mid_message: bool,
}

/// Room for the next DATA frame.
pub(crate) struct Room {
    /// Payload bytes the next frame may carry (credit, replay room, frame
    /// limit).
    pub(crate) bytes: usize,
    /// Whether another frame may be kept for replay at all.
    pub(crate) frame: bool,
    /// Whether the shared budget, not credit or this session's own bounds,
    /// is what limits `bytes`: only then is it worth waiting on the budget.
    pub(crate) by_budget: bool,
}

/// What a takeover replays from: the acknowledged point it starts after,
/// and the credit the new gateway has from there.
pub(super) struct ReplayFrom {
    /// Last sequence counted as delivered.
    pub(super) seq: u64,
    /// DATA bytes through `seq`.
    pub(super) bytes: u64,
    /// The peer's credit limit from now on.
    pub(super) granted: u64,
}

/// What this side sends, from numbering to acknowledgement.
pub(super) struct Outbound {
    /// Sequence of the next frame numbered.
    next_seq: u64,
    /// DATA bytes numbered so far (what credit counts).
    sent_bytes: u64,
    /// Complete messages numbered so far.
    sent_messages: u64,
    /// The credit limit the peer granted: `sent_bytes` may not pass it.
    peer_limit: u64,
    /// Numbered frames the peer has not acknowledged, oldest first: what
    /// a resume replays.
    unacked: VecDeque<Frame>,
    /// DATA bytes in `unacked` (what the replay bounds count).
    unacked_bytes: usize,
    acked: Acked,
    sending: Sending,
    /// Replay memory shared with other sessions, if bounded in total.
    budget: Option<ReplayBudget>,
}

impl Outbound {
    pub(super) fn new(peer_limit: u64, budget: Option<ReplayBudget>) -> Self {
        Self {
            next_seq: 1,
            sent_bytes: 0,
            sent_messages: 0,
            peer_limit,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            acked: Acked::default(),
            sending: Sending::Open { under_way: None },
            budget,
        }
    }

    /// Whether this side's CLOSE is numbered.
    pub(super) fn is_closed(&self) -> bool {
        self.sending == Sending::Closed
    }

    /// The TEXT bit of the message under way, if one is.
    pub(super) fn text_under_way(&self) -> Option<bool> {
        match self.sending {
            Sending::Open { under_way } => under_way,
            Sending::Closed => None,
        }
    }

    /// Whether the peer acknowledged everything numbered.
    pub(super) fn all_acked(&self) -> bool {
        self.unacked.is_empty()
    }

    /// Highest sequence the peer acknowledged.
    pub(super) fn acked_seq(&self) -> u64 {
        self.acked.seq
    }

    /// The frames a re-attachment replays, in order.
    pub(super) fn unacked(&self) -> impl Iterator<Item = &Frame> {
        self.unacked.iter()
    }

    /// Room for the next DATA frame, within credit, the frame limit, this
    /// session's replay bound and the shared budget.
    pub(super) fn room(&self, replay_limit: usize) -> Room {
        let credit = usize::try_from(self.peer_limit.saturating_sub(self.sent_bytes)).unwrap_or(usize::MAX);
        let own_room = replay_limit.saturating_sub(self.unacked_bytes);
        let own = credit.min(own_room).min(MAX_FRAME_PAYLOAD);
        let shared = self.budget.as_ref().map_or(usize::MAX, ReplayBudget::room);
        let frame = self.unacked.len() < MAX_UNACKED_FRAMES;
        Room {
            bytes: own.min(shared),
            frame,
            by_budget: frame && shared < own,
        }
    }

    /// Numbers and keeps one DATA frame; returns the copy to send.
    pub(super) fn push_data(&mut self, session: u64, chunk: Chunk) -> Frame {
        let len = chunk.payload.len();
        let frame = Frame::Data {
            session,
            seq: self.next_seq,
            text: chunk.text,
            fin: chunk.fin,
            payload: chunk.payload,
        };
        self.next_seq += 1;
        self.sent_bytes += len as u64;
        self.unacked_bytes += len;
        if let Some(b) = &self.budget {
            b.take(len);
        }
        self.sending = Sending::Open {
            under_way: (!chunk.fin).then_some(chunk.text),
        };
        self.sent_messages += u64::from(chunk.fin);
        self.keep(frame)
    }

    /// Numbers and keeps this side's CLOSE; returns the copy to send.
    pub(super) fn push_close(&mut self, session: u64, code: u16, reason: String) -> Frame {
        let frame = Frame::Close {
            session,
            seq: self.next_seq,
            code,
            reason,
        };
        self.next_seq += 1;
        self.sending = Sending::Closed;
        self.keep(frame)
    }

    fn keep(&mut self, frame: Frame) -> Frame {
        self.unacked.push_back(frame.clone());
        frame
    }

    /// An ACK from the peer: drops what it has from the replay buffer.
    pub(super) fn on_ack(&mut self, seq: u64) -> Result<(), ErrorCode> {
        if seq >= self.next_seq {
            return Err(ErrorCode::Sequence);
        }
        self.drop_acked(seq);
        Ok(())
    }

    /// A WINDOW from the peer: limits only grow (a stale one is ignored).
    pub(super) fn on_window(&mut self, limit: u64) {
        self.peer_limit = self.peer_limit.max(limit);
    }

    /// Whether the peer, having this stream up to `peer_last`, can be
    /// given the rest: it claims nothing never sent (`SEQUENCE`) and
    /// lacks nothing already dropped (`REPLAY_UNAVAILABLE`).
    pub(super) fn check_resume(&self, peer_last: u64) -> Result<(), ErrorCode> {
        if peer_last >= self.next_seq {
            return Err(ErrorCode::Sequence);
        }
        let oldest = self.unacked.front().map_or(self.next_seq, frame_seq);
        if peer_last + 1 < oldest {
            return Err(ErrorCode::ReplayUnavailable);
        }
        Ok(())
    }

    /// Drops every kept frame through `seq`, which the peer has.
    pub(super) fn drop_acked(&mut self, seq: u64) {
        let mut freed = 0;
        while let Some(front) = self.unacked.front() {
            if frame_seq(front) > seq {
                break;
            }
            let len = data_len(front);
            self.unacked_bytes -= len;
            freed += len;
            self.acked.seq = frame_seq(front);
            self.acked.bytes += len as u64;
            if let Frame::Data { fin, .. } = front {
                self.acked.messages += u64::from(*fin);
                self.acked.mid_message = !*fin;
            }
            self.unacked.pop_front();
        }
        // One give per ACK, not per frame: each may wake waiting senders.
        if let Some(b) = &self.budget {
            b.give(freed);
        }
    }

    /// The last frame of message `messages - 1`: where the replay to a
    /// gateway whose agent received the first `messages` complete
    /// messages starts after. Fails when that message is no longer held
    /// (`REPLAY_UNAVAILABLE`) or was never sent (`SEQUENCE`).
    pub(super) fn takeover_point(&self, messages: u64) -> Result<u64, ErrorCode> {
        if messages > self.sent_messages {
            return Err(ErrorCode::Sequence);
        }
        let acked = &self.acked;
        if messages < acked.messages || (messages == acked.messages && acked.mid_message) {
            return Err(ErrorCode::ReplayUnavailable);
        }
        let mut through = acked.seq;
        let mut counted = acked.messages;
        for frame in &self.unacked {
            if counted == messages {
                break;
            }
            if let Frame::Data { seq, fin, .. } = frame {
                through = *seq;
                counted += u64::from(*fin);
            }
        }
        Ok(through)
    }

    /// Replays to a new gateway from just after `through` (see
    /// [`takeover_point`](Self::takeover_point)), which grants `window`.
    pub(super) fn replay_after(&mut self, through: u64, window: u32) -> ReplayFrom {
        self.drop_acked(through);
        // The new gateway's credit counts from the replay point; what was
        // already numbered past it stays sendable (replay needs no credit).
        let granted = (self.acked.bytes + u64::from(window)).max(self.sent_bytes);
        self.peer_limit = granted;
        ReplayFrom {
            seq: self.acked.seq,
            bytes: self.acked.bytes,
            granted,
        }
    }

    /// Gateway, after a takeover: the stream goes on from where the
    /// upstream has it (the earlier gateway's part counts as sent and
    /// acknowledged).
    pub(super) fn continue_from(&mut self, t: &TakeoverOk) {
        self.next_seq = t.last_seq + 1;
        self.sent_bytes = t.received_bytes;
        self.sent_messages = t.messages;
        self.acked = Acked {
            seq: t.last_seq,
            bytes: t.received_bytes,
            messages: t.messages,
            mid_message: t.partial.is_some(),
        };
        self.sending = Sending::Open {
            under_way: t.partial.map(|p| p.text),
        };
        self.peer_limit = t.limit;
    }

    /// Drops the replay buffer (nothing will be replayed), giving its
    /// bytes back to the shared budget.
    pub(super) fn release(&mut self) {
        self.unacked.clear();
        if let Some(b) = &self.budget {
            b.give(self.unacked_bytes);
        }
        self.unacked_bytes = 0;
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.release();
    }
}

fn frame_seq(frame: &Frame) -> u64 {
    match frame {
        Frame::Data { seq, .. } | Frame::Close { seq, .. } => *seq,
        _ => 0,
    }
}

fn data_len(frame: &Frame) -> usize {
    match frame {
        Frame::Data { payload, .. } => payload.len(),
        _ => 0,
    }
}
