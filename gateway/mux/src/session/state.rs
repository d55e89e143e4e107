//! The state of one session: both directions of its stream, credit,
//! replay buffer and attachment. Pure bookkeeping under the session lock;
//! frames it produces go to the attached connection's writer queue, which
//! never blocks, so the lock is never held across I/O.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, futures::Notified, oneshot};

use crate::conn::ConnShared;
use crate::frame::{
    ErrorCode, Frame, MAX_FRAME_PAYLOAD, MAX_HELD_FRAMES, MAX_UNACKED_FRAMES, PartialMessage, TakeoverOk,
};
use crate::message::{Chunk, SessionEnd, SessionError};

/// Held frames a receiver that acknowledges on arrival acknowledges at
/// once; frames past these wait for the application to take them, so a
/// sender within [`MAX_UNACKED_FRAMES`] stays within [`MAX_HELD_FRAMES`].
const ACK_AHEAD: usize = MAX_HELD_FRAMES - MAX_UNACKED_FRAMES;

/// A bound on the unacknowledged bytes of many sessions together: the
/// total replay memory of one side (in the gateway, of one endpoint). A
/// sender with no budget left waits for ACKs on any session sharing it,
/// exactly as it waits at its own replay bound.
///
/// Room is read under the sending session's lock and taken when its frame
/// is numbered, so sessions sending at the same instant may overshoot the
/// bound by at most one frame each ([`MAX_FRAME_PAYLOAD`]). Cheap to
/// clone; every clone is the same budget.
#[derive(Clone)]
pub struct ReplayBudget(Arc<BudgetInner>);

struct BudgetInner {
    limit: usize,
    used: AtomicUsize,
    /// Senders waiting for room: freeing bytes wakes them only when there
    /// are any, so ACKs do not touch a shared lock in steady state.
    waiting: AtomicUsize,
    freed: Notify,
}

impl ReplayBudget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(BudgetInner {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }))
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Unacknowledged bytes kept now by the sessions sharing it.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    fn room(&self) -> usize {
        // SeqCst pairs with `give`: a sender registers as waiting, then
        // reads `used`; a giver lowers `used`, then reads `waiting`. With
        // both loads SeqCst one of them sees the other's write, so either
        // the sender sees the room or the giver wakes it.
        self.0.limit.saturating_sub(self.0.used.load(Ordering::SeqCst))
    }

    fn take(&self, n: usize) {
        self.0.used.fetch_add(n, Ordering::Relaxed);
    }

    fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.0.used.fetch_sub(n, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.freed.notify_waiters();
        }
    }

    /// Completes when bytes are freed after this call (while the caller
    /// is [`register`](Self::register)ed).
    pub(crate) fn freed(&self) -> Notified<'_> {
        self.0.freed.notified()
    }

    /// Marks a sender as waiting for room until the guard drops.
    pub(crate) fn register(&self) -> Waiting<'_> {
        self.0.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }
}

impl std::fmt::Debug for ReplayBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .finish()
    }
}

/// A sender waiting for budget (see [`ReplayBudget::register`]).
pub(crate) struct Waiting<'a>(&'a ReplayBudget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Per-session settings, fixed when the session starts.
#[derive(Clone, Debug)]
pub(crate) struct SessionParams {
    /// Credit this side grants the peer (bytes of DATA beyond what it has
    /// consumed).
    pub(crate) window: u32,
    /// Most unacknowledged payload bytes this side keeps for replay; a
    /// sender at the bound waits for ACKs.
    pub(crate) replay_limit: usize,
    /// Largest message `recv` reassembles.
    pub(crate) max_message: usize,
    /// Replay memory shared with other sessions, if bounded in total.
    pub(crate) budget: Option<ReplayBudget>,
    /// Acknowledge DATA when the application takes it, not on arrival
    /// (the gateway: what its agent was not given can still be replayed
    /// to a gateway instance that takes the session over).
    pub(crate) ack_on_take: bool,
}

/// What a client-side open or resume waits for.
pub(crate) type Waiter = oneshot::Sender<Result<(), SessionEnd>>;

/// How a (re-)attachment is answered on the new connection before replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Nothing (the client, on the upstream's RESUME answer).
    None,
    /// OPEN_OK (the upstream, on a repeated OPEN).
    OpenOk,
    /// RESUME (the upstream, on the gateway's RESUME).
    Resume,
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

