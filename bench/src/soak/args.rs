//! Flags of `agentmux-bench soak` (kept here rather than in `cli.rs`, which
//! holds the other subcommands' flags and is long enough already).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::mix::Mix;
use crate::cli::parse_duration;

/// Flags of `agentmux-bench soak`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SoakArgs {
    /// The gateway binary (default: `agentmux` next to this executable, then on PATH).
    #[arg(long, alias = "agentmux")]
    pub(crate) gateway: Option<PathBuf>,
    /// Churn length, warm-up included.
    #[arg(long, short = 'd', value_parser = parse_duration, default_value = "10m")]
    pub(crate) duration: Duration,
    /// First part of the churn after which RSS is taken as the reference.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub(crate) warmup: Duration,
    /// Sampling after the churn stopped, before the end figures are taken
    /// (longer than the generated config's keepalive, header and pool idle timeouts).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) settle: Duration,
    /// Sampling before any load: the descriptor baseline.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) baseline: Duration,
    /// Length of the windows whose medians are compared (after warm-up, end of settle).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) window: Duration,
    /// Churn slots: each runs one operation after another (at most this many at once).
    #[arg(long, short = 'c', default_value_t = 300)]
    pub(crate) concurrency: usize,
    /// Mean pause of a slot between two operations (jittered ±50 %).
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub(crate) pause: Duration,
    /// Weights of the churn kinds, `kind=weight,...` (kinds: ws_clean, ws_half_open,
    /// ws_violation, http_keepalive, http_drop, http_slowloris).
    #[arg(
        long,
        value_parser = Mix::parse,
        default_value = "ws_clean=40,ws_half_open=5,ws_violation=10,http_keepalive=30,http_drop=10,http_slowloris=5"
    )]
    pub(crate) mix: Mix,
    /// How long an abandoned half-open WebSocket is held silent before it is dropped
    /// (the gateway should reap it after two keepalive intervals plus its 5 s close wait).
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub(crate) half_open_hold: Duration,
    /// The websocket route's `keepalive_interval` in the generated config.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub(crate) keepalive: Duration,
    /// The listener's `request_header_timeout` in the generated config.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub(crate) header_timeout: Duration,
    /// The clusters' pool `idle_timeout` in the generated config.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) pool_idle_timeout: Duration,
    /// The clusters' pool `min_connections` in the generated config.
    #[arg(long, default_value_t = 4)]
    pub(crate) min_connections: usize,
    /// TOML appended to the generated config, for tables it does not write
    /// (e.g. `[analytics]` with `enabled = false`, `[runtime]`).
    #[arg(long)]
    pub(crate) extra_config: Option<PathBuf>,
    /// Keep-alive HTTP connections the churn keeps for reuse.
    #[arg(long, default_value_t = 32)]
    pub(crate) http_pool: usize,
    /// Directory for the config, the gateway's log, samples, the summary and the plots.
    #[arg(long, default_value = "bench/results/tmp/soak")]
    pub(crate) out: PathBuf,
    /// No progress line every 10 s.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

impl SoakArgs {
    /// Checks the flags against each other.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.concurrency > 4000 {
            // Each slot holds at most two descriptors here and the gateway
            // two per session, well inside a 20,000 open-file limit.
            return Err(format!("--concurrency must be 1..=4000, got {}", self.concurrency));
        }
        if self.duration.is_zero() || self.warmup >= self.duration {
            return Err("--warmup must be shorter than --duration (and --duration more than 0)".into());
        }
        if self.window.is_zero() || self.settle.is_zero() || self.baseline.is_zero() {
            return Err("--window, --settle and --baseline must be more than 0".into());
        }
        if self.keepalive.is_zero() || self.header_timeout.is_zero() || self.pool_idle_timeout.is_zero() {
            return Err("--keepalive, --header-timeout and --pool-idle-timeout must be more than 0".into());
        }
        if self.http_pool == 0 {
            return Err("--http-pool must be more than 0".into());
        }
        Ok(())
    }
}
