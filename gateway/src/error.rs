//! Typed proxy errors and the one place that turns them into answers.
//!
//! Errors are created where they happen with a [`Cause`]; the edge maps the
//! cause, in one exhaustive `match`, to the HTTP status, the WebSocket close
//! code, the side that failed and whether a retry may help (STYLE.md §5).

use std::fmt;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, BoxError, full};

/// What went wrong, at the granularity answers and metrics need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// No route matches the request.
    NoRoute,
    /// Malformed request or upgrade.
    BadRequest,
    /// A body, header block or message over its limit.
    TooLarge,
    /// Request headers that do not fit where they must go (a mux OPEN:
    /// 128 headers, 64 KiB in all).
    HeadersTooLarge,
    /// Credentials missing.
    Unauthenticated,
    /// Credentials not allowed.
    Forbidden,
    /// A rate limit was hit.
    RateLimited,
    /// The cluster's or endpoint's circuit is open.
    CircuitOpen,
    /// The route's concurrency limit is full.
    Overloaded,
    /// No upstream connection became free within `acquire_timeout`.
    PoolExhausted,
    /// The cluster has no endpoint to use.
    NoEndpoint,
    /// Connecting or the TLS handshake to the upstream failed.
    UpstreamConnect,
    /// The upstream did not answer in time (connect or response headers).
    UpstreamTimeout,
    /// The upstream broke the HTTP or WebSocket protocol or reset.
    UpstreamProtocol,
    /// The upstream refused a WebSocket upgrade.
    UpgradeRefused,
    /// The gateway is shutting down.
    Draining,
    /// A bug in the gateway.
    Internal,
    /// A mux session to take over is not known (never issued, or expired).
    SessionUnknown,
    /// A mux session to take over is held or being taken by another
    /// connection.
    SessionTaken,
    /// A mux session cannot be taken over: the upstream forgot it, or no
    /// longer holds messages its agent did not get.
    SessionLost,
    /// The cross-instance session registry (Redis) is unavailable.
    RegistryUnavailable,
    /// A method the gateway does not serve (a plain CONNECT tunnel).
    MethodNotAllowed,
    /// An HTTP/2 extended CONNECT for a protocol the gateway does not
    /// serve (anything but `websocket`), or a WebSocket one to a route that
    /// takes no sessions: 501.
    UnsupportedProtocol,
    /// The request body did not arrive within its deadline.
    RequestTimeout,
    /// The agent stopped answering keepalive pings (a half-open
    /// connection): its session is closed.
    KeepaliveTimeout,
}

/// Why the agent's request body was cut (by `crate::edge::EdgeBody`): its
/// failure travels inside the upstream exchange's error, and the edge
/// answers the agent 413 or 408 for it ([`ProxyError::from_agent_body`]).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More bytes than the route allows.
    #[error("request body over the route's limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Not complete within the deadline.
    #[error("request body not received within {0:?}")]
    TimedOut(Duration),
    /// The agent's connection failed while sending it.
    #[error("reading the request body failed")]
    Read(#[source] BoxError),
}

/// How a relayed session (WebSocket or mux) ended: the label of
/// `agentmux_sessions_ended_total` and of access-log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionOutcome {
    /// Both sides exchanged close frames.
    Closed,
    /// The agent went away without a close.
    AgentGone,
    /// The upstream went away without a close.
    UpstreamGone,
    /// The agent broke the protocol (close code sent to it).
    AgentViolation(u16),
    /// The upstream broke the protocol (close code sent to it).
    UpstreamViolation(u16),
    /// The agent stopped answering keepalive pings.
    KeepaliveTimeout,
    /// The agent kept sending over its message rate (closed with 1008).
    RateLimited,
    /// The gateway is shutting down.
    Draining,
}

impl SessionOutcome {
    /// Every label value [`SessionOutcome::as_str`] gives.
    pub const LABELS: [&'static str; 8] = [
        "closed",
        "agent_gone",
        "upstream_gone",
        "agent_violation",
        "upstream_violation",
        "keepalive_timeout",
        "draining",
        "rate_limited",
    ];

    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::AgentGone => "agent_gone",
            Self::UpstreamGone => "upstream_gone",
            Self::AgentViolation(_) => "agent_violation",
            Self::UpstreamViolation(_) => "upstream_violation",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::RateLimited => "rate_limited",
            Self::Draining => "draining",
        }
    }
}

