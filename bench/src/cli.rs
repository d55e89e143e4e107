//! Command line: the subcommands (`load`, `upstream`, `compare`, `pool`,
//! `ramp`, `soak` (its flags live in `soak/args.rs`), and `hold`, which
//! `compare` runs) and the
//! parsers for human durations ("250ms", "10s", "2m") and sizes ("64",
//! "4k", "1MiB"). Flags are validated into runtime plans by each
//! subcommand's module, never used raw deeper down.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// agentmux-bench: load generator, upstream simulator and proxy comparison
/// for agent-session gateways.
#[derive(Debug, Parser)]
#[command(name = "agentmux-bench", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Simulate agent sessions against a ws://, wss://, http://, https:// or SSE URL.
    Load(LoadArgs),
    /// Run the upstream simulator (WebSocket echo, HTTP echo, SSE tokens, faults) or a delay relay.
    Upstream(UpstreamArgs),
    /// Run one scenario directly and through agentmux, nginx and haproxy, side by side.
    Compare(CompareArgs),
    /// Time acquires from agentmux's warm upstream pool, in process.
    Pool(PoolArgs),
    /// Predictive pool sizing on vs off: the same ramping load in alternating rounds.
    Ramp(RampArgs),
    /// Minutes of WebSocket and HTTP session churn against the gateway; RSS, descriptors and
    /// pool sampled every second; a verdict on whether they come back.
    Soak(crate::soak::SoakArgs),
    /// Hold idle WebSocket sessions until stdin closes (one of compare's capacity processes).
    #[command(hide = true)]
    Hold(HoldArgs),
}

/// Wire protocol of a load run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// Pick from the URL scheme: ws/wss → WebSocket, http/https → HTTP.
    Auto,
    /// WebSocket echo sessions.
    Ws,
    /// WebSocket echo sessions as RFC 8441 extended CONNECT streams, many
    /// per HTTP/2 connection (`--h2-streams`; ws:// is h2c, wss:// ALPN h2).
    #[value(name = "ws-h2")]
    WsH2,
    /// HTTP/1.1 keep-alive request/response sessions.
    Http,
    /// Server-sent events: each request is a token stream.
    Sse,
}

/// Payload kind of WebSocket messages and HTTP bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PayloadKind {
    /// WebSocket text frames, ASCII payload.
    Text,
    /// WebSocket binary frames, random bytes.
    Binary,
}

/// Flags of `agentmux-bench load`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoadArgs {
    /// Target URL: ws://, wss://, http://, https:// (use --protocol sse for event streams).
    pub(crate) url: String,
    /// Protocol; `auto` follows the URL scheme.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) protocol: Protocol,
    /// Concurrent sessions.
    #[arg(long, short = 's', default_value_t = 10)]
    pub(crate) sessions: u64,
    /// How long the run lasts after the ramp-up (e.g. 10s, 500ms, 2m).
    #[arg(long, short = 'd', value_parser = parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Messages per session; the run ends when every session sent them (or at --duration).
    #[arg(long)]
    pub(crate) messages: Option<u64>,
    /// Start sessions evenly over this time instead of all at once.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub(crate) ramp_up: Duration,
    /// Fixed rate: messages per second per session, open loop; latency is measured from the
    /// intended send time (coordinated-omission corrected).
    #[arg(long, conflicts_with = "in_flight")]
    pub(crate) rate: Option<f64>,
    /// Closed loop: messages in flight per session (WebSocket; HTTP and SSE use 1).
    #[arg(long, short = 'k', default_value_t = 1)]
    pub(crate) in_flight: u32,
    /// `--protocol ws-h2`: sessions per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    pub(crate) h2_streams: usize,
    /// Pause between a reply and the next send (closed loop only).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub(crate) think_time: Duration,
    /// Payload size in bytes (at least the 24-byte header; 48 for text).
    #[arg(long, value_parser = parse_size, default_value = "64")]
    pub(crate) size: usize,
    /// Payload kind.
    #[arg(long, value_enum, default_value = "binary")]
    pub(crate) kind: PayloadKind,
    /// Churn: a session ends after this long and a new one takes its place.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) session_life: Option<Duration>,
    /// Churn: a session ends after this many messages and a new one takes its place.
    #[arg(long)]
    pub(crate) session_messages: Option<u64>,
    /// Do not check replies (for targets that do not echo).
    #[arg(long)]
    pub(crate) no_verify: bool,
    /// HTTP method for http/https runs (POST sends the payload; GET sends none and skips checks).
    #[arg(long, default_value = "POST")]
    pub(crate) method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub(crate) headers: Vec<String>,
    /// Connect, handshake and reply timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) timeout: Duration,
    /// At the end, how long to wait for replies still in flight.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub(crate) drain: Duration,
    /// Skip certificate verification (wss/https).
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Trust this PEM CA file instead of the built-in web roots (wss/https).
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Print the report as JSON (schema agentmux-bench.load.v1) on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, short = 'o')]
    pub(crate) output: Option<PathBuf>,
    /// No live progress on stderr.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

