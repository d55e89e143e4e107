//! Errors of the rate-limit filters.

use std::fmt;
use std::time::Duration;

/// A request exceeded its key's rate (HTTP 429 with `Retry-After`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Duration,
}

impl RateLimited {
    pub(crate) fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until a request with the same key would be admitted. Round
    /// up to whole seconds for a `Retry-After` header.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`Self::retry_after`] rounded up to whole seconds, at least 1, as a
    /// `Retry-After` header wants it.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        let rounded = if self.retry_after.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        rounded.max(1)
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited, retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for RateLimited {}

/// Which message limit a WebSocket session exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageScope {
    /// The per-session rate.
    Session,
    /// The rate shared by all sessions of the same key.
    Key,
}

/// A WebSocket session sent messages faster than its limit even after the
/// bounded delay (close with 1008).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRateExceeded {
    scope: MessageScope,
}

impl MessageRateExceeded {
    pub(crate) fn new(scope: MessageScope) -> Self {
        Self { scope }
    }

    /// Which limit was exceeded.
    pub fn scope(&self) -> MessageScope {
        self.scope
    }
}

impl fmt::Display for MessageRateExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = match self.scope {
            MessageScope::Session => "session",
            MessageScope::Key => "key",
        };
        write!(f, "message rate exceeded for this {scope}")
    }
}

impl std::error::Error for MessageRateExceeded {}

/// A key already holds its maximum number of concurrent sessions (HTTP 429
/// before an upgrade, or WebSocket close 1008).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManySessions {
    limit: u32,
}

impl TooManySessions {
    pub(crate) fn new(limit: u32) -> Self {
        Self { limit }
    }

    /// The configured maximum of concurrent sessions per key.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

impl fmt::Display for TooManySessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "too many concurrent sessions (limit {})", self.limit)
    }
}

impl std::error::Error for TooManySessions {}
