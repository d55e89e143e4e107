//! Small upstream servers for tests: any handler on a loopback port.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, Infallible>;

/// Serves `handler` (HTTP/1.1 and HTTP/2 prior knowledge) on a fresh
/// loopback port until the test's runtime ends.
pub async fn spawn_http<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(b.into()).boxed()
}

/// A loopback address with nothing listening (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// An HTTP/2 upstream that offers extended CONNECT and never answers one
/// (a stalled upstream).
pub async fn spawn_h2_silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc =
                    service_fn(|_req: Request<Incoming>| std::future::pending::<Result<Response<Body>, Infallible>>());
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .enable_connect_protocol()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// An HTTP/2-only (prior knowledge) WebSocket echo that takes sessions as
/// RFC 8441 extended CONNECT streams, at most `max_streams` per
/// connection, choosing the first subprotocol offered. Returns its address
/// and the count of connections it accepted.
pub async fn spawn_h2_ws_echo(max_streams: u32) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    let websocket = req.method() == http::Method::CONNECT
                        && req
                            .extensions()
                            .get::<hyper::ext::Protocol>()
                            .is_some_and(|p| p.as_str() == "websocket");
                    if !websocket {
                        let mut r = Response::new(full("not a websocket stream"));
                        *r.status_mut() = http::StatusCode::BAD_REQUEST;
                        return Ok::<_, Infallible>(r);
                    }
                    let chosen = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .map(|p| p.trim().to_owned());
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(io) = on_upgrade.await else { return };
                        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
                        while let Some(Ok(m)) = ws.next().await {
                            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut r = Response::new(http_body_util::BodyExt::boxed(http_body_util::Empty::new()));
                    if let Some(p) = chosen.and_then(|p| http::HeaderValue::from_str(&p).ok()) {
                        r.headers_mut().insert("sec-websocket-protocol", p);
                    }
                    Ok(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .enable_connect_protocol()
                    .max_concurrent_streams(max_streams)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}
