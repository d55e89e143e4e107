//! The filters crate's metrics interface, backed by cached Prometheus
//! handles: `agentmux_filter_events_total{filter, event}`,
//! `agentmux_circuit_state{filter, scope}`, `agentmux_rate_limit_keys{route}`
//! (labelled by filter name).

use agentmux_filters::circuit_breaker::CircuitState;
use agentmux_filters::{AuthRejection, FilterMetrics, TimeoutKind};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::{CircuitLabels, FilterLabels, Metrics, RouteLabels};

const EVENTS: [&str; 18] = [
    "rate_limited",
    "message_delayed",
    "message_rejected",
    "session_rejected",
    "retried",
    "budget_exhausted",
    "circuit_opened",
    "circuit_rejected",
    "circuit_outcome_dropped",
    "shed",
    "auth_missing_credentials",
    "auth_invalid_key",
    "auth_identity_not_allowed",
    "timeout_request",
    "timeout_idle",
    "circuit_closed",
    "rate_limit_fallback",
    "circuit_opened_by_peer",
];

/// One filter's counters (and, for breakers, its circuit gauge).
#[derive(Debug)]
pub struct FilterCounters {
    events: [Counter; EVENTS.len()],
    circuit: Gauge,
    keys: Gauge,
    on_open: Option<OpenHook>,
}

/// Called when a circuit opens on its own outcomes (not on a peer's
/// report): the gateway announces such opens to its peers.
pub(crate) struct OpenHook(pub(crate) Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for OpenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenHook")
    }
}

impl FilterCounters {
    /// Handles for filter `name`; `scope` labels a breaker's circuit
    /// (`cluster:NAME` or `endpoint:ADDR`).
    pub fn new(metrics: &Metrics, name: &str, scope: &str) -> Self {
        let events = EVENTS.map(|event| {
            metrics.filter_events.get_or_create_owned(&FilterLabels {
                filter: name.to_owned(),
                event,
            })
        });
        let circuit = metrics.circuit_state.get_or_create_owned(&CircuitLabels {
            filter: name.to_owned(),
            scope: scope.to_owned(),
        });
        let keys = metrics
            .rate_limit_keys
            .get_or_create_owned(&RouteLabels { route: name.to_owned() });
        Self {
            events,
            circuit,
            keys,
            on_open: None,
        }
    }

    /// Runs `hook` each time the circuit opens on its own outcomes.
    pub(crate) fn with_open_hook(mut self, hook: OpenHook) -> Self {
        self.on_open = Some(hook);
        self
    }

    fn bump(&self, event: &str) {
        if let Some(i) = EVENTS.iter().position(|e| *e == event) {
            self.events[i].inc();
        }
    }
}

impl FilterMetrics for FilterCounters {
    fn rate_limited(&self) {
        self.events[0].inc();
    }
    fn message_delayed(&self) {
        self.events[1].inc();
    }
    fn message_rejected(&self) {
        self.events[2].inc();
    }
    fn session_rejected(&self) {
        self.events[3].inc();
    }
    fn rate_limit_keys(&self, tracked: usize) {
        self.keys.set(tracked as i64);
    }
    fn retried(&self) {
        self.events[4].inc();
    }
    fn budget_exhausted(&self) {
        self.events[5].inc();
    }
    fn circuit_opened(&self) {
        self.events[6].inc();
        if let Some(hook) = &self.on_open {
            (hook.0)();
        }
    }
    fn circuit_state(&self, state: CircuitState) {
        let v = match state {
            CircuitState::Closed => {
                self.bump("circuit_closed");
                0
            }
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        };
        self.circuit.set(v);
    }
    fn circuit_rejected(&self) {
        self.events[7].inc();
    }
    fn circuit_outcome_dropped(&self) {
        self.events[8].inc();
    }
    fn shed(&self) {
        self.events[9].inc();
    }
    fn auth_rejected(&self, reason: AuthRejection) {
        let i = match reason {
            AuthRejection::MissingCredentials => 10,
            AuthRejection::InvalidKey => 11,
            AuthRejection::IdentityNotAllowed => 12,
        };
        self.events[i].inc();
    }
    fn timed_out(&self, kind: TimeoutKind) {
        let i = match kind {
            TimeoutKind::Request => 13,
            TimeoutKind::Idle => 14,
        };
        self.events[i].inc();
    }
    fn rate_limit_fallback(&self) {
        self.events[16].inc();
    }
    fn circuit_opened_by_peer(&self) {
        self.events[17].inc();
    }
}
