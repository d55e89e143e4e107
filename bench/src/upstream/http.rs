//! HTTP side of the simulator: routing of one request (WebSocket upgrade,
//! SSE stream, health check, echo) and the echo itself. The echo returns
//! the request body (or `ok` for a bodiless request) after the added
//! latency, subject to the faults: a drop is an error from the service,
//! which makes hyper close the connection without a response.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;

use super::faults::Verdict;
use super::{Sim, sse, ws_echo};

/// Boxed error of the simulator's service.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body type of every route.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = code;
    response
}

/// Routes one request.
pub(crate) async fn handle(mut req: Request<Incoming>, sim: Arc<Sim>) -> Result<Response<Body>, BoxError> {
    // RFC 8441: a WebSocket session as a stream of an HTTP/2 connection.
    if req.method() == http::Method::CONNECT {
        let websocket = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str() == "websocket");
        if !websocket {
            return Ok(status(StatusCode::NOT_IMPLEMENTED, "only websocket streams\n"));
        }
        tokio::spawn(ws_echo::session_on_stream(hyper::upgrade::on(&mut req), sim));
        return Ok(Response::new(
            http_body_util::Empty::new().map_err(|never| match never {}).boxed(),
        ));
    }
    if fastwebsockets::upgrade::is_upgrade_request(&req) {
        return match fastwebsockets::upgrade::upgrade(&mut req) {
            Ok((response, upgrade)) => {
                tokio::spawn(ws_echo::session(upgrade, sim));
                Ok(response.map(|empty| empty.map_err(|never| match never {}).boxed()))
            }
            Err(_) => Ok(status(StatusCode::BAD_REQUEST, "bad websocket upgrade\n")),
        };
    }
    let path = req.uri().path();
    if path == "/healthz" {
        return Ok(status(StatusCode::OK, "ok\n"));
    }
    if path.starts_with("/sse") {
        return Ok(sse::respond(&req, sim).await);
    }
    echo(req, &sim).await
}

async fn echo(req: Request<Incoming>, sim: &Sim) -> Result<Response<Body>, BoxError> {
    let body = req.into_body().collect().await?.to_bytes();
    if !sim.faults.latency.is_zero() {
        tokio::time::sleep(sim.faults.latency).await;
    }
    match sim.faults.roll() {
        Verdict::Drop => Err("injected drop".into()),
        Verdict::Error => Ok(status(StatusCode::INTERNAL_SERVER_ERROR, "injected error\n")),
        Verdict::Pass if body.is_empty() => Ok(status(StatusCode::OK, "ok\n")),
        Verdict::Pass => {
            let body = if sim.faults.corrupt_rate > 0.0 {
                let mut bytes = body.to_vec();
                sim.faults.maybe_corrupt(&mut bytes);
                Bytes::from(bytes)
            } else {
                body
            };
            Ok(Response::new(full(body)))
        }
    }
}
