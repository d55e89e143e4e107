//! The lifecycle of a session: which connection carries it, what it waits
//! for, and how it ends.
//!
//! ```text
//!                  OPEN_OK, or a CLOSE refusing it
//!   Opening ─────────────────────────────────────┐
//!   (gateway: OPEN sent)                          ▼      upstream: OPEN
//!                        TAKEOVER_OK         ┌─────────┐ accepted
//!   TakingOver ─────────────────────────────▶│  Live   │◀────────────
//!   (gateway: TAKEOVER sent)                 └─────────┘
//!     │ its caller gave up,                       │ park
//!     │ then TAKEOVER_OK                          ▼
//!     └────────────────────────────────────▶┌─────────┐
//!                                           │ Parked  │
//!                                           └─────────┘
//!
//!   any of these ──failure──▶ Failed ──settle──▶ Removed
//!   Live, Parked ──both CLOSEs through, ours acknowledged: settle──▶ Removed
//! ```
//!
//! A failure is a violation by the peer, its ERROR, a refused resume, the
//! end of the grace period, an abort — or, on the gateway, the end of a
//! parked session's connection (nothing will resume it from here). An
//! OPEN or TAKEOVER whose connection dies leaves the session detached
//! (live, or parked if the caller had given up); a caller still waiting
//! sees its answer lost and fails it.
//!
//! A live or parked session moves between connections; its [`Carrier`]
//! says where it is:
//!
//! ```text
//!   Attached(link) ──link dies──────────────────────────────▶ Detached
//!   Attached(link), Detached ──gateway sends RESUME on conn──▶ Resuming { conn }
//!   Resuming { conn } ──conn dies, or the call is cancelled──▶ Detached
//!   any ──RESUME accepted or answered, TAKEOVER accepted─────▶ Attached(conn)
//! ```
//!
//! Whether this side's CLOSE was sent or the peer's arrived are facts
//! about the two streams (`Outbound`, `Inbound`), not phases: a closing
//! session is still carried, detached and resumed like any other, and
//! only becomes [`Removed`](Phase::Removed) once both CLOSEs are through.
//!
//! Every transition is a method named after what happened; one that does
//! not apply to the current phase leaves it unchanged and says so (an
//! error code for frames from the peer, `false` or `None` otherwise).

use std::mem;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::conn::ConnShared;
use crate::message::{SessionEnd, SessionError, Takeover};

mod carrier;
mod transitions;

pub(crate) use carrier::{Carrier, Detachment, Moved};

/// What a client-side OPEN or RESUME waits for.
pub(crate) type Waiter = oneshot::Sender<Result<(), SessionEnd>>;

/// What a client-side TAKEOVER waits for: where the agent's stream stands.
pub(crate) type TakeoverWaiter = oneshot::Sender<Result<Takeover, SessionEnd>>;

/// Where a session is in its life.
pub(crate) enum Phase {
    /// Gateway: OPEN was sent on `link`; the upstream's OPEN_OK (or CLOSE,
    /// or ERROR) is awaited by `waiter`.
    Opening {
        /// The connection the OPEN went out on.
        link: Arc<ConnShared>,
        /// The caller of `open`.
        waiter: Waiter,
    },
    /// Gateway: TAKEOVER was sent on `link`; the upstream's TAKEOVER_OK is
    /// awaited. Nothing is sent for the session: it is not ours yet.
    TakingOver {
        /// The connection the TAKEOVER went out on.
        link: Arc<ConnShared>,
        /// The caller of `take_over`; `None` once it gave up, and then the
        /// session counts as parked and the late answer parks it.
        waiter: Option<TakeoverWaiter>,
    },
    /// Carried (or waiting to be carried) by this side: the normal life,
    /// including while one or both sides are closing.
    Live(Carrier),
    /// Gateway: left for another instance to take over. Nothing more is
    /// sent (not even a CLOSE when the handles go), nothing is delivered
    /// or acknowledged, so the upstream keeps it all for the taker.
    Parked(Carrier),
    /// Failed with `error`: nothing more travels. Until settled, the
    /// connection that lists it still has to forget it.
    Failed {
        /// The first failure (later ones are ignored).
        error: SessionError,
        /// The connection it was attached or resuming to, if any.
        listed_on: Option<Arc<ConnShared>>,
        /// Whether it had been parked (see [`Phase::has_been_parked`]).
        parked: bool,
    },
    /// Over — finished (both CLOSEs exchanged, ours acknowledged) or
    /// failed — and forgotten by its connection and its registry.
    Removed {
        /// Why it failed; `None`: it finished. A failure found locally
        /// after it finished (the last message was not UTF-8) still
        /// counts, as it is what the application saw last.
        failure: Option<SessionError>,
        /// Whether it had been parked (see [`Phase::has_been_parked`]).
        parked: bool,
    },
}

impl Phase {
    /// A session carried by `link` from the start (the upstream's, on OPEN).
    pub(crate) fn live(link: Arc<ConnShared>) -> Self {
        Self::Live(Carrier::Attached(link))
    }

