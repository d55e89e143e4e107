//! The transitions between phases, each named after what happened.

use std::mem;
use std::sync::Arc;

use super::{Carrier, Detachment, Moved, Phase, TakeoverWaiter, Waiter};
use crate::conn::ConnShared;
use crate::frame::ErrorCode;
use crate::message::{SessionEnd, SessionError};

impl Phase {
    /// OPEN_OK arrived: the session is live on the connection it opened
    /// on. Returns the caller of `open` to tell.
    pub(crate) fn open_accepted(&mut self) -> Result<Waiter, ErrorCode> {
        match self.take() {
            Self::Opening { link, waiter } => {
                *self = Self::live(link);
                Ok(waiter)
            }
            other => {
                *self = other;
                Err(ErrorCode::InvalidState)
            }
        }
    }

    /// The upstream closed the session before answering its OPEN or
    /// TAKEOVER: the caller learns it was refused. An opened session is
    /// then live (this side's CLOSE answers the upstream's); a takeover
    /// is not ours, and waits parked for its answer.
    pub(crate) fn refused(&mut self, code: u16, reason: String) {
        let refusal = || SessionEnd::Closed { code, reason };
        match self.take() {
            Self::Opening { link, waiter } => {
                let _ = waiter.send(Err(refusal()));
                *self = Self::live(link);
            }
            Self::TakingOver {
                link,
                waiter: Some(waiter),
            } => {
                let _ = waiter.send(Err(refusal()));
                *self = Self::TakingOver { link, waiter: None };
            }
            other => *self = other,
        }
    }

    /// TAKEOVER_OK arrived on `conn`: the session is live there, and the
    /// caller of `take_over` is returned to tell where it stands — or, if
    /// that caller gave up, it is parked (left as it is upstream for the
    /// agent's next try).
    pub(crate) fn takeover_accepted(&mut self, conn: &Arc<ConnShared>) -> Result<Option<TakeoverWaiter>, ErrorCode> {
        match self.take() {
            Self::TakingOver { waiter, .. } => {
                let carrier = Carrier::Attached(conn.clone());
                match waiter.filter(|w| !w.is_closed()) {
                    Some(waiter) => {
                        *self = Self::Live(carrier);
                        Ok(Some(waiter))
                    }
                    None => {
                        *self = Self::Parked(carrier);
                        Ok(None)
                    }
                }
            }
            other => {
                *self = other;
                Err(ErrorCode::InvalidState)
            }
        }
    }

    /// Gateway: the caller of `take_over` stopped waiting. Returns whether
    /// a takeover was awaiting its answer with that caller.
    pub(crate) fn abandon_takeover(&mut self) -> bool {
        match self {
            Self::TakingOver { waiter, .. } if waiter.is_some() => {
                *waiter = None;
                true
            }
            _ => false,
        }
    }

    /// Gateway: a RESUME goes out on `conn`, answered to `waiter`. Returns
    /// the connection the session leaves, if it was attached elsewhere.
    pub(crate) fn begin_resume(
        &mut self,
        conn: &Arc<ConnShared>,
        waiter: Waiter,
    ) -> Result<Option<Arc<ConnShared>>, SessionError> {
        let refusal = match self {
            Self::Failed { error, .. }
            | Self::Removed {
                failure: Some(error), ..
            } => error.clone(),
            Self::Removed { failure: None, .. } => SessionError::InvalidInput("session has finished"),
            // Parked for another instance, which may hold it by now: a
            // RESUME from here would take it back.
            Self::Parked(_) | Self::TakingOver { waiter: None, .. } => {
                SessionError::InvalidInput("session is parked for a takeover")
            }
            Self::Opening { .. } | Self::TakingOver { .. } => SessionError::InvalidInput("session is not open yet"),
            Self::Live(Carrier::Resuming { .. }) => SessionError::InvalidInput("session is already on this connection"),
            Self::Live(Carrier::Attached(link)) if link.id == conn.id => {
                SessionError::InvalidInput("session is already on this connection")
            }
            Self::Live(carrier) => {
                let resuming = Carrier::Resuming {
                    conn: conn.clone(),
                    waiter,
                };
                return Ok(mem::replace(carrier, resuming).release(None));
            }
        };
        Err(refusal)
    }

