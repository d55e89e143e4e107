//! The target of a load run: the URL parsed and resolved once, and the
//! connection step shared by every protocol (TCP connect, then TLS for
//! wss/https), timed separately so the report can tell them apart.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Uri;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::report::{ErrorKind, Metric, Recorder};

/// A byte stream to the target, plaintext or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`]; boxing keeps one session type for both transports.
pub(crate) type Stream = Pin<Box<dyn Io>>;

/// A parsed, resolved target.
#[derive(Clone)]
pub(crate) struct Target {
    /// The URL as given.
    pub(crate) url: String,
    /// `host[:port]` for the Host header.
    pub(crate) authority: String,
    /// Path and query to request.
    pub(crate) path_and_query: String,
    /// Resolved address.
    pub(crate) addr: SocketAddr,
    /// Whether the scheme was ws:// or wss://.
    pub(crate) websocket: bool,
    /// TLS settings, for wss/https.
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// A failed session step, with the kind the report counts it under.
#[derive(Debug)]
pub(crate) struct SessionError {
    pub(crate) kind: ErrorKind,
    pub(crate) detail: String,
}

impl SessionError {
    pub(crate) fn new(kind: ErrorKind, detail: impl ToString) -> Self {
        Self {
            kind,
            detail: detail.to_string(),
        }
    }
}

impl Target {
    /// Parses and resolves `url`; `tls` is used for wss/https only.
    pub(crate) async fn resolve(
        url: &str,
        tls: impl FnOnce() -> Result<Arc<ClientConfig>, Error>,
    ) -> Result<Self, Error> {
        let uri: Uri = url.parse().map_err(|e| Error::Usage(format!("URL `{url}`: {e}")))?;
        let scheme = uri.scheme_str().unwrap_or("");
        let (secure, websocket, default_port) = match scheme {
            "ws" => (false, true, 80),
            "wss" => (true, true, 443),
            "http" => (false, false, 80),
            "https" => (true, false, 443),
            other => {
                return Err(Error::Usage(format!(
                    "URL `{url}`: scheme `{other}` is not ws, wss, http or https"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::Usage(format!("URL `{url}` has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Error::io(format!("resolving {host}"), e))?
            .next()
            .ok_or_else(|| Error::Usage(format!("{host} resolves to no address")))?;
        let tls = if secure {
            let name = ServerName::try_from(host.clone()).map_err(|e| Error::Usage(format!("URL `{url}`: {e}")))?;
            Some((tls()?, name))
        } else {
            None
        };
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        Ok(Self {
            url: url.to_string(),
            authority,
            path_and_query,
            addr,
            websocket,
            tls,
        })
    }

    /// Connects (and handshakes TLS), recording connect and TLS times.
    pub(crate) async fn connect(&self, rec: &Recorder, timeout: Duration) -> Result<Stream, SessionError> {
        let start = Instant::now();
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| SessionError::new(ErrorKind::Connect, "connect timed out"))?
            .map_err(|e| SessionError::new(ErrorKind::Connect, e))?;
        // Small echo messages: never wait for Nagle.
        let _ = tcp.set_nodelay(true);
        rec.record(Metric::Connect, micros(start.elapsed()));
        let Some((config, name)) = &self.tls else {
            return Ok(Box::pin(tcp));
        };
        let tls_start = Instant::now();
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let stream = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| SessionError::new(ErrorKind::Tls, "TLS handshake timed out"))?
            .map_err(|e| SessionError::new(ErrorKind::Tls, e))?;
        rec.record(Metric::Tls, micros(tls_start.elapsed()));
        Ok(Box::pin(stream))
    }
}

/// A duration in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
