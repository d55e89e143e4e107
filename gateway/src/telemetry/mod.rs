//! Logs (`tracing`, human or JSON), OpenTelemetry traces over OTLP/HTTP and
//! access lines.
//!
//! Traces use the OpenTelemetry API directly rather than through
//! `tracing`: one span per HTTP request and one per WebSocket session (with
//! message counts as attributes), a W3C `traceparent` taken from the agent
//! (a new trace when absent) and passed to the upstream. Spans of unsampled
//! traces are non-recording and cost next to nothing; with no
//! `[telemetry]` section nothing is created at all.

mod log;
mod otlp;
mod trace;

pub use log::init_logging;
pub use trace::{RequestSpan, Tracing, TracingError};