    /// Gives up the RESUME sent on `conn_id`, if it still awaits its
    /// answer; returns that connection (to forget the session).
    pub(crate) fn cancel_resume(&mut self, conn_id: u64) -> Option<Arc<ConnShared>> {
        self.carrier_mut()?.cancel_resume(conn_id)
    }

    /// The upstream forgot a session that is complete: a RESUME of it
    /// has nothing to do, and its caller succeeds.
    pub(crate) fn resume_unneeded(&mut self) {
        if let Some(carrier) = self.carrier_mut() {
            carrier.resume_unneeded();
        }
    }

    /// The session is attached to `conn` (a RESUME accepted or answered,
    /// a repeated OPEN, a TAKEOVER accepted), keeping whether it is live
    /// or parked.
    pub(crate) fn attach(&mut self, conn: &Arc<ConnShared>) -> Result<Moved, ErrorCode> {
        match self {
            Self::Live(carrier) | Self::Parked(carrier) => Ok(carrier.move_to(conn)),
            Self::Failed { .. } | Self::Removed { .. } => Err(ErrorCode::UnknownSession),
            // Not ours yet: only its own answer attaches it.
            Self::Opening { .. } | Self::TakingOver { .. } => Err(ErrorCode::InvalidState),
        }
    }

    /// Connection `conn_id` died: if it carried the session (or had its
    /// OPEN, TAKEOVER or RESUME), the session is detached and whoever
    /// waited for an answer there learns the connection was lost.
    pub(crate) fn detach(&mut self, conn_id: u64) -> Option<Detachment> {
        match self {
            Self::Live(carrier) | Self::Parked(carrier) => carrier.detach_from(conn_id),
            Self::Opening { link, .. } | Self::TakingOver { link, .. } if link.id == conn_id => {
                let since = Detachment::next();
                let carrier = Carrier::Detached(since);
                // A takeover nobody waits for stays parked; an OPEN or a
                // TAKEOVER whose caller still waits is failed by that
                // caller, seeing its answer lost.
                *self = if self.is_parked() {
                    Self::Parked(carrier)
                } else {
                    Self::Live(carrier)
                };
                Some(since)
            }
            _ => None,
        }
    }

    /// Leaves a live session for another instance to take over. Returns
    /// whether it was live: a session not ours yet, already parked, or
    /// over has nothing to leave.
    pub(crate) fn park(&mut self) -> bool {
        match self.take() {
            Self::Live(carrier) => {
                *self = Self::Parked(carrier);
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }

    /// Fails the session; whoever waits for an answer learns why. Returns
    /// whether this was its first failure (later ones change nothing).
    pub(crate) fn fail(&mut self, error: SessionError) -> bool {
        let failed = |e: &SessionError| SessionEnd::Failed(e.clone());
        let (listed_on, parked) = match self.take() {
            already @ (Self::Failed { .. } | Self::Removed { failure: Some(_), .. }) => {
                *self = already;
                return false;
            }
            Self::Removed { failure: None, parked } => {
                *self = Self::Removed {
                    failure: Some(error),
                    parked,
                };
                return true;
            }
            Self::Opening { link, waiter } => {
                let _ = waiter.send(Err(failed(&error)));
                (Some(link), false)
            }
            Self::TakingOver { link, waiter } => {
                let parked = waiter.is_none();
                if let Some(w) = waiter {
                    let _ = w.send(Err(failed(&error)));
                }
                (Some(link), parked)
            }
            Self::Live(carrier) => (carrier.release(Some(failed(&error))), false),
            Self::Parked(carrier) => (carrier.release(Some(failed(&error))), true),
        };
        *self = Self::Failed {
            error,
            listed_on,
            parked,
        };
        true
    }

    /// The session is over (failed, or finished): it is removed. Returns
    /// the connection that still lists it, to forget it there.
    pub(crate) fn remove(&mut self) -> Option<Arc<ConnShared>> {
        let (failure, parked, listed_on) = match self.take() {
            removed @ Self::Removed { .. } => {
                *self = removed;
                return None;
            }
            Self::Failed {
                error,
                listed_on,
                parked,
            } => (Some(error), parked, listed_on),
            Self::Opening { link, .. } => (None, false, Some(link)),
            Self::TakingOver { link, waiter } => (None, waiter.is_none(), Some(link)),
            Self::Live(carrier) => (None, false, carrier.release(None)),
            Self::Parked(carrier) => (None, true, carrier.release(None)),
        };
        *self = Self::Removed { failure, parked };
        listed_on
    }
}