/// Both directions of one session.
pub(crate) struct State {
    pub(crate) id: u64,
    pub(crate) params: SessionParams,
    pub(crate) subprotocol: Option<String>,
    // Outbound: what this side sends.
    send_next: u64,
    sent_bytes: u64,
    peer_limit: u64,
    unacked: VecDeque<Frame>,
    unacked_bytes: usize,
    pub(crate) close_sent: bool,
    pub(crate) out_text: Option<bool>,
    /// Complete messages numbered so far.
    sent_messages: u64,
    /// Where the acknowledged part of the stream ends: its last sequence,
    /// DATA bytes and complete messages, and whether it ends mid-message
    /// (what a takeover by message count needs).
    acked_seq: u64,
    acked_bytes: u64,
    acked_messages: u64,
    acked_mid: bool,
    // Inbound: what the peer sends.
    recv_next: u64,
    received_bytes: u64,
    consumed_bytes: u64,
    granted: u64,
    inbox: VecDeque<Chunk>,
    in_text: Option<bool>,
    /// Complete messages received, and bytes of the one under way.
    recv_messages: u64,
    recv_partial: u64,
    pub(crate) peer_close: Option<(u16, String)>,
    // Life: failure, attachment, waiters.
    pub(crate) failure: Option<SessionError>,
    pub(crate) link: Option<Arc<ConnShared>>,
    /// Connection a RESUME was sent on and not yet answered (client).
    pub(crate) pending: Option<Arc<ConnShared>>,
    pub(crate) waiter: Option<Waiter>,
    /// Bumped on every attach and detach, so a grace timer set at one
    /// detach does not expire a session re-attached since.
    pub(crate) epoch: u64,
    /// Forgotten by the connection and registry (finished or failed).
    pub(crate) removed: bool,
    /// Gateway, after a takeover: the agent messages the upstream has
    /// (complete, and the partial one's TEXT bit and bytes), for the caller.
    pub(crate) adopted: Option<(u64, Option<PartialMessage>)>,
    /// Left for another gateway instance to take over: nothing more is
    /// sent, not even a CLOSE when the handles go.
    pub(crate) parked: bool,
    /// Every handle is gone: nothing will be taken any more, so what
    /// arrives is acknowledged at once (and dropped).
    pub(crate) handles_gone: bool,
    /// The application saw the peer's CLOSE (`recv` ended on it).
    close_taken: bool,
    /// Client: a TAKEOVER awaits its answer.
    pub(crate) takeover_pending: bool,
}

impl State {
    pub(crate) fn new(id: u64, params: SessionParams, peer_limit: u64) -> Self {
        let window = params.window;
        Self {
            id,
            params,
            subprotocol: None,
            send_next: 1,
            sent_bytes: 0,
            peer_limit,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            close_sent: false,
            out_text: None,
            sent_messages: 0,
            acked_seq: 0,
            acked_bytes: 0,
            acked_messages: 0,
            acked_mid: false,
            recv_next: 1,
            received_bytes: 0,
            consumed_bytes: 0,
            granted: u64::from(window),
            inbox: VecDeque::new(),
            in_text: None,
            recv_messages: 0,
            recv_partial: 0,
            peer_close: None,
            failure: None,
            link: None,
            pending: None,
            waiter: None,
            epoch: 0,
            removed: false,
            adopted: None,
            parked: false,
            handles_gone: false,
            close_taken: false,
            takeover_pending: false,
        }
    }

    /// Sends `frame` on the attached connection; detached, it is dropped
    /// (DATA and CLOSE stay in the replay buffer, the rest is restated by
    /// RESUME).
    pub(crate) fn emit(&self, frame: Frame) {
        if let Some(link) = &self.link {
            link.send(frame);
        }
    }

    /// Highest peer sequence received with nothing missing.
    pub(crate) fn ack_seq(&self) -> u64 {
        self.recv_next - 1
    }

