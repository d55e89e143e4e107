//! One multiplexed session as an application sees it: a WebSocket-like
//! object that sends and receives messages, whatever connection happens to
//! carry it at the moment.
//!
//! [`MuxSession`] (or its halves from [`MuxSession::split`]) waits for
//! credit before sending, so a peer that stops reading stops this sender
//! alone; received fragments are reassembled by [`SessionReceiver::recv`]
//! or handed out one by one by [`SessionReceiver::recv_chunk`] for relays.
//! When the carrying connection dies the session stays usable: sends are
//! kept for replay (within the credit and replay bounds) and everything
//! continues once it is resumed. It fails, typed ([`SessionError`]), when
//! the peer breaks the protocol on it, sends ERROR, or it is not resumed
//! in time. Dropping every handle closes it with 1001 (1000 after the
//! peer's close).
//!
//! Inside: `shared` is what the handles and the carrying connection share
//! (one lock per session); `state` is the bookkeeping under that lock —
//! the session's phase (opening, live, parked, failed, removed, and which
//! connection carries it: `state::phase`) and both directions of its
//! stream; `apply` applies the peer's frames; `registry` keeps the
//! sessions of one server or client by id.

mod apply;
pub(crate) mod registry;
pub(crate) mod shared;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::frame::{ErrorCode, MAX_CLOSE_REASON, Open, is_valid_close_code};
use super::message::{Chunk, Message, SessionEnd, SessionError};
use shared::Shared;

pub(crate) use apply::AckDue;

/// What one attempt of [`SessionSender::send_chunk`] achieved.
enum Step {
    /// The whole chunk went out.
    Done,
    /// Part of it went out; try again at once.
    Sent,
    /// No room: wait for credit or ACKs, and for the shared budget when
    /// that is what ran out.
    Blocked { by_budget: bool },
}

/// A session: send and receive messages, close, and see how it ended.
pub struct MuxSession {
    tx: SessionSender,
    rx: SessionReceiver,
}

/// The sending half of a session.
pub struct SessionSender {
    shared: Arc<Shared>,
    _guard: Arc<CloseOnDrop>,
}

/// The receiving half of a session.
pub struct SessionReceiver {
    shared: Arc<Shared>,
    /// A message being reassembled; kept here so `recv` is cancel-safe.
    partial: Option<Reassembly>,
    _guard: Arc<CloseOnDrop>,
}

/// The fragments of one message received so far.
struct Reassembly {
    text: bool,
    buf: BytesMut,
}

/// A cheap reference to a session for whoever carries it (the gateway's
/// session table): id, attachment, resume, abort. Holding one does not keep
/// the session open.
#[derive(Clone)]
pub struct SessionHandle {
    pub(crate) shared: Arc<Shared>,
}

/// Closes the session when the last of its halves is dropped.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close_on_drop();
    }
}

impl MuxSession {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let guard = Arc::new(CloseOnDrop(shared.clone()));
        Self {
            tx: SessionSender {
                shared: shared.clone(),
                _guard: guard.clone(),
            },
            rx: SessionReceiver {
                shared,
                partial: None,
                _guard: guard,
            },
        }
    }

    /// The session id (chosen by the gateway).
    pub fn id(&self) -> u64 {
        self.tx.shared.id
    }

    /// The OPEN that started the session: route, identity, path, headers,
    /// offered subprotocols.
    pub fn open_request(&self) -> &Open {
        &self.tx.shared.open
    }

    /// The subprotocol the upstream chose, if any.
    pub fn subprotocol(&self) -> Option<String> {
        self.tx.shared.lock().subprotocol.clone()
    }

    /// The next whole message; `None` once the peer closed or the session
    /// failed (see [`MuxSession::end`]). Cancel-safe.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next fragment as it arrived; `None` as for `recv`. Cancel-safe.
    pub async fn recv_chunk(&mut self) -> Option<Chunk> {
        self.rx.recv_chunk().await
    }

    /// Sends a whole message, waiting for credit (see
    /// [`SessionSender::send`]).
    pub async fn send(&mut self, message: Message) -> Result<(), SessionError> {
        self.tx.send(message).await
    }

    /// Sends one fragment (see [`SessionSender::send_chunk`]).
    pub async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), SessionError> {
        self.tx.send_chunk(chunk).await
    }

    /// Closes this side (see [`SessionSender::close`]).
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), SessionError> {
        self.tx.close(code, reason)
    }

    /// How the session ended: the peer's close, or the failure.
    pub fn end(&self) -> Option<SessionEnd> {
        self.tx.shared.end()
    }

    /// A handle for resuming or aborting the session.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            shared: self.tx.shared.clone(),
        }
    }

    /// Splits into halves usable from two tasks.
    pub fn split(self) -> (SessionSender, SessionReceiver) {
        (self.tx, self.rx)
    }
}

