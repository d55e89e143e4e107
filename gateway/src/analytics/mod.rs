//! Analytics: in-memory windows of the gateway's key series, derived
//! figures, anomaly alerts, recommendations and predictive pool sizing.
//!
//! The input is one [`Tick`] per second; the windows (1 h at 1 s, 24 h at
//! 1 min, 7 d at 1 h) store [`Point`]s rolled up from finer ones.
//!
//! The input: one [`Tick`] per second with a
//! [`ScopeSample`] per scope, latency as bucket-count deltas over
//! [`BOUNDS_US`].

mod alert;
mod derived;
mod detect;
mod forecast;
mod hist;
mod point;
mod recommend;
mod series;
mod tick;

pub use alert::{Alert, AlertChange, AlertEvent, AlertKind, AlertStats, Severity};
pub use derived::{CostRates, Derived};
pub use detect::DetectParams;
pub use forecast::{Holt, PoolTarget, SizingParams};
pub use hist::{BOUNDS_US, BUCKETS, Hist, LATENCY_BOUNDS_SECONDS};
pub use point::{Counts, LatStat, Point, PoolPoint};
pub use recommend::{RecKind, RecommendParams, Recommendation};
pub use series::Window;
pub use tick::{
    Flow, Latencies, LatencySample, LatencySeries, PoolSample, ScopeKey, ScopeSample, Tick,
};
