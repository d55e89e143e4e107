//! Real clients: hyper HTTP/1.1 and HTTP/2 over rustls (verifying the
//! gateway's development CA), and raw TCP/TLS streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A fully read response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A TLS client config trusting `ca` with the given ALPN protocols.
pub fn tls_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let alpn = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(agentmux_certs::client_config(Some(ca), alpn).unwrap())
}

/// Opens TCP + TLS to `addr` as `localhost`.
pub async fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends `req` over TLS with HTTP/2 (`h2`) or HTTP/1.1 and returns the
/// response with its body still streaming.
pub async fn send_tls(addr: SocketAddr, ca: &Path, h2: bool, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = connect_tls(addr, tls_config(ca, alpn)).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn[0]), "ALPN");
    send_on(TokioIo::new(tls), h2, req).await
}

/// Sends `req` over plaintext HTTP/1.1.
pub async fn send_plain(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    send_on(TokioIo::new(tcp), false, req).await
}

async fn send_on<T>(io: TokioIo<T>, h2: bool, mut req: Request<Full<Bytes>>) -> Response<Incoming>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        if req.uri().authority().is_none() {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            *req.uri_mut() = format!("https://localhost{pq}").parse().unwrap();
        }
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        if !req.headers().contains_key(http::header::HOST) {
            req.headers_mut()
                .insert(http::header::HOST, "localhost".parse().unwrap());
        }
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    }
}

/// Reads a response to its end.
pub async fn read(resp: Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Resp {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// GET over TLS.
pub async fn get_tls(addr: SocketAddr, ca: &Path, h2: bool, path: &str) -> Resp {
    let req = Request::get(path).body(Full::new(Bytes::new())).unwrap();
    read(send_tls(addr, ca, h2, req).await).await
}

/// GET over plaintext HTTP/1.1 with extra headers.
pub async fn get_plain(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::get(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    read(send_plain(addr, b.body(Full::new(Bytes::new())).unwrap()).await).await
}
