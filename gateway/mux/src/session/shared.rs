//! The session state shared by the application's handle and the
//! connection that carries the session, plus the registry that outlives
//! connections on the upstream side.
//!
//! Lock order: a session lock may be taken and then a connection's or the
//! registry's map lock, never the other way round (map users clone the
//! `Arc` out and release the map before locking the session).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;

use super::state::{Answer, ReplayBudget, SessionParams, State, Waiter};
use crate::conn::ConnShared;
use crate::frame::{ErrorCode, Frame, Open, TakeoverOk};
use crate::message::{Chunk, SessionEnd, SessionError};

/// Sessions by id, across all connections of one upstream server.
#[derive(Default)]
pub(crate) struct Registry {
    map: Mutex<HashMap<u64, Arc<Shared>>>,
}

impl Registry {
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Shared>> {
        lock(&self.map).get(&id).cloned()
    }

    /// Adds a session unless one with its id exists; returns that one.
    pub(crate) fn insert(&self, shared: Arc<Shared>) -> Result<(), Arc<Shared>> {
        match lock(&self.map).entry(shared.id) {
            std::collections::hash_map::Entry::Occupied(e) => Err(e.get().clone()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(shared);
                Ok(())
            }
        }
    }

    /// Adds a session in place of a parked one with its id (a takeover
    /// on the instance that parked it); returns the parked one, now out of
    /// the map, or the live one that stays.
    pub(crate) fn insert_over_parked(&self, shared: Arc<Shared>) -> Result<Option<Arc<Shared>>, Arc<Shared>> {
        loop {
            // The session lock is never taken under the map's (lock order).
            let existing = lock(&self.map).get(&shared.id).cloned();
            let Some(old) = existing else {
                match self.insert(shared.clone()) {
                    Ok(()) => return Ok(None),
                    Err(_) => continue,
                }
            };
            // Parked with its TAKEOVER unanswered: that answer, arriving
            // late, would be taken for the new one's.
            let replaceable = {
                let st = old.lock();
                st.parked && !st.takeover_pending
            };
            if !replaceable {
                return Err(old);
            }
            let mut map = lock(&self.map);
            if map.get(&shared.id).is_some_and(|s| Arc::ptr_eq(s, &old)) {
                map.insert(shared.id, shared);
                return Ok(Some(old));
            }
        }
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        lock(&self.map).contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Removes `shared`, unless another session has taken its id since.
    fn remove(&self, shared: &Shared) {
        let mut map = lock(&self.map);
        if map
            .get(&shared.id)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), shared))
        {
            map.remove(&shared.id);
        }
    }
}

