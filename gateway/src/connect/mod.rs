//! Opening upstream transports: TCP (with optional TLS) or the in-process
//! echo upstream.

mod stream;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::EndpointAddr;
pub use stream::UpstreamIo;

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// DNS resolution failed or returned nothing.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The endpoint.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// TCP connect failed (refused, unreachable, reset).
    #[error("cannot connect to {addr}: {source}")]
    Tcp {
        /// The endpoint.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// The TLS handshake failed (certificate, protocol, ALPN).
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The endpoint.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// Connect plus handshake took longer than `connect_timeout`.
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// The endpoint.
        addr: String,
        /// The configured timeout.
        after: Duration,
    },
}

/// TLS settings for one kind of upstream connection (the ALPN list differs
/// between HTTP pools and WebSocket pools).
#[derive(Clone)]
pub(crate) struct TlsConnect {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Opens transports to one endpoint.
#[derive(Clone, Debug)]
pub(crate) enum Connector {
    /// A network endpoint.
    Net {
        addr: EndpointAddr,
        tls: Option<TlsConnect>,
        timeout: Duration,
        /// TCP keepalive idle time; `None`: off.
        keepalive: Option<Duration>,
    },
    /// The built-in echo upstream: each connection is a fresh in-process
    /// pipe served by [`crate::echo`].
    Echo,
    /// An in-memory upstream whose connects tests count and fail at will.
    #[cfg(test)]
    Test(Arc<TestUpstream>),
}

/// A scriptable in-memory upstream for pool tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct TestUpstream {
    pub(crate) connects: std::sync::atomic::AtomicUsize,
    pub(crate) fail: std::sync::atomic::AtomicBool,
    /// Serve connections with the echo upstream instead of holding them.
    pub(crate) echo: bool,
    /// The far ends of non-echo connections; drop one to "close" it.
    pub(crate) peers: std::sync::Mutex<Vec<tokio::io::DuplexStream>>,
}

impl Connector {
    /// Opens one transport, TLS handshake included, within the timeout.
    pub(crate) async fn connect(&self) -> Result<UpstreamIo, ConnectError> {
        match self {
            Self::Echo => Ok(UpstreamIo::Duplex(crate::echo::connect())),
            #[cfg(test)]
            Self::Test(t) => {
                use std::sync::atomic::Ordering;
                if t.fail.load(Ordering::SeqCst) {
                    return Err(ConnectError::Tcp {
                        addr: "test".into(),
                        source: io::ErrorKind::ConnectionRefused.into(),
                    });
                }
                t.connects.fetch_add(1, Ordering::SeqCst);
                if t.echo {
                    return Ok(UpstreamIo::Duplex(crate::echo::connect()));
                }
                let (near, far) = tokio::io::duplex(4096);
                t.peers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(far);
                Ok(UpstreamIo::Duplex(near))
            }
            Self::Net {
                addr,
                tls,
                timeout,
                keepalive,
            } => match tokio::time::timeout(*timeout, connect_net(addr, tls.as_ref(), *keepalive)).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError::Timeout {
                    addr: addr.to_string(),
                    after: *timeout,
                }),
            },
        }
    }
}

async fn connect_net(
    addr: &EndpointAddr,
    tls: Option<&TlsConnect>,
    keepalive: Option<Duration>,
) -> Result<UpstreamIo, ConnectError> {
    let tcp = match addr {
        EndpointAddr::Ip(a) => TcpStream::connect(a).await,
        EndpointAddr::Dns { host, port } => {
            let addrs: Vec<_> = tokio::net::lookup_host((&**host, *port))
                .await
                .map_err(|source| ConnectError::Resolve {
                    addr: addr.to_string(),
                    source,
                })?
                .collect();
            connect_any(&addrs).await
        }
    }
    .map_err(|source| ConnectError::Tcp {
        addr: addr.to_string(),
        source,
    })?;
    // Agent traffic is small messages; Nagle would add up to 40 ms each.
    let _ = tcp.set_nodelay(true);
    // A pooled connection to a host that vanished (no FIN, no RST) would
    // otherwise look open until a request is sent on it.
    if let Some(idle) = keepalive {
        set_tcp_keepalive(&tcp, idle);
    }
    let Some(tls) = tls else {
        return Ok(UpstreamIo::Tcp(tcp));
    };
    let stream = tls
        .connector
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|source| ConnectError::Tls {
            addr: addr.to_string(),
            source,
        })?;
    Ok(UpstreamIo::Tls(Box::new(stream)))
}

/// Tries each resolved address in turn, returning the last error.
async fn connect_any(addrs: &[std::net::SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no addresses");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Builds the TLS part of a connector.
pub(crate) fn tls_connect(
    ca: Option<&std::path::Path>,
    sni: Option<&ServerName<'static>>,
    addr: &EndpointAddr,
    alpn: Vec<Vec<u8>>,
) -> Result<TlsConnect, TlsError> {
    let config = agentmux_certs::client_config(ca, alpn)?;
    let server_name = match sni {
        Some(s) => s.clone(),
        None => match addr {
            EndpointAddr::Ip(a) => ServerName::IpAddress(a.ip().into()),
            EndpointAddr::Dns { host, .. } => {
                ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))?
            }
        },
    };
    Ok(TlsConnect {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// Why upstream TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle or client settings.
    #[error(transparent)]
    Certs(#[from] agentmux_certs::CertError),
    /// The endpoint's host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// Turns on TCP keepalive: probes after `idle` of silence, then every
/// 10 s, and the connection ends after 3 unanswered (about `idle` + 30 s
/// for a peer that vanished without a FIN or RST). Agent and upstream
/// sockets alike.
pub(crate) fn set_tcp_keepalive(tcp: &TcpStream, idle: Duration) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "could not enable TCP keepalive");
    }
}
