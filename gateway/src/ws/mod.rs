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

pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod lane;
mod over_h2;
pub mod relay;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::body::Body;
use crate::body::ProxyBody;
use crate::config::UpstreamProtocol;
use crate::conn::{AgentIo, take_agent_io};
use crate::connect::UpstreamIo;
use crate::endpoint::EndpointGuard;
use crate::endpoint::EndpointLayer;
use crate::error::{Cause, ProxyError};
use crate::metrics::RouteMetrics;
use crate::pool::{HttpLease, LeaseSlot};
use crate::session::drain::DrainWatch;
use crate::session::{Admission, Counts, Lifecycle, Placement, SessionCtx, SessionLimits};
use agentmux_filters::rate_limit::SessionMessages;
use handshake::{Accepted, HandshakeError, UpstreamUpgrade};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use lane::LaneCounters;
use relay::{Relay, RelayParams};

/// What a websocket route needs: its endpoints, its limits and relay
/// settings, where its sessions run and what they count.
pub(crate) struct WsRoute {
    pub(crate) name: Arc<str>,
    pub(crate) endpoints: EndpointLayer,
    pub(crate) limits: SessionLimits,
    pub(crate) relay: RelayParams,
    /// Time allowed for the upstream's `101`.
    pub(crate) handshake_timeout: Duration,
    pub(crate) sessions: SessionCtx,
    pub(crate) metrics: RouteMetrics,
    /// Count messages as they flow (`[telemetry] message_metrics`).
    pub(crate) message_metrics: bool,
}

/// Handles an agent's upgrade on a websocket route (the bottom of the
/// route's stack: filters have already passed the upgrade request).
pub(crate) async fn session(route: &Arc<WsRoute>, mut req: Request<ProxyBody>) -> Result<Response<Body>, ProxyError> {
    let a = match Admission::check(&route.limits, &route.metrics, &req)? {
        Ok(a) => a,
        Err(response) => return Ok(response),
    };
    // A reconnecting agent goes back to its endpoint, whichever instance
    // it reached (the registry remembers it by its session id).
    let target = route.endpoints.target(req.headers(), a.conn.client.ip(), true);
    let mut guard = route.endpoints.pick(&target).await?;
    let (upstream, accepted) = match route.endpoints.cluster().config().protocol {
        UpstreamProtocol::Http2 => {
            let tls = route.endpoints.cluster().config().tls.is_some();
            let (up, offered) = over_h2::request(&req, a.host.as_deref(), tls)?;
            let o = over_h2::open(up, &offered, &mut guard, route.handshake_timeout).await?;
            (Upstream::Stream(o.io, o.lease), o.accepted)
        }
        _ => {
            let upgrade = UpstreamUpgrade::new(&req, a.host.as_deref());
            let (io, slot, accepted) = upgrade_on_raw(route, &upgrade, &mut guard).await?;
            (Upstream::Raw(io, slot), accepted)
        }
    };
    guard.answered(http::StatusCode::SWITCHING_PROTOCOLS, None);
    let response = handshake::switching_protocols(&a.handshake, &accepted);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let drain = route.sessions.drain.watch();
    // Only the bytes that came with the `101` outlive the handshake; the
    // headers were copied into the agent's response.
    let upstream_early = accepted.leftover;
    let placement = Placement {
        route: route.name.clone(),
        cluster: route.endpoints.cluster().name().into(),
        endpoint: guard.endpoint().label().into(),
        agent_name: a.agent_name,
        conn: a.conn,
        span: a.span,
        permit: a.session_permit,
        active: guard.take_active(),
        affinity: target.session,
        transport: a.handshake.transport(),
        conn_hold: req.extensions_mut().remove::<crate::conn::ConnHold>(),
    };
    drop(guard);
    let a_messages = a.messages;
    let route = route.clone();
    route.sessions.tracker.clone().spawn(async move {
        let (agent, agent_early) = match on_upgrade.await {
            Ok(u) => take_agent_io(u),
            Err(e) => {
                tracing::debug!(error = %e, "agent upgrade did not complete");
                return;
            }
        };
        let life = Lifecycle::begin(&route.sessions, &route.metrics, placement);
        let early = (agent_early, upstream_early);
        let summary = match upstream {
            Upstream::Raw(io, slot) => relay_to(&route, agent, io, early, drain, a_messages, slot).await,
            Upstream::Stream(io, lease) => relay_to(&route, agent, io, early, drain, a_messages, lease).await,
        };
        let counts = Counts {
            messages_up: summary.messages_up,
            messages_down: summary.messages_down,
            bytes_up: summary.bytes_up,
            bytes_down: summary.bytes_down,
        };
        life.end(summary.end, Some(counts));
    });
    Ok(response)
}