/// What `agentmux-bench upstream` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum UpstreamMode {
    /// WebSocket echo on any upgrade, SSE under /sse, HTTP echo elsewhere.
    Serve,
    /// A TCP relay to --to adding latency in each direction.
    Delay,
    /// A mux-speaking (agentmux.v1) echo for agentmux's `mode = "mux"`: every session's
    /// fragments are echoed as they came; --drop-at/--drop-every abort every mux connection.
    Mux,
}

/// Flags of `agentmux-bench upstream`.
#[derive(Debug, Clone, Args)]
pub(crate) struct UpstreamArgs {
    /// Address to listen on.
    #[arg(long, short = 'l', default_value = "127.0.0.1:18080")]
    pub(crate) listen: String,
    /// Simulator or delay relay.
    #[arg(long, value_enum, default_value = "serve")]
    pub(crate) mode: UpstreamMode,
    /// Delay mode: address to relay to.
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// Serve and mux: latency added before each reply (per-message processing delay).
    /// Delay: latency added in each direction.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub(crate) latency: Duration,
    /// Delay mode: latency client → upstream (default --latency).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) up_latency: Option<Duration>,
    /// Delay mode: latency upstream → client (default --latency).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) down_latency: Option<Duration>,
    /// Delay mode: do not charge a round trip for the upstream TCP connect.
    #[arg(long)]
    pub(crate) no_connect_delay: bool,
    /// Fault: probability that a message/request fails (HTTP 500, WebSocket close 1011,
    /// SSE stream aborted).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) error_rate: f64,
    /// Fault: probability that one byte of a reply is flipped.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) corrupt_rate: f64,
    /// Fault: probability per message/request that the connection is dropped without a reply.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) drop_rate: f64,
    /// Fault: drop every open connection at this time after start.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) drop_at: Option<Duration>,
    /// Fault: after --drop-at (or from start), drop every open connection at this interval.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) drop_every: Option<Duration>,
    /// SSE: tokens per stream unless the query says `tokens=N`.
    #[arg(long, default_value_t = 20)]
    pub(crate) sse_tokens: u64,
    /// SSE: delay between tokens unless the query says `delay_ms=N`.
    #[arg(long, value_parser = parse_duration, default_value = "20ms")]
    pub(crate) sse_delay: Duration,
    /// Serve over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

/// Flags of `agentmux-bench compare`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompareArgs {
    /// Targets to run, in order (direct, echo, agentmux, nginx, haproxy).
    /// `echo` is the floor: this tool's WebSocket echo as a process of its
    /// own on the proxy's core, its CPU measured like a proxy's.
    #[arg(long, value_delimiter = ',', default_value = "direct,agentmux,nginx,haproxy")]
    pub(crate) targets: Vec<String>,
    /// Session mode: websocket echo, http echo, or sse token streams.
    #[arg(long, value_enum, default_value = "ws")]
    pub(crate) protocol: Protocol,
    /// Concurrent sessions in the load phase.
    #[arg(long, default_value_t = 50)]
    pub(crate) sessions: u64,
    /// HTTP/2: the load points are run by `h2load` (`--sessions`
    /// connections, `--h2-streams` streams each; `--protocol http`). Over
    /// TLS the proxies offer `h2` by ALPN; plaintext is prior knowledge (h2c).
    #[arg(long)]
    pub(crate) h2: bool,
    /// HTTP/2: concurrent streams per connection.
    #[arg(long, default_value_t = 16)]
    pub(crate) h2_streams: u64,
    /// SSE: tokens (events) per stream.
    #[arg(long, default_value_t = 20)]
    pub(crate) sse_tokens: u64,
    /// SSE: the simulator's delay between tokens, in whole milliseconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) sse_token_delay_ms: u64,
    /// Offered loads in messages/s (all sessions together; SSE: events/s),
    /// one load run each (0 skips).
    #[arg(long, value_delimiter = ',', default_value = "2000,5000,10000")]
    pub(crate) rates: Vec<f64>,
    /// Length of each load run.
    #[arg(long, value_parser = parse_duration, default_value = "4s")]
    pub(crate) duration: Duration,
    /// Payload size in bytes.
    #[arg(long, value_parser = parse_size, default_value = "64")]
    pub(crate) size: usize,
    /// Payload kind.
    #[arg(long, value_enum, default_value = "binary")]
    pub(crate) kind: PayloadKind,
    /// Idle sessions held open to measure memory per idle session (0 skips).
    #[arg(long, default_value_t = 1000)]
    pub(crate) idle_sessions: u64,
    /// Session-setup phase: sessions opened (connect + handshake + one echo) (0 skips).
    #[arg(long, default_value_t = 300)]
    pub(crate) setup_sessions: u64,
    /// Capacity phase: try to hold this many concurrent sessions (0 skips).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_sessions: u64,
    /// Capacity phase: sessions one generator process holds (its open-file limit is
    /// the proxy's too); more are split over several `hold` child processes.
    #[arg(long, default_value_t = 15000)]
    pub(crate) sessions_per_process: u64,
    /// Clients speak TLS (wss/https) to every target; proxies terminate it with a
    /// self-signed certificate made by `openssl`, the direct target is a TLS simulator.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Put a delay relay with this per-direction latency in front of the upstream.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub(crate) upstream_latency: Duration,
    /// agentmux binary (default: `agentmux` on PATH, then target/{release,debug}/agentmux).
    #[arg(long)]
    pub(crate) agentmux: Option<PathBuf>,
    /// Arguments for agentmux; `{config}` is replaced by the generated config path.
    #[arg(long, default_value = "run --config {config}", allow_hyphen_values = true)]
    pub(crate) agentmux_args: String,
    /// Route mode written into agentmux's config (default: `websocket` for ws, `http` for http;
    /// `mux` once a mux-speaking upstream exists).
    #[arg(long)]
    pub(crate) agentmux_mode: Option<String>,
    /// nginx binary.
    #[arg(long, default_value = "nginx")]
    pub(crate) nginx: PathBuf,
    /// haproxy binary.
    #[arg(long, default_value = "haproxy")]
    pub(crate) haproxy: PathBuf,
    /// Core each proxy is pinned to (default: the last core).
    #[arg(long)]
    pub(crate) proxy_core: Option<usize>,
    /// Cores for the load generator and the upstream simulator (default: all but the proxy core).
    #[arg(long)]
    pub(crate) bench_cores: Option<String>,
    /// Directory for configs, logs, the report, JSON and the plot.
    #[arg(long, default_value = "bench/results/tmp/compare")]
    pub(crate) out: PathBuf,
    /// Start port; each proxy and the upstream take ports from here.
    #[arg(long, default_value_t = 19000)]
    pub(crate) base_port: u16,
    /// No live progress on stderr.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

/// Parses "250ms", "10s", "1.5s", "2m", "1h", "100us" or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 250ms, 10s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses "64", "4k", "4KiB", "1m", "1MiB" (binary multiples) into bytes.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 64, 4k, 1MiB)"))?;
    let factor = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

/// What `agentmux-bench pool` lends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PoolKind {
    /// Connected transports a WebSocket session takes for good.
    Raw,
    /// HTTP/1.1 connections lent per request and given back.
    Http,
}

