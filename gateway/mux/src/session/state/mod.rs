//! The state of one session: where it is in its life ([`phase`]) and both
//! directions of its stream (`outbound`: numbering, credit, replay
//! buffer; `inbound`: admission, grants, what waits for the application).
//! Pure bookkeeping under the session lock; frames it produces go to the
//! attached connection's writer queue, which never blocks, so the lock is
//! never held across I/O.
//!
//! The streams and the phase are independent: either side may close its
//! stream whatever connection carries the session, and a session keeps
//! both streams through detachment and resume. They meet in a few places,
//! all here: frames go out only on the connection the phase names, a
//! failed or parked session sends nothing more, and a session is over
//! once both CLOSEs are through ([`State::finished`]).

mod attach;
mod budget;
mod inbound;
mod outbound;
pub(crate) mod phase;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;

pub(crate) use attach::{ResumePoint, TakeoverAsk};
pub use budget::ReplayBudget;
pub(crate) use outbound::Room;
pub(crate) use phase::{Detachment, Phase, TakeoverWaiter, Waiter};

use crate::conn::ConnShared;
use crate::frame::{ErrorCode, Frame};
use crate::message::{Chunk, SessionEnd, SessionError};
use inbound::Inbound;
use outbound::Outbound;

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

/// Both directions of one session, and its phase.
pub(crate) struct State {
    pub(crate) id: u64,
    pub(crate) params: SessionParams,
    pub(crate) subprotocol: Option<String>,
    out: Outbound,
    inbound: Inbound,
    phase: Phase,
}

impl State {
    /// A session in `phase`, allowed to send `peer_limit` bytes so far.
    pub(crate) fn new(id: u64, params: SessionParams, peer_limit: u64, phase: Phase) -> Self {
        Self {
            id,
            out: Outbound::new(peer_limit, params.budget.clone()),
            inbound: Inbound::new(params.window),
            params,
            subprotocol: None,
            phase,
        }
    }

    /// Where the session is in its life.
    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Sends `frame` on the attached connection; detached, it is dropped
    /// (DATA and CLOSE stay in the replay buffer, the rest is restated by
    /// RESUME).
    pub(crate) fn emit(&self, frame: Frame) {
        if let Some(link) = self.phase.link() {
            link.send(frame);
        }
    }

    /// Highest peer sequence received with nothing missing.
    pub(crate) fn ack_seq(&self) -> u64 {
        self.inbound.ack_seq()
    }

    /// What to acknowledge now (see `Inbound::ack_point`).
    pub(crate) fn ack_point(&self) -> u64 {
        self.inbound.ack_point(self.params.ack_on_take)
    }

    /// Whether the DATA frame that just arrived is acknowledged now.
    pub(crate) fn acks_on_arrival(&self) -> bool {
        self.inbound.acks_on_arrival(self.params.ack_on_take)
    }

    /// `recv` ended: if on the peer's CLOSE, it now counts as taken.
    pub(crate) fn take_close(&mut self) {
        if self.phase.failure().is_none()
            && self.inbound.take_close()
            && self.params.ack_on_take
            && let Some(link) = self.phase.link()
        {
            link.ack([(self.id, self.ack_point())]);
        }
    }

    /// Every handle is gone: nothing will take what is waiting, so it is
    /// dropped and acknowledged (the peer can finish the session).
    pub(crate) fn drop_handles(&mut self) {
        // Before the inbox goes: it says whether anything was held back.
        self.ack_all();
        self.inbound.reader_gone();
    }

    /// Acknowledges everything received, if acknowledging on take (or
    /// past the frames acknowledged on arrival) held some of it back.
    pub(crate) fn ack_all(&self) {
        if (self.params.ack_on_take || self.inbound.held_back() > 0)
            && self.phase.failure().is_none()
            && let Some(link) = self.phase.link()
        {
            link.ack([(self.id, self.ack_seq())]);
        }
    }

    /// Highest sequence of this side's stream the peer acknowledged.
    pub(crate) fn acked_seq(&self) -> u64 {
        self.out.acked_seq()
    }

