//! Configuration errors that name the key path and the offending value.

use std::fmt;

/// One problem found in a configuration file, located by its key path
/// (`clusters.llm.pool.max_connections`) and, when known, its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    path: String,
    line: Option<usize>,
    message: String,
}

impl ConfigError {
    /// An error at `path` (dotted key path, `[i]` for array items).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }

    pub(crate) fn with_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    /// The dotted key path the error is about (empty for the whole file).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, including the offending value.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration file. Validation does not stop
/// at the first error so that one run of `agentmux validate` shows them all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    origin: String,
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn new(origin: impl Into<String>, errors: Vec<ConfigError>) -> Self {
        Self {
            origin: origin.into(),
            errors,
        }
    }

    /// One error at `path` of `origin`.
    pub fn single(origin: &str, path: &str, message: impl Into<String>) -> Self {
        Self::new(origin, vec![ConfigError::new(path, message)])
    }

    /// The individual errors, in file order where possible.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// Where the configuration came from (a file path or `<string>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{}: {n} error{}", self.origin, if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while validating, tracking the key path being visited.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    list: Vec<ConfigError>,
}

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError::new(path, message));
    }

    /// Records the error of `result` at `path` and returns its value, if any.
    pub(crate) fn check<T, E: fmt::Display>(&mut self, path: impl Into<String>, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(path, e.to_string());
                None
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<ConfigError> {
        self.list
    }
}
