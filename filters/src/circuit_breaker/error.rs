//! The circuit breaker's error.

use std::fmt;

use super::CircuitState;

/// The circuit is open (or half-open with all probes taken): the request was
/// refused without touching the upstream (HTTP 503 / WebSocket 1013).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    state: CircuitState,
}

impl CircuitOpen {
    pub(crate) fn new(state: CircuitState) -> Self {
        Self { state }
    }

    /// The state that refused the request: `Open` or `HalfOpen`.
    pub fn state(&self) -> CircuitState {
        self.state
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            CircuitState::HalfOpen => f.write_str("circuit half-open, probes in flight"),
            _ => f.write_str("circuit open"),
        }
    }
}

impl std::error::Error for CircuitOpen {}