/// WebSocket close codes (RFC 6455 §7.4.1) the gateway sends. Every code
/// it sends comes from here: the [`Cause`] table, the session-end table
/// ([`SessionOutcome::closes`]) and the relays' protocol checks.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: the gateway (or the other side of the relay) is leaving.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Text that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A policy was violated (auth, rate limits).
    pub const POLICY: u16 = 1008;
    /// A message over its size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The gateway or the upstream failed.
    pub const INTERNAL: u16 = 1011;
    /// Service restart: the session continues elsewhere (mux handover).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later: no capacity now.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Bad gateway: valid on the wire, but some clients reject it, so the
    /// gateway passes it on as [`INTERNAL`].
    pub const BAD_GATEWAY: u16 = 1014;
}

/// The close frames a session's end sends, for the sides the gateway
/// closes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closes {
    /// What the agent hears (`None`: it ended the session, or is gone).
    pub agent: Option<(u16, &'static str)>,
    /// What the upstream hears.
    pub upstream: Option<(u16, &'static str)>,
}

impl SessionOutcome {
    /// The close-code decision, made once for every session kind. A
    /// violation's own code and reason go to the side that broke the
    /// protocol (the relay knows them); this is what the other side hears.
    pub fn closes(self) -> Closes {
        use close::*;
        let (agent, upstream) = match self {
            Self::Closed => (None, None),
            Self::AgentGone => (None, Some((GOING_AWAY, "agent disconnected"))),
            Self::UpstreamGone => (Some((INTERNAL, "upstream connection lost")), None),
            Self::AgentViolation(_) => (None, Some((GOING_AWAY, "agent protocol error"))),
            Self::UpstreamViolation(_) => (Some((INTERNAL, "upstream protocol error")), None),
            Self::KeepaliveTimeout => (
                Some((GOING_AWAY, "keepalive timeout")),
                Some((GOING_AWAY, "agent stopped answering")),
            ),
            Self::RateLimited => (
                Some((POLICY, "message rate exceeded")),
                Some((GOING_AWAY, "agent over its message rate")),
            ),
            Self::Draining => (
                Some((GOING_AWAY, "gateway shutting down")),
                Some((GOING_AWAY, "gateway shutting down")),
            ),
        };
        Closes { agent, upstream }
    }
}

/// Which side a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The upstream failed.
    Upstream,
    /// The agent sent something wrong or too much.
    Downstream,
    /// The gateway itself (limits, shutdown, bugs).
    Internal,
}

impl Cause {
    /// Every cause.
    pub const ALL: [Cause; 25] = [
        Self::NoRoute,
        Self::BadRequest,
        Self::TooLarge,
        Self::HeadersTooLarge,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::RateLimited,
        Self::CircuitOpen,
        Self::Overloaded,
        Self::PoolExhausted,
        Self::NoEndpoint,
        Self::UpstreamConnect,
        Self::UpstreamTimeout,
        Self::UpstreamProtocol,
        Self::UpgradeRefused,
        Self::Draining,
        Self::Internal,
        Self::SessionUnknown,
        Self::SessionTaken,
        Self::SessionLost,
        Self::RegistryUnavailable,
        Self::MethodNotAllowed,
        Self::UnsupportedProtocol,
        Self::RequestTimeout,
        Self::KeepaliveTimeout,
    ];

    /// Whether a request that failed with this cause surely never reached
    /// the upstream (no connection was made, or none was free), so it is
    /// safe to retry whatever the method.
    pub fn never_sent(self) -> bool {
        matches!(self, Self::UpstreamConnect | Self::PoolExhausted)
    }

