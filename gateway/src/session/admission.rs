//! What a session kind learns from an agent's upgrade request before
//! touching an upstream: the upgrade is well formed, the agent is under
//! its concurrent-session limit, and who it is.

use std::sync::Arc;

use agentmux_filters::rate_limit::{KeySource, MessageLimiter, SessionLimiter, SessionMessages, SessionPermit};
use http::{Request, Response};

use super::upgrade::{AgentHandshake, check_agent};
use crate::body::Body;
use crate::conn::ConnInfo;
use crate::edge::RequestHost;
use crate::error::{Cause, ProxyError};
use crate::metrics::RouteMetrics;
use crate::telemetry::RequestSpan;

/// Limits a rate-limit filter puts on a route's sessions.
#[derive(Clone, Default)]
pub(crate) struct SessionLimits {
    /// Concurrent sessions per key (429 beyond).
    pub(crate) sessions: Option<(KeySource, SessionLimiter)>,
    /// Messages per second per session and per key (delayed, then 1008).
    pub(crate) messages: Option<(KeySource, MessageLimiter)>,
}

/// An agent admitted to open a session.
pub(crate) struct Admission {
    /// How the agent asked (its `Sec-WebSocket-Key` for the `101`, or an
    /// HTTP/2 extended CONNECT).
    pub(crate) handshake: AgentHandshake,
    pub(crate) conn: Arc<ConnInfo>,
    /// The request's one authority.
    pub(crate) host: Option<String>,
    /// Who the agent is, for the session list: its authenticated name, else
    /// its address.
    pub(crate) agent_name: String,
    pub(crate) session_permit: Option<SessionPermit>,
    pub(crate) messages: Option<SessionMessages>,
    pub(crate) span: Option<RequestSpan>,
}

impl Admission {
    /// Checks the upgrade (`Ok(Err(response))`: answer the agent with it,
    /// counted as a bad request of the route) and applies the
    /// concurrent-session limit.
    pub(crate) fn check<B>(
        limits: &SessionLimits,
        metrics: &RouteMetrics,
        req: &Request<B>,
    ) -> Result<Result<Self, Response<Body>>, ProxyError> {
        let handshake = match check_agent(req) {
            Ok(k) => k,
            Err(reject) => {
                metrics.error(Cause::BadRequest);
                return Ok(Err(reject.into_response()));
            }
        };
        let conn = req
            .extensions()
            .get::<Arc<ConnInfo>>()
            .cloned()
            .ok_or_else(|| ProxyError::new(Cause::Internal, "request without connection info"))?;
        let host = req
            .extensions()
            .get::<RequestHost>()
            .and_then(|h| h.0.as_ref().map(|a| a.as_str().to_owned()));
        // Concurrent sessions per key: refused before any upstream work.
        let session_permit = match &limits.sessions {
            Some((source, limiter)) => {
                let key = source.key_from(req.headers(), req.extensions());
                Some(limiter.try_acquire(key).map_err(|e| {
                    ProxyError::new(Cause::RateLimited, "too many concurrent sessions for this agent").with_source(e)
                })?)
            }
            None => None,
        };
        let agent_name = req
            .extensions()
            .get::<agentmux_filters::AgentIdentity>()
            .map_or_else(|| conn.client.ip().to_string(), |a| a.as_str().to_owned());
        let messages = limits
            .messages
            .as_ref()
            .map(|(source, limiter)| limiter.session(source.key_from(req.headers(), req.extensions())));
        Ok(Ok(Self {
            handshake,
            conn,
            host,
            agent_name,
            session_permit,
            messages,
            span: req.extensions().get::<RequestSpan>().cloned(),
        }))
    }
}