    /// What to acknowledge now: everything received but the held frames
    /// past [`ACK_AHEAD`], or with `ack_on_take` what the application
    /// took (the peer's CLOSE once `recv` ended on it), until the handles
    /// are gone. Never decreases: a frame taken frees one held back.
    pub(crate) fn ack_point(&self) -> u64 {
        if self.handles_gone {
            return self.ack_seq();
        }
        let waiting = if self.params.ack_on_take {
            let close_waiting = self.peer_close.is_some() && !self.close_taken;
            self.inbox.len() as u64 + u64::from(close_waiting)
        } else {
            self.held_back() as u64
        };
        self.ack_seq().saturating_sub(waiting)
    }

    /// Held frames not acknowledged on arrival (beyond [`ACK_AHEAD`]).
    fn held_back(&self) -> usize {
        self.inbox.len().saturating_sub(ACK_AHEAD)
    }

    /// Whether the DATA frame that just arrived is acknowledged now.
    pub(crate) fn acks_on_arrival(&self) -> bool {
        self.handles_gone || (!self.params.ack_on_take && self.held_back() == 0)
    }

    /// `recv` ended: if on the peer's CLOSE, it now counts as taken.
    pub(crate) fn take_close(&mut self) {
        if self.peer_close.is_some() && !self.close_taken && self.failure.is_none() {
            self.close_taken = true;
            if self.params.ack_on_take
                && let Some(link) = &self.link
            {
                link.ack([(self.id, self.ack_point())]);
            }
        }
    }

    /// Every handle is gone: nothing will take what is waiting, so it is
    /// dropped and acknowledged (the peer can finish the session).
    pub(crate) fn drop_handles(&mut self) {
        // Before the inbox goes: it says whether anything was held back.
        self.ack_all();
        self.handles_gone = true;
        self.inbox.clear();
    }

    /// Acknowledges everything received, if acknowledging on take (or
    /// past [`ACK_AHEAD`]) held some of it back.
    pub(crate) fn ack_all(&self) {
        if (self.params.ack_on_take || self.held_back() > 0)
            && self.failure.is_none()
            && let Some(link) = &self.link
        {
            link.ack([(self.id, self.ack_seq())]);
        }
    }

    /// Highest sequence of this side's stream the peer acknowledged.
    pub(crate) fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// Current credit limit granted to the peer.
    pub(crate) fn granted(&self) -> u64 {
        self.granted
    }

    /// Whether a frame with this sequence is new (true), a duplicate
    /// (false) or skips ahead (error).
    fn admit(&self, seq: u64) -> Result<bool, ErrorCode> {
        if seq < self.recv_next {
            return Ok(false);
        }
        if seq > self.recv_next {
            return Err(ErrorCode::Sequence);
        }
        if self.peer_close.is_some() {
            return Err(ErrorCode::InvalidState);
        }
        Ok(true)
    }

    /// A DATA frame from the peer. Ok(false): duplicate, dropped.
    ///
    /// Credit bounds the inbox in bytes; [`MAX_HELD_FRAMES`] bounds it in
    /// frames (an empty DATA frame costs no credit but a slot). A peer
    /// past either fails the session with `FLOW_CONTROL`.
    pub(crate) fn on_data(&mut self, seq: u64, chunk: Chunk) -> Result<bool, ErrorCode> {
        if !self.admit(seq)? {
            return Ok(false);
        }
        if self.in_text.is_some_and(|t| t != chunk.text) {
            return Err(ErrorCode::InvalidState);
        }
        let len = chunk.payload.len() as u64;
        if self.received_bytes + len > self.granted {
            return Err(ErrorCode::FlowControl);
        }
        if !self.handles_gone && self.inbox.len() >= MAX_HELD_FRAMES {
            return Err(ErrorCode::FlowControl);
        }
        self.received_bytes += len;
        self.recv_next += 1;
        self.in_text = (!chunk.fin).then_some(chunk.text);
        if chunk.fin {
            self.recv_messages += 1;
            self.recv_partial = 0;
        } else {
            self.recv_partial += len;
        }
        if !self.handles_gone {
            self.inbox.push_back(Chunk {
                payload: own_copy(&chunk.payload),
                ..chunk
            });
        }
        Ok(true)
    }

    /// A CLOSE frame from the peer. Ok(false): duplicate, dropped.
    pub(crate) fn on_close(&mut self, seq: u64, code: u16, reason: String) -> Result<bool, ErrorCode> {
        if !self.admit(seq)? {
            return Ok(false);
        }
        self.recv_next += 1;
        self.peer_close = Some((code, reason));
        Ok(true)
    }

