//! An upgraded agent connection taken back from hyper as the transport the
//! listener accepted, so a WebSocket relay reads and writes the socket (or
//! TLS stream) itself.
//!
//! hyper hands an upgrade over as `Upgraded`: a boxed trait object behind
//! a rewind buffer, behind the listener's [`DeadlineIo`] wrapper. Each
//! read and write then goes through three dynamic or wrapping layers, and
//! the boxes stay allocated for the session's life. The listener built the
//! connection, so it knows the two concrete types it can be; taking them
//! back also drops the deadline wrapper, which has no job after the
//! first request. Bytes hyper read past the upgrade request come back with
//! the transport and must be relayed first.

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::upgrade::downcast;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::DeadlineIo;

/// An agent's transport after a WebSocket upgrade.
#[derive(Debug)]
pub(crate) enum AgentIo {
    /// Plaintext TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large, and plaintext sessions
    /// should not pay its size).
    Tls(Box<TlsStream<TcpStream>>),
    /// Anything else hyper gives back (not built by this listener): used
    /// through hyper's own wrapper.
    Upgraded(TokioIo<Upgraded>),
}

/// Takes the transport out of `upgraded`; returns it with the bytes that
/// were read past the upgrade request.
pub(crate) fn take_agent_io(upgraded: Upgraded) -> (AgentIo, Bytes) {
    let upgraded = match downcast::<TokioIo<DeadlineIo<TcpStream>>>(upgraded) {
        Ok(parts) => {
            let io = parts.io.into_inner().into_inner();
            return (AgentIo::Tcp(io), parts.read_buf);
        }
        Err(u) => u,
    };
    match downcast::<TokioIo<DeadlineIo<TlsStream<TcpStream>>>>(upgraded) {
        Ok(parts) => {
            let io = parts.io.into_inner().into_inner();
            (AgentIo::Tls(Box::new(io)), parts.read_buf)
        }
        Err(u) => {
            tracing::debug!("upgraded agent connection of an unknown type; relaying through hyper");
            (AgentIo::Upgraded(TokioIo::new(u)), Bytes::new())
        }
    }
}

delegate_io!(AgentIo { Tcp, Tls, Upgraded });
