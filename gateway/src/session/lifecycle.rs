//! A session from its upgrade to its end: what it counts, lists, logs and
//! holds, kept in one guard so every session kind does it the same way.

use std::sync::Arc;

use agentmux_filters::rate_limit::SessionPermit;
use tokio::time::Instant;

use super::SessionCtx;
use super::list::Listed;
use crate::cluster_state::SessionHold;
use crate::conn::{ConnHold, ConnInfo};
use crate::error::SessionOutcome;
use crate::metrics::RouteMetrics;
use crate::telemetry::RequestSpan;
use crate::upstream::ActiveGuard;

/// Messages and bytes a finished session relayed, when its kind counts
/// them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    /// Messages agent → upstream.
    pub(crate) messages_up: u64,
    /// Messages upstream → agent.
    pub(crate) messages_down: u64,
    /// Bytes read from the agent.
    pub(crate) bytes_up: u64,
    /// Bytes read from the upstream.
    pub(crate) bytes_down: u64,
}

/// Where a session runs and what it holds until it ends.
pub(crate) struct Placement {
    pub(crate) route: Arc<str>,
    pub(crate) cluster: Arc<str>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) agent_name: String,
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) span: Option<RequestSpan>,
    pub(crate) permit: Option<SessionPermit>,
    pub(crate) active: Option<ActiveGuard>,
    /// The agent's session id for cross-instance affinity, if it sent one
    /// (a reconnect lands on this endpoint, whichever instance it reaches).
    pub(crate) affinity: Option<String>,
    /// `http/1.1` or `h2` (see [`SessionInfo::transport`](super::list::SessionInfo::transport)).
    pub(crate) transport: &'static str,
    /// An HTTP/2 agent connection kept busy while the session runs on one
    /// of its streams.
    pub(crate) conn_hold: Option<ConnHold>,
}

/// A live session (see the module docs).
pub(crate) struct Lifecycle {
    started: Instant,
    metrics: RouteMetrics,
    access_log: bool,
    route: Arc<str>,
    cluster: Arc<str>,
    endpoint: Arc<str>,
    conn: Arc<ConnInfo>,
    span: Option<RequestSpan>,
    _listed: Listed,
    _affinity: Option<SessionHold>,
    _permit: Option<SessionPermit>,
    _active: Option<ActiveGuard>,
    _conn_hold: Option<ConnHold>,
}

impl Lifecycle {
    /// The session is upgraded: counted active, listed, registered.
    pub(crate) fn begin(ctx: &SessionCtx, metrics: &RouteMetrics, p: Placement) -> Self {
        metrics.sessions_active.inc();
        let listed = ctx.list.register(
            p.route.clone(),
            p.agent_name,
            p.conn.client,
            p.endpoint.to_string(),
            p.transport,
        );
        let affinity = match (&ctx.registry, p.affinity) {
            (Some(registry), Some(id)) => Some(registry.register_session(&id, &p.route, &p.endpoint)),
            _ => None,
        };
        Self {
            started: Instant::now(),
            metrics: metrics.clone(),
            access_log: ctx.access_log,
            route: p.route,
            cluster: p.cluster,
            endpoint: p.endpoint,
            conn: p.conn,
            span: p.span,
            _listed: listed,
            _affinity: affinity,
            _permit: p.permit,
            _active: p.active,
            _conn_hold: p.conn_hold,
        }
    }

    /// The session ended: counted by outcome, its span closed, its access
    /// line written; everything it held is let go.
    pub(crate) fn end(mut self, outcome: SessionOutcome, counts: Option<Counts>) {
        let m = &self.metrics;
        m.sessions_active.dec();
        m.session_ended(outcome.as_str());
        let c = counts.unwrap_or_default();
        if let Some(s) = self.span.take() {
            if counts.is_some() {
                s.set(
                    "agentmux.ws.messages_up",
                    i64::try_from(c.messages_up).unwrap_or(i64::MAX),
                );
                s.set(
                    "agentmux.ws.messages_down",
                    i64::try_from(c.messages_down).unwrap_or(i64::MAX),
                );
            }
            s.set("agentmux.ws.end", outcome.as_str());
            s.end();
        }
        if self.access_log {
            tracing::info!(
                target: "access",
                client = %self.conn.client,
                route = &*self.route,
                cluster = &*self.cluster,
                endpoint = &*self.endpoint,
                end = outcome.as_str(),
                messages_up = c.messages_up,
                messages_down = c.messages_down,
                bytes_up = c.bytes_up,
                bytes_down = c.bytes_down,
                duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                "session"
            );
        }
    }
}