    /// An ACK from the peer: drops what it has from the replay buffer.
    pub(crate) fn on_ack(&mut self, seq: u64) -> Result<(), ErrorCode> {
        if seq >= self.send_next {
            return Err(ErrorCode::Sequence);
        }
        self.drop_acked(seq);
        Ok(())
    }

    /// A WINDOW from the peer: limits only grow (a stale one is ignored).
    pub(crate) fn on_window(&mut self, limit: u64) {
        self.peer_limit = self.peer_limit.max(limit);
    }

    fn drop_acked(&mut self, seq: u64) {
        let mut freed = 0;
        while let Some(front) = self.unacked.front() {
            if frame_seq(front) > seq {
                break;
            }
            let len = data_len(front);
            self.unacked_bytes -= len;
            freed += len;
            self.acked_seq = frame_seq(front);
            self.acked_bytes += len as u64;
            if let Frame::Data { fin, .. } = front {
                self.acked_messages += u64::from(*fin);
                self.acked_mid = !*fin;
            }
            self.unacked.pop_front();
        }
        // One give per ACK, not per frame: each may wake waiting senders.
        if let Some(b) = &self.params.budget {
            b.give(freed);
        }
    }

    /// The next received fragment, granting the peer more credit once half
    /// the window has been consumed (so WINDOW frames stay rare).
    pub(crate) fn take_chunk(&mut self) -> Option<Chunk> {
        // Taking a frame held back past ACK_AHEAD acknowledges one.
        let releases = self.params.ack_on_take || self.held_back() > 0;
        let chunk = self.inbox.pop_front()?;
        self.consumed_bytes += chunk.payload.len() as u64;
        if releases && let Some(link) = &self.link {
            link.ack_soon([(self.id, self.ack_point())]);
        }
        let window = u64::from(self.params.window);
        if self.granted - self.consumed_bytes <= window / 2 {
            self.granted = self.consumed_bytes + window;
            self.emit(Frame::Window {
                session: self.id,
                limit: self.granted,
            });
        }
        Some(chunk)
    }

    /// Whether `recv` has nothing more to give: the peer closed (and all it
    /// sent before was taken) or the session failed.
    pub(crate) fn recv_done(&self) -> bool {
        self.failure.is_some() || (self.inbox.is_empty() && self.peer_close.is_some())
    }

    /// Room for sending, or why nothing may be sent any more.
    pub(crate) fn room(&self) -> Result<Room, SessionError> {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        if self.close_sent {
            return Err(SessionError::Closed);
        }
        if self.parked {
            return Err(SessionError::Aborted(
                "session left for another gateway instance".into(),
            ));
        }
        let credit = usize::try_from(self.peer_limit.saturating_sub(self.sent_bytes)).unwrap_or(usize::MAX);
        let own = credit.min(self.own_room()).min(MAX_FRAME_PAYLOAD);
        let shared = self.params.budget.as_ref().map_or(usize::MAX, ReplayBudget::room);
        let frame = self.unacked.len() < MAX_UNACKED_FRAMES;
        Ok(Room {
            bytes: own.min(shared),
            frame,
            by_budget: frame && shared < own,
        })
    }

    /// Replay room by this session's own bound alone.
    fn own_room(&self) -> usize {
        self.params.replay_limit.saturating_sub(self.unacked_bytes)
    }

    /// Numbers, keeps and sends one DATA frame; the caller checked
    /// [`State::room`].
    pub(crate) fn push_data(&mut self, text: bool, fin: bool, payload: Bytes) {
        let len = payload.len();
        let frame = Frame::Data {
            session: self.id,
            seq: self.send_next,
            text,
            fin,
            payload,
        };
        self.send_next += 1;
        self.sent_bytes += len as u64;
        self.unacked_bytes += len;
        if let Some(b) = &self.params.budget {
            b.take(len);
        }
        self.out_text = (!fin).then_some(text);
        self.sent_messages += u64::from(fin);
        self.keep_and_emit(frame);
    }

