//! agentmux: a TLS-terminating gateway for AI agent sessions.
//!
//! Agents connect to the gateway instead of their upstream. It terminates
//! TLS, routes each request by host, path and headers, and carries it to an
//! upstream over a warm pool of connections: plain and streaming HTTP
//! ([`config::Mode::Http`]), WebSocket sessions relayed frame by frame, or
//! many sessions multiplexed over few upstream connections.
//!
//! The pieces, in data-path order: [`listener`] (TLS, HTTP/1.1 and HTTP/2,
//! limits), [`router`], the proxy modes, [`upstream`] (clusters, balancing,
//! health) and [`pool`] (warm connections per endpoint). [`config`] parses
//! and validates the TOML file once; [`error`] maps every failure to its
//! HTTP status and WebSocket close code in one place.
//!
//! Run it with [`server::start`]; the `agentmux` binary wraps that with
//! signals and a drain on shutdown.

mod admin;
pub mod analytics;
pub mod body;
pub mod cluster_state;
pub mod conn;
pub mod connect;
/// Configuration: parsed and validated once (the `agentmux-config` crate).
pub use agentmux_config as config;
mod echo;
pub mod edge;
mod endpoint;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod listener;
pub mod metrics;
/// The agentmux.v1 protocol (the `agentmux-mux` crate): codec, the
/// gateway's client side and the upstream's [`mux::MuxServer`].
pub use agentmux_mux as mux;
mod mux_bridge;
mod outbound;
pub mod pool;
mod proxy;
pub mod router;
pub mod runtime;
pub mod serve;
pub mod server;
pub mod session;
mod stack;
pub mod telemetry;
pub mod upstream;
pub mod ws;

pub use config::Config;
pub use server::{Running, start};
