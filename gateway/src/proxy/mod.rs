//! The request path: route a request, then hand it to the route's mode.

mod body;
pub(crate) mod headers;
mod http;

pub(crate) use http::affinity_key;

use std::sync::Arc;

use ::http::{Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::Mode;
use crate::error::{Cause, ProxyError};
use crate::gateway::Sessions;
use crate::listener::ConnInfo;
use crate::runtime::Runtime;

/// Answers one agent request: routes it and proxies it per the route's mode;
/// every failure becomes its mapped HTTP answer here, at the edge.
pub(crate) async fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    sessions: &Sessions,
) -> Response<Body> {
    let host = request_host(&req).map(str::to_owned);
    let Some(route) = rt
        .router()
        .route(host.as_deref(), req.uri().path(), req.headers())
        .cloned()
    else {
        let msg = format!(
            "no route for host {:?} path {:?}",
            host.as_deref().unwrap_or(""),
            req.uri().path()
        );
        return ProxyError::new(Cause::NoRoute, msg).into_response();
    };
    let Some(cluster) = rt.cluster(route.cluster()) else {
        return ProxyError::new(Cause::Internal, "route has no running cluster").into_response();
    };
    let result = match route.mode() {
        Mode::Http => http::forward(&route, &cluster, &conn, host.as_deref(), req).await,
        Mode::WebSocket => {
            crate::ws::session(route.clone(), cluster, conn, host, req, sessions).await
        }
        Mode::Mux => Err(ProxyError::new(
            Cause::BadRequest,
            format!("route {:?}: mux mode is not available yet", route.name()),
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(route = route.name(), cause = e.cause().as_str(), error = %e, "request failed");
        e.into_response()
    })
}

/// The host the agent asked for: `:authority` / absolute URI, else `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(::http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}
