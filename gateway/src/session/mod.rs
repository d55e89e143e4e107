//! The one session lifecycle every long-lived session kind shares
//! (websocket and mux today; RFC 8441 and resumable streams next).
//!
//! ```text
//! upgrade request ─▶ Admission::check   upgrade checks (400/426),
//!                                        per-key session limit (429),
//!                                        message limiter, agent identity
//!                 ─▶ (the kind opens its upstream side, answers `101`)
//! upgraded        ─▶ Lifecycle::begin    active gauge, session list,
//!                                        registry affinity entry
//! relay ends      ─▶ Lifecycle::end      ended counter by outcome, span,
//!                                        access log line; every hold
//!                                        (permit, endpoint, slot) let go
//! ```
//!
//! A kind decides what it relays; this module decides what a session
//! counts, lists, logs and holds, once, so a new kind is a relay plus two
//! calls. How a session ended is a [`SessionOutcome`] from
//! `crate::error`, where its close code comes from too.

mod admission;
pub(crate) mod drain;
mod lifecycle;
pub mod list;
pub(crate) mod upgrade;

use std::sync::Arc;

use tokio_util::task::TaskTracker;

pub(crate) use admission::{Admission, SessionLimits};
pub(crate) use lifecycle::{Counts, Lifecycle, Placement};

use crate::cluster_state::ClusterState;
pub use crate::error::SessionOutcome;
use drain::Drain;
use list::SessionList;

/// Where long-lived sessions run: tracked so a drain waits for them, told
/// to close (1001, or 1012 to hand a mux session over) when the drain
/// starts, listed for the admin API, and registered across instances when
/// `[cluster_state]` is set.
#[derive(Clone, Debug)]
pub(crate) struct SessionCtx {
    pub(crate) tracker: TaskTracker,
    pub(crate) drain: Arc<Drain>,
    pub(crate) list: Arc<SessionList>,
    /// The cross-instance session registry, when `[cluster_state]` is set.
    pub(crate) registry: Option<Arc<ClusterState>>,
    /// Access log lines are wanted (`[log] access_log`).
    pub(crate) access_log: bool,
}
