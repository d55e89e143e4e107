//! Analytics: in-memory windows of the gateway's key series, derived
//! figures, anomaly alerts, recommendations and predictive pool sizing —
//! and the dashboard page that shows them live.
//!
//! # Where it sits
//!
//! ```text
//! data path ──counters, histograms, pool snapshots──▶ producer (1 Hz)
//!     ──Tick──▶ bounded channel ──▶ analytics task (owns Engine)
//!                                      ├─▶ alert sinks: log, AlertStats, webhook
//!                                      ├─▶ watch<Published>: feed JSON, alerts,
//!                                      │     recommendations, pool targets
//!                                      └─◀ history queries (oneshot reply)
//! ```
//!
//! The data path never sees this module: the producer reads the gateway's
//! cumulative counters once a second, subtracts the previous reading and
//! `try_send`s a [`Tick`]. The task owns every piece of state; readers take
//! the newest [`Published`] from a `watch` channel. Nothing here takes a
//! lock the request path uses.
//!
//! # Input: [`Tick`]
//!
//! One [`ScopeSample`] per scope ([`ScopeKey::Global`], each route, each
//! cluster) with counter deltas ([`Flow`]s of requests and sessions,
//! failures by [`Cause`](crate::error::Cause), messages, bytes, rate-limited,
//! retries, queue wait), gauges (open sessions; for clusters the
//! [`PoolSample`]: [`PoolSnapshot`](crate::pool::PoolSnapshot) summed over
//! the endpoints, endpoint count, min/max connections; circuit state) and
//! four latency histograms as bucket-count deltas over [`BOUNDS_US`]
//! (request, first byte, WebSocket relay, pool acquire wait). Build the
//! Prometheus histograms with [`LATENCY_BOUNDS_SECONDS`] and a tick's
//! latency is [`LatencySample::since`] of two readings. Ticks are expected
//! at 1 Hz; a second tick within one second is merged into it, a late one
//! is ignored, missing seconds are gaps, and a wall clock stepped back
//! does not stop the windows.
//!
//! # Windows and their memory
//!
//! | window | step | points | stored per point |
//! |---|---|---|---|
//! | 1 h | 1 s | 3600 | [`Point`] (208 B): counters, gauge means and peaks, latency count/sum/p50/p95/p99 |
//! | 24 h | 1 min | 1440 | [`Point`], plus the bucket counts of the last 60 minutes |
//! | 7 d | 1 h | 168 | [`Point`] and its bucket counts |
//!
//! A coarser point is the rollup of the finer ones: counters add, gauges
//! average over time, peaks take the max, and percentiles come from the
//! *merged bucket counts*, never from averaged percentiles (details in
//! [`Point`]). Rings take their whole length when a scope is made (memory
//! flat from its first second) and never grow beyond it.
//!
//! One scope's windows take at most **1,173,728 bytes (1.12 MiB)**; with its
//! detectors, sizer, rate-limit key tally, recommendations and open alerts
//! a scope costs at most **1,200,960 bytes (1.15 MiB)**. Scopes are capped
//! at `scope_cap` (default 32, the global one included; a new scope
//! replaces the one absent longest, and scopes absent for `evict_after`,
//! default 10 min, are dropped), and 100 cleared alerts are kept, so the
//! whole state is bounded by **38.5 MB (36.7 MiB)** with the defaults — a
//! gateway with a handful of routes and clusters uses under 10 MiB.
//! [`memory_bound`] computes these figures from the types (a test keeps
//! this paragraph honest), assuming names up to 256 bytes, agent keys up to
//! 64 bytes and messages of about 400 bytes.
//!
//! # What comes out
//!
//! - **Derived figures** per scope over the last 5 minutes ([`Derived`]):
//!   efficiency `= completed/(completed+failed) × (1 − retries/attempts)`,
//!   coordination overhead `= (acquire wait + queue wait) / request time`,
//!   cost per task `= (CPU s × rate + connection-hours × rate) / completed`
//!   with [`CostRates`]; [`derived`] documents each input.
//! - **Alerts** ([`Alert`], [`AlertEvent`]): six detectors per scope —
//!   error rate, request p99, relay p99, message rate, traffic drop to zero,
//!   pool exhaustion — each an EWMA baseline with a deviation band and a
//!   minimum effect size; message rate and traffic drop are also checked
//!   against the same minute of the hour / hour of the day in the stored
//!   windows so regular swings are not anomalies. A shift is raised within
//!   a minute (30 s window + 10–20 s minimum duration), cleared after 30 s
//!   back to normal (hysteresis), one open alert per scope and kind,
//!   escalation in place, and a return within 5 minutes reopens the same
//!   alert ([`detect`] has the thresholds). Sinks: `tracing` (warn/error/info), [`AlertStats`] counters for
//!   `/metrics`, the published state for the admin API, and an optional
//!   webhook ([`WebhookParams`]: JSON POST, retries with backoff, bounded
//!   queue).
//! - **Recommendations** ([`Recommendation`]), recomputed every minute:
//!   raise `max_connections` (Little's law on the observed acquire rate,
//!   hold time and wait), raise `min_connections`, lower `min_connections`
//!   when most of the pool idles for an hour, routes with many rate-limited
//!   requests (naming the top agent key when keys are reported), and
//!   coordination overhead above the seed's 20 % KPI ([`recommend`]).
//! - **Pool targets** ([`PoolTarget`]) every 10 s per cluster: Holt's
//!   linear trend on acquire rate and demand, 30 s ahead, +25 % headroom,
//!   clamped to `[min, max] × endpoints`, growing at once and shrinking
//!   slowly ([`forecast`]); pass `per_endpoint` to each endpoint's
//!   [`Pool::set_target_hint`](crate::pool::Pool::set_target_hint).
//!
//! # Dashboard
//!
//! [`assets`] holds the page (`index.html`, `app.js`, `app.css`) and the
//! vendored uPlot. It reads `GET /dashboard/history?window=1h|24h|7d
//! [&scope=route:NAME]` ([`History`]) once per window or scope change (and
//! every minute for 24 h / 7 d) and follows `GET /dashboard/feed`, an
//! `text/event-stream` whose events carry [`Published::json`] (one
//! [`FeedUpdate`]); repeating the newest update is harmless. With an
//! admin token set, both requests carry the session cookie of the
//! dashboard's login page (`EventSource` cannot set headers, so a cookie
//! is how it authenticates); tokens never go in URLs.
//!
//! # Running it
//!
//! ```rust,no_run
//! # async fn example() {
//! use agentmux::analytics::{self, AnalyticsParams, ScopeKey, Tick, Window};
//!
//! let (ticks, handle) = analytics::spawn(AnalyticsParams::default(), None);
//! // Once a second, from the metrics producer:
//! let tick = Tick { at: std::time::SystemTime::now(), cpu_us: 0, scopes: Vec::new() };
//! let _ = ticks.try_send(tick);
//! // SSE: send `latest().json` whenever `subscribe()` changes.
//! let mut feed = handle.subscribe();
//! let _ = feed.changed().await;
//! let now = handle.latest();
//! for t in &now.update.pool_targets {
//!     // pools_of(&t.cluster).for_each(|p| p.set_target_hint(t.per_endpoint));
//!     let _ = t.per_endpoint;
//! }
//! let _history = handle.history(Window::Day, Some(ScopeKey::cluster("llm"))).await;
//! # }
//! ```