/// Locks, ignoring poisoning: every critical section leaves the state
/// consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// A session attached to `link` from the start.
    pub(crate) fn new(
        open: Open,
        id: u64,
        params: SessionParams,
        link: Arc<ConnShared>,
        registry: Option<Weak<Registry>>,
    ) -> Arc<Self> {
        let budget = params.budget.clone();
        let mut state = State::new(id, params, 0);
        state.link = Some(link);
        Arc::new(Self {
            id,
            open,
            state: Mutex::new(state),
            readable: Notify::new(),
            writable: Notify::new(),
            budget,
            registry,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Wakes the handle and, if the session is over, forgets it in its
    /// connection and the registry. Call after every change, lock released.
    pub(crate) fn settle(&self) {
        let (removed_now, link) = {
            let mut st = self.lock();
            let over = st.failure.is_some() || st.finished();
            if over && !st.removed {
                if st.failure.is_none() {
                    // Finished: the peer forgets the session only once its
                    // CLOSE is acknowledged, held back so far if this side
                    // acknowledges on take (what waits is still delivered).
                    st.ack_all();
                }
                st.removed = true;
                (true, st.link.take().or_else(|| st.pending.take()))
            } else {
                (false, None)
            }
        };
        if let Some(link) = link {
            link.forget(self.id);
        }
        if let (true, Some(reg)) = (removed_now, self.registry.as_ref().and_then(Weak::upgrade)) {
            reg.remove(self);
        }
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }

    /// Whether frames for this session arriving on `conn` are current
    /// (not left over from a connection it has moved away from).
    fn current_on(st: &State, conn: &ConnShared, frame: &Frame) -> bool {
        let attached = st.link.as_ref().is_some_and(|l| l.id == conn.id);
        let resuming = st.pending.as_ref().is_some_and(|p| p.id == conn.id)
            && matches!(frame, Frame::Resume { .. } | Frame::Error { .. });
        attached || resuming
    }

    /// Applies a DATA, CLOSE, ACK, WINDOW or ERROR frame that arrived on
    /// `conn`. Returns the sequence to acknowledge, if any, and whether at
    /// once (else it may wait to ride along with other frames). A
    /// violation fails the session and sends an ERROR — never the
    /// connection — and is returned as `Err` with the code sent.
    pub(crate) fn on_frame(&self, conn: &ConnShared, frame: Frame) -> Result<Option<(u64, bool)>, ErrorCode> {
        let ack = {
            let mut st = self.lock();
            if !Self::current_on(&st, conn, &frame) || st.failure.is_some() {
                return Ok(None);
            }
            match apply(&mut st, frame) {
                // A parked session acknowledges nothing: the upstream keeps
                // it all for the instance that takes the session over.
                Ok(ack) => Ok((ack != Ack::No && !st.parked).then(|| (st.ack_point(), ack == Ack::Now))),
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
        let mut st = self.lock();
        if st.takeover_pending {
            return Err(ErrorCode::InvalidState);
        }
        let Some(waiter) = st.waiter.take() else {
            return Err(ErrorCode::InvalidState);
        };
        st.on_window(u64::from(window));
        st.subprotocol = subprotocol;
        let _ = waiter.send(Ok(()));
        Ok(())
    }

    /// Re-attaches to `conn`: the upstream answering a RESUME (or a
    /// repeated OPEN), or the client taking the upstream's RESUME answer.
    pub(crate) fn attach(
        &self,
        conn: &Arc<ConnShared>,
        peer_last: u64,
        peer_limit: u64,
        answer: Answer,
    ) -> Result<(), ErrorCode> {
        let result = {
            let mut st = self.lock();
            if st.failure.is_some() {
                Err(ErrorCode::UnknownSession)
            } else {
                let waiter = st.waiter.take();
                let r = st.attach(conn.clone(), peer_last, peer_limit, answer);
                if let Some(w) = waiter {
                    let _ = w.send(r.map_err(|c| SessionEnd::Failed(SessionError::Lost(c))));
                }
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
    pub(crate) fn take_over(&self, conn: &Arc<ConnShared>, messages: u64, window: u32) -> Result<(), ErrorCode> {
        let result = {
            let mut st = self.lock();
            if st.failure.is_some() || st.removed {
                Err(ErrorCode::UnknownSession)
            } else {
                st.take_over(conn.clone(), messages, window)
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
            if st.failure.is_some() {
                Err(ErrorCode::InvalidState)
            } else {
                let r = st.adopt(conn.clone(), t);
                match (r, st.waiter.take()) {
                    (Ok(()), Some(w)) if !w.is_closed() => {
                        let _ = w.send(Ok(()));
                    }
                    // Its taker gave up waiting: the session is left for
                    // another try (elsewhere), as a draining gateway would.
                    (Ok(()), _) => st.parked = true,
                    (Err(_), w) => st.waiter = w,
                }
                r
            }
        };
        self.settle();
        result
    }

    /// Client: the caller of an OPEN (`takeover`: a TAKEOVER) stopped
    /// waiting for the answer; nothing if it came already. An OPEN is given
    /// up — ERROR `INTERNAL` tells the upstream to forget the session, and
    /// it is forgotten here, so a late OPEN_OK finds nothing. A TAKEOVER is
    /// parked: the session stays as it is upstream for the agent's next try
    /// (its late answer is taken and nothing more is sent).
    pub(crate) fn abandon(&self, takeover: bool) {
        {
            let mut st = self.lock();
            if st.waiter.is_none() || st.failure.is_some() {
                return;
            }
            st.waiter = None;
            if takeover {
                st.parked = true;
            } else {
                st.emit(error_frame(self.id, ErrorCode::Internal));
                st.fail(SessionError::Aborted("no answer to OPEN in time".into()));
            }
        }
        self.settle();
    }

    /// Client: a session parked for a takeover elsewhere lost its
    /// connection; nothing will resume it from here, so it is forgotten.
    pub(crate) fn forget_if_parked(&self) {
        {
            let mut st = self.lock();
            if !st.parked || st.failure.is_some() {
                return;
            }
            st.fail(SessionError::Aborted("parked session's connection ended".into()));
        }
        self.settle();
    }

    /// Client: starts resuming on `conn`; returns the RESUME to send.
    pub(crate) fn begin_resume(&self, conn: &Arc<ConnShared>, waiter: Waiter) -> Result<Frame, SessionError> {
        let mut st = self.lock();
        if let Some(e) = &st.failure {
            return Err(e.clone());
        }
        if st.removed {
            return Err(SessionError::InvalidInput("session has finished"));
        }
        // Parked for another instance, which may hold it by now: a RESUME
        // from here would take it back.
        if st.parked {
            return Err(SessionError::InvalidInput("session is parked for a takeover"));
        }
        if st.pending.is_some() || st.link.as_ref().is_some_and(|l| l.id == conn.id) {
            return Err(SessionError::InvalidInput("session is already on this connection"));
        }
        // Moving a live session: the old connection forgets it, and what
        // still arrives there for it is ignored as stale.
        if let Some(old) = st.link.take() {
            old.forget(self.id);
        }
        st.pending = Some(conn.clone());
        st.waiter = Some(waiter);
        // What the application took: the upstream replays the rest, which
        // duplicates what waits here (dropped by sequence) but keeps it
        // for a takeover elsewhere if this instance dies.
        Ok(Frame::Resume {
            session: self.id,
            last_seq: st.ack_point(),
            limit: st.granted(),
        })
    }

    /// Client: gives up a RESUME on `conn_id` that nobody waits for any
    /// more (the call was cancelled or the connection was already gone).
    pub(crate) fn cancel_resume(&self, conn_id: u64) {
        let conn = {
            let mut st = self.lock();
            if st.pending.as_ref().is_none_or(|p| p.id != conn_id) {
                return;
            }
            st.waiter = None;
            st.epoch += 1;
            st.pending.take()
        };
        if let Some(conn) = conn {
            conn.forget(self.id);
        }
    }

    /// Detaches from a dead connection; returns the epoch to expire at.
    pub(crate) fn detach(&self, conn_id: u64) -> Option<u64> {
        let epoch = self.lock().detach(conn_id);
        self.settle();
        epoch
    }

    /// Fails the session if it is still detached since `epoch`.
    pub(crate) fn expire_if(&self, epoch: u64) -> bool {
        let expired = {
            let mut st = self.lock();
            let idle = st.link.is_none() && st.pending.is_none() && st.epoch == epoch;
            let live = st.failure.is_none() && !st.removed;
            if idle && live {
                st.fail(SessionError::Expired);
            }
            idle && live
        };
        self.settle();
        expired
    }

    /// Whether a RESUME sent on connection `conn_id` awaits its answer.
    pub(crate) fn is_resuming_on(&self, conn_id: u64) -> bool {
        self.lock().pending.as_ref().is_some_and(|p| p.id == conn_id)
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
            if st.failure.is_none() {
                st.emit(error_frame(self.id, code));
                st.fail(error);
            }
        }
        self.settle();
    }

    /// Every handle is gone: close this side if the application did not.
    pub(crate) fn close_on_drop(&self) {
        {
            let mut st = self.lock();
            // A takeover nobody waits for any more sends no CLOSE: the
            // session is not ours yet, and its answer will park it.
            if !st.takeover_pending && !st.parked {
                if st.failure.is_none() && !st.close_sent {
                    // Answer the peer's close with its code, else "going away".
                    let code = if st.peer_close.is_some() { 1000 } else { 1001 };
                    st.push_close(code, String::new());
                }
                st.drop_handles();
            }
        }
        self.settle();
    }

    /// How the session ended, if it has.
    pub(crate) fn end(&self) -> Option<SessionEnd> {
        let st = self.lock();
        if let Some(e) = &st.failure {
            return Some(SessionEnd::Failed(e.clone()));
        }
        st.peer_close.as_ref().map(|(code, reason)| SessionEnd::Closed {
            code: *code,
            reason: reason.clone(),
        })
    }
}

/// How a frame just applied is acknowledged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// Not (yet): not sequenced, or acknowledged when taken.
    No,
    /// New DATA: with whatever goes out next, within [`ACK_DELAY`](crate::conn::ACK_DELAY).
    Soon,
    /// At once: a duplicate (the peer is replaying) or a CLOSE.
    Now,
}

/// Applies one frame; says how it is to be acknowledged.
fn apply(st: &mut State, frame: Frame) -> Result<Ack, ErrorCode> {
    match frame {
        Frame::Data {
            seq,
            text,
            fin,
            payload,
            ..
        } => {
            // A duplicate is acknowledged again (the ACK may have died with
            // a connection); a new frame now or when taken.
            let new = st.on_data(seq, Chunk { text, fin, payload })?;
            Ok(match (new, st.acks_on_arrival()) {
                (false, _) => Ack::Now,
                (true, true) => Ack::Soon,
                (true, false) => Ack::No,
            })
        }
        Frame::Close { seq, code, reason, .. } => {
            let new = st.on_close(seq, code, reason.clone())?;
            // A CLOSE before OPEN_OK: the upstream refused the session.
            if let (true, Some(w)) = (new, st.waiter.take()) {
                let _ = w.send(Err(SessionEnd::Closed { code, reason }));
            }
            Ok(Ack::Now)
        }
        Frame::Ack { seq, .. } => st.on_ack(seq).map(|()| Ack::No),
        Frame::Window { limit, .. } => {
            st.on_window(limit);
            Ok(Ack::No)
        }
        Frame::Error { code, message, .. } => {
            if code == ErrorCode::UnknownSession && st.complete_without_ack() {
                // Nothing was lost: a resume of it has nothing to do.
                st.pending = None;
                if let Some(w) = st.waiter.take() {
                    let _ = w.send(Ok(()));
                }
            } else {
                st.fail(SessionError::Peer { code, message });
            }
            Ok(Ack::No)
        }
        // Routed to the role by the reader, never here.
        Frame::Open { .. }
        | Frame::OpenOk { .. }
        | Frame::Resume { .. }
        | Frame::Takeover { .. }
        | Frame::TakeoverOk(_) => Err(ErrorCode::InvalidState),
    }
}

pub(crate) fn error_frame(session: u64, code: ErrorCode) -> Frame {
    Frame::Error {
        session,
        code,
        message: code.to_string(),
    }
}