/// Where a session's upstream WebSocket runs.
enum Upstream {
    /// A pooled transport of its own, upgraded over HTTP/1.1.
    Raw(UpstreamIo, LeaseSlot),
    /// An extended CONNECT stream on a shared HTTP/2 connection (RFC 8441).
    Stream(TokioIo<Upgraded>, HttpLease),
}

/// The HTTP/1.1 upgrade on a pooled transport; a transport that turns out
/// stale before answering is replaced by a fresh one once.
async fn upgrade_on_raw(
    route: &WsRoute,
    upgrade: &UpstreamUpgrade,
    guard: &mut EndpointGuard,
) -> Result<(UpstreamIo, LeaseSlot, Accepted), ProxyError> {
    let mut lease = guard.acquire_raw(false).await?;
    loop {
        let fresh = lease.is_fresh();
        let (mut io, slot) = lease.into_parts();
        match handshake::perform(&mut io, upgrade, route.handshake_timeout).await {
            Ok(accepted) => return Ok((io, slot, accepted)),
            Err(HandshakeError::NoResponse) if !fresh => {
                tracing::debug!(
                    endpoint = guard.endpoint().label(),
                    "pooled transport was stale; upgrading on a fresh one"
                );
                lease = guard.acquire_raw(true).await?;
            }
            Err(e) => {
                if matches!(e, HandshakeError::Refused(_)) {
                    guard.refused();
                } else {
                    guard.failed();
                }
                return Err(handshake_error(e));
            }
        }
    }
}

/// Runs the route's relay between `agent` and `upstream` (counting
/// messages when the route asks) to its end. `hold` — the upstream
/// transport's pool slot, or its stream's lease — goes last, with the relay.
async fn relay_to<U, H>(
    route: &WsRoute,
    agent: AgentIo,
    upstream: U,
    early: (bytes::Bytes, Vec<u8>),
    drain: DrainWatch,
    messages: Option<SessionMessages>,
    hold: H,
) -> relay::Summary
where
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut relay = Relay::new(agent, upstream, route.relay, (&early.0, &early.1), drain).with_messages(messages);
    if route.message_metrics {
        let m = &route.metrics;
        let up = LaneCounters {
            messages: m.messages_up.clone(),
            bytes: m.bytes_up.clone(),
            relay: Some(m.relay_seconds.clone()),
        };
        let down = LaneCounters {
            messages: m.messages_down.clone(),
            bytes: m.bytes_down.clone(),
            relay: Some(m.relay_seconds.clone()),
        };
        relay = relay.with_counters(up, down);
    }
    // The lanes copied what they need; the agent's early bytes may share
    // hyper's whole read buffer, which an idle session must not keep.
    drop(early);
    let summary = relay.await;
    drop(hold);
    summary
}

fn handshake_error(e: HandshakeError) -> ProxyError {
    let cause = match &e {
        HandshakeError::Timeout(_) => Cause::UpstreamTimeout,
        HandshakeError::Refused(_) => Cause::UpgradeRefused,
        HandshakeError::NoResponse | HandshakeError::Io(_) | HandshakeError::Invalid(_) => Cause::UpstreamProtocol,
    };
    ProxyError::new(cause, e.to_string())
}
