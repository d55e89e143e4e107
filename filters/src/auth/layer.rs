//! The auth layer.

use std::sync::Arc;

use tower_layer::Layer;

use super::{Auth, AuthParams, Authenticator};
use crate::FilterMetrics;

/// Applies [`Auth`] to a service. Clones share one [`Authenticator`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl AuthLayer {
    /// A layer for `params`.
    pub fn new(params: AuthParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self::from_authenticator(Authenticator::new(params, metrics))
    }

    /// A layer over an existing authenticator (shared with the WebSocket
    /// upgrade path of the same route).
    pub fn from_authenticator(authenticator: Authenticator) -> Self {
        Self { authenticator }
    }

    /// The shared authenticator.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth::new(inner, self.authenticator.clone())
    }
}
