//! The `agentmux` command: run the gateway or validate a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use agentmux::config::{Config, DEFAULT_CONFIG_PATH};
use agentmux::server::Drained;
use clap::{Parser, Subcommand};

// mimalloc instead of glibc malloc: the request path allocates (hyper's
// heads, header maps, futures), and glibc's malloc/free/consolidate were
// ~9 % of the gateway's CPU per HTTP request in `perf` profiles
// (bench/results/profiles/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A TLS-terminating gateway that pools and multiplexes AI agent sessions.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for the default `run`).
    #[arg(long, short, global = true, env = "AGENTMUX_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Check a config file without starting anything; exits 1 on errors.
    Validate {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the config form (`sha256:<hex>`) of an API key for an auth
    /// filter's `api_keys` table. Reads the key from stdin when not given.
    HashKey {
        /// The key; omit to read one line from stdin (keeps it out of shell history).
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate { file }) => validate(&file),
        Some(Command::HashKey { key }) => hash_key(key),
        Some(Command::Run) | None => {
            let path = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            run(path)
        }
    }
}

fn validate(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok ({} listeners, {} routes, {} clusters)",
                file.display(),
                c.listeners().len(),
                c.routes().len(),
                c.clusters().len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_key(key: Option<String>) -> ExitCode {
    let key = match key {
        Some(k) => k,
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("cannot read the key from stdin");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if key.is_empty() {
        eprintln!("the key is empty");
        return ExitCode::FAILURE;
    }
    println!("{}", agentmux_filters::auth::hash_api_key(&key));
    ExitCode::SUCCESS
}

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    agentmux::telemetry::init_logging(config.log_level(), config.log_json(), config.access_log());
    // One worker: a current-thread runtime (no work stealing, no cross-thread
    // wake-ups), like one nginx worker. More: the work-stealing scheduler.
    let mut builder = match config.worker_threads() {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, path))
}

async fn serve(config: Config, path: PathBuf) -> ExitCode {
    let running = match agentmux::server::start_with_path(config, Some(&path)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agentmux: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Short status lines on stdout: what a newcomer reads, and what tests
    // parse to find ports bound as :0.
    println!("agentmux {} using {}", env!("CARGO_PKG_VERSION"), path.display());
    for (name, addr, tls) in running.listeners() {
        let scheme = if *tls { "https" } else { "http" };
        println!("listener {name} on {scheme}://{addr}");
    }
    println!("admin on http://{}", running.admin_addr());
    println!("ready");
    let gateway = running.gateway().clone();
    tokio::spawn(reload_on_sighup(gateway));
    wait_for_signal().await;
    println!("draining");
    tracing::info!("shutting down: no new connections, draining in-flight work");
    match running.shutdown().await {
        Drained::Clean => {
            println!("stopped");
            ExitCode::SUCCESS
        }
        Drained::TimedOut(n) => {
            tracing::warn!(connections = n, "drain timeout passed; closing remaining connections");
            println!("stopped ({n} connections cut at the drain deadline)");
            ExitCode::SUCCESS
        }
    }
}

/// SIGHUP reloads the config file, as `POST /api/reload` does.
async fn reload_on_sighup(gateway: std::sync::Arc<agentmux::gateway::Gateway>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match gateway.reload().await {
                Ok(r) => tracing::info!(
                    kept = r.clusters_kept,
                    started = r.clusters_started,
                    "configuration reloaded"
                ),
                Err(e) => tracing::warn!("reload refused, the running configuration stays: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = gateway;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
