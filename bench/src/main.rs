//! `agentmux-bench`: a load generator for agent sessions (WebSocket, HTTP,
//! SSE), an upstream simulator with fault injection and a delay relay, and a
//! side-by-side comparison of a direct connection, agentmux, nginx and
//! haproxy.
//!
//! The load generator, the simulator and `compare` do not depend on the
//! gateway crate: the bench must be usable against any gateway, so they
//! only speak the wire protocols and drive proxies as external processes.
//! Two parts link the gateway library: `pool`, to time its warm pool in
//! process, and `upstream --mode mux`, whose echo speaks the mux protocol
//! through the library's upstream side (as any mux upstream would). `ramp`
//! and `soak` drive the agentmux binary, reading its `/metrics`.

mod cli;
mod compare;
mod error;
mod limits;
mod load;
mod payload;
mod plot;
mod pool;
mod progress;
mod ramp;
mod report;
mod soak;
mod tls;
mod upstream;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mux;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Thousands of sessions need thousands of descriptors; do this before
    // any socket exists so every subcommand benefits.
    let nofile = limits::raise_nofile();
    let result = match cli.command {
        Command::Load(args) => runtime(args.threads).and_then(|rt| rt.block_on(load::main(args, nofile))),
        Command::Upstream(args) => runtime(args.threads).and_then(|rt| rt.block_on(upstream::main(args))),
        Command::Compare(args) => runtime(Some(1)).and_then(|rt| rt.block_on(compare::main(args))),
        Command::Pool(args) => runtime(Some(args.threads)).and_then(|rt| rt.block_on(pool::main(args))),
        Command::Ramp(args) => runtime(Some(1)).and_then(|rt| rt.block_on(ramp::main(args))),
        Command::Soak(args) => runtime(Some(1)).and_then(|rt| rt.block_on(soak::main(args))),
        Command::Hold(args) => runtime(Some(1)).and_then(|rt| rt.block_on(compare::hold::main(args))),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agentmux-bench: {err}");
            ExitCode::from(2)
        }
    }
}

/// One runtime per process; `threads` bounds the worker count so the tool
/// can be kept off the core a proxy under test is pinned to.
fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, error::Error> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| error::Error::Runtime(e.to_string()))
}
