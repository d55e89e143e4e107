//! Analytics: in-memory windows of the gateway's key series, derived
//! figures, anomaly alerts, recommendations and predictive pool sizing.
//!
//! This first part defines the input: one [`Tick`] per second with a
//! [`ScopeSample`] per scope, latency as bucket-count deltas over
//! [`BOUNDS_US`].

mod hist;
mod tick;

pub use hist::{BOUNDS_US, BUCKETS, Hist, LATENCY_BOUNDS_SECONDS};
pub use tick::{
    Flow, Latencies, LatencySample, LatencySeries, PoolSample, ScopeKey, ScopeSample, Tick,
};
