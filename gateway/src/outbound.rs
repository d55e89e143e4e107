//! The gateway's own outbound HTTP calls (alert webhooks, OTLP trace
//! export): one request per connection, HTTP/1.1 over TCP or TLS.
//!
//! TLS is tokio-rustls with the ring provider through
//! `agentmux_certs::client_config` (the webpki roots, or a CA file), like
//! every other client in the gateway — no second HTTP stack (reqwest) and
//! no second crypto provider. A fresh connection per request: these calls
//! are rare (an alert, a trace batch every few seconds), and a fresh
//! connection never fails on a stale keep-alive.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::BoxError;

/// Why a target URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute `http://` or `https://` URL with a host.
    #[error("url {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The TLS client configuration could not be built (CA file).
    #[error("TLS: {0}")]
    Tls(#[from] agentmux_certs::CertError),
}

/// No complete answer within the call's timeout.
#[derive(Debug, thiserror::Error)]
#[error("{authority} did not answer within {after:?}")]
pub(crate) struct Elapsed {
    authority: String,
    after: Duration,
}

/// Where outbound requests go: a host, and TLS for `https`.
#[derive(Clone)]
pub(crate) struct Target {
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    pub(crate) authority: String,
    /// Path and query of the URL.
    pub(crate) path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Largest response body read (outbound answers are small; a peer that
/// streams more is cut).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

impl Target {
    /// Parses and checks `url`; for `https`, trusts `ca` (a PEM file) or,
    /// without one, the webpki roots.
    pub(crate) fn parse(url: &str, ca: Option<&Path>) -> Result<Self, TargetError> {
        let bad = |why| TargetError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            // It would travel in the Host header; put a token in the path.
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let tls = if https {
            let name = ServerName::try_from(host.to_owned()).map_err(|_| bad("bad host name"))?;
            let config = agentmux_certs::client_config(ca, vec![b"http/1.1".to_vec()])?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            path,
            tls,
        })
    }

    /// Sends `req` on a fresh connection (its `Host` set to the target's
    /// authority) and reads the whole answer, all within `timeout`.
    pub(crate) async fn send(&self, mut req: Request<Bytes>, timeout: Duration) -> Result<Response<Bytes>, BoxError> {
        if let Ok(host) = self.authority.parse() {
            req.headers_mut().insert(header::HOST, host);
        }
        let req = req.map(Full::new);
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(Box::new(Elapsed {
                authority: self.authority.clone(),
                after: timeout,
            })),
        }
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Response<Bytes>, BoxError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some((connector, name)) => {
                let io = connector.connect(name.clone(), tcp).await?;
                exchange_on(io, req).await
            }
            None => exchange_on(tcp, req).await,
        }
    }
}

async fn exchange_on<I>(io: I, req: Request<Full<Bytes>>) -> Result<Response<Bytes>, BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?.to_bytes();
        Ok::<_, BoxError>(Response::from_parts(parts, body))
    }
    .await;
    // One request per connection: close it whatever the outcome.
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Target::parse("http://127.0.0.1:4318/v1/traces", None).is_ok());
        let t = Target::parse("https://collector.example/v1/traces?x=1", None).unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/v1/traces?x=1"));
        for bad in ["ftp://x/", "http:///x", "http://user:pw@x/", "not a url"] {
            assert!(Target::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn one_request_one_connection_whole_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            assert!(head.contains(&format!("host: {addr}")), "{head}");
            tcp.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        });
        let t = Target::parse(&format!("http://{addr}/v1/traces"), None).unwrap();
        let req = Request::post("/v1/traces").body(Bytes::from_static(b"{}")).unwrap();
        let resp = t.send(req, Duration::from_secs(10)).await.unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.body().as_ref(), b"ok");
    }
}
