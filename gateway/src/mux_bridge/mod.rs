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
//!
//! Before any upstream work, an upgrade whose headers an OPEN cannot carry
//! (over 128 headers or 64 KiB with path and subprotocols) is answered
//! 431. The upstream has the route's `websocket.handshake_timeout`
//! (default 10 s) to answer OPEN, as it would have for its `101` in
//! websocket mode: past it the agent gets 504 (before its `101`: the
//! gateway answers the upgrade only after OPEN_OK), the session is given
//! up upstream with ERROR `INTERNAL` and forgotten here, and the failure is
//! counted (`agentmux_errors_total{cause="upstream_timeout"}`). With the
//! route's `websocket.keepalive_interval`, the relay pings an agent silent
//! that long and closes one that stays silent through the next interval
//! too with 1001, releasing its mux session ([`relay`]).
//!
//! # Surviving the death of a gateway instance
//!
//! With `[cluster_state]`, each session's `101` carries a token
//! (`agentmux-session`), and the session is registered under it in Redis.
//! If its instance dies, the agent reconnects to any instance with the
//! token and `agentmux-received: n` (complete messages it received); that
//! instance claims the session and sends TAKEOVER to its upstream
//! (PROTOCOL.md section 8.1), which replays every message after the first
//! `n`. The `101` says how many of the agent's messages the upstream has
//! (`agentmux-upstream-received: m`); the agent resends from message `m`
//! (the part of a half-received one the upstream has is skipped here).
//! Answers instead of a `101`: 400 (a header missing or malformed, or `n`
//! more than was sent, or the subprotocol the session speaks not offered:
//! the session is parked for a corrected retry), 403 (on an authenticated
//! route, an identity other than the one that opened the session), 404 (no
//! such session on this route, or expired, or no `[cluster_state]`),
//! 409 (another instance took it, or it is live here), 410 (the upstream
//! no longer holds what the agent lacks, counted as lost, or forgot the
//! session), 503 (Redis unavailable, or no connection to its upstream),
//! 504 (the upstream did not answer TAKEOVER within the handshake timeout:
//! the session is left parked for the agent's next try).
//! A draining instance hands its sessions over the same way: it parks
//! them (nothing more is sent for them, not even a CLOSE) and closes their
//! agents with 1012.

mod agent;
mod relay;
#[cfg(test)]
mod tests;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Request, Response, header};

pub(crate) use upstream::MuxCluster;

use crate::body::Body;
use crate::body::ProxyBody;
use crate::cluster_state::{Claim, ClusterState};
use crate::conn::take_agent_io;
use crate::edge::headers::strip_hop_by_hop;
use crate::endpoint::{EndpointGuard, EndpointLayer};
use crate::error::{Cause, ProxyError};
use crate::metrics::RouteMetrics;
use crate::mux::{ErrorCode, MuxSession, Open, OpenError, SessionError, Takeover};
use crate::session::{Admission, Lifecycle, Placement, SessionCtx, SessionLimits};

/// Asks to take over a mux session (`agentmux-session`, with the agent's
/// count of messages received in `agentmux-received`).
pub(crate) const SESSION_HEADER: HeaderName = HeaderName::from_static("agentmux-session");
/// Complete messages the agent received on the session it takes over.
pub(crate) const RECEIVED_HEADER: HeaderName = HeaderName::from_static("agentmux-received");
/// Answers a takeover: how many of the agent's messages the upstream has.
pub(crate) const UPSTREAM_RECEIVED_HEADER: HeaderName = HeaderName::from_static("agentmux-upstream-received");

/// What a mux route needs: its endpoints and their mux connections, its
/// limits and relay settings, where its sessions run and what they count.
pub(crate) struct MuxRoute {
    pub(crate) name: Arc<str>,
    pub(crate) endpoints: EndpointLayer,
    pub(crate) mux: Arc<MuxCluster>,
    pub(crate) limits: SessionLimits,
    /// Largest agent message relayed (1009 beyond).
    pub(crate) max_message: usize,
    /// Ping an agent silent this long.
    pub(crate) keepalive: Option<Duration>,
    /// Time allowed for the upstream's OPEN_OK or TAKEOVER_OK.
    pub(crate) handshake_timeout: Duration,
    /// Credit each session grants the upstream.
    pub(crate) window_bytes: u32,
    pub(crate) sessions: SessionCtx,
    pub(crate) metrics: RouteMetrics,
}

