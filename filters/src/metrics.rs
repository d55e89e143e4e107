//! The metrics interface every filter reports through.
//!
//! Each layer receives an `Arc<dyn FilterMetrics>` at construction, already
//! bound to that filter's name (and route), so the hot path makes one virtual
//! call that bumps a cached counter — no label lookup per request. The
//! gateway implements the trait with cached prometheus-client handles;
//! [`NoopMetrics`] ignores everything and [`CountingMetrics`] counts in
//! atomics for tests.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::circuit_breaker::CircuitState;

/// Why auth rejected a request (a bounded label value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthRejection {
    /// No API key and no mTLS identity were presented (401).
    MissingCredentials,
    /// An API key was presented but matches no configured key (403).
    InvalidKey,
    /// The mTLS identity is not on the allow-list (403).
    IdentityNotAllowed,
}

/// Which timeout fired (a bounded label value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// No response headers within the request timeout.
    Request,
    /// A streaming response body went quiet for longer than the idle timeout.
    Idle,
}

/// Counters and gauges a filter reports. Implementations must be cheap:
/// these are called on the request path.
pub trait FilterMetrics: Send + Sync + std::fmt::Debug {
    /// A request was rejected with 429.
    fn rate_limited(&self);
    /// A WebSocket message was delayed to stay under its rate.
    fn message_delayed(&self);
    /// A WebSocket session exceeded its message rate past the delay bound.
    fn message_rejected(&self);
    /// A session was refused by the concurrent-session limit.
    fn session_rejected(&self);
    /// The number of keys a keyed limiter tracks, after pruning (a gauge).
    /// The request limiter and the per-key message limiter each report
    /// their own table: hand them separate handles to export both.
    fn rate_limit_keys(&self, tracked: usize);
    /// A request was retried.
    fn retried(&self);
    /// A retry was wanted but the retry budget was empty.
    fn budget_exhausted(&self);
    /// The circuit opened (from closed or from a failed half-open probe).
    fn circuit_opened(&self);
    /// The circuit changed state (a gauge).
    fn circuit_state(&self, state: CircuitState);
    /// A request was refused fast because the circuit was open.
    fn circuit_rejected(&self);
    /// An outcome could not be reported to the breaker (channel full).
    fn circuit_outcome_dropped(&self);
    /// A request was shed by the concurrency limit.
    fn shed(&self);
    /// Auth rejected a request.
    fn auth_rejected(&self, reason: AuthRejection);
    /// A timeout fired.
    fn timed_out(&self, kind: TimeoutKind);
    /// A global rate limit decided a request on its local share because
    /// the shared store was unreachable or slow.
    fn rate_limit_fallback(&self) {}
    /// The circuit opened because another gateway instance reported that
    /// its own circuit opened ([`crate::circuit_breaker::CircuitBreaker::trip`]).
    fn circuit_opened_by_peer(&self) {}
}

/// Metrics that go nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopMetrics;

impl FilterMetrics for NoopMetrics {
    fn rate_limited(&self) {}
    fn message_delayed(&self) {}
    fn message_rejected(&self) {}
    fn session_rejected(&self) {}
    fn rate_limit_keys(&self, _tracked: usize) {}
    fn retried(&self) {}
    fn budget_exhausted(&self) {}
    fn circuit_opened(&self) {}
    fn circuit_state(&self, _state: CircuitState) {}
    fn circuit_rejected(&self) {}
    fn circuit_outcome_dropped(&self) {}
    fn shed(&self) {}
    fn auth_rejected(&self, _reason: AuthRejection) {}
    fn timed_out(&self, _kind: TimeoutKind) {}
}