    /// Numbers, keeps and sends this side's CLOSE.
    pub(crate) fn push_close(&mut self, code: u16, reason: String) {
        let frame = Frame::Close {
            session: self.id,
            seq: self.send_next,
            code,
            reason,
        };
        self.send_next += 1;
        self.close_sent = true;
        self.keep_and_emit(frame);
    }

    fn keep_and_emit(&mut self, frame: Frame) {
        self.emit(frame.clone());
        self.unacked.push_back(frame);
    }

    /// Attaches to `link` after the peer said it has our stream up to
    /// `peer_last` and grants `peer_limit`: drops what it has, answers as
    /// the role requires, then replays the rest in order.
    pub(crate) fn attach(
        &mut self,
        link: Arc<ConnShared>,
        peer_last: u64,
        peer_limit: u64,
        answer: Answer,
    ) -> Result<(), ErrorCode> {
        if peer_last >= self.send_next {
            return Err(ErrorCode::Sequence);
        }
        let oldest = self.unacked.front().map_or(self.send_next, frame_seq);
        if peer_last + 1 < oldest {
            return Err(ErrorCode::ReplayUnavailable);
        }
        self.drop_acked(peer_last);
        self.on_window(peer_limit);
        if let Some(old) = self.link.take().filter(|old| old.id != link.id) {
            old.forget(self.id);
        }
        self.link = Some(link);
        self.pending = None;
        self.epoch += 1;
        self.emit_answer(answer);
        for frame in &self.unacked {
            self.emit(frame.clone());
        }
        if answer == Answer::None {
            // Credit granted while the RESUME was pending went nowhere
            // (no connection): restate the limit (WINDOW is idempotent).
            self.emit(Frame::Window {
                session: self.id,
                limit: self.granted,
            });
        }
        Ok(())
    }

    /// Upstream: another gateway instance takes the session over on
    /// `link`, its agent having received the first `messages` complete
    /// messages. Those count as acknowledged; the answer says where both
    /// streams stand, and the rest is replayed from the first message the
    /// agent lacks. Fails when that message is no longer held
    /// (`REPLAY_UNAVAILABLE`) or was never sent (`SEQUENCE`).
    pub(crate) fn take_over(&mut self, link: Arc<ConnShared>, messages: u64, window: u32) -> Result<(), ErrorCode> {
        // The gateway's direction is over: there is nothing to carry on.
        if self.peer_close.is_some() {
            return Err(ErrorCode::UnknownSession);
        }
        if messages > self.sent_messages {
            return Err(ErrorCode::Sequence);
        }
        if messages < self.acked_messages || (messages == self.acked_messages && self.acked_mid) {
            return Err(ErrorCode::ReplayUnavailable);
        }
        // The last frame of message `messages - 1`, if still held.
        let mut through = self.acked_seq;
        let mut counted = self.acked_messages;
        for frame in &self.unacked {
            if counted == messages {
                break;
            }
            if let Frame::Data { seq, fin, .. } = frame {
                through = *seq;
                counted += u64::from(*fin);
            }
        }
        self.drop_acked(through);
        // The new gateway's credit counts from the replay point; what was
        // already numbered past it stays sendable (replay needs no credit).
        let granted = (self.acked_bytes + u64::from(window)).max(self.sent_bytes);
        self.peer_limit = granted;
        if let Some(old) = self.link.take().filter(|old| old.id != link.id) {
            // A gateway still holding it there (its agent's connection
            // half-open, or parked) must let it go, not resume it later.
            old.send(crate::session::shared::error_frame(self.id, ErrorCode::UnknownSession));
            old.forget(self.id);
        }
        self.link = Some(link);
        self.pending = None;
        self.epoch += 1;
        self.emit(Frame::TakeoverOk(Box::new(TakeoverOk {
            session: self.id,
            last_seq: self.ack_seq(),
            received_bytes: self.received_bytes,
            messages: self.recv_messages,
            partial: self.in_text.map(|text| PartialMessage {
                text,
                bytes: self.recv_partial,
            }),
            limit: self.granted,
            replay_seq: self.acked_seq,
            replay_bytes: self.acked_bytes,
            granted,
            subprotocol: self.subprotocol.clone(),
        })));
        for frame in &self.unacked {
            self.emit(frame.clone());
        }
        Ok(())
    }

