//! The gateway's role on a mux connection: the upstream's answers to
//! OPEN, RESUME and TAKEOVER, and what a dead connection leaves.

use std::sync::Arc;

use crate::conn::{ConnShared, DetachedSession, Role};
use crate::frame::{ErrorCode, Frame};
use crate::message::SessionError;
use crate::session::registry::Registry;
use crate::session::shared::error_frame;
use crate::session::state::{Answer, ResumePoint};

/// The gateway's role: OPEN_OK, RESUME and TAKEOVER_OK answers.
pub(super) struct ClientRole {
    pub(super) registry: Arc<Registry>,
}

impl Role for ClientRole {
    fn on_frame(&self, conn: &Arc<ConnShared>, frame: Frame) -> Result<(), ErrorCode> {
        let (id, result) = match frame {
            Frame::OpenOk {
                session,
                window,
                subprotocol,
            } => match conn.session(session) {
                Some(s) => (session, s.on_open_ok(window, subprotocol)),
                None => (session, Err(ErrorCode::UnknownSession)),
            },
            Frame::Resume {
                session,
                last_seq,
                limit,
            } => match conn.session(session) {
                Some(s) if s.is_resuming_on(conn.id) => {
                    let at = ResumePoint { last_seq, limit };
                    (session, s.attach(conn, at, Answer::None))
                }
                Some(_) => (session, Err(ErrorCode::InvalidState)),
                None => (session, Err(ErrorCode::UnknownSession)),
            },
            Frame::TakeoverOk(t) => match conn.session(t.session) {
                Some(s) => (t.session, s.on_takeover_ok(conn, &t)),
                None => (t.session, Err(ErrorCode::UnknownSession)),
            },
            // OPEN and TAKEOVER travel only towards the upstream.
            _ => return Err(ErrorCode::Protocol),
        };
        if let Err(code) = result {
            conn.send(error_frame(id, code));
            if let Some(s) = conn.session(id) {
                s.fail(SessionError::Protocol(code));
            }
        }
        Ok(())
    }

    fn is_known(&self, id: u64) -> bool {
        self.registry.contains(id)
    }

    fn on_detached(&self, sessions: Vec<DetachedSession>) {
        // The gateway decides where (and whether) to resume: see closed().
        // A parked session is never resumed from here: it is forgotten,
        // so a takeover of it on this instance later starts afresh.
        for detached in sessions {
            detached.session.forget_if_parked();
        }
    }

    fn on_violation(&self, _code: ErrorCode) {
        // The session's end says it (`SessionError::Protocol`): the
        // gateway counts it where it closes the agent.
    }
}
