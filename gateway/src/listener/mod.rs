//! Downstream listeners: accept agents, terminate TLS, serve HTTP/1.1 and
//! HTTP/2 with limits, and drain on shutdown.
//!
//! Each accepted connection runs in its own task; nothing one agent sends
//! (garbage TLS, oversized or endless headers) reaches another. Every phase
//! of a connection has a deadline: `tls_handshake_timeout` (the connection
//! is dropped), a request head — or the HTTP/2 preface and first SETTINGS
//! — not complete within `request_header_timeout` (408 for the first
//! HTTP/1.1 head, see `io`), nothing in flight for `idle_timeout` (HTTP/1.1
//! closes, HTTP/2 gets GOAWAY, see `activity`), a request body not complete
//! within its route's `request_body_timeout` (408, `crate::edge::body`).
//! Request heads over `max_request_header_bytes` get 431 from hyper; at
//! most `max_connections` connections are open (further agents wait in
//! the kernel's accept queue rather than exhaust file descriptors); TCP
//! keepalive finds agents that vanished without a FIN.
//!
//! HTTP/2 does not advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`: extended
//! CONNECT (RFC 8441 WebSockets) is not served yet, and a browser told it
//! is would send its `wss://` sessions where they get no answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::conn::{Activity, ConnHold, ConnInfo, Cut, DeadlineIo, TrackedBody};
use crate::gateway::Gateway;

/// Binds a listener socket (SO_REUSEADDR, deep accept backlog).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts connections until `shutdown`, each served in a task the
/// tracker waits for when draining.
pub(crate) async fn serve(
    listener: TcpListener,
    config: ListenerConfig,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut reserve = Reserve::new();
    let mut failures: u64 = 0;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let (tcp, client) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors or a transient accept error: log
                // the first of a streak only, turn away the agent waiting
                // in the backlog when descriptors ran out, and back off
                // briefly instead of spinning on the error.
                if failures == 0 {
                    tracing::warn!(
                        listener = %config.name,
                        error = %e,
                        "accept failed (logged once until accepting works again)"
                    );
                }
                failures += 1;
                if out_of_descriptors(&e) {
                    reserve.refuse_waiting(&listener, tls.is_some());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(listener = %config.name, failures, "accepting again");
            failures = 0;
        }
        let _ = tcp.set_nodelay(true);
        if let Some(idle) = config.tcp_keepalive {
            crate::connect::set_tcp_keepalive(&tcp, idle);
        }
        let (config, tls, gateway, shutdown) = (config.clone(), tls.clone(), gateway.clone(), shutdown.clone());
        tracker.spawn(async move {
            serve_connection(tcp, client, &config, tls, gateway, shutdown, permit).await;
        });
    }
}

/// `EMFILE` / `ENFILE`: the process or the system is out of descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// One descriptor held back for the moment the process runs out: released,
/// it lets the listener accept the agents waiting in the backlog and close
/// them at once, so they hear an answer instead of waiting in the kernel's
/// queue until their own timeout.
struct Reserve(Option<std::fs::File>);

/// Most agents turned away per accept failure (the listener backs off
/// 50 ms between failures).
const REFUSE_PER_FAILURE: usize = 64;

impl Reserve {
    fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    fn refuse_waiting(&mut self, listener: &TcpListener, tls: bool) {
        if self.0.take().is_some() {
            for _ in 0..REFUSE_PER_FAILURE {
                let Some(Ok((tcp, _))) = listener.accept().now_or_never() else {
                    break;
                };
                // Plaintext agents get a status line; a TLS agent expects a
                // handshake, so it gets a closed connection.
                if !tls {
                    let _ = tcp.try_write(REFUSED);
                }
                // Closing with unread bytes sends a reset, which many
                // clients report instead of the answer: take what came.
                let mut unread = [0u8; 2048];
                let _ = tcp.try_read(&mut unread);
                drop(tcp);
            }
        }
        self.0 = std::fs::File::open("/dev/null").ok();
    }
}

/// What an agent turned away for lack of descriptors reads.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 67\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"error\":\"overloaded\",\"message\":\"gateway out of file descriptors\"}\n";

async fn serve_connection(
    tcp: TcpStream,
    client: SocketAddr,
    config: &Arc<ListenerConfig>,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    match tls {
        None => {
            let info = ConnInfo {
                client,
                listener: config.name.clone(),
                tls: false,
                peer_identity: None,
                settings: config.clone(),
                _slot: slot,
            };
            serve_http(tcp, info, false, config, gateway, shutdown).await;
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(config.tls_handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "TLS handshake failed");
                    gateway
                        .metrics()
                        .connection_cut(&config.name, Cut::TlsHandshake.as_str());
                    return;
                }
                Err(_) => {
                    tracing::debug!(%client, "TLS handshake timed out");
                    gateway
                        .metrics()
                        .connection_cut(&config.name, Cut::TlsHandshake.as_str());
                    return;
                }
            };
            let session = stream.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            let peer_identity = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(agentmux_certs::peer_identity)
                .map(Arc::from);
            let info = ConnInfo {
                client,
                listener: config.name.clone(),
                tls: true,
                peer_identity,
                settings: config.clone(),
                _slot: slot,
            };
            serve_http(stream, info, h2, config, gateway, shutdown).await;
        }
    }
}

async fn serve_http<T>(
    io: T,
    info: ConnInfo,
    h2: bool,
    config: &ListenerConfig,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // RFC 8441: advertised only where it is served. Decided per connection,
    // so a reload that adds or removes the last WebSocket route applies to
    // connections accepted after it.
    let h2_websockets = config.h2_websockets && gateway.runtime().takes_websockets();
    let activity = Activity::new();
    let io = DeadlineIo::new(io, config.request_header_timeout, activity.clone(), h2);
    let metrics = gateway.metrics().clone();
    let info = Arc::new(info);
    let service = {
        let activity = activity.clone();
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let in_flight = activity.start();
            // A WebSocket session on an HTTP/2 stream keeps the connection
            // busy for its life, not only while its CONNECT is answered.
            if crate::session::upgrade::is_extended_connect(&req) {
                req.extensions_mut().insert(ConnHold::new(activity.hold()));
            }
            let (gateway, info) = (gateway.clone(), info.clone());
            async move {
                let resp = gateway.handle(info, req).await;
                Ok::<_, std::convert::Infallible>(resp.map(|b| TrackedBody::new(b, in_flight)))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's own head timer is off: it starts when a connection goes
        // idle, so it cannot tell a slow head from an idle keep-alive
        // connection, and it cost a timer armed and cancelled per request.
        // `DeadlineIo` bounds every head and the idle watchdog every idle
        // connection (tests/edge.rs, tests/http_proxy.rs slowloris).
        .header_read_timeout(None)
        .max_buf_size(config.max_request_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_request_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30));
    if h2_websockets {
        builder.http2().enable_connect_protocol();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // Finish in-flight requests, refuse new ones (HTTP/1.1 closes
            // after the current response, HTTP/2 sends GOAWAY).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = activity.idle_for(config.idle_timeout) => {
            tracing::debug!("closing an idle agent connection");
            activity.cut(Cut::Idle);
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Some(why) = activity.cut_by() {
        metrics.connection_cut(&config.name, why.as_str());
    }
    if let Err(e) = result {
        tracing::debug!(error = %e, "agent connection ended with an error");
    }
}
