//! The session state shared by the application's handle and the
//! connection that carries the session. Each method takes the session
//! lock once, applies one event to the [`State`] (a transition of its
//! [`Phase`], a frame, a call of the application) and then *settles*:
//! wakes the handle and, once the session is over, removes it.
//!
//! Lock order: a session lock may be taken and then a connection's or the
//! registry's map lock, never the other way round (map users clone the
//! `Arc` out and release the map before locking the session).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;

use super::apply::{AckDue, apply};
use super::registry::Registry;
use super::state::{Answer, Detachment, Phase, ReplayBudget, ResumePoint, SessionParams, State, TakeoverAsk, Waiter};
use crate::conn::ConnShared;
use crate::frame::{ErrorCode, Frame, Open, TakeoverOk};
use crate::message::{SessionEnd, SessionError};

/// Locks, ignoring poisoning: every critical section leaves the state
/// consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a session starts with, whichever side starts it.
pub(crate) struct Start {
    pub(crate) id: u64,
    /// The OPEN that started it (sent by the client, received by the
    /// server; a takeover keeps the agent's request here, unsent).
    pub(crate) open: Open,
    pub(crate) params: SessionParams,
    /// The registry that lists it, if any.
    pub(crate) registry: Option<Weak<Registry>>,
}

/// One session, as seen by its handle and by its connection.
pub(crate) struct Shared {
    pub(crate) id: u64,
    /// The OPEN that started it (sent by the client, received by the
    /// server).
    pub(crate) open: Open,
    state: Mutex<State>,
    /// Rung when something arrives for `recv` or the session ends.
    pub(crate) readable: Notify,
    /// Rung when credit or replay room grows or the session ends.
    pub(crate) writable: Notify,
    /// The replay budget shared with other sessions, if any (outside the
    /// lock: a blocked sender waits on it without taking the lock).
    pub(crate) budget: Option<ReplayBudget>,
    registry: Option<Weak<Registry>>,
}

