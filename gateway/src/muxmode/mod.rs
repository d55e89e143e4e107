//! `mode = "mux"`: each agent speaks plain WebSocket to the gateway, and
//! the gateway carries all sessions of a cluster over a few long-lived
//! upstream WebSockets speaking `agentmux.v1` ([`crate::mux`]).
//!
//! An agent's upgrade is checked like in websocket mode; then the gateway
//! opens a mux session (OPEN with the route, the agent's identity, path,
//! headers and subprotocol offer) on the least-loaded connection of the
//! endpoint the balancer picked, and answers the agent's `101` with the
//! subprotocol the upstream chose. Frames flow as mux chunks, fragments
//! kept, with per-session credit so a slow agent stalls only itself. When
//! a mux connection dies its sessions are resumed on another with nothing
//! lost or repeated ([`upstream`]); one that cannot be resumed in time is
//! closed with 1011 and counted.

mod agent;
mod relay;
mod upstream;

use std::sync::Arc;

use http::{HeaderName, Request, Response, header};

pub(crate) use upstream::{MuxCluster, MuxCounters};

use crate::body::Body;
use crate::error::{Cause, ProxyError};
use crate::listener::take_agent_io;
use crate::mux::{ErrorCode, Open, OpenError, SessionError};
use crate::proxy::headers::strip_hop_by_hop;
use crate::stack::{ProxyBody, Terminal};
use crate::ws::Prelude;

/// Handles an agent's upgrade on a mux route.
pub(crate) async fn session(t: &Arc<Terminal>, mut req: Request<ProxyBody>) -> Result<Response<Body>, ProxyError> {
    let p = match Prelude::take(t, &req)? {
        Ok(p) => p,
        Err(response) => return Ok(response),
    };
    let mux = t
        .cluster
        .mux()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "cluster has no mux connections"))?;
    let key = t
        .cluster
        .hash_key()
        .and_then(|k| crate::proxy::affinity_key(k, &req, p.conn.client.ip()));
    let picked = t.pick(key)?;
    let endpoint = picked.endpoint.clone();
    let me = mux
        .endpoints
        .iter()
        .find(|m| Arc::ptr_eq(&m.endpoint, &endpoint))
        .cloned()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "endpoint has no mux connections"))?;
    let active = endpoint.track();
    let open = open_request(t, &req, &p.agent_name);
    let started = tokio::time::Instant::now();
    let wait = endpoint
        .raw
        .as_ref()
        .map_or(std::time::Duration::from_secs(5), |p| p.params().acquire_timeout);
    let session = loop {
        let Some(conn) = me.least_loaded(wait.saturating_sub(started.elapsed())).await else {
            picked.record(None);
            return Err(ProxyError::new(
                Cause::PoolExhausted,
                "no mux connection to the upstream is up",
            ));
        };
        match conn.open(upstream::next_session_id(), open.clone()).await {
            Ok(s) => break s,
            // Lost before the answer, or full: another connection.
            Err(OpenError::ConnectionLost | OpenError::InUse(_)) => continue,
            Err(OpenError::Failed(SessionError::Peer {
                code: ErrorCode::TooManySessions,
                ..
            })) if me.live() > 1 => continue,
            Err(OpenError::Refused { code, reason }) => {
                picked.record(Some(http::StatusCode::BAD_GATEWAY));
                let msg = format!("upstream refused the session: {code} {reason}");
                return Err(ProxyError::new(Cause::UpgradeRefused, msg));
            }
            Err(e) => {
                picked.record(None);
                return Err(
                    ProxyError::new(Cause::UpstreamProtocol, "upstream could not open the session").with_source(e),
                );
            }
        }
    };
    t.acquire.observe(started.elapsed());
    picked.record(Some(http::StatusCode::SWITCHING_PROTOCOLS));
    let response = crate::ws::handshake::switching_protocols_to(&p.agent_key, session.subprotocol().as_deref());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max_message = t.route.websocket.max_message_bytes;
    let drain = t.sessions.drain.watch();
    let t = t.clone();
    t.sessions.tracker.clone().spawn(async move {
        let (agent, early) = match on_upgrade.await {
            Ok(u) => take_agent_io(u),
            Err(e) => {
                tracing::debug!(error = %e, "agent upgrade did not complete");
                return;
            }
        };
        let m = t.metrics.clone();
        m.sessions_active.inc();
        let _listed = t.sessions.registry.register(
            t.route.name.clone(),
            p.agent_name.clone(),
            p.conn.client,
            endpoint.label().to_owned(),
        );
        let end = relay::run(agent, &early, session, max_message, p.messages, m.clone(), drain).await;
        drop(early);
        m.sessions_active.dec();
        m.session_ended(end.as_str());
        if let Some(s) = p.span {
            s.set("agentmux.ws.end", end.as_str());
            s.end();
        }
        drop((active, p.session_permit, p.conn));
    });
    Ok(response)
}

/// The OPEN for the upstream: route, identity, path and the agent's
/// end-to-end headers (not hop-by-hop ones, not the WebSocket handshake's).
fn open_request(t: &Terminal, req: &Request<ProxyBody>, identity: &str) -> Open {
    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers);
    let subprotocols: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let skip = [
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::SEC_WEBSOCKET_PROTOCOL,
    ];
    let headers: Vec<(HeaderName, http::HeaderValue)> = headers
        .iter()
        .filter(|(n, _)| !skip.contains(n))
        .take(crate::mux::MAX_OPEN_HEADERS)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    Open {
        window: t.cluster.config().mux.window_bytes,
        route: t.route.name().to_owned(),
        identity: identity.to_owned(),
        path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        headers,
        subprotocols: subprotocols.into_iter().take(crate::mux::MAX_SUBPROTOCOLS).collect(),
    }
}