    /// The answer for each cause: HTTP status, WebSocket close code, origin.
    pub fn mapping(self) -> (StatusCode, u16, Origin) {
        use Origin::*;
        use close::*;
        match self {
            Self::NoRoute => (StatusCode::NOT_FOUND, POLICY, Downstream),
            Self::BadRequest => (StatusCode::BAD_REQUEST, PROTOCOL_ERROR, Downstream),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, TOO_BIG, Downstream),
            Self::HeadersTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, TOO_BIG, Downstream),
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, POLICY, Downstream),
            Self::Forbidden => (StatusCode::FORBIDDEN, POLICY, Downstream),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, POLICY, Downstream),
            Self::CircuitOpen => (StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN_LATER, Internal),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN_LATER, Internal),
            Self::PoolExhausted => (StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN_LATER, Internal),
            Self::NoEndpoint => (StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN_LATER, Internal),
            Self::UpstreamConnect => (StatusCode::BAD_GATEWAY, INTERNAL, Upstream),
            Self::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, INTERNAL, Upstream),
            Self::UpstreamProtocol => (StatusCode::BAD_GATEWAY, INTERNAL, Upstream),
            Self::UpgradeRefused => (StatusCode::BAD_GATEWAY, INTERNAL, Upstream),
            Self::Draining => (StatusCode::SERVICE_UNAVAILABLE, GOING_AWAY, Internal),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL, Internal),
            Self::SessionUnknown => (StatusCode::NOT_FOUND, POLICY, Downstream),
            Self::SessionTaken => (StatusCode::CONFLICT, POLICY, Downstream),
            Self::SessionLost => (StatusCode::GONE, INTERNAL, Upstream),
            Self::RegistryUnavailable => (StatusCode::SERVICE_UNAVAILABLE, TRY_AGAIN_LATER, Internal),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, PROTOCOL_ERROR, Downstream),
            Self::UnsupportedProtocol => (StatusCode::NOT_IMPLEMENTED, PROTOCOL_ERROR, Downstream),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, POLICY, Downstream),
            // 408 is never sent for it (it happens after the `101`); the
            // agent hears 1001, going away, as in websocket mode.
            Self::KeepaliveTimeout => (StatusCode::REQUEST_TIMEOUT, GOING_AWAY, Downstream),
        }
    }

    /// A stable snake_case name for metrics labels and JSON bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::CircuitOpen => "circuit_open",
            Self::Overloaded => "overloaded",
            Self::PoolExhausted => "pool_exhausted",
            Self::NoEndpoint => "no_endpoint",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamProtocol => "upstream_protocol",
            Self::UpgradeRefused => "upgrade_refused",
            Self::Draining => "draining",
            Self::Internal => "internal",
            Self::SessionUnknown => "session_unknown",
            Self::SessionTaken => "session_taken",
            Self::SessionLost => "session_lost",
            Self::RegistryUnavailable => "registry_unavailable",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::RequestTimeout => "request_timeout",
            Self::KeepaliveTimeout => "keepalive_timeout",
        }
    }
}

/// An error on the proxy path with its cause and a message for the agent.
pub struct ProxyError {
    cause: Cause,
    message: String,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl ProxyError {
    /// An error with a cause and a message safe to show the agent.
    pub fn new(cause: Cause, message: impl Into<String>) -> Self {
        Self {
            cause,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Attaches the underlying error (logged, not shown to the agent).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Adds a `Retry-After` hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The cause.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        self.cause.mapping().0
    }

    /// The WebSocket close code for this error (never 1014, which some
    /// clients reject).
    pub fn close_code(&self) -> u16 {
        self.cause.mapping().1
    }

    /// The message shown to the agent.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP answer: the status, a short JSON body, `Retry-After` when
    /// known, and `Connection: close` while draining.
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.cause.as_str(), "message": self.message });
        let mut resp = Response::new(full(format!("{body}\n")));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.cause == Cause::Draining {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// The agent's own body failure (too large, too slow) when it is
    /// somewhere in `e`'s source chain: an upstream exchange that failed
    /// because the agent's body was cut is the agent's doing, not the
    /// upstream's.
    pub fn from_agent_body(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(e);
        while let Some(e) = next {
            if let Some(b) = e.downcast_ref::<BodyError>() {
                let cause = match b {
                    BodyError::TooLarge { .. } => Cause::TooLarge,
                    BodyError::TimedOut(_) => Cause::RequestTimeout,
                    BodyError::Read(_) => Cause::BadRequest,
                };
                return Some(Self::new(cause, b.to_string()));
            }
            next = e.source();
        }
        None
    }

    /// Recovers a typed error from a boxed one (tower stacks box errors).
    /// Walks `e`'s whole source chain, outermost first, and takes the
    /// first error it knows — the gateway's own, each filter's (an agent
    /// body failure anywhere wins) — so a wrapper (hyper, a timeout, a service adapter)
    /// around a typed error does not hide it; `Internal` when none is.
    pub fn from_box(e: BoxError) -> Self {
        let e = match e.downcast::<ProxyError>() {
            Ok(p) => return *p,
            Err(e) => e,
        };
        // The agent's own body failure wins wherever it is: an exchange
        // that failed because the agent's body was cut is the agent's doing.
        if let Some(body) = Self::from_agent_body(&*e) {
            return body.with_source(e);
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
        while let Some(link) = next {
            if let Some(known) = Self::classify(link) {
                return known.with_source(e);
            }
            next = link.source();
        }
        Self::new(Cause::Internal, "internal error").with_source(e)
    }

    /// The typed error `e` itself is, if the gateway knows it (not its
    /// sources: [`ProxyError::from_box`] walks those).
    fn classify(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        use agentmux_filters::{auth, circuit_breaker, load_shed, rate_limit, timeout};
        if let Some(p) = e.downcast_ref::<ProxyError>() {
            let mut copy = Self::new(p.cause, p.message.clone());
            copy.retry_after = p.retry_after;
            return Some(copy);
        }
        if let Some(r) = e.downcast_ref::<rate_limit::RateLimited>() {
            let after = r.retry_after();
            return Some(Self::new(Cause::RateLimited, "rate limit exceeded").with_retry_after(after));
        }
        let (cause, message) = if e.is::<rate_limit::TooManySessions>() {
            (Cause::RateLimited, "too many concurrent sessions")
        } else if e.is::<auth::Unauthenticated>() {
            (Cause::Unauthenticated, "credentials required")
        } else if e.is::<auth::Forbidden>() {
            (Cause::Forbidden, "credentials not accepted")
        } else if let Some(a) = e.downcast_ref::<auth::AuthError>() {
            match a {
                auth::AuthError::Unauthenticated(_) => (Cause::Unauthenticated, "credentials required"),
                auth::AuthError::Forbidden(_) => (Cause::Forbidden, "credentials not accepted"),
            }
        } else if e.is::<circuit_breaker::CircuitOpen>() {
            (Cause::CircuitOpen, "circuit open: upstream is failing")
        } else if e.is::<load_shed::Overloaded>() {
            (Cause::Overloaded, "route at its concurrency limit")
        } else if e.is::<timeout::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
            (Cause::UpstreamTimeout, "upstream timed out")
        } else {
            return None;
        };
        Some(Self::new(cause, message))
    }

    /// Whether a request that failed with `e` never left the gateway, so
    /// the retry filter may resend it whatever its method: the cause
    /// decides ([`Cause::never_sent`]), found anywhere in `e`'s source
    /// chain. Anything else may have reached the upstream.
    pub fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(link) = next {
            if let Some(p) = link.downcast_ref::<ProxyError>() {
                return p.cause.never_sent();
            }
            next = link.source();
        }
        false
    }
}

