//! Errors of the timeout filters.

use std::fmt;
use std::time::Duration;

/// No response headers arrived within the request timeout (HTTP 504 /
/// WebSocket 1011). Also returned by [`super::with_timeout`] for connect
/// timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    pub(crate) fn new(after: Duration) -> Self {
        Self { after }
    }

    /// The timeout that fired.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request timed out after {:?}", self.after)
    }
}

impl std::error::Error for Elapsed {}

/// A streaming response body produced no frame within the idle timeout. The
/// body stream ends with this error; headers were already sent, so the
/// gateway can only cut the stream (HTTP/2 `RST_STREAM`, HTTP/1 close).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeout {
    idle: Duration,
}

impl IdleTimeout {
    pub(crate) fn new(idle: Duration) -> Self {
        Self { idle }
    }

    /// The idle timeout that fired.
    pub fn idle(&self) -> Duration {
        self.idle
    }
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response body idle for {:?}", self.idle)
    }
}

impl std::error::Error for IdleTimeout {}