    /// Gateway: a session whose OPEN goes out on `link`.
    pub(crate) fn opening(link: Arc<ConnShared>, waiter: Waiter) -> Self {
        Self::Opening { link, waiter }
    }

    /// Gateway: a session whose TAKEOVER goes out on `link`.
    pub(crate) fn taking_over(link: Arc<ConnShared>, waiter: TakeoverWaiter) -> Self {
        Self::TakingOver {
            link,
            waiter: Some(waiter),
        }
    }

    /// A session no connection carries.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self::Live(Carrier::Detached(Detachment::next()))
    }

    /// Stands in while a transition moves the data out of the phase;
    /// every caller writes the real next phase back.
    fn take(&mut self) -> Self {
        mem::replace(
            self,
            Self::Removed {
                failure: None,
                parked: false,
            },
        )
    }

    /// The connection the session's frames go to: the one it is attached
    /// to, or the one its OPEN or TAKEOVER went out on.
    pub(crate) fn link(&self) -> Option<&Arc<ConnShared>> {
        match self {
            Self::Opening { link, .. } | Self::TakingOver { link, .. } => Some(link),
            Self::Live(carrier) | Self::Parked(carrier) => carrier.link(),
            Self::Failed { .. } | Self::Removed { .. } => None,
        }
    }

    fn carrier(&self) -> Option<&Carrier> {
        match self {
            Self::Live(carrier) | Self::Parked(carrier) => Some(carrier),
            _ => None,
        }
    }

    fn carrier_mut(&mut self) -> Option<&mut Carrier> {
        match self {
            Self::Live(carrier) | Self::Parked(carrier) => Some(carrier),
            _ => None,
        }
    }

    /// Whether connection `conn_id` carries the session.
    pub(crate) fn is_attached_to(&self, conn_id: u64) -> bool {
        self.link().is_some_and(|l| l.id == conn_id)
    }

    /// Whether a RESUME sent on connection `conn_id` awaits its answer.
    pub(crate) fn is_resuming_on(&self, conn_id: u64) -> bool {
        matches!(self.carrier(), Some(Carrier::Resuming { conn, .. }) if conn.id == conn_id)
    }

    /// Whether no connection carries the session now and it is not over.
    pub(crate) fn is_detached(&self) -> bool {
        matches!(self.carrier(), Some(Carrier::Detached(_)))
    }

    /// The detachment the session is in, if detached.
    pub(crate) fn detached_since(&self) -> Option<Detachment> {
        match self.carrier() {
            Some(Carrier::Detached(since)) => Some(*since),
            _ => None,
        }
    }

    /// Whether the session is left for another instance now: parked, or
    /// taken over by a caller that stopped waiting for the answer.
    pub(crate) fn is_parked(&self) -> bool {
        matches!(self, Self::Parked(_) | Self::TakingOver { waiter: None, .. })
    }

    /// Whether the session was left for another instance, even if it
    /// ended since (the gateway then tells its agent "handover", not why
    /// the session's local copy ended).
    pub(crate) fn has_been_parked(&self) -> bool {
        match self {
            Self::Failed { parked, .. } | Self::Removed { parked, .. } => *parked,
            _ => self.is_parked(),
        }
    }

    /// Whether the session's OPEN awaits its answer.
    pub(crate) fn is_opening(&self) -> bool {
        matches!(self, Self::Opening { .. })
    }

    /// Whether the session's TAKEOVER awaits its answer.
    pub(crate) fn is_taking_over(&self) -> bool {
        matches!(self, Self::TakingOver { .. })
    }

    /// Why the session failed, if it did.
    pub(crate) fn failure(&self) -> Option<&SessionError> {
        match self {
            Self::Failed { error, .. } => Some(error),
            Self::Removed { failure, .. } => failure.as_ref(),
            _ => None,
        }
    }

    /// Whether the session is over and forgotten.
    pub(crate) fn is_removed(&self) -> bool {
        matches!(self, Self::Removed { .. })
    }
}

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let carrier = |c: &Carrier| match c {
            Carrier::Attached(link) => format!("attached to {}", link.id),
            Carrier::Resuming { conn, .. } => format!("resuming on {}", conn.id),
            Carrier::Detached(since) => format!("detached ({since:?})"),
        };
        match self {
            Self::Opening { link, .. } => write!(f, "Opening on {}", link.id),
            Self::TakingOver { link, waiter } => {
                write!(f, "TakingOver on {} (caller waiting: {})", link.id, waiter.is_some())
            }
            Self::Live(c) => write!(f, "Live, {}", carrier(c)),
            Self::Parked(c) => write!(f, "Parked, {}", carrier(c)),
            Self::Failed { error, .. } => write!(f, "Failed: {error}"),
            Self::Removed { failure, .. } => write!(f, "Removed (failure: {failure:?})"),
        }
    }
}