/// Flags of `agentmux-bench pool`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PoolArgs {
    /// Which pool: `raw` (WebSocket) or `http` (HTTP/1.1).
    #[arg(long, value_enum, default_value = "raw")]
    pub(crate) kind: PoolKind,
    /// Connections kept warm (`min_connections`).
    #[arg(long, default_value_t = 8)]
    pub(crate) warm: usize,
    /// Acquires to time.
    #[arg(long, default_value_t = 2000)]
    pub(crate) acquires: u64,
    /// Pause between acquires (time for a raw pool to replace what was taken).
    #[arg(long, value_parser = parse_duration, default_value = "1ms")]
    pub(crate) interval: Duration,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, short = 'o')]
    pub(crate) output: Option<PathBuf>,
    /// Runtime worker threads (1 = single-threaded, like the benchmark gateway).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
}

/// Flags of `agentmux-bench ramp`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RampArgs {
    /// Session slots; arrivals peak at sessions / session-life per second.
    #[arg(long, short = 's', default_value_t = 200)]
    pub(crate) sessions: u64,
    /// Slots start evenly over this time: the arrival rate ramps up linearly.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub(crate) ramp_up: Duration,
    /// How long the peak rate holds after the ramp.
    #[arg(long, short = 'd', value_parser = parse_duration, default_value = "30s")]
    pub(crate) duration: Duration,
    /// Each session lives this long and is replaced at once by a new one.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub(crate) session_life: Duration,
    /// Messages per second per session (echoed and checked).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) rate: f64,
    /// Latency each way between the gateway and the upstream (one delay relay per cluster).
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub(crate) latency: Duration,
    /// Rounds, each on a fresh gateway, prediction on and off in ABBA order
    /// (on, off, off, on, …); an even count loads both settings equally.
    #[arg(long, default_value_t = 4)]
    pub(crate) rounds: usize,
    /// `min_connections` of both clusters.
    #[arg(long, default_value_t = 2)]
    pub(crate) min_connections: usize,
    /// `max_connections` of both clusters.
    #[arg(long, default_value_t = 1000)]
    pub(crate) max_connections: usize,
    /// Plaintext upstream (a loopback TCP connect is instant even through the relay,
    /// so the pool has nothing to wait for; the default TLS upstream makes connects cost
    /// what they cost to a far host).
    /// After the load: how long the gateway keeps being watched, for the
    /// upstream connections a burst leaves behind (0s skips).
    #[arg(long, value_parser = parse_duration, default_value = "45s")]
    pub(crate) after: Duration,
    /// The clusters' `pool.idle_timeout`: how long a spare may stay unused.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) pool_idle_timeout: Duration,
    #[arg(long)]
    pub(crate) plaintext: bool,
    /// Time for the pools to warm up before the load starts.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub(crate) warm_up: Duration,
    /// agentmux binary (default: next to this executable, then on PATH).
    #[arg(long)]
    pub(crate) agentmux: Option<PathBuf>,
    /// Core the gateway is pinned to (default: the last core).
    #[arg(long)]
    pub(crate) proxy_core: Option<usize>,
    /// Cores for the load generator, the simulator and the relays (default: the others).
    #[arg(long)]
    pub(crate) bench_cores: Option<String>,
    /// Directory for the config, logs, ramp.md and ramp.json.
    #[arg(long, default_value = "bench/results/tmp/ramp")]
    pub(crate) out: PathBuf,
    /// Simulator on P, relays on P+1 and P+2, gateway on P+10 (admin P+11).
    #[arg(long, default_value_t = 19100)]
    pub(crate) base_port: u16,
    /// No live progress on stderr.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

/// Flags of `agentmux-bench hold` (hidden: `compare` runs it).
#[derive(Debug, Clone, Args)]
pub(crate) struct HoldArgs {
    /// ws:// or wss:// URL.
    pub(crate) url: String,
    /// Sessions to open and hold.
    #[arg(long)]
    pub(crate) sessions: u64,
    /// wss: trust only the CAs in this PEM file.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
}