/// Metrics counted in atomics; read them back with the getters. Meant for
/// tests (here and in the gateway).
#[derive(Debug, Default)]
pub struct CountingMetrics {
    rate_limited: AtomicU64,
    message_delayed: AtomicU64,
    message_rejected: AtomicU64,
    session_rejected: AtomicU64,
    rate_limit_keys: AtomicU64,
    retried: AtomicU64,
    budget_exhausted: AtomicU64,
    circuit_opened: AtomicU64,
    circuit_state: AtomicU8,
    circuit_rejected: AtomicU64,
    circuit_outcome_dropped: AtomicU64,
    shed: AtomicU64,
    auth_missing: AtomicU64,
    auth_invalid_key: AtomicU64,
    auth_identity: AtomicU64,
    timed_out_request: AtomicU64,
    timed_out_idle: AtomicU64,
    rate_limit_fallback: AtomicU64,
    circuit_opened_by_peer: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl FilterMetrics for CountingMetrics {
    fn rate_limited(&self) {
        bump(&self.rate_limited);
    }
    fn message_delayed(&self) {
        bump(&self.message_delayed);
    }
    fn message_rejected(&self) {
        bump(&self.message_rejected);
    }
    fn session_rejected(&self) {
        bump(&self.session_rejected);
    }
    fn rate_limit_keys(&self, tracked: usize) {
        let tracked = u64::try_from(tracked).unwrap_or(u64::MAX);
        self.rate_limit_keys.store(tracked, Ordering::Relaxed);
    }
    fn retried(&self) {
        bump(&self.retried);
    }
    fn budget_exhausted(&self) {
        bump(&self.budget_exhausted);
    }
    fn circuit_opened(&self) {
        bump(&self.circuit_opened);
    }
    fn circuit_state(&self, state: CircuitState) {
        self.circuit_state.store(state as u8, Ordering::Relaxed);
    }
    fn circuit_rejected(&self) {
        bump(&self.circuit_rejected);
    }
    fn circuit_outcome_dropped(&self) {
        bump(&self.circuit_outcome_dropped);
    }
    fn shed(&self) {
        bump(&self.shed);
    }
    fn auth_rejected(&self, reason: AuthRejection) {
        bump(match reason {
            AuthRejection::MissingCredentials => &self.auth_missing,
            AuthRejection::InvalidKey => &self.auth_invalid_key,
            AuthRejection::IdentityNotAllowed => &self.auth_identity,
        });
    }
    fn timed_out(&self, kind: TimeoutKind) {
        bump(match kind {
            TimeoutKind::Request => &self.timed_out_request,
            TimeoutKind::Idle => &self.timed_out_idle,
        });
    }
    fn rate_limit_fallback(&self) {
        bump(&self.rate_limit_fallback);
    }
    fn circuit_opened_by_peer(&self) {
        bump(&self.circuit_opened_by_peer);
    }
}

impl CountingMetrics {
    /// Global-limit decisions made on the local share.
    pub fn rate_limit_fallback_count(&self) -> u64 {
        read(&self.rate_limit_fallback)
    }
    /// Times the circuit opened on a peer's report.
    pub fn circuit_opened_by_peer_count(&self) -> u64 {
        read(&self.circuit_opened_by_peer)
    }
    /// Requests rejected with 429.
    pub fn rate_limited_count(&self) -> u64 {
        read(&self.rate_limited)
    }
    /// Messages delayed by the message limiter.
    pub fn message_delayed_count(&self) -> u64 {
        read(&self.message_delayed)
    }
    /// Sessions that exceeded their message rate.
    pub fn message_rejected_count(&self) -> u64 {
        read(&self.message_rejected)
    }
    /// Sessions refused by the concurrent-session limit.
    pub fn session_rejected_count(&self) -> u64 {
        read(&self.session_rejected)
    }
    /// The last reported number of tracked rate-limit keys.
    pub fn rate_limit_keys(&self) -> u64 {
        read(&self.rate_limit_keys)
    }
    /// Retries sent.
    pub fn retried_count(&self) -> u64 {
        read(&self.retried)
    }
    /// Retries refused by the budget.
    pub fn budget_exhausted_count(&self) -> u64 {
        read(&self.budget_exhausted)
    }
    /// Times the circuit opened.
    pub fn circuit_opened_count(&self) -> u64 {
        read(&self.circuit_opened)
    }
    /// The last reported circuit state.
    pub fn circuit_state(&self) -> CircuitState {
        CircuitState::from_u8(self.circuit_state.load(Ordering::Relaxed))
    }
    /// Requests refused fast by an open circuit.
    pub fn circuit_rejected_count(&self) -> u64 {
        read(&self.circuit_rejected)
    }
    /// Outcomes the breaker's channel dropped.
    pub fn circuit_outcome_dropped_count(&self) -> u64 {
        read(&self.circuit_outcome_dropped)
    }
    /// Requests shed by the concurrency limit.
    pub fn shed_count(&self) -> u64 {
        read(&self.shed)
    }
    /// Auth rejections for `reason`.
    pub fn auth_rejected_count(&self, reason: AuthRejection) -> u64 {
        read(match reason {
            AuthRejection::MissingCredentials => &self.auth_missing,
            AuthRejection::InvalidKey => &self.auth_invalid_key,
            AuthRejection::IdentityNotAllowed => &self.auth_identity,
        })
    }
    /// Timeouts of `kind`.
    pub fn timed_out_count(&self, kind: TimeoutKind) -> u64 {
        read(match kind {
            TimeoutKind::Request => &self.timed_out_request,
            TimeoutKind::Idle => &self.timed_out_idle,
        })
    }
}
