//! Typed request extensions shared between the gateway and the filters.
//!
//! Per-request facts travel down the stack as extensions instead of a shared
//! mutable context: the gateway inserts [`ClientAddr`] and [`PeerIdentity`]
//! when a connection is accepted, and [`crate::auth`] inserts
//! [`AgentIdentity`] once a request is authenticated.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The remote address of the agent's TCP connection.
///
/// Inserted by the gateway's listener; the rate limiter keys on its IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The verified identity of an mTLS client certificate (e.g. its subject
/// common name or SAN), inserted by the gateway after the TLS handshake.
///
/// Only present when the certificate chain verified: [`crate::auth`] trusts it
/// without further checks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity(pub String);

/// Who an authenticated request belongs to: the configured *name* of the API
/// key that matched, or the mTLS peer identity that was allowed.
///
/// Never the raw key. Inserted by [`crate::auth`]; filters after it (rate
/// limit keyed by `api-key`, session limits) key on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentIdentity(pub Arc<str>);

impl AgentIdentity {
    /// The identity as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