    /// Gateway: takes on a session another instance carried, from the
    /// upstream's TAKEOVER_OK (see [`State::take_over`]).
    pub(crate) fn adopt(&mut self, link: Arc<ConnShared>, t: &TakeoverOk) -> Result<(), ErrorCode> {
        let partial = t.partial.map_or(0, |p| p.bytes);
        let sane = t.last_seq < u64::MAX
            && t.replay_seq < u64::MAX
            && t.replay_bytes <= t.granted
            && partial <= t.received_bytes
            && t.messages <= t.last_seq;
        if !sane || !self.takeover_pending {
            return Err(if sane {
                ErrorCode::InvalidState
            } else {
                ErrorCode::Protocol
            });
        }
        self.takeover_pending = false;
        // Nothing may have arrived before the answer; if it did, it goes.
        self.inbox.clear();
        self.in_text = None;
        self.peer_close = None;
        self.recv_next = t.replay_seq + 1;
        self.received_bytes = t.replay_bytes;
        self.consumed_bytes = t.replay_bytes;
        self.granted = t.granted;
        self.send_next = t.last_seq + 1;
        self.sent_bytes = t.received_bytes;
        self.sent_messages = t.messages;
        self.acked_seq = t.last_seq;
        self.acked_bytes = t.received_bytes;
        self.acked_messages = t.messages;
        self.acked_mid = t.partial.is_some();
        self.out_text = t.partial.map(|p| p.text);
        self.peer_limit = t.limit;
        self.subprotocol.clone_from(&t.subprotocol);
        self.adopted = Some((t.messages, t.partial));
        self.link = Some(link);
        self.pending = None;
        self.epoch += 1;
        Ok(())
    }

    fn emit_answer(&self, answer: Answer) {
        let frame = match answer {
            Answer::None => return,
            Answer::OpenOk => Frame::OpenOk {
                session: self.id,
                window: u32::try_from(self.granted - self.received_bytes).unwrap_or(u32::MAX),
                subprotocol: self.subprotocol.clone(),
            },
            // What it acknowledges, not all it received: the peer then
            // replays the held-back frames (dropped here as duplicates)
            // and stays within the frame bound.
            Answer::Resume => Frame::Resume {
                session: self.id,
                last_seq: self.ack_point(),
                limit: self.granted,
            },
        };
        self.emit(frame);
    }

    /// Detaches from connection `conn_id` if attached (or resuming) there;
    /// returns the epoch a grace timer should check.
    pub(crate) fn detach(&mut self, conn_id: u64) -> Option<u64> {
        if self.link.as_ref().is_some_and(|l| l.id == conn_id) {
            self.link = None;
        } else if self.pending.as_ref().is_some_and(|p| p.id == conn_id) {
            self.pending = None;
        } else {
            return None;
        }
        // An open or resume in flight on the dead connection fails.
        self.waiter = None;
        self.epoch += 1;
        Some(self.epoch)
    }

    /// Ends the session with `error` (the first failure wins).
    pub(crate) fn fail(&mut self, error: SessionError) {
        if self.failure.is_none() {
            if let Some(w) = self.waiter.take() {
                let _ = w.send(Err(SessionEnd::Failed(error.clone())));
            }
            self.failure = Some(error);
            self.inbox.clear();
            // A failed session is never replayed: its buffer goes now,
            // and with it its share of the total budget.
            self.release_unacked();
        }
    }

    /// Both directions closed and this side's CLOSE acknowledged: nothing
    /// more will travel, the session can be forgotten.
    pub(crate) fn finished(&self) -> bool {
        self.close_sent && self.unacked.is_empty() && self.peer_close.is_some()
    }

    /// The peer forgot a session whose CLOSEs were both exchanged: the
    /// only thing it never confirmed is our CLOSE, which it evidently had.
    pub(crate) fn complete_without_ack(&mut self) -> bool {
        if self.close_sent && self.peer_close.is_some() {
            self.release_unacked();
            return true;
        }
        false
    }
}

impl State {
    fn release_unacked(&mut self) {
        self.unacked.clear();
        if let Some(b) = &self.params.budget {
            b.give(self.unacked_bytes);
        }
        self.unacked_bytes = 0;
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.release_unacked();
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
