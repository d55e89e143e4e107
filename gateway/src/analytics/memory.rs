//! The memory bound of the analytics state, computed from the types so the
//! documented figures cannot drift from the code (a test checks them).
//!
//! Strings whose length the producer decides are bounded by assumption:
//! route and cluster names up to 256 bytes, agent keys up to 64 bytes,
//! alert and recommendation messages about 400 bytes.

use std::mem::size_of;

use super::alert::Alert;
use super::detect::ScopeDetector;
use super::engine::{AnalyticsParams, ScopeState};
use super::forecast::PoolTarget;
use super::hist::Hist;
use super::recommend::Recommendation;
use super::series::ScopeSeries;
use super::tick::ScopeKey;

const NAME_BYTES: usize = 256;
const KEY_BYTES: usize = 64;
const MESSAGE_BYTES: usize = 400;
/// Keys the rate-limit tally keeps per scope (two generations of 32).
const TALLY_KEYS: usize = 64;
/// Recommendation kinds a scope can have at once.
const RECS_PER_SCOPE: usize = 5;
/// Alert kinds a scope can have open at once.
const ALERTS_PER_SCOPE: usize = 6;

/// The most memory the analytics state can hold, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBound {
    /// The three windows of one scope (points and bucket counts).
    pub windows_per_scope: usize,
    /// Everything one scope costs: windows, detectors, sizer, tallies,
    /// recommendations, open alerts.
    pub per_scope: usize,
    /// Scopes tracked at most (`scope_cap`).
    pub scopes: usize,
    /// Cleared alerts kept.
    pub recent_alerts: usize,
    /// The total.
    pub total: usize,
}

/// Computes the bound for these parameters.
pub fn memory_bound(p: &AnalyticsParams) -> MemoryBound {
    let windows = ScopeSeries::max_bytes();
    let text = |n: usize| n + 2 * size_of::<usize>();
    let alert = size_of::<Alert>() + text(MESSAGE_BYTES);
    let per_scope = windows
        + size_of::<(ScopeKey, ScopeState)>()
        + 2 * text(NAME_BYTES)
        + ScopeDetector::heap_bytes()
        + TALLY_KEYS * (size_of::<(std::sync::Arc<str>, u64)>() + text(KEY_BYTES))
        + RECS_PER_SCOPE * (size_of::<Recommendation>() + text(MESSAGE_BYTES) + text(NAME_BYTES))
        + ALERTS_PER_SCOPE * alert
        + size_of::<PoolTarget>()
        + size_of::<Hist>();
    let scopes = p.scope_cap.max(1);
    let recent_alerts = p.recent_alerts * alert;
    MemoryBound {
        windows_per_scope: windows,
        per_scope,
        scopes,
        recent_alerts,
        total: per_scope * scopes + recent_alerts,
    }
}
