//! `mode = "websocket"`: one upstream WebSocket per agent session, opened
//! over a pooled, already-connected transport and relayed frame by frame.
//!
//! An agent's upgrade is checked (400 with a reason when malformed, 426 when
//! it is not an upgrade or asks for another version), then the gateway takes
//! a connected transport from the endpoint's raw pool — TCP and TLS are
//! already done, so the session pays only the upgrade round trip — and
//! performs its own upgrade on it: the agent's path, headers and subprotocol
//! offer, a fresh key, no extensions. A pooled transport that turns out
//! stale before answering is replaced by a fresh one once. The upstream's
//! answer decides the agent's: its `101` (with the subprotocol it chose)
//! or `502` when it refuses (`504` when it does not answer in time).
//!
//! The relay ([`relay`]) then carries frames both ways without reassembling
//! messages, enforcing RFC 6455 on both peers.
//!
//! Why not fastwebsockets for the relay: it reads each frame whole into a
//! buffer (a 16 MiB frame is 16 MiB of memory), gives every read half an
//! 8 KiB buffer up front (idle sessions cost memory), keeps no fragment
//! state on split halves and does not check masking. The lanes here stream
//! payloads through a per-thread scratch buffer instead; fastwebsockets
//! still serves the built-in echo upstream and the load generator.

pub(crate) mod drain;
mod frame;
pub(crate) mod handshake;
mod lane;
pub mod relay;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::RouteConfig;
use crate::error::{Cause, ProxyError};
use crate::gateway::Sessions;
use crate::listener::{ConnInfo, take_agent_io};
use crate::upstream::Cluster;
use handshake::{HandshakeError, Origin, UpstreamUpgrade};
use relay::{Relay, RelayParams};

/// Handles an agent's upgrade on a websocket route.
pub(crate) async fn session(
    route: Arc<RouteConfig>,
    cluster: Arc<Cluster>,
    conn: Arc<ConnInfo>,
    host: Option<String>,
    mut req: Request<Incoming>,
    sessions: &Sessions,
) -> Result<Response<Body>, ProxyError> {
    let agent_key = match handshake::check_agent(&req) {
        Ok(k) => k,
        Err(reject) => return Ok(reject.into_response()),
    };
    let key = cluster
        .hash_key()
        .and_then(|k| crate::proxy::affinity_key(k, &req, conn.client.ip()));
    let endpoint = cluster.pick(key)?.clone();
    let pool = endpoint
        .raw
        .as_ref()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "cluster has no WebSocket pool"))?;
    let active = endpoint.track();
    let origin = Origin {
        client: conn.client.ip(),
        tls: conn.tls,
        host: host.as_deref(),
    };
    let upgrade = UpstreamUpgrade::new(&req, &origin);
    let threshold = cluster.config().health.unhealthy_threshold;
    let limit = route.websocket.handshake_timeout;

    let mut lease = pool.acquire_raw(false).await?;
    let (io, slot, accepted) = loop {
        let fresh = lease.is_fresh();
        let (mut io, slot) = lease.into_parts();
        match handshake::perform(&mut io, &upgrade, limit).await {
            Ok(a) => break (io, slot, a),
            Err(HandshakeError::NoResponse) if !fresh => {
                tracing::debug!(
                    endpoint = endpoint.label(),
                    "pooled transport was stale; upgrading on a fresh one"
                );
                lease = pool.acquire_raw(true).await?;
            }
            Err(e) => {
                endpoint.report(matches!(e, HandshakeError::Refused(_)), None, threshold);
                return Err(handshake_error(e));
            }
        }
    };
    endpoint.report(true, None, threshold);
    let response = handshake::switching_protocols(&agent_key, &accepted);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let params = RelayParams {
        max_message: route.websocket.max_message_bytes,
        read_size: route.websocket.max_buffered_bytes.min(16 * 1024),
        keepalive: route.websocket.keepalive_interval,
    };
    let drain = sessions.drain.watch();
    let route_name = route.name.clone();
    // Only the bytes that came with the `101` outlive the handshake; the
    // headers were copied into the agent's response.
    let upstream_early = accepted.leftover;
    sessions.tracker.spawn(async move {
        let (agent, agent_early) = match on_upgrade.await {
            Ok(u) => take_agent_io(u),
            Err(e) => {
                tracing::debug!(error = %e, "agent upgrade did not complete");
                return;
            }
        };
        let early = (&agent_early[..], &upstream_early[..]);
        let relay = Relay::new(agent, io, params, early, drain);
        // The lanes copied what they need; `agent_early` may share hyper's
        // whole read buffer, which an idle session must not keep.
        drop((agent_early, upstream_early));
        let summary = relay.await;
        tracing::debug!(
            route = %route_name,
            end = summary.end.as_str(),
            up = summary.messages_up,
            down = summary.messages_down,
            "websocket session ended"
        );
        drop((slot, active, conn));
    });
    Ok(response)
}

fn handshake_error(e: HandshakeError) -> ProxyError {
    let cause = match &e {
        HandshakeError::Timeout(_) => Cause::UpstreamTimeout,
        HandshakeError::Refused(_) => Cause::UpgradeRefused,
        HandshakeError::NoResponse | HandshakeError::Io(_) | HandshakeError::Invalid(_) => {
            Cause::UpstreamProtocol
        }
    };
    ProxyError::new(cause, e.to_string())
}
