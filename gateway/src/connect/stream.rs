//! The byte stream to one upstream connection, whatever carries it.

use std::pin::Pin;
use std::task::Context;

use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// An established upstream transport: plain TCP, TLS over TCP, or an
/// in-process pipe to a built-in upstream. An enum rather than a boxed trait
/// object so reads and writes on the relay path stay static calls.
#[derive(Debug)]
pub enum UpstreamIo {
    /// Plaintext TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large and most sessions in a
    /// plaintext deployment never carry it).
    Tls(Box<TlsStream<TcpStream>>),
    /// In-process pipe (the `echo` cluster kind).
    Duplex(DuplexStream),
}

impl UpstreamIo {
    /// Whether TLS negotiated HTTP/2 through ALPN.
    pub fn alpn_is_h2(&self) -> bool {
        match self {
            Self::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
            Self::Tcp(_) | Self::Duplex(_) => false,
        }
    }

    /// Checks, without blocking, that an idle connection is still usable:
    /// the peer has not closed it and has not sent anything unexpected.
    /// Reads nothing an HTTP exchange would need: an idle connection that
    /// has bytes waiting is not safe to reuse anyway.
    pub fn is_idle_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut scratch = [0u8; 1];
        let mut buf = ReadBuf::new(&mut scratch);
        Pin::new(self).poll_read(&mut cx, &mut buf).is_pending()
    }
}

delegate_io!(UpstreamIo { Tcp, Tls, Duplex });
