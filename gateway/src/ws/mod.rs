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
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod lane;
pub mod relay;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::{Request, Response};

use crate::body::Body;
use crate::conn::{ConnInfo, take_agent_io};
use crate::error::{Cause, ProxyError};
use crate::stack::{ProxyBody, RequestHost, Terminal};
use handshake::{HandshakeError, UpstreamUpgrade};
use lane::LaneCounters;
use relay::{Relay, RelayParams};

/// What every session mode learns from an agent's upgrade request before
/// touching an upstream: its key, connection, host and identity, and the
/// per-key limits it is under.
pub(crate) struct Prelude {
    pub(crate) agent_key: http::HeaderValue,
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) host: Option<String>,
    pub(crate) agent_name: String,
    pub(crate) session_permit: Option<agentmux_filters::rate_limit::SessionPermit>,
    pub(crate) messages: Option<agentmux_filters::rate_limit::SessionMessages>,
    pub(crate) span: Option<crate::telemetry::RequestSpan>,
}

impl Prelude {
    /// Checks the upgrade (`Ok(Err(response))`: answer the agent with it)
    /// and applies the concurrent-session limit.
    pub(crate) fn take(t: &Terminal, req: &Request<ProxyBody>) -> Result<Result<Self, Response<Body>>, ProxyError> {
        let agent_key = match handshake::check_agent(req) {
            Ok(k) => k,
            Err(reject) => return Ok(Err(reject.into_response())),
        };
        let conn = req
            .extensions()
            .get::<Arc<ConnInfo>>()
            .cloned()
            .ok_or_else(|| ProxyError::new(Cause::Internal, "request without connection info"))?;
        let host = req.extensions().get::<RequestHost>().and_then(|h| h.0.clone());
        // Concurrent sessions per key: refused before any upstream work.
        let session_permit = match &t.ws.sessions {
            Some((source, limiter)) => {
                let key = source.key_from(req.headers(), req.extensions());
                Some(limiter.try_acquire(key).map_err(|e| {
                    ProxyError::new(Cause::RateLimited, "too many concurrent sessions for this agent").with_source(e)
                })?)
            }
            None => None,
        };
        // Who the agent is, for the session list: its authenticated name,
        // else its address.
        let agent_name = req
            .extensions()
            .get::<agentmux_filters::AgentIdentity>()
            .map_or_else(|| conn.client.ip().to_string(), |a| a.as_str().to_owned());
        let messages =
            t.ws.messages
                .as_ref()
                .map(|(source, limiter)| limiter.session(source.key_from(req.headers(), req.extensions())));
        Ok(Ok(Self {
            agent_key,
            conn,
            host,
            agent_name,
            session_permit,
            messages,
            span: req.extensions().get::<crate::telemetry::RequestSpan>().cloned(),
        }))
    }
}

