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

/// `AsyncRead` and `AsyncWrite` for an enum whose every variant holds one
/// transport, by delegating to the variant in use (the agent side's
/// `conn::AgentIo` and the upstream side's `connect::UpstreamIo`). Boxed
/// transports delegate through tokio's impls for `Box`.
macro_rules! delegate_io {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(io) => std::pin::Pin::new(io).poll_read(cx, buf),)+
                }
            }
        }

        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(io) => std::pin::Pin::new(io).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $($ty::$variant(io) => std::pin::Pin::new(io).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($ty::$variant(io) => io.is_write_vectored(),)+
                }
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(io) => std::pin::Pin::new(io).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $($ty::$variant(io) => std::pin::Pin::new(io).poll_shutdown(cx),)+
                }
            }
        }
    };
}

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
