//! The load-shed layer and its parameters.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::LoadShed;
use crate::{FilterMetrics, InvalidParam};

/// Validated load-shed parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadShedParams {
    max_in_flight: usize,
}

impl LoadShedParams {
    /// At most `max_in_flight` (>= 1) requests in flight on the route.
    pub fn new(max_in_flight: usize) -> Result<Self, InvalidParam> {
        if max_in_flight == 0 {
            return Err(InvalidParam::new("max_in_flight", "must be >= 1 (got 0)"));
        }
        if max_in_flight > Semaphore::MAX_PERMITS {
            return Err(InvalidParam::new(
                "max_in_flight",
                format!("must be <= {} (got {max_in_flight})", Semaphore::MAX_PERMITS),
            ));
        }
        Ok(Self { max_in_flight })
    }

    /// The in-flight limit.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

/// Applies [`LoadShed`]. Clones share one in-flight count, so every
/// service the layer builds for a route counts against the same limit.
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    pub(super) slots: Arc<Semaphore>,
    pub(super) limit: usize,
    pub(super) metrics: Arc<dyn FilterMetrics>,
}

impl LoadShedLayer {
    /// A layer with all slots free.
    pub fn new(params: LoadShedParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(params.max_in_flight)),
            limit: params.max_in_flight,
            metrics,
        }
    }

    /// Requests in flight right now (bodies still streaming included).
    pub fn in_flight(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> LoadShed<S> {
        LoadShed::new(inner, self.clone())
    }
}
