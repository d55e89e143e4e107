//! Which connection carries a live or parked session.

use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Waiter;
use crate::conn::ConnShared;
use crate::message::SessionEnd;

/// One detachment of one session: a grace timer set when the session
/// detached expires it only if it is still detached *since then* (not
/// re-attached and detached again meanwhile). Unique in the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Detachment(u64);

impl Detachment {
    pub(super) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Which connection carries a live or parked session.
pub(crate) enum Carrier {
    /// `link` carries it: frames for it go there, and frames arriving
    /// there are its own.
    Attached(Arc<ConnShared>),
    /// Gateway: RESUME was sent on `conn` and its answer is awaited; only
    /// that answer (RESUME or ERROR) counts from there, and nothing is
    /// sent meanwhile (sends wait in the replay buffer).
    Resuming {
        /// The connection the RESUME went out on.
        conn: Arc<ConnShared>,
        /// The caller of `resume`.
        waiter: Waiter,
    },
    /// No connection carries it (its connection died, or a RESUME was
    /// given up): it waits to be resumed, or expires.
    Detached(Detachment),
}

/// What attaching a session to a connection left behind.
#[derive(Default)]
pub(crate) struct Moved {
    /// A connection it was on before, if another one: it must forget it.
    pub(crate) left: Option<Arc<ConnShared>>,
    /// The caller of the RESUME this attachment answers, if any.
    pub(crate) waiter: Option<Waiter>,
}

impl Carrier {
    /// The connection frames for the session go to, if attached.
    pub(super) fn link(&self) -> Option<&Arc<ConnShared>> {
        match self {
            Self::Attached(link) => Some(link),
            Self::Resuming { .. } | Self::Detached(_) => None,
        }
    }

    /// Whether connection `conn_id` carries it or has its RESUME.
    pub(super) fn is_on(&self, conn_id: u64) -> bool {
        match self {
            Self::Attached(link) => link.id == conn_id,
            Self::Resuming { conn, .. } => conn.id == conn_id,
            Self::Detached(_) => false,
        }
    }

    /// The connection that lists the session, as it stops being carried;
    /// a RESUME awaiting its answer ends with `outcome`.
    pub(super) fn release(self, outcome: Option<SessionEnd>) -> Option<Arc<ConnShared>> {
        match self {
            Self::Attached(link) => Some(link),
            Self::Resuming { conn, waiter } => {
                if let Some(end) = outcome {
                    let _ = waiter.send(Err(end));
                }
                Some(conn)
            }
            Self::Detached(_) => None,
        }
    }

    /// Moves to `conn`; says what it left there before.
    pub(super) fn move_to(&mut self, conn: &Arc<ConnShared>) -> Moved {
        let before = mem::replace(self, Self::Attached(conn.clone()));
        let other = |c: Arc<ConnShared>| (c.id != conn.id).then_some(c);
        match before {
            Self::Attached(link) => Moved {
                left: other(link),
                waiter: None,
            },
            Self::Resuming { conn, waiter } => Moved {
                left: other(conn),
                waiter: Some(waiter),
            },
            Self::Detached(_) => Moved::default(),
        }
    }

    /// Becomes detached if `conn_id` carried it or had its RESUME (whose
    /// caller then learns the connection was lost).
    pub(super) fn detach_from(&mut self, conn_id: u64) -> Option<Detachment> {
        if !self.is_on(conn_id) {
            return None;
        }
        let since = Detachment::next();
        *self = Self::Detached(since);
        Some(since)
    }

    /// Gives up the RESUME sent on `conn_id`; returns that connection.
    pub(super) fn cancel_resume(&mut self, conn_id: u64) -> Option<Arc<ConnShared>> {
        if !matches!(self, Self::Resuming { conn, .. } if conn.id == conn_id) {
            return None;
        }
        match mem::replace(self, Self::Detached(Detachment::next())) {
            Self::Resuming { conn, .. } => Some(conn),
            Self::Attached(_) | Self::Detached(_) => None,
        }
    }

    /// A RESUME turned out unnecessary (the session is complete): its
    /// caller succeeds without an attachment.
    pub(super) fn resume_unneeded(&mut self) {
        if !matches!(self, Self::Resuming { .. }) {
            return;
        }
        if let Self::Resuming { waiter, .. } = mem::replace(self, Self::Detached(Detachment::next())) {
            let _ = waiter.send(Ok(()));
        }
    }
}
