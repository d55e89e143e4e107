//! Logging setup: `tracing` with human or JSON output.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// config's level so an operator can raise verbosity without editing files.
/// Logs go to stderr; stdout carries only the gateway's short status lines.
/// Access lines (target `access`) are on when `access_log` is.
pub fn init_logging(level: &str, json: bool, access_log: bool) {
    let access = if access_log { "access=info" } else { "access=off" };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(format!("{level},{access}")).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