impl fmt::Debug for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyError")
            .field("cause", &self.cause)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_style_guide() {
        assert_eq!(Cause::RateLimited.mapping().0, 429);
        assert_eq!(
            Cause::PoolExhausted.mapping(),
            (StatusCode::SERVICE_UNAVAILABLE, 1013, Origin::Internal)
        );
        assert_eq!(Cause::UpstreamConnect.mapping().0, 502);
        assert_eq!(Cause::UpstreamTimeout.mapping().0, 504);
        assert_eq!(Cause::TooLarge.mapping().1, 1009);
        assert_eq!(Cause::Draining.mapping().1, 1001);
    }

    #[test]
    fn response_carries_retry_after_and_json() {
        let r = ProxyError::new(Cause::RateLimited, "slow down")
            .with_retry_after(Duration::from_millis(1200))
            .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn boxed_errors_come_back_typed() {
        let e: BoxError = Box::new(ProxyError::new(Cause::TooLarge, "big"));
        assert_eq!(ProxyError::from_box(e).cause(), Cause::TooLarge);
        let e: BoxError = "weird".into();
        assert_eq!(ProxyError::from_box(e).cause(), Cause::Internal);
    }

    /// An error that wraps another (as hyper, a timeout or a service
    /// adapter does): only its `source()` says what happened.
    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn from_box_walks_the_source_chain() {
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>()).await;
        let inner: BoxError = Box::new(elapsed.unwrap_err());
        let e: BoxError = Box::new(Wrapper(Box::new(Wrapper(inner))));
        assert_eq!(ProxyError::from_box(e).cause(), Cause::UpstreamTimeout);

        let inner: BoxError = Box::new(ProxyError::new(Cause::UpstreamConnect, "refused"));
        let e: BoxError = Box::new(Wrapper(inner));
        let p = ProxyError::from_box(e);
        assert_eq!((p.cause(), p.message()), (Cause::UpstreamConnect, "refused"));

        // The agent's body failure wins over what wraps it.
        let body: BoxError = Box::new(BodyError::TooLarge { limit: 10 });
        let e: BoxError = Box::new(Wrapper(Box::new(
            ProxyError::new(Cause::UpstreamProtocol, "reset").with_source(body),
        )));
        assert_eq!(ProxyError::from_box(e).cause(), Cause::TooLarge);
    }

    #[test]
    fn only_errors_that_never_left_the_gateway_are_retryable_for_any_method() {
        for cause in Cause::ALL {
            let e = Wrapper(Box::new(ProxyError::new(cause, "x")));
            assert_eq!(ProxyError::never_sent(&e), cause.never_sent(), "{cause:?}");
        }
        assert!(Cause::UpstreamConnect.never_sent() && Cause::PoolExhausted.never_sent());
        assert!(!Cause::UpstreamTimeout.never_sent() && !Cause::UpstreamProtocol.never_sent());
        assert!(!ProxyError::never_sent(&Wrapper("io".into())));
    }
}
