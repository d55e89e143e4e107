//! Deciding which failed attempts may be retried.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, StatusCode};

use crate::StatusSet;

/// How one attempt ended, as the classifier sees it.
#[derive(Clone, Copy, Debug)]
pub enum AttemptOutcome<'a> {
    /// The upstream answered with this status and headers.
    Response(StatusCode, &'a HeaderMap),
    /// The attempt failed with this error (as the inner service returned
    /// it, boxed).
    Error(&'a (dyn Error + Send + Sync + 'static)),
}

/// Decides whether a failed attempt should be retried. Budget and attempt
/// limits are applied after it says yes.
///
/// The gateway supplies one; [`DefaultClassifier`] covers the usual rules.
pub trait RetryClassifier: Clone + Send + Sync + 'static {
    /// Whether to retry `request` (a copy of what was sent) after `outcome`.
    fn should_retry<B>(&self, request: &Request<B>, outcome: AttemptOutcome<'_>) -> bool;
}

/// Says whether an error happened before any byte of the request reached
/// the upstream (e.g. a failed connect, a reused pooled connection found
/// dead before writing).
pub type NeverSent = Arc<dyn Fn(&(dyn Error + Send + Sync + 'static)) -> bool + Send + Sync>;

/// The default rules:
///
/// - a response with a status in the retryable set (default 502, 503, 504)
///   is retried if the method is idempotent (GET, HEAD, OPTIONS, TRACE,
///   PUT, DELETE) — a `101 Switching Protocols` is never in the set, so a
///   WebSocket is never retried after its upgrade;
/// - an error is retried, whatever the method, if the `never_sent` callback
///   says the request never left the gateway — only the gateway knows its
///   connection errors, so by default no error is retried.
#[derive(Clone)]
pub struct DefaultClassifier {
    statuses: StatusSet,
    never_sent: NeverSent,
}

impl DefaultClassifier {
    /// Retries idempotent requests on 502, 503 and 504; no errors.
    pub fn new() -> Self {
        Self {
            statuses: StatusSet::gateway_errors(),
            never_sent: Arc::new(|_| false),
        }
    }

    /// Replaces the retryable status set.
    pub fn with_statuses(mut self, statuses: StatusSet) -> Self {
        self.statuses = statuses;
        self
    }

    /// Sets the callback that recognises errors of requests that were never
    /// sent (safe to retry for any method).
    pub fn with_never_sent(
        mut self,
        never_sent: impl Fn(&(dyn Error + Send + Sync + 'static)) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.never_sent = Arc::new(never_sent);
        self
    }
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DefaultClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultClassifier")
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

impl RetryClassifier for DefaultClassifier {
    fn should_retry<B>(&self, request: &Request<B>, outcome: AttemptOutcome<'_>) -> bool {
        match outcome {
            AttemptOutcome::Response(status, _) => is_idempotent(request.method()) && self.statuses.contains(status),
            AttemptOutcome::Error(error) => (self.never_sent)(error),
        }
    }
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