impl SessionSender {
    /// Sends a whole message. Waits while the peer's credit window or this
    /// side's replay buffer is full; a message larger than the room left
    /// goes out as several fragments. Fails once this side closed or the
    /// session failed.
    pub async fn send(&mut self, message: Message) -> Result<(), SessionError> {
        let (text, payload) = match message {
            Message::Text(s) => (true, Bytes::from(s)),
            Message::Binary(b) => (false, b),
        };
        self.send_chunk(Chunk {
            text,
            fin: true,
            payload,
        })
        .await
    }

    /// Sends one fragment, split further where credit requires. All
    /// fragments of a message must agree on `text`. Cancel-safety: a
    /// cancelled call may have sent a prefix of the payload.
    pub async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), SessionError> {
        let Chunk {
            text,
            fin,
            payload: mut rest,
        } = chunk;
        loop {
            let notified = self.shared.writable.notified();
            let by_budget = match self.step(text, fin, &mut rest)? {
                Step::Done => return Ok(()),
                Step::Sent => continue,
                Step::Blocked { by_budget } => by_budget,
            };
            let (Some(budget), true) = (&self.shared.budget, by_budget) else {
                // Waiting for credit or for ACKs of this session: its own
                // `writable` rings for both.
                notified.await;
                continue;
            };
            // Perhaps blocked by the budget shared with other sessions:
            // register as waiting, then look once more, so bytes another
            // session frees between the two looks still wake this sender.
            let freed = budget.freed();
            let _waiting = budget.register();
            match self.step(text, fin, &mut rest)? {
                Step::Done => return Ok(()),
                Step::Sent => continue,
                Step::Blocked { .. } => {}
            }
            tokio::select! {
                () = notified => {}
                () = freed => {}
            }
        }
    }

    /// Sends as much of `rest` as there is room for, in one frame.
    fn step(&self, text: bool, fin: bool, rest: &mut Bytes) -> Result<Step, SessionError> {
        let mut st = self.shared.lock();
        let room = st.room()?;
        if st.text_under_way().is_some_and(|t| t != text) {
            return Err(SessionError::InvalidInput("text flag changed mid-message"));
        }
        let n = rest.len().min(room.bytes);
        if room.frame && (n > 0 || rest.is_empty()) {
            let part = rest.split_to(n);
            st.push_data(text, fin && rest.is_empty(), part);
            return Ok(if rest.is_empty() { Step::Done } else { Step::Sent });
        }
        Ok(Step::Blocked {
            by_budget: room.by_budget,
        })
    }

    /// Sends this side's CLOSE (kept for replay like DATA). The session
    /// ends once the peer's CLOSE arrives too. `code` must be one a
    /// WebSocket close frame may carry; `reason` at most 123 bytes.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), SessionError> {
        if !is_valid_close_code(code) {
            return Err(SessionError::InvalidInput("close code may not be sent"));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SessionError::InvalidInput("close reason over 123 bytes"));
        }
        {
            let mut st = self.shared.lock();
            st.room()?;
            st.push_close(code, reason.to_owned());
        }
        self.shared.settle();
        Ok(())
    }
}

