//! Errors of the auth filter.

use std::fmt;

use crate::{AuthRejection, BoxError};

/// No usable credentials: no API key of an accepted kind and no allowed
/// mTLS identity was presented (HTTP 401 / WebSocket 1008).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unauthenticated(());

impl Unauthenticated {
    pub(crate) fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication required")
    }
}

impl std::error::Error for Unauthenticated {}

/// Credentials were presented but are not accepted: an unknown API key or
/// an mTLS identity off the allow-list (HTTP 403 / WebSocket 1008).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forbidden {
    reason: AuthRejection,
}

impl Forbidden {
    pub(crate) fn new(reason: AuthRejection) -> Self {
        Self { reason }
    }

    /// Why: [`AuthRejection::InvalidKey`] or
    /// [`AuthRejection::IdentityNotAllowed`].
    pub fn reason(&self) -> AuthRejection {
        self.reason
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            AuthRejection::IdentityNotAllowed => f.write_str("client identity not allowed"),
            _ => f.write_str("invalid API key"),
        }
    }
}

impl std::error::Error for Forbidden {}

/// The result of authenticating outside tower (e.g. before a WebSocket
/// upgrade): one of the two error nouns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// See [`Unauthenticated`].
    Unauthenticated(Unauthenticated),
    /// See [`Forbidden`].
    Forbidden(Forbidden),
}

impl AuthError {
    /// The bounded reason, for metrics and logs.
    pub fn reason(&self) -> AuthRejection {
        match self {
            Self::Unauthenticated(_) => AuthRejection::MissingCredentials,
            Self::Forbidden(f) => f.reason(),
        }
    }

    /// Boxes the inner noun (not this enum), exactly as the tower layer
    /// does, so the edge's downcasts see the same types on both paths.
    pub fn into_box_error(self) -> BoxError {
        match self {
            Self::Unauthenticated(e) => Box::new(e),
            Self::Forbidden(e) => Box::new(e),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthenticated(e) => e.fmt(f),
            Self::Forbidden(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AuthError {}
