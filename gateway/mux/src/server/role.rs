//! The upstream's side of OPEN and RESUME, and the grace period of
//! detached sessions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::ServerInner;
use crate::conn::{ConnShared, DetachedSession, Role};
use crate::frame::{ErrorCode, Frame, Open};
use crate::session::MuxSession;
use crate::session::shared::{Shared, Start, error_frame};
use crate::session::state::{Answer, Phase, ResumePoint, TakeoverAsk};

/// The server role of one accepted connection.
pub(super) struct ServerRole {
    pub(super) server: Arc<ServerInner>,
    /// New sessions for [`MuxConnection::next_session`](super::MuxConnection::next_session).
    /// Unbounded, but never longer than the per-connection session limit.
    pub(super) sessions: mpsc::UnboundedSender<MuxSession>,
}

impl Role for ServerRole {
    fn on_frame(&self, conn: &Arc<ConnShared>, frame: Frame) -> Result<(), ErrorCode> {
        match frame {
            Frame::Open { session, open } => {
                self.on_open(conn, session, *open);
                Ok(())
            }
            Frame::Resume {
                session,
                last_seq,
                limit,
            } => {
                self.on_resume(conn, session, ResumePoint { last_seq, limit });
                Ok(())
            }
            Frame::Takeover {
                session,
                messages,
                window,
            } => {
                self.on_takeover(conn, session, TakeoverAsk { messages, window });
                Ok(())
            }
            // OPEN_OK travels only towards the gateway.
            _ => Err(ErrorCode::Protocol),
        }
    }

    fn is_known(&self, id: u64) -> bool {
        self.server.registry.contains(id)
    }

    fn on_violation(&self, _code: ErrorCode) {
        self.server.stats.violations.fetch_add(1, Ordering::Relaxed);
    }

    fn on_detached(&self, sessions: Vec<DetachedSession>) {
        if sessions.is_empty() {
            return;
        }
        let server = self.server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(server.config.resume_grace).await;
            for DetachedSession { session, since } in sessions {
                if session.expire_if(since) {
                    server.stats.expired.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

impl ServerRole {
    /// Whether `conn` may take one more session.
    fn has_room(&self, conn: &ConnShared, id: u64) -> bool {
        let room = conn.session_count() < self.server.config.max_sessions_per_connection;
        room || conn.session(id).is_some()
    }

    fn on_open(&self, conn: &Arc<ConnShared>, id: u64, open: Open) {
        if !self.has_room(conn, id) {
            conn.send(error_frame(id, ErrorCode::TooManySessions));
            return;
        }
        let subprotocol = self.server.config.choose_subprotocol(&open.subprotocols);
        let window = u64::from(open.window);
        let start = Start {
            id,
            open,
            params: self.server.config.session_params(),
            registry: Some(Arc::downgrade(&self.server.registry)),
        };
        let shared = Shared::new(start, Phase::live(conn.clone()));
        {
            let mut st = shared.lock();
            st.on_window(window);
            st.subprotocol = subprotocol.clone();
        }
        if let Err(known) = self.server.registry.insert(shared.clone()) {
            // The gateway repeats OPEN when the connection died before
            // OPEN_OK reached it: a re-attachment, answered with OPEN_OK.
            // (The unused new session is dropped before anyone holds it.)
            let at = ResumePoint {
                last_seq: 0,
                limit: window,
            };
            self.reattach(conn, &known, at, Answer::OpenOk);
            return;
        }
        // The reader of this connection is running: it is not torn down.
        let _ = conn.insert(shared.clone());
        // OPEN_OK is queued before the application can send anything.
        conn.send(Frame::OpenOk {
            session: id,
            window: self.server.config.window,
            subprotocol,
        });
        self.server.stats.opened.fetch_add(1, Ordering::Relaxed);
        let _ = self.sessions.send(MuxSession::new(shared));
    }

    /// The known session `id` may come to `conn`: it exists, and `conn`
    /// has room. Otherwise the ERROR saying why is sent.
    fn movable(&self, conn: &Arc<ConnShared>, id: u64) -> Option<Arc<Shared>> {
        let Some(known) = self.server.registry.get(id) else {
            conn.send(error_frame(id, ErrorCode::UnknownSession));
            return None;
        };
        if !self.has_room(conn, id) {
            conn.send(error_frame(id, ErrorCode::TooManySessions));
            return None;
        }
        Some(known)
    }

    fn on_resume(&self, conn: &Arc<ConnShared>, id: u64, at: ResumePoint) {
        let Some(known) = self.movable(conn, id) else {
            return;
        };
        self.reattach(conn, &known, at, Answer::Resume);
    }

    /// Another gateway instance takes a session over (its first one died):
    /// like RESUME, but positioned by the agent's message count.
    fn on_takeover(&self, conn: &Arc<ConnShared>, id: u64, ask: TakeoverAsk) {
        let Some(known) = self.movable(conn, id) else {
            return;
        };
        let _ = conn.insert(known.clone());
        match known.take_over(conn, ask) {
            Ok(()) => {
                self.server.stats.taken_over.fetch_add(1, Ordering::Relaxed);
            }
            Err(code) => {
                // The session stays where it was (or detached, to expire).
                if !known.lock().phase().is_attached_to(conn.id) {
                    conn.forget(id);
                }
                conn.send(error_frame(id, code));
            }
        }
    }

    fn reattach(&self, conn: &Arc<ConnShared>, session: &Arc<Shared>, at: ResumePoint, answer: Answer) {
        // In the map first: frames that follow in this message find it.
        // (This connection's reader runs this: it is not torn down.)
        let _ = conn.insert(session.clone());
        match session.attach(conn, at, answer) {
            Ok(()) => {
                self.server.stats.resumed.fetch_add(1, Ordering::Relaxed);
            }
            Err(code) => {
                conn.forget(session.id);
                conn.send(error_frame(session.id, code));
            }
        }
    }
}
