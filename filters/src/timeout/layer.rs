//! The timeout layers and their parameters.

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{ResponseBodyTimeout, Timeout};
use crate::params::nonzero_duration;
use crate::{FilterMetrics, InvalidParam};

/// Validated request-timeout parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutParams {
    request: Duration,
}

impl TimeoutParams {
    /// Response headers must arrive within `request` (> 0).
    pub fn new(request: Duration) -> Result<Self, InvalidParam> {
        Ok(Self {
            request: nonzero_duration("request_timeout", request)?,
        })
    }

    /// The request timeout.
    pub fn request(&self) -> Duration {
        self.request
    }
}

/// Validated idle-timeout parameters for streaming bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeoutParams {
    idle: Duration,
}

impl IdleTimeoutParams {
    /// A response body may go at most `idle` (> 0) without a frame.
    pub fn new(idle: Duration) -> Result<Self, InvalidParam> {
        Ok(Self {
            idle: nonzero_duration("idle_timeout", idle)?,
        })
    }

    /// The idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }
}

/// Applies [`Timeout`].
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    params: TimeoutParams,
    metrics: Arc<dyn FilterMetrics>,
}

impl TimeoutLayer {
    /// A layer timing requests to their response headers.
    pub fn new(params: TimeoutParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self { params, metrics }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.params, self.metrics.clone())
    }
}

/// Applies [`ResponseBodyTimeout`].
#[derive(Clone, Debug)]
pub struct ResponseBodyTimeoutLayer {
    params: IdleTimeoutParams,
    metrics: Arc<dyn FilterMetrics>,
}

impl ResponseBodyTimeoutLayer {
    /// A layer wrapping response bodies in an idle timeout.
    pub fn new(params: IdleTimeoutParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self { params, metrics }
    }
}

impl<S> Layer<S> for ResponseBodyTimeoutLayer {
    type Service = ResponseBodyTimeout<S>;

    fn layer(&self, inner: S) -> ResponseBodyTimeout<S> {
        ResponseBodyTimeout::new(inner, self.params, self.metrics.clone())
    }
}