    /// Current credit limit granted to the peer.
    pub(crate) fn granted(&self) -> u64 {
        self.inbound.granted()
    }

    /// A DATA frame from the peer. Ok(false): duplicate, dropped.
    pub(crate) fn on_data(&mut self, seq: u64, chunk: Chunk) -> Result<bool, ErrorCode> {
        self.inbound.on_data(seq, chunk)
    }

    /// A CLOSE frame from the peer. Ok(false): duplicate, dropped.
    pub(crate) fn on_close(&mut self, seq: u64, code: u16, reason: String) -> Result<bool, ErrorCode> {
        self.inbound.on_close(seq, code, reason)
    }

    /// An ACK from the peer: drops what it has from the replay buffer.
    pub(crate) fn on_ack(&mut self, seq: u64) -> Result<(), ErrorCode> {
        self.out.on_ack(seq)
    }

    /// A WINDOW from the peer: limits only grow (a stale one is ignored).
    pub(crate) fn on_window(&mut self, limit: u64) {
        self.out.on_window(limit);
    }

    /// The next received fragment; taking it may acknowledge it and grant
    /// the peer more credit.
    pub(crate) fn take_chunk(&mut self) -> Option<Chunk> {
        // Taking a frame held back past the frames acknowledged on
        // arrival acknowledges one.
        let releases = self.params.ack_on_take || self.inbound.held_back() > 0;
        let chunk = self.inbound.take()?;
        if releases && let Some(link) = self.phase.link() {
            link.ack_soon([(self.id, self.ack_point())]);
        }
        if let Some(limit) = self.inbound.regrant(self.params.window) {
            self.emit(Frame::Window {
                session: self.id,
                limit,
            });
        }
        Some(chunk)
    }

    /// Whether `recv` has nothing more to give: the peer closed (and all it
    /// sent before was taken) or the session failed.
    pub(crate) fn recv_done(&self) -> bool {
        self.phase.failure().is_some() || self.inbound.is_done()
    }

    /// Room for sending, or why nothing may be sent any more.
    pub(crate) fn room(&self) -> Result<Room, SessionError> {
        if let Some(e) = self.phase.failure() {
            return Err(e.clone());
        }
        if self.out.is_closed() {
            return Err(SessionError::Closed);
        }
        if self.phase.is_parked() {
            return Err(SessionError::Aborted(
                "session left for another gateway instance".into(),
            ));
        }
        Ok(self.out.room(self.params.replay_limit))
    }

    /// The TEXT bit of the message this side has under way, if any.
    pub(crate) fn text_under_way(&self) -> Option<bool> {
        self.out.text_under_way()
    }

    /// Numbers, keeps and sends one DATA frame; the caller checked
    /// [`State::room`].
    pub(crate) fn push_data(&mut self, text: bool, fin: bool, payload: Bytes) {
        let frame = self.out.push_data(self.id, Chunk { text, fin, payload });
        self.emit(frame);
    }

    /// Numbers, keeps and sends this side's CLOSE.
    pub(crate) fn push_close(&mut self, code: u16, reason: String) {
        let frame = self.out.push_close(self.id, code, reason);
        self.emit(frame);
    }

    /// Gateway: OPEN_OK arrived, granting `window` and choosing
    /// `subprotocol`; the caller of `open` gets the session.
    pub(crate) fn open_accepted(&mut self, window: u32, subprotocol: Option<String>) -> Result<(), ErrorCode> {
        let waiter = self.phase.open_accepted()?;
        self.on_window(u64::from(window));
        self.subprotocol = subprotocol;
        let _ = waiter.send(Ok(()));
        Ok(())
    }

    /// Gateway: a RESUME goes out on `conn`, answered to `waiter`; returns
    /// it. A session attached elsewhere leaves that connection, and what
    /// still arrives there for it is ignored as stale.
    pub(crate) fn begin_resume(&mut self, conn: &Arc<ConnShared>, waiter: Waiter) -> Result<Frame, SessionError> {
        if let Some(old) = self.phase.begin_resume(conn, waiter)? {
            old.forget(self.id);
        }
        // What the application took: the upstream replays the rest, which
        // duplicates what waits here (dropped by sequence) but keeps it
        // for a takeover elsewhere if this instance dies.
        Ok(Frame::Resume {
            session: self.id,
            last_seq: self.ack_point(),
            limit: self.granted(),
        })
    }

