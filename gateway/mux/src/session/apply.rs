//! Applying one sequenced or flow-control frame from the peer to a
//! session: DATA, CLOSE, ACK, WINDOW, ERROR. OPEN, OPEN_OK, RESUME and the
//! takeover frames go to the role (server or client) instead.

use super::state::State;
use crate::frame::{ErrorCode, Frame};
use crate::message::{Chunk, SessionError};

/// An acknowledgement a frame made due: the sequence to acknowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckDue {
    /// At once: a duplicate (the peer is replaying) or a CLOSE.
    Now(u64),
    /// With whatever goes out next, within
    /// [`ACK_DELAY`](crate::conn::ACK_DELAY): new DATA.
    Soon(u64),
}

/// How a frame just applied is acknowledged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// Not (yet): not sequenced, or acknowledged when taken.
    No,
    /// New DATA: with whatever goes out next.
    Soon,
    /// At once: a duplicate or a CLOSE.
    Now,
}

impl Ack {
    /// The acknowledgement of `seq` this makes due, if any.
    pub(super) fn due(self, seq: u64) -> Option<AckDue> {
        match self {
            Self::No => None,
            Self::Soon => Some(AckDue::Soon(seq)),
            Self::Now => Some(AckDue::Now(seq)),
        }
    }
}

/// Applies one frame; says how it is to be acknowledged.
pub(super) fn apply(st: &mut State, frame: Frame) -> Result<Ack, ErrorCode> {
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
            if st.on_close(seq, code, reason.clone())? {
                // A CLOSE before OPEN_OK: the upstream refused the session.
                st.refused(code, reason);
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
                st.resume_unneeded();
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