/// A session ready to relay: where it runs, and what the agent is told.
struct Placed {
    session: MuxSession,
    guard: EndpointGuard,
    /// The registry and this session's token in it (with `[cluster_state]`).
    token: Option<(Arc<ClusterState>, String)>,
    /// After a takeover: the agent messages the upstream has.
    takeover: Option<Takeover>,
}

/// What an agent asks to take over (see the module docs).
struct TakeoverAsk {
    registry: Arc<ClusterState>,
    token: String,
    /// Complete messages the agent received.
    received: u64,
}

/// Handles an agent's upgrade on a mux route.
pub(crate) async fn session(route: &Arc<MuxRoute>, mut req: Request<ProxyBody>) -> Result<Response<Body>, ProxyError> {
    let a = match Admission::check(&route.limits, &route.metrics, &req)? {
        Ok(a) => a,
        Err(response) => return Ok(response),
    };
    // Refused before any upstream work: an OPEN that cannot be encoded
    // would never be sent, and never answered.
    let open = open_request(route, &req, &a.agent_name)?;
    // The authenticated identity (API key name, mTLS subject), if any: it
    // owns the session, and only it may take the session over.
    let owner = req
        .extensions()
        .get::<agentmux_filters::AgentIdentity>()
        .map(|a| a.as_str().to_owned());
    let started = tokio::time::Instant::now();
    let offered = open.subprotocols.clone();
    let placed = match takeover_request(route, &req)? {
        Some(ask) => take_over(route, ask, open, owner.as_deref()).await?,
        None => {
            let target = route.endpoints.target(req.headers(), a.conn.client.ip(), false);
            open_new(route, route.endpoints.pick(&target).await?, open, started).await?
        }
    };
    placed.guard.acquired(started);
    let Placed {
        session,
        mut guard,
        token,
        takeover,
    } = placed;
    // A session keeps the subprotocol it opened with: an agent taking it
    // over without offering it would fail its own handshake on our `101`.
    // It is left parked for a corrected retry, not closed.
    if takeover.is_some()
        && let Some(chosen) = session.subprotocol()
        && !offered.contains(&chosen)
    {
        session.handle().park();
        return Err(ProxyError::new(
            Cause::BadRequest,
            format!("the session speaks subprotocol {chosen:?}: offer it in Sec-WebSocket-Protocol"),
        ));
    }
    let mut response = crate::session::upgrade::switching_protocols_to(&a.handshake, session.subprotocol().as_deref());
    if let Some((_, id)) = &token
        && let Ok(v) = http::HeaderValue::from_str(id)
    {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    if let Some(at) = &takeover {
        response
            .headers_mut()
            .insert(UPSTREAM_RECEIVED_HEADER, http::HeaderValue::from(at.messages));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let drain = route.sessions.drain.watch();
    let endpoint = guard.endpoint().clone();
    // Boxed, as the message limiter below: the session's task keeps what
    // it captured for its whole life (moved out or not), and an idle mux
    // session should not hold 300 bytes of what it used once.
    let placement = Box::new(Placement {
        route: route.name.clone(),
        cluster: route.endpoints.cluster().name().into(),
        endpoint: endpoint.label().into(),
        agent_name: a.agent_name,
        conn: a.conn,
        span: a.span,
        permit: a.session_permit,
        active: guard.take_active(),
        // Mux sessions find their way back by their own token (TAKEOVER).
        affinity: None,
        transport: a.handshake.transport(),
        conn_hold: req.extensions_mut().remove::<crate::conn::ConnHold>(),
    });
    let messages = a.messages.map(Box::new);
    drop(guard);
    let route = route.clone();
    route.sessions.tracker.clone().spawn(async move {
        let (agent, early) = match on_upgrade.await {
            Ok(u) => take_agent_io(u),
            Err(e) => {
                tracing::debug!(error = %e, "agent upgrade did not complete");
                // A session taken over stays for the agent's next try
                // (it holds the token) instead of being closed upstream.
                if takeover.is_some() {
                    session.handle().park();
                }
                return;
            }
        };
        let life = Lifecycle::begin(&route.sessions, &route.metrics, *placement);
        // Registered once the agent is here: a takeover before that would
        // find nothing worth resuming.
        let held = token.map(|(registry, id)| {
            registry.register_mux_session(&id, &route.name, endpoint.label(), session.handle(), owner.as_deref())
        });
        let skip = takeover.and_then(|at| at.partial).map(|p| (p.text, p.bytes));
        // A session with a token can be taken over elsewhere: a draining
        // gateway leaves it to that instead of closing it.
        let handover = held.is_some();
        let params = relay::RelayParams {
            max_message: route.max_message,
            keepalive: route.keepalive,
            skip,
            handover,
        };
        let end = relay::run(agent, early, session, params, messages, route.metrics.clone(), drain).await;
        life.end(end, None);
        drop(held);
    });
    Ok(response)
}

/// A new session on the least-loaded connection of the endpoint the
/// balancer picks. The upstream has the route's
/// `websocket.handshake_timeout` to answer (the `101` of websocket mode),
/// counted from the first OPEN across retries on other connections:
/// past it the agent gets 504, and the session is given up upstream
/// (ERROR `INTERNAL`; a late OPEN_OK is answered `UNKNOWN_SESSION`).
async fn open_new(
    route: &MuxRoute,
    mut guard: EndpointGuard,
    open: Open,
    started: tokio::time::Instant,
) -> Result<Placed, ProxyError> {
    let endpoint = guard.endpoint().clone();
    let me = route
        .mux
        .endpoints
        .iter()
        .find(|m| Arc::ptr_eq(&m.endpoint, &endpoint))
        .cloned()
        .ok_or_else(|| ProxyError::new(Cause::Internal, "endpoint has no mux connections"))?;
    let wait = acquire_timeout(&endpoint);
    let id = upstream::next_session_id();
    let mut answer_by = None;
    let session = loop {
        let Some(conn) = me.least_loaded(wait.saturating_sub(started.elapsed())).await else {
            guard.failed();
            return Err(ProxyError::new(
                Cause::PoolExhausted,
                "no mux connection to the upstream is up",
            ));
        };
        let deadline = *answer_by.get_or_insert_with(|| tokio::time::Instant::now() + route.handshake_timeout);
        let Ok(opened) = tokio::time::timeout_at(deadline, conn.open(id, open.clone())).await else {
            guard.failed();
            tracing::warn!(
                endpoint = endpoint.label(),
                session = id,
                "mux upstream did not answer OPEN in time"
            );
            return Err(ProxyError::new(
                Cause::UpstreamTimeout,
                "the upstream did not accept the session in time",
            ));
        };
        match opened {
            Ok(s) => break s,
            // Lost before the answer, or full: another connection.
            Err(OpenError::ConnectionLost | OpenError::InUse(_)) => continue,
            Err(OpenError::Failed(SessionError::Peer {
                code: ErrorCode::TooManySessions,
                ..
            })) if me.live() > 1 => continue,
            Err(OpenError::Refused { code, reason }) => {
                guard.refused();
                let msg = format!("upstream refused the session: {code} {reason}");
                return Err(ProxyError::new(Cause::UpgradeRefused, msg));
            }
            Err(e) => {
                guard.failed();
                return Err(
                    ProxyError::new(Cause::UpstreamProtocol, "upstream could not open the session").with_source(e),
                );
            }
        }
    };
    guard.answered(http::StatusCode::SWITCHING_PROTOCOLS, None);
    // With a registry, the agent gets a token to take the session over
    // with on another instance: unguessable (128 random bits), and only
    // its digest is stored.
    let token = route
        .sessions
        .registry
        .clone()
        .map(|registry| (registry, format!("{id:016x}-{:032x}", rand::random::<u128>())));
    Ok(Placed {
        session,
        guard,
        token,
        takeover: None,
    })
}

/// The takeover an upgrade asks for, if any: `agentmux-session` names
/// the session, `agentmux-received` the agent's count (both required and
/// well formed, or 400). Without `[cluster_state]` there is nothing to
/// take over from, and the header is ignored.
fn takeover_request(route: &MuxRoute, req: &Request<ProxyBody>) -> Result<Option<TakeoverAsk>, ProxyError> {
    let Some(token) = req.headers().get(SESSION_HEADER) else {
        return Ok(None);
    };
    let Some(registry) = route.sessions.registry.as_ref() else {
        return Err(ProxyError::new(
            Cause::SessionUnknown,
            "this gateway keeps no session registry ([cluster_state]): sessions cannot be taken over",
        ));
    };
    if !crate::cluster_state::valid_session_id(token.as_bytes()) {
        return Err(ProxyError::new(
            Cause::BadRequest,
            "agentmux-session: must be 1 to 256 visible ASCII characters",
        ));
    }
    let received = req
        .headers()
        .get(RECEIVED_HEADER)
        .ok_or_else(|| {
            ProxyError::new(
                Cause::BadRequest,
                "agentmux-received: required with agentmux-session (complete messages received)",
            )
        })?
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ProxyError::new(Cause::BadRequest, "agentmux-received: must be a whole number"))?;
    let token = token.to_str().unwrap_or_default().to_owned();
    Ok(Some(TakeoverAsk {
        registry: registry.clone(),
        token,
        received,
    }))
}

/// Takes over a session another instance carried: looks it up, claims it
/// (only one instance can), and asks its endpoint's upstream to carry on
/// from the agent's count.
async fn take_over(
    route: &MuxRoute,
    ask: TakeoverAsk,
    open: Open,
    identity: Option<&str>,
) -> Result<Placed, ProxyError> {
    let TakeoverAsk {
        registry,
        token,
        received,
    } = ask;
    let unavailable = |_| ProxyError::new(Cause::RegistryUnavailable, "session registry unavailable; retry");
    let entry = registry
        .lookup_session(&token)
        .await
        .map_err(unavailable)?
        .filter(|e| *e.route == *route.name)
        .ok_or_else(|| ProxyError::new(Cause::SessionUnknown, "no such session on this route (or it expired)"))?;
    let Some(mux_id) = entry.mux else {
        return Err(ProxyError::new(Cause::SessionUnknown, "not a mux session"));
    };
    // The token is a bearer secret, but on an authenticated route only the
    // identity that opened the session may take it over.
    if let Some(owner) = &entry.owner
        && identity.map(crate::cluster_state::registry::digest).as_ref() != Some(owner)
    {
        return Err(ProxyError::new(
            Cause::Forbidden,
            "the session belongs to another agent identity",
        ));
    }
    match registry
        .claim_session(&token, &entry.instance)
        .await
        .map_err(unavailable)?
    {
        Claim::Taken => {}
        Claim::Lost => {
            return Err(ProxyError::new(
                Cause::SessionTaken,
                "another gateway instance took the session over",
            ));
        }
        Claim::Unknown => return Err(ProxyError::new(Cause::SessionUnknown, "the session expired")),
    }
    let me = route
        .mux
        .endpoints
        .iter()
        .find(|m| m.endpoint.label() == entry.endpoint)
        .cloned()
        .ok_or_else(|| ProxyError::new(Cause::SessionLost, "the session's upstream endpoint is gone"))?;
    // The session's own endpoint, or nowhere: its state lives upstream there.
    let guard = route
        .endpoints
        .pinned(&entry.endpoint)
        .ok_or_else(|| ProxyError::new(Cause::SessionLost, "the session's upstream endpoint is gone"))?;
    let wait = acquire_timeout(&me.endpoint);
    let started = tokio::time::Instant::now();
    // Connections lost under a TAKEOVER: a few is bad luck, more is an
    // upstream that does not speak it (it ends the connection on an
    // unknown frame type) and must not cost every connection.
    let mut lost = 0;
    // As for OPEN: the route's handshake timeout, from the first TAKEOVER.
    // A takeover given up is parked (see `MuxClientConnection::take_over`):
    // the session stays upstream for the agent's next try.
    let mut answer_by = None;
    loop {
        let Some(conn) = me.least_loaded(wait.saturating_sub(started.elapsed())).await else {
            return Err(ProxyError::new(
                Cause::PoolExhausted,
                "no mux connection to the session's upstream is up",
            ));
        };
        let deadline = *answer_by.get_or_insert_with(|| tokio::time::Instant::now() + route.handshake_timeout);
        let Ok(answer) = tokio::time::timeout_at(deadline, conn.take_over(mux_id, open.clone(), received)).await else {
            tracing::warn!(session = mux_id, "mux upstream did not answer TAKEOVER in time");
            return Err(ProxyError::new(
                Cause::UpstreamTimeout,
                "the upstream did not answer the takeover in time; retry",
            ));
        };
        match answer {
            Ok((session, at)) => {
                me.counters.taken_over.inc();
                tracing::info!(
                    session = mux_id,
                    from = entry.instance,
                    agent_received = received,
                    upstream_received = at.messages,
                    "mux session taken over"
                );
                return Ok(Placed {
                    session,
                    guard,
                    token: Some((registry, token)),
                    takeover: Some(at),
                });
            }
            Err(OpenError::ConnectionLost) if lost < 2 => lost += 1,
            Err(OpenError::ConnectionLost) => {
                return Err(ProxyError::new(
                    Cause::UpstreamProtocol,
                    "upstream connections ended under the takeover (does the upstream implement TAKEOVER?)",
                ));
            }
            // Still live on this instance (its agent's old connection has
            // not been noticed gone yet).
            Err(OpenError::InUse(_)) => {
                return Err(ProxyError::new(
                    Cause::SessionTaken,
                    "the session is live on this instance",
                ));
            }
            Err(OpenError::Failed(SessionError::Peer {
                code: ErrorCode::TooManySessions,
                ..
            })) if me.live() > 1 => continue,
            Err(OpenError::Failed(SessionError::Peer {
                code: ErrorCode::TooManySessions,
                ..
            })) => {
                return Err(ProxyError::new(
                    Cause::PoolExhausted,
                    "the upstream holds as many sessions as it will on its connection",
                ));
            }
            Err(OpenError::Failed(SessionError::Peer { code, .. })) => {
                // Whatever the agent lacks is gone with it: say so, count it.
                if code == ErrorCode::ReplayUnavailable {
                    me.counters.lost.inc();
                }
                let why = match code {
                    ErrorCode::UnknownSession => "the upstream no longer knows the session",
                    ErrorCode::ReplayUnavailable => "the upstream no longer holds messages the agent did not get",
                    ErrorCode::Sequence => "agentmux-received counts more messages than the upstream sent",
                    _ => "the upstream refused the takeover",
                };
                tracing::warn!(session = mux_id, %code, agent_received = received, "mux takeover refused: {why}");
                let cause = if code == ErrorCode::Sequence {
                    Cause::BadRequest
                } else {
                    Cause::SessionLost
                };
                return Err(ProxyError::new(cause, why));
            }
            Err(e) => {
                return Err(
                    ProxyError::new(Cause::UpstreamProtocol, "upstream could not take the session over").with_source(e),
                );
            }
        }
    }
}

fn acquire_timeout(endpoint: &crate::upstream::Endpoint) -> std::time::Duration {
    endpoint
        .raw
        .as_ref()
        .map_or(std::time::Duration::from_secs(5), |p| p.params().acquire_timeout)
}

/// The OPEN for the upstream: route, identity, path and the agent's
/// end-to-end headers (not hop-by-hop ones, not the WebSocket handshake's).
/// Nothing is cut to fit: headers an OPEN cannot carry (over 128, or over
/// 64 KiB with the path and subprotocols) are refused with 431.
fn open_request(route: &MuxRoute, req: &Request<ProxyBody>, identity: &str) -> Result<Open, ProxyError> {
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
        SESSION_HEADER,
        RECEIVED_HEADER,
    ];
    let headers: Vec<(HeaderName, http::HeaderValue)> = headers
        .iter()
        .filter(|(n, _)| !skip.contains(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let open = Open {
        window: route.window_bytes,
        route: route.name.to_string(),
        identity: identity.to_owned(),
        path: req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        headers,
        subprotocols,
    };
    crate::mux::check_open(&open).map_err(|e| {
        ProxyError::new(
            Cause::HeadersTooLarge,
            format!("the request does not fit a mux OPEN ({e})"),
        )
        .with_source(e)
    })?;
    Ok(open)
}
