//! The load shedder's error.

use std::fmt;

/// The route already has its maximum of requests in flight; this one was
/// refused at once (HTTP 503 / WebSocket 1013).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overloaded {
    limit: usize,
}

impl Overloaded {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit }
    }

    /// The configured in-flight limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overloaded: {} requests already in flight", self.limit)
    }
}

impl std::error::Error for Overloaded {}
