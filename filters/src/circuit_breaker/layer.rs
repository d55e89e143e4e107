//! The circuit-breaker layer.

use tower_layer::Layer;

use super::{CircuitBreaker, CircuitBreakerService};
use crate::StatusSet;

/// Applies [`CircuitBreakerService`] with a shared [`CircuitBreaker`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    breaker: CircuitBreaker,
    failures: StatusSet,
}

impl CircuitBreakerLayer {
    /// A layer over `breaker`; 502, 503 and 504 count as failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            failures: StatusSet::gateway_errors(),
        }
    }

    /// Replaces the set of response statuses that count as failures.
    pub fn with_failure_statuses(mut self, failures: StatusSet) -> Self {
        self.failures = failures;
        self
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> CircuitBreakerService<S> {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.failures)
    }
}
