//! One agent connection, as the layers above the listener see it: who is
//! on the other end ([`ConnInfo`]), what it has in flight and which
//! deadline ended it ([`Activity`]), the deadline wrapper on its transport
//! ([`DeadlineIo`]), and the transport taken back after a WebSocket upgrade
//! ([`take_agent_io`]).
//!
//! The listener builds these; the session kinds read them. Nothing here
//! calls back up into the listener or the gateway.

mod activity;
mod io;
mod upgraded;

use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) use activity::{Activity, ConnHold, Cut, TrackedBody};
pub(crate) use io::DeadlineIo;
pub(crate) use upgraded::{AgentIo, take_agent_io};

use crate::config::ListenerConfig;

/// What the request path knows about the agent's connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The agent's address.
    pub client: SocketAddr,
    /// The listener's name.
    pub listener: Arc<str>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified mTLS client identity, if any.
    pub peer_identity: Option<Arc<str>>,
    /// The listener's settings (its edge policy).
    pub settings: Arc<ListenerConfig>,
    /// The listener's connection slot, held until the connection and any
    /// session upgraded from it have ended.
    pub(crate) _slot: tokio::sync::OwnedSemaphorePermit,
}
