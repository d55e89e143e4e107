//! The HTTP/1.1 upgrade to a mux WebSocket, with version negotiation by
//! subprotocol: the gateway offers `agentmux.v1` (and maybe later
//! versions); this server selects `agentmux.v1` or refuses with `400`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fastwebsockets::upgrade::UpgradeFut;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::{MuxConnection, MuxServer};
use crate::frame::PROTOCOL;
use crate::session::shared::lock;

/// Why an upgrade request was refused (with `400 Bad Request`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefused {
    /// Not a `GET` with `Upgrade: websocket`.
    #[error("not a WebSocket upgrade request")]
    NotWebSocket,
    /// The request does not offer `agentmux.v1`.
    #[error("unsupported mux protocol version (offered: {offered:?}; supported: {PROTOCOL})")]
    Version {
        /// What the request offered in `Sec-WebSocket-Protocol`.
        offered: String,
    },
    /// The WebSocket handshake headers are wrong (key or version).
    #[error("bad WebSocket handshake: {0}")]
    Handshake(String),
}

impl UpgradeRefused {
    /// The `400` response that tells the client why.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(Bytes::from(format!("{self}\n"))));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

/// Why [`MuxServer::accept`] produced no connection.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The request was refused (and answered `400`).
    #[error(transparent)]
    Refused(#[from] UpgradeRefused),
    /// The transport closed before a request arrived.
    #[error("connection closed before an upgrade request")]
    NoRequest,
    /// The upgrade was answered but did not complete.
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(#[from] fastwebsockets::WebSocketError),
}

/// An accepted upgrade whose `101` response is on its way; await
/// [`PendingConnection::connect`] once the response has been handed to
/// hyper.
pub struct PendingConnection {
    fut: UpgradeFut,
    server: MuxServer,
}

impl PendingConnection {
    /// Completes the upgrade and starts the connection.
    pub async fn connect(self) -> Result<MuxConnection, AcceptError> {
        let ws = self.fut.await?;
        Ok(self.server.start(ws))
    }
}

impl std::fmt::Debug for PendingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConnection").finish_non_exhaustive()
    }
}

/// Whether the request offers this version in `Sec-WebSocket-Protocol`.
fn offers_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL)
}

fn offered(headers: &HeaderMap) -> String {
    let values: Vec<_> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    values.join(", ")
}

type Slot = Arc<Mutex<Option<oneshot::Sender<Result<PendingConnection, UpgradeRefused>>>>>;

impl MuxServer {
    /// Checks an upgrade request received by the application's own hyper
    /// service and, if it offers `agentmux.v1`, returns the `101` response
    /// to send (subprotocol selected) and the connection to await.
    pub fn upgrade<B>(
        &self,
        req: &mut Request<B>,
    ) -> Result<(Response<Empty<Bytes>>, PendingConnection), UpgradeRefused> {
        if req.method() != Method::GET || !fastwebsockets::upgrade::is_upgrade_request(req) {
            return Err(UpgradeRefused::NotWebSocket);
        }
        if !offers_protocol(req.headers()) {
            return Err(UpgradeRefused::Version {
                offered: offered(req.headers()),
            });
        }
        let (mut resp, fut) =
            fastwebsockets::upgrade::upgrade(&mut *req).map_err(|e| UpgradeRefused::Handshake(e.to_string()))?;
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(PROTOCOL));
        let pending = PendingConnection {
            fut,
            server: self.clone(),
        };
        Ok((resp, pending))
    }

    /// Serves the HTTP/1.1 upgrade on a transport the application accepted
    /// (TCP, TLS, a pipe) and returns the mux connection. Anything but a
    /// valid upgrade is answered `400` and returned as an error.
    pub async fn accept<IO>(&self, io: IO) -> Result<MuxConnection, AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let slot: Slot = Arc::new(Mutex::new(Some(tx)));
        let server = self.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let response = server.answer(&mut req, &slot);
            async move { Ok::<_, Infallible>(response) }
        });
        let http = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::spawn(async move {
            if let Err(e) = http.await {
                tracing::debug!(error = %e, "mux upgrade connection ended with an error");
            }
        });
        match rx.await {
            Ok(Ok(pending)) => pending.connect().await,
            Ok(Err(refused)) => Err(AcceptError::Refused(refused)),
            Err(_) => Err(AcceptError::NoRequest),
        }
    }

    /// Answers one request of [`MuxServer::accept`]'s HTTP connection and
    /// reports the outcome through `slot` (only the first one counts).
    fn answer<B>(&self, req: &mut Request<B>, slot: &Slot) -> Response<Full<Bytes>> {
        let (response, outcome) = match self.upgrade(req) {
            Ok((resp, pending)) => (resp.map(|_| Full::default()), Ok(pending)),
            Err(refused) => (refused.response(), Err(refused)),
        };
        if let Some(tx) = lock(slot).take() {
            let _ = tx.send(outcome);
        }
        response
    }
}
