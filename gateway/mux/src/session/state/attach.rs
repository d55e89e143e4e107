//! Moving a session onto a connection: a RESUME accepted or answered, a
//! repeated OPEN, a takeover accepted by the upstream or adopted by the
//! gateway. Each checks the peer's claim first and changes nothing if it
//! is refused.

use std::sync::Arc;

use super::{Answer, State};
use crate::conn::ConnShared;
use crate::frame::{ErrorCode, Frame, TakeoverOk};
use crate::message::Takeover;
use crate::session::shared::error_frame;

/// Where the peer has this side's stream when it re-attaches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResumePoint {
    /// Last sequence of this side's stream it received (and keeps).
    pub(crate) last_seq: u64,
    /// The credit limit it grants this side.
    pub(crate) limit: u64,
}

/// What a TAKEOVER asks of the upstream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TakeoverAsk {
    /// Complete messages the new gateway's agent received.
    pub(crate) messages: u64,
    /// Credit the new gateway grants.
    pub(crate) window: u32,
}

impl State {
    /// Attaches to `link`, where the peer has our stream up to `at`:
    /// drops what it has, answers as the role requires, then replays the
    /// rest in order. A RESUME awaiting this answer succeeds.
    pub(crate) fn attach(&mut self, link: &Arc<ConnShared>, at: ResumePoint, answer: Answer) -> Result<(), ErrorCode> {
        self.out.check_resume(at.last_seq)?;
        let moved = self.phase.attach(link)?;
        self.out.drop_acked(at.last_seq);
        self.on_window(at.limit);
        if let Some(old) = moved.left {
            old.forget(self.id);
        }
        self.emit_answer(answer);
        self.replay();
        if answer == Answer::None {
            // Credit granted while the RESUME was pending went nowhere
            // (no connection): restate the limit (WINDOW is idempotent).
            self.emit(Frame::Window {
                session: self.id,
                limit: self.granted(),
            });
        }
        if let Some(waiter) = moved.waiter {
            let _ = waiter.send(Ok(()));
        }
        Ok(())
    }

    /// Upstream: another gateway instance takes the session over on
    /// `link`, its agent having received the first `ask.messages`
    /// complete messages. Those count as acknowledged; the answer says
    /// where both streams stand, and the rest is replayed from the first
    /// message the agent lacks. Fails when that message is no longer held
    /// (`REPLAY_UNAVAILABLE`) or was never sent (`SEQUENCE`).
    pub(crate) fn take_over(&mut self, link: &Arc<ConnShared>, ask: TakeoverAsk) -> Result<(), ErrorCode> {
        // The gateway's direction is over: there is nothing to carry on.
        if self.inbound.close().is_some() {
            return Err(ErrorCode::UnknownSession);
        }
        let through = self.out.takeover_point(ask.messages)?;
        // An upstream never resumes, so nobody waits on `moved.waiter`.
        let moved = self.phase.attach(link)?;
        let from = self.out.replay_after(through, ask.window);
        if let Some(old) = moved.left {
            // A gateway still holding it there (its agent's connection
            // half-open, or parked) must let it go, not resume it later.
            old.send(error_frame(self.id, ErrorCode::UnknownSession));
            old.forget(self.id);
        }
        let received = self.inbound.received();
        self.emit(Frame::TakeoverOk(Box::new(TakeoverOk {
            session: self.id,
            last_seq: received.last_seq,
            received_bytes: received.bytes,
            messages: received.messages,
            partial: received.partial,
            limit: received.granted,
            replay_seq: from.seq,
            replay_bytes: from.bytes,
            granted: from.granted,
            subprotocol: self.subprotocol.clone(),
        })));
        self.replay();
        Ok(())
    }

    /// Gateway: takes on a session another instance carried, from the
    /// upstream's TAKEOVER_OK on `link` (see [`State::take_over`]), and
    /// tells the caller of `take_over` where the agent's stream stands.
    pub(crate) fn adopt(&mut self, link: &Arc<ConnShared>, t: &TakeoverOk) -> Result<(), ErrorCode> {
        let partial = t.partial.map_or(0, |p| p.bytes);
        let sane = t.last_seq < u64::MAX
            && t.replay_seq < u64::MAX
            && t.replay_bytes <= t.granted
            && partial <= t.received_bytes
            && t.messages <= t.last_seq;
        if !sane {
            return Err(ErrorCode::Protocol);
        }
        let waiter = self.phase.takeover_accepted(link)?;
        self.inbound.continue_from(t);
        self.out.continue_from(t);
        self.subprotocol.clone_from(&t.subprotocol);
        if let Some(waiter) = waiter {
            let _ = waiter.send(Ok(Takeover {
                messages: t.messages,
                partial: t.partial,
            }));
        }
        Ok(())
    }

    fn emit_answer(&self, answer: Answer) {
        let frame = match answer {
            Answer::None => return,
            Answer::OpenOk => Frame::OpenOk {
                session: self.id,
                window: u32::try_from(self.inbound.credit_left()).unwrap_or(u32::MAX),
                subprotocol: self.subprotocol.clone(),
            },
            // What it acknowledges, not all it received: the peer then
            // replays the held-back frames (dropped here as duplicates)
            // and stays within the frame bound.
            Answer::Resume => Frame::Resume {
                session: self.id,
                last_seq: self.ack_point(),
                limit: self.granted(),
            },
        };
        self.emit(frame);
    }

    /// Sends every unacknowledged frame again, in order.
    fn replay(&self) {
        for frame in self.out.unacked() {
            self.emit(frame.clone());
        }
    }
}
