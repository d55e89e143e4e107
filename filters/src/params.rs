//! The error every `*Params` constructor returns.

use std::fmt;

/// A filter parameter was out of range.
///
/// Names the parameter as it is spelled in the config (`requests_per_second`,
/// `ratio`, ...) so the gateway can prefix the key path of the filter entry:
/// `filters.per-agent-limit.requests_per_second: must be > 0 (got 0)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidParam {
    param: &'static str,
    reason: String,
}

impl InvalidParam {
    /// A new error for `param`; `reason` completes the sentence
    /// "`param` ...", e.g. `"must be > 0 (got 0)"`.
    pub fn new(param: &'static str, reason: impl Into<String>) -> Self {
        Self {
            param,
            reason: reason.into(),
        }
    }

    /// The parameter's config name, e.g. `"requests_per_second"`.
    pub fn param(&self) -> &'static str {
        self.param
    }

    /// Why the value was rejected, e.g. `"must be > 0 (got 0)"`.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for InvalidParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.param, self.reason)
    }
}

impl std::error::Error for InvalidParam {}

/// Checks that a duration parameter is not zero.
pub(crate) fn nonzero_duration(
    param: &'static str,
    value: std::time::Duration,
) -> Result<std::time::Duration, InvalidParam> {
    if value.is_zero() {
        return Err(InvalidParam::new(param, "must be > 0s (got 0s)"));
    }
    Ok(value)
}