/// Handles an agent's upgrade on a websocket route (the bottom of the
/// route's stack: filters have already passed the upgrade request).
pub(crate) async fn session(t: &Arc<Terminal>, mut req: Request<ProxyBody>) -> Result<Response<Body>, ProxyError> {
    let Prelude {
        agent_key,
        conn,
        host,
        agent_name,
        session_permit,
        messages,
        span,
    } = match Prelude::take(t, &req)? {
        Ok(p) => p,
        Err(response) => return Ok(response),
    };
    let cluster = &t.cluster;
    let key = cluster
        .hash_key()
        .and_then(|k| crate::proxy::affinity_key(k, &req, conn.client.ip()));
    // A reconnecting agent goes back to its endpoint, whichever instance
    // it reached (one registry lookup per session, bounded, skipped while
    // Redis is down).
    let session_id = registry_session_id(t, &req);
    let preferred = match &session_id {
        Some((registry, id)) if registry.connected() => match registry.lookup_session(id).await {
            Ok(Some(entry)) if entry.route == t.route.name() => Some(entry.endpoint),
            _ => None,
        },
        _ => None,
    };
    let picked = t.pick_preferring(preferred.as_deref(), key)?;
    let endpoint = picked.endpoint.clone();
    let pool = endpoint
        .raw
        .as_ref()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "cluster has no WebSocket pool"))?;
    let active = endpoint.track();
    let upgrade = UpstreamUpgrade::new(&req, host.as_deref());
    let threshold = cluster.config().health.unhealthy_threshold;
    let limit = t.route.websocket.handshake_timeout;

    let started = tokio::time::Instant::now();
    let mut lease = match pool.acquire_raw(false).await {
        Ok(l) => l,
        Err(e) => {
            picked.record(None);
            return Err(e.into());
        }
    };
    t.acquire.observe(started.elapsed());
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
                picked.record(None);
                return Err(handshake_error(e));
            }
        }
    };
    endpoint.report(true, None, threshold);
    picked.record(Some(http::StatusCode::SWITCHING_PROTOCOLS));
    let response = handshake::switching_protocols(&agent_key, &accepted);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let params = RelayParams {
        max_message: t.route.websocket.max_message_bytes,
        read_size: t.route.websocket.max_buffered_bytes.min(16 * 1024),
        keepalive: t.route.websocket.keepalive_interval,
    };
    let drain = t.sessions.drain.watch();
    // Only the bytes that came with the `101` outlive the handshake; the
    // headers were copied into the agent's response.
    let upstream_early = accepted.leftover;
    let t = t.clone();
    t.sessions.tracker.clone().spawn(async move {
        let (agent, agent_early) = match on_upgrade.await {
            Ok(u) => take_agent_io(u),
            Err(e) => {
                tracing::debug!(error = %e, "agent upgrade did not complete");
                return;
            }
        };
        let m = &t.metrics;
        let opened = tokio::time::Instant::now();
        let _registered =
            session_id.map(|(registry, id)| registry.register_session(&id, t.route.name(), endpoint.label()));
        m.sessions_active.inc();
        let _listed = t.sessions.registry.register(
            t.route.name.clone(),
            agent_name,
            conn.client,
            endpoint.label().to_owned(),
        );
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
        let early = (&agent_early[..], &upstream_early[..]);
        let mut relay = Relay::new(agent, io, params, early, drain).with_messages(messages);
        if t.message_metrics {
            relay = relay.with_counters(up, down);
        }
        // The lanes copied what they need; `agent_early` may share hyper's
        // whole read buffer, which an idle session must not keep.
        drop((agent_early, upstream_early));
        let summary = relay.await;
        m.sessions_active.dec();
        m.session_ended(summary.end.as_str());
        if let Some(s) = span {
            s.set("agentmux.ws.messages_up", summary.messages_up as i64);
            s.set("agentmux.ws.messages_down", summary.messages_down as i64);
            s.set("agentmux.ws.end", summary.end.as_str());
            s.end();
        }
        tracing::info!(
            target: "access",
            client = %conn.client,
            route = t.route.name(),
            cluster = t.cluster.name(),
            endpoint = endpoint.label(),
            end = summary.end.as_str(),
            messages_up = summary.messages_up,
            messages_down = summary.messages_down,
            bytes_up = summary.bytes_up,
            bytes_down = summary.bytes_down,
            duration_ms = opened.elapsed().as_secs_f64() * 1000.0,
            "session"
        );
        drop((slot, active, conn, session_permit));
    });
    Ok(response)
}

/// The agent's session id for the cross-instance registry, when there is
/// one and it is well formed (1–256 visible ASCII characters).
fn registry_session_id(
    t: &Terminal,
    req: &Request<ProxyBody>,
) -> Option<(Arc<crate::cluster_state::ClusterState>, String)> {
    let registry = t.sessions.cluster.as_ref()?;
    let value = req.headers().get(registry.config().session_header())?;
    if !crate::cluster_state::valid_session_id(value.as_bytes()) {
        return None;
    }
    Some((registry.clone(), value.to_str().ok()?.to_owned()))
}

fn handshake_error(e: HandshakeError) -> ProxyError {
    let cause = match &e {
        HandshakeError::Timeout(_) => Cause::UpstreamTimeout,
        HandshakeError::Refused(_) => Cause::UpgradeRefused,
        HandshakeError::NoResponse | HandshakeError::Io(_) | HandshakeError::Invalid(_) => Cause::UpstreamProtocol,
    };
    ProxyError::new(cause, e.to_string())
}