impl SessionReceiver {
    /// The next whole message, reassembled from its fragments; `None` once
    /// the peer closed or the session failed. A message over the size
    /// limit or text that is not UTF-8 fails the session (ERROR to the
    /// peer) and gives `None`. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let chunk = self.recv_chunk().await?;
            let Reassembly { text, mut buf } = match self.partial.take() {
                None if chunk.fin => return self.finish(chunk.text, chunk.payload),
                None => Reassembly {
                    text: chunk.text,
                    buf: BytesMut::new(),
                },
                Some(partial) => partial,
            };
            if buf.len() + chunk.payload.len() > self.shared.lock().params.max_message {
                self.shared.fail_local(
                    SessionError::Protocol(ErrorCode::MessageTooLarge),
                    ErrorCode::MessageTooLarge,
                );
                return None;
            }
            buf.extend_from_slice(&chunk.payload);
            if chunk.fin {
                return self.finish(text, buf.freeze());
            }
            self.partial = Some(Reassembly { text, buf });
        }
    }

    fn finish(&mut self, text: bool, payload: Bytes) -> Option<Message> {
        if !text {
            return Some(Message::Binary(payload));
        }
        match String::from_utf8(Vec::from(payload)) {
            Ok(s) => Some(Message::Text(s)),
            Err(_) => {
                self.shared
                    .fail_local(SessionError::Protocol(ErrorCode::InvalidUtf8), ErrorCode::InvalidUtf8);
                None
            }
        }
    }

    /// The next fragment as the peer sent it; `None` once the peer closed
    /// (after everything it sent before) or the session failed. Taking a
    /// fragment returns its bytes to the peer's credit. Cancel-safe.
    pub async fn recv_chunk(&mut self) -> Option<Chunk> {
        loop {
            let notified = self.shared.readable.notified();
            {
                let mut st = self.shared.lock();
                // Parked: what arrives stays upstream for the taker (even
                // once the session is over here).
                if st.phase().has_been_parked() {
                    return None;
                }
                if let Some(chunk) = st.phase().failure().is_none().then(|| st.take_chunk()).flatten() {
                    return Some(chunk);
                }
                if st.recv_done() {
                    st.take_close();
                    return None;
                }
            }
            notified.await;
        }
    }

    /// How the session ended, if it has.
    pub fn end(&self) -> Option<SessionEnd> {
        self.shared.end()
    }
}

impl SessionHandle {
    /// The session id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Whether no connection carries the session now (its connection died
    /// and it has not been resumed yet).
    pub fn is_detached(&self) -> bool {
        self.shared.lock().phase().is_detached()
    }

    /// How the session ended, if it has.
    pub fn end(&self) -> Option<SessionEnd> {
        self.shared.end()
    }

    /// Leaves the session for another gateway instance to take over
    /// (TAKEOVER, PROTOCOL.md section 8.1), for a gateway that stops: from
    /// now on nothing more is sent for it — no DATA, and no CLOSE when its
    /// handles are dropped — and what the upstream sends is neither
    /// delivered nor acknowledged, so the upstream keeps it for replay.
    /// The session stays known here until its connection ends; `recv`
    /// gives `None` at once. A session that has ended, or is still
    /// being opened or taken over, has nothing to leave: it is unchanged.
    pub fn park(&self) {
        self.shared.park();
    }

    /// The highest sequence of this side's stream the peer acknowledged.
    pub fn acked_seq(&self) -> u64 {
        self.shared.lock().acked_seq()
    }

    /// Whether the session was parked (by [`park`](Self::park), or by a
    /// takeover whose caller stopped waiting), even if it ended since.
    pub fn is_parked(&self) -> bool {
        self.shared.lock().phase().has_been_parked()
    }

    /// Gives the session up (e.g. it could not be resumed in time): its
    /// handles see [`SessionError::Aborted`], the peer gets ERROR
    /// `INTERNAL` if a connection still carries it.
    pub fn abort(&self, reason: &str) {
        self.shared
            .fail_local(SessionError::Aborted(reason.to_owned()), ErrorCode::Internal);
    }
}

impl std::fmt::Debug for MuxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxSession").field("id", &self.id()).finish()
    }
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle").field("id", &self.id()).finish()
    }
}
