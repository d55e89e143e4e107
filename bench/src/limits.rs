//! Process limits: raise the open-file soft limit to the hard limit so one
//! process can hold thousands of sessions (each session is one descriptor;
//! two when the upstream simulator runs in the same process).

/// Raises `RLIMIT_NOFILE`'s soft limit as far as the hard limit allows and
/// returns the limit now in force (`None` when it cannot be read, e.g. on a
/// platform without rlimits). Failure is not fatal: the run goes on and
/// connect errors will say "too many open files" if it matters.
pub(crate) fn raise_nofile() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft),
    }
}