mod alert;
pub mod assets;
pub mod derived;
pub mod detect;
mod engine;
mod feed;
pub mod forecast;
mod hist;
mod memory;
mod point;
pub mod recommend;
pub mod sampler;
mod series;
mod tally;
mod task;
mod tick;
mod webhook;

#[cfg(test)]
mod tests;

pub use alert::{Alert, AlertChange, AlertEvent, AlertKind, AlertStats, Severity};
pub use derived::{CostRates, Derived};
pub use detect::DetectParams;
pub use engine::{AnalyticsParams, Engine};
pub use feed::{
    AlertsView, Columns, FEED_VERSION, FeedUpdate, History, PointJson, PoolColumns, PoolNow, PoolStateColumns,
    PoolStates, ScopeNow, feed_update, history,
};
pub use forecast::{Holt, PoolTarget, SizingParams};
pub use hist::{BOUNDS_US, BUCKETS, Hist, LATENCY_BOUNDS_SECONDS};
pub use memory::{MemoryBound, memory_bound};
pub use point::{Counts, LatStat, Point, PoolPoint};
pub use recommend::{RecKind, RecommendParams, Recommendation};
pub use series::Window;
pub use task::{AnalyticsHandle, Published, TICK_QUEUE, spawn, spawn_polling};
pub use tick::{Flow, Latencies, LatencySample, LatencySeries, PoolSample, ScopeKey, ScopeSample, Tick};
pub use webhook::{WebhookError, WebhookParams};
