//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the JSON admin
//! API (`/api/*`: routes, clusters, circuits, sessions, reload, drain) and
//! the dashboard (`/dashboard`).
//!
//! Bound to `127.0.0.1:9901` by default; `admin.token` is mandatory on any
//! other address. Every request passes, in this order, and fails with a
//! JSON error naming what to change:
//!
//! 1. no `token` in the query string — 400 (tokens in URLs end up in logs,
//!    history and `Referer`; see [`guard::has_query_token`]);
//! 2. `/healthz` answers here, to any host and without a token, so probes
//!    and load balancers that send their own `Host` keep working (it tells
//!    nothing but that the process runs);
//! 3. a `Host` that is one of the listener's own names — 421 otherwise
//!    (DNS rebinding; `admin.allowed_hosts` adds names), 400 without one
//!    in HTTP/1.1 (HTTP/1.0 has none to check);
//! 4. for state changes (any method but GET, HEAD, OPTIONS): not from
//!    another site by `Origin` / `Sec-Fetch-Site` — 403 (CSRF), then a
//!    body of at most 64 KiB (413) within `admin.request_header_timeout`
//!    (408);
//! 5. the dashboard's login and logout, and its static files (they hold no
//!    data), need no token; with a token set, `/dashboard` itself shows the
//!    login page until the browser holds a session cookie ([`login`]);
//! 6. everything else needs `Authorization: Bearer <admin.token>` or the
//!    session cookie — 401.
//!
//! The listener speaks HTTP/1.1 only: it is plaintext, where browsers
//! never use HTTP/2, so one header timeout (hyper's `header_read_timeout`,
//! which also closes a keep-alive connection idle that long) covers every
//! slow client, with no HTTP/2 flow-control or stream limits to bound as
//! well. At most `admin.max_connections` connections are open; further
//! ones wait in the kernel's accept queue. `Authorization`, `Cookie` and
//! `Set-Cookie` are marked sensitive (tower-http), so they never print,
//! and nothing here logs a URI.

mod api;
mod dashboard;
mod guard;
mod login;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::sensitive_headers::{SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer};

use crate::body::{Body, full};
use crate::config::AdminConfig;
use crate::gateway::Gateway;
use guard::{HostProblem, OwnNames};
use login::Sessions;

/// Largest request body an admin endpoint reads (they take none, or a
/// login form); larger ones get 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Serves the admin listener until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    config: AdminConfig,
    shutdown: CancellationToken,
) {
    // Tests and containers bind port 0: the names we answer to carry the
    // port actually bound.
    let bound = listener.local_addr().unwrap_or(config.listen);
    let admin = Arc::new(Admin {
        gateway,
        token: config.token.clone(),
        names: OwnNames::new(bound, config.allowed_hosts.clone()),
        sessions: Sessions::new(bound.port(), config.session_ttl),
        header_timeout: config.request_header_timeout,
    });
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(serve_connection(tcp, admin.clone(), permit));
    }
}

/// One admin connection, holding its slot until it ends.
async fn serve_connection(tcp: TcpStream, admin: Arc<Admin>, _slot: OwnedSemaphorePermit) {
    let header_timeout = admin.header_timeout;
    let service = tower::ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
        .service_fn(move |req| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(req).await) }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// What every admin request is answered from.
struct Admin {
    gateway: Arc<Gateway>,
    token: Option<Arc<str>>,
    names: OwnNames,
    sessions: Sessions,
    header_timeout: Duration,
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut r = self.answer(req).await;
        // Admin answers are never to be sniffed into another type or
        // framed by another page (clickjacking the login form).
        let h = r.headers_mut();
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        r
    }

    /// The checks of the module docs, in order, then the endpoint.
    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        if guard::has_query_token(parts.uri.query()) {
            return error(
                StatusCode::BAD_REQUEST,
                "token_in_url",
                "admin tokens are not accepted in URLs (logs, browser history and Referer keep them): send Authorization: Bearer <admin.token>, or log in at /dashboard",
            );
        }
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        match self.names.check_host(&parts.uri, &parts.headers) {
            Ok(()) => {}
            // HTTP/1.0 has no Host (HAProxy's default health check is such
            // a request); browsers always send one, so nothing is rebound.
            Err(HostProblem::Missing) if parts.version == Version::HTTP_10 => {}
            Err(HostProblem::Missing) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "missing_host",
                    "the request has no Host header",
                );
            }
            Err(HostProblem::Foreign(host)) => {
                return error(
                    StatusCode::MISDIRECTED_REQUEST,
                    "unknown_host",
                    &format!(
                        "Host {host:?} is not a name of this admin listener (DNS rebinding guard); list it in admin.allowed_hosts if it is yours"
                    ),
                );
            }
        }
        let body = if guard::changes_state(&parts.method) {
            if let Err(why) = self.names.check_same_origin(&parts.headers) {
                return error(
                    StatusCode::FORBIDDEN,
                    "cross_site",
                    &format!(
                        "refused a cross-site state change: {why}; admin state changes come from this listener's own pages or from non-browser clients"
                    ),
                );
            }
            match read_body(body, self.header_timeout).await {
                Ok(b) => b,
                Err(r) => return r,
            }
        } else {
            Bytes::new()
        };
        let authenticated = self.authenticated(&parts.headers);
        match (&parts.method, path) {
            (&Method::POST, "/dashboard/login") => return self.login(&body),
            (&Method::POST, "/dashboard/logout") => {
                return login::redirect_to_dashboard(&self.sessions.end(&parts.headers));
            }
            (&Method::GET, "/dashboard" | "/dashboard/" | "/dashboard/index.html") => {
                return if authenticated {
                    dashboard::page(self.token.is_some())
                } else {
                    login::page(false)
                };
            }
            (&Method::GET, p) => {
                if let Some(asset) = p.strip_prefix("/dashboard/")
                    && let Some(r) = dashboard::asset(asset)
                {
                    return r;
                }
            }
            _ => {}
        }
        if !authenticated {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "admin API needs Authorization: Bearer <admin.token> (or, in a browser, a login at /dashboard)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        api::dispatch(&self.gateway, &parts.method, path, parts.uri.query().unwrap_or("")).await
    }

    /// A bearer token or a live session cookie, when a token is set.
    fn authenticated(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        guard::bearer(headers).is_some_and(|got| guard::token_matches(got, token)) || self.sessions.is_valid(headers)
    }

    /// `POST /dashboard/login` with a form field `token`.
    fn login(&self, body: &Bytes) -> Response<Body> {
        let Some(token) = &self.token else {
            return error(
                StatusCode::NOT_FOUND,
                "no_login",
                "admin.token is not set: the dashboard needs no login",
            );
        };
        match login::form_token(body) {
            Some(got) if guard::token_matches(&got, token) => login::redirect_to_dashboard(&self.sessions.start()),
            _ => login::page(true),
        }
    }
}

/// Reads a state-changing request's body: at most [`MAX_BODY_BYTES`]
/// (413), within `timeout` (408), so a slow or endless body cannot hold a
/// connection slot.
async fn read_body(body: Incoming, timeout: Duration) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("admin request bodies are at most {MAX_BODY_BYTES} bytes"),
        )
    };
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the request body could not be read",
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive within admin.request_header_timeout",
        )),
    }
}

pub(crate) fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A JSON error: `{"error": kind, "message": message}`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": kind, "message": message }))
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(format!("{v:#}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