    /// Gateway: the upstream closed the session before answering its OPEN
    /// or TAKEOVER (see [`Phase::refused`]).
    pub(crate) fn refused(&mut self, code: u16, reason: String) {
        self.phase.refused(code, reason);
    }

    /// Gateway: the caller of `take_over` stopped waiting (see
    /// [`Phase::abandon_takeover`]).
    pub(crate) fn abandon_takeover(&mut self) -> bool {
        self.phase.abandon_takeover()
    }

    /// Leaves the session for another instance (see [`Phase::park`]).
    pub(crate) fn park(&mut self) -> bool {
        self.phase.park()
    }

    /// Gives up the RESUME sent on `conn_id`; that connection forgets the
    /// session.
    pub(crate) fn cancel_resume(&mut self, conn_id: u64) {
        if let Some(conn) = self.phase.cancel_resume(conn_id) {
            conn.forget(self.id);
        }
    }

    /// The upstream forgot a complete session: a RESUME of it succeeds
    /// with nothing to do.
    pub(crate) fn resume_unneeded(&mut self) {
        self.phase.resume_unneeded();
    }

    /// Connection `conn_id` died (see [`Phase::detach`]).
    pub(crate) fn detach(&mut self, conn_id: u64) -> Option<Detachment> {
        self.phase.detach(conn_id)
    }

    /// The session is over: removes it, returning the connection that
    /// still lists it.
    pub(crate) fn remove(&mut self) -> Option<Arc<ConnShared>> {
        self.phase.remove()
    }

    /// Every handle is gone: close this side if the application did not.
    pub(crate) fn close_on_drop(&mut self) {
        // A takeover nobody waits for any more sends no CLOSE: the session
        // is not ours yet, and its answer will park it. A parked session
        // is left as it is for another instance.
        if self.phase.is_taking_over() || self.phase.is_parked() {
            return;
        }
        if self.phase.failure().is_none() && !self.out.is_closed() {
            // Answer the peer's close with its code, else "going away".
            let code = if self.inbound.close().is_some() { 1000 } else { 1001 };
            self.push_close(code, String::new());
        }
        self.drop_handles();
    }

    /// Ends the session with `error` (the first failure wins): whoever
    /// waits for an answer learns it, and nothing is kept for replay.
    pub(crate) fn fail(&mut self, error: SessionError) {
        if self.phase.fail(error) {
            self.inbound.clear();
            // A failed session is never replayed: its buffer goes now,
            // and with it its share of the total budget.
            self.out.release();
        }
    }

    /// Both directions closed and this side's CLOSE acknowledged: nothing
    /// more will travel, the session can be forgotten.
    pub(crate) fn finished(&self) -> bool {
        self.out.is_closed() && self.out.all_acked() && self.inbound.close().is_some()
    }

    /// Whether the session is over: failed, or finished.
    pub(crate) fn is_over(&self) -> bool {
        self.phase.failure().is_some() || self.finished()
    }

    /// The peer forgot a session whose CLOSEs were both exchanged: the
    /// only thing it never confirmed is our CLOSE, which it evidently had.
    pub(crate) fn complete_without_ack(&mut self) -> bool {
        if self.out.is_closed() && self.inbound.close().is_some() {
            self.out.release();
            return true;
        }
        false
    }

    /// How the session ended, if it has: the failure, else the peer's close.
    pub(crate) fn end(&self) -> Option<SessionEnd> {
        if let Some(e) = self.phase.failure() {
            return Some(SessionEnd::Failed(e.clone()));
        }
        self.inbound.close().map(|c| SessionEnd::Closed {
            code: c.code,
            reason: c.reason.clone(),
        })
    }
}
