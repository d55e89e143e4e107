//! The tool's own failures (bad flags, files that cannot be read, a port
//! that cannot be bound). Failures of the system under test are not errors
//! of the tool: they are counted by kind in the report instead.

use std::fmt;

/// Why a subcommand could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A flag value that makes no sense (names the flag).
    #[error("{0}")]
    Usage(String),
    /// An I/O failure of the tool itself, with what it was doing.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The async runtime could not start.
    #[error("runtime: {0}")]
    Runtime(String),
    /// TLS material could not be loaded or configured.
    #[error("tls: {0}")]
    Tls(String),
}

impl Error {
    /// Wraps an I/O error with the action that failed.
    pub(crate) fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            context: context.to_string(),
            source,
        }
    }
}
