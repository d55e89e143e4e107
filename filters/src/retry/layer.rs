//! The retry layer and its parameters.

use std::sync::Arc;

use tower_layer::Layer;

use super::{Backoff, DefaultClassifier, Retry, RetryBudget, RetryClassifier, Shared};
use crate::{FilterMetrics, InvalidParam};

/// The most attempts (first try included) a request may get.
const MAX_ATTEMPTS: u32 = 20;

/// Validated retry parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryParams {
    max_attempts: u32,
    backoff: Backoff,
}

impl RetryParams {
    /// Up to `max_attempts` attempts in all (1..=20; 1 disables retries),
    /// separated by `backoff` delays.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Result<Self, InvalidParam> {
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(InvalidParam::new(
                "max_attempts",
                format!("must be within 1..={MAX_ATTEMPTS} (got {max_attempts})"),
            ));
        }
        Ok(Self { max_attempts, backoff })
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay between attempts.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
}

/// Applies [`Retry`]. Clones share the budget.
#[derive(Clone, Debug)]
pub struct RetryLayer<C = DefaultClassifier> {
    shared: Arc<Shared<C>>,
}

impl<C: RetryClassifier> RetryLayer<C> {
    /// A layer retrying what `classifier` allows, within `params`, paid for
    /// by `budget` (share one budget between the routes that should share
    /// it).
    pub fn new(params: RetryParams, budget: RetryBudget, classifier: C, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_attempts: params.max_attempts,
                backoff: params.backoff,
                budget,
                classifier,
                metrics,
            }),
        }
    }

    /// The shared budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Retry<S, C> {
        Retry::from_shared(inner, self.shared.clone())
    }
}