impl Shared {
    /// A session in `phase` (which names the connection it starts on).
    pub(crate) fn new(start: Start, phase: Phase) -> Arc<Self> {
        let budget = start.params.budget.clone();
        Arc::new(Self {
            id: start.id,
            open: start.open,
            state: Mutex::new(State::new(start.id, start.params, 0, phase)),
            readable: Notify::new(),
            writable: Notify::new(),
            budget,
            registry: start.registry,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Wakes the handle and, if the session is over, forgets it in its
    /// connection and the registry. Call after every change, lock released.
    pub(crate) fn settle(&self) {
        let removed_now = {
            let mut st = self.lock();
            let removed_now = st.is_over() && !st.phase().is_removed();
            if removed_now {
                if st.phase().failure().is_none() {
                    // Finished: the peer forgets the session only once its
                    // CLOSE is acknowledged, held back so far if this side
                    // acknowledges on take (what waits is still delivered).
                    st.ack_all();
                }
                if let Some(conn) = st.remove() {
                    conn.forget(self.id);
                }
            }
            removed_now
        };
        if removed_now && let Some(reg) = self.registry.as_ref().and_then(Weak::upgrade) {
            reg.remove(self);
        }
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }

    /// Whether frames for this session arriving on `conn` are current
    /// (not left over from a connection it has moved away from).
    fn current_on(st: &State, conn: &ConnShared, frame: &Frame) -> bool {
        let attached = st.phase().is_attached_to(conn.id);
        let resuming =
            st.phase().is_resuming_on(conn.id) && matches!(frame, Frame::Resume { .. } | Frame::Error { .. });
        attached || resuming
    }

    /// Applies a DATA, CLOSE, ACK, WINDOW or ERROR frame that arrived on
    /// `conn`. Returns the acknowledgement it made due, if any. A
    /// violation fails the session and sends an ERROR — never the
    /// connection — and is returned as `Err` with the code sent.
    pub(crate) fn on_frame(&self, conn: &ConnShared, frame: Frame) -> Result<Option<AckDue>, ErrorCode> {
        let ack = {
            let mut st = self.lock();
            if !Self::current_on(&st, conn, &frame) || st.phase().failure().is_some() {
                return Ok(None);
            }
            match apply(&mut st, frame) {
                // A parked session acknowledges nothing: the upstream keeps
                // it all for the instance that takes the session over.
                Ok(_) if st.phase().is_parked() => Ok(None),
                Ok(ack) => Ok(ack.due(st.ack_point())),
                Err(code) => {
                    st.fail(SessionError::Protocol(code));
                    conn.send(error_frame(self.id, code));
                    Err(code)
                }
            }
        };
        self.settle();
        ack
    }

    /// Client: the upstream's OPEN_OK arrived.
    pub(crate) fn on_open_ok(&self, window: u32, subprotocol: Option<String>) -> Result<(), ErrorCode> {
        self.lock().open_accepted(window, subprotocol)
    }

    /// Re-attaches to `conn`: the upstream answering a RESUME (or a
    /// repeated OPEN), or the client taking the upstream's RESUME answer.
    /// A refused claim fails the session (`SessionError::Lost`).
    pub(crate) fn attach(&self, conn: &Arc<ConnShared>, at: ResumePoint, answer: Answer) -> Result<(), ErrorCode> {
        let result = {
            let mut st = self.lock();
            if st.phase().failure().is_some() || st.phase().is_removed() {
                Err(ErrorCode::UnknownSession)
            } else {
                let r = st.attach(conn, at, answer);
                if let Err(code) = r {
                    st.fail(SessionError::Lost(code));
                }
                r
            }
        };
        self.settle();
        result
    }

    /// Upstream: another gateway instance takes the session over on
    /// `conn` (see [`State::take_over`]).
    pub(crate) fn take_over(&self, conn: &Arc<ConnShared>, ask: TakeoverAsk) -> Result<(), ErrorCode> {
        let result = {
            let mut st = self.lock();
            if st.phase().failure().is_some() || st.phase().is_removed() {
                Err(ErrorCode::UnknownSession)
            } else {
                st.take_over(conn, ask)
            }
        };
        self.settle();
        result
    }

    /// Client: the upstream accepted a takeover started with
    /// `MuxClientConnection::take_over`.
    pub(crate) fn on_takeover_ok(&self, conn: &Arc<ConnShared>, t: &TakeoverOk) -> Result<(), ErrorCode> {
        let result = {
            let mut st = self.lock();
            if st.phase().failure().is_some() {
                Err(ErrorCode::InvalidState)
            } else {
                st.adopt(conn, t)
            }
        };
        self.settle();
        result
    }

    /// Client: the caller of an OPEN stopped waiting for the answer;
    /// nothing if it came already. The OPEN is given up: ERROR `INTERNAL`
    /// tells the upstream to forget the session, and it is forgotten here,
    /// so a late OPEN_OK finds nothing.
    pub(crate) fn abandon_open(&self) {
        {
            let mut st = self.lock();
            if !st.phase().is_opening() {
                return;
            }
            st.emit(error_frame(self.id, ErrorCode::Internal));
            st.fail(SessionError::Aborted("no answer to OPEN in time".into()));
        }
        self.settle();
    }

    /// Client: the caller of a TAKEOVER stopped waiting for the answer;
    /// nothing if it came already. The session counts as parked: it stays
    /// as it is upstream for the agent's next try (its late answer is
    /// taken and nothing more is sent).
    pub(crate) fn abandon_takeover(&self) {
        if self.lock().abandon_takeover() {
            self.settle();
        }
    }

    /// Leaves a live session for another gateway instance to take over.
    pub(crate) fn park(&self) {
        self.lock().park();
        self.settle();
    }

    /// Client: a session parked for a takeover elsewhere lost its
    /// connection; nothing will resume it from here, so it is forgotten.
    pub(crate) fn forget_if_parked(&self) {
        {
            let mut st = self.lock();
            if !st.phase().is_parked() {
                return;
            }
            st.fail(SessionError::Aborted("parked session's connection ended".into()));
        }
        self.settle();
    }

    /// Client: starts resuming on `conn`; returns the RESUME to send.
    pub(crate) fn begin_resume(&self, conn: &Arc<ConnShared>, waiter: Waiter) -> Result<Frame, SessionError> {
        self.lock().begin_resume(conn, waiter)
    }

    /// Client: gives up a RESUME on `conn_id` that nobody waits for any
    /// more (the call was cancelled or the connection was already gone).
    pub(crate) fn cancel_resume(&self, conn_id: u64) {
        self.lock().cancel_resume(conn_id);
    }

    /// Detaches from a dead connection; returns the detachment a grace
    /// timer expires.
    pub(crate) fn detach(&self, conn_id: u64) -> Option<Detachment> {
        let since = self.lock().detach(conn_id);
        self.settle();
        since
    }

    /// Fails the session if it is still detached since `since`.
    pub(crate) fn expire_if(&self, since: Detachment) -> bool {
        let expired = {
            let mut st = self.lock();
            let expired = st.phase().detached_since() == Some(since);
            if expired {
                st.fail(SessionError::Expired);
            }
            expired
        };
        self.settle();
        expired
    }

    /// Whether a RESUME sent on connection `conn_id` awaits its answer.
    pub(crate) fn is_resuming_on(&self, conn_id: u64) -> bool {
        self.lock().phase().is_resuming_on(conn_id)
    }

    /// Fails the session without telling the peer (the caller did).
    pub(crate) fn fail(&self, error: SessionError) {
        self.lock().fail(error);
        self.settle();
    }

    /// Fails the session from this side, telling the peer with `code`.
    pub(crate) fn fail_local(&self, error: SessionError, code: ErrorCode) {
        {
            let mut st = self.lock();
            if st.phase().failure().is_none() {
                st.emit(error_frame(self.id, code));
                st.fail(error);
            }
        }
        self.settle();
    }

    /// Every handle is gone: close this side if the application did not.
    pub(crate) fn close_on_drop(&self) {
        self.lock().close_on_drop();
        self.settle();
    }

    /// How the session ended, if it has.
    pub(crate) fn end(&self) -> Option<SessionEnd> {
        self.lock().end()
    }
}

pub(crate) fn error_frame(session: u64, code: ErrorCode) -> Frame {
    Frame::Error {
        session,
        code,
        message: code.to_string(),
    }
}
