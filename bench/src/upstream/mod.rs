//! `agentmux-bench upstream`: the upstream simulator (`--mode serve`), the
//! mux-speaking echo for agentmux's mux mode (`--mode mux`) and the delay
//! relay (`--mode delay`).
//!
//! The simulator answers on one port: any WebSocket upgrade gets an echo
//! session, `/sse...` a token stream, `/healthz` a 200, anything else an
//! HTTP echo. Faults (errors, corruption, drops, latency) apply to every
//! kind. Each connection is served on its own task; one failing connection
//! never affects another.

mod delay_relay;
pub(crate) mod faults;
mod http;
pub(crate) mod mux_echo;
mod sse;
mod ws_echo;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::cli::{UpstreamArgs, UpstreamMode};
use crate::error::Error;
use crate::tls;

pub(crate) use delay_relay::Relay;
pub(crate) use faults::Faults;
pub(crate) use mux_echo::MuxSim;

/// What every simulator connection shares.
pub(crate) struct Sim {
    pub(crate) faults: Faults,
    pub(crate) sse_tokens: u64,
    pub(crate) sse_delay: Duration,
    /// Generation counter bumped to drop every connection.
    pub(crate) kill: watch::Receiver<u64>,
}

/// A bound simulator, not yet serving.
pub(crate) struct Server {
    listener: TcpListener,
    sim: Arc<Sim>,
    tls: Option<TlsAcceptor>,
    /// Connections accepted so far (the soak counts the gateway's upstream connects).
    accepted: Arc<AtomicU64>,
}

impl Server {
    /// Binds `listen`. Must run inside a runtime (the drop timer starts here).
    pub(crate) async fn bind(
        listen: &str,
        faults: Faults,
        sse_tokens: u64,
        sse_delay: Duration,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("binding {listen}"), e))?;
        let kill = faults.start_drops();
        let sim = Arc::new(Sim {
            faults,
            sse_tokens,
            sse_delay,
            kill,
        });
        Ok(Self {
            listener,
            sim,
            tls: tls.map(TlsAcceptor::from),
            accepted: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))
    }

    /// The count of connections accepted, shared with the accept loop.
    pub(crate) fn accepted(&self) -> Arc<AtomicU64> {
        self.accepted.clone()
    }

    /// Serves until the task is dropped.
    pub(crate) async fn run(self) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            self.accepted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(connection(stream, self.sim.clone(), self.tls.clone()));
        }
    }
}

async fn connection(stream: TcpStream, sim: Arc<Sim>, tls: Option<TlsAcceptor>) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve(TokioIo::new(stream), sim).await,
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(stream).await {
                serve(TokioIo::new(stream), sim).await;
            }
        }
    }
}

async fn serve<I>(io: I, sim: Arc<Sim>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut kill = sim.kill.clone();
    kill.borrow_and_update();
    let service = {
        let sim = sim.clone();
        service_fn(move |req| http::handle(req, sim.clone()))
    };
    // HTTP/1.1, or HTTP/2 (prior knowledge or ALPN) with WebSocket
    // sessions as RFC 8441 streams (`load --protocol ws-h2`, websocket
    // routes over `protocol = "http2"` clusters).
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::select! {
        _ = conn => {}
        _ = faults::dropped(&mut kill) => {}
    }
}

/// `agentmux-bench upstream` entry point.
pub(crate) async fn main(args: UpstreamArgs) -> Result<ExitCode, Error> {
    match args.mode {
        UpstreamMode::Serve => {
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
                _ => None,
            };
            let scheme = if tls.is_some() { "https/wss" } else { "http/ws" };
            let server = Server::bind(
                &args.listen,
                Faults::from_args(&args)?,
                args.sse_tokens,
                args.sse_delay,
                tls,
            )
            .await?;
            println!("upstream simulator listening on {} ({scheme})", server.local_addr()?);
            server.run().await;
            Ok(ExitCode::SUCCESS)
        }
        UpstreamMode::Mux => {
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
                _ => None,
            };
            let scheme = if tls.is_some() { "wss" } else { "ws" };
            let sim = MuxSim::bind(&args.listen, Faults::from_args(&args)?, tls).await?;
            println!(
                "mux upstream simulator (agentmux.v1 echo) listening on {} ({scheme})",
                sim.local_addr()?
            );
            // A status line every 10 s (into the helper's log under compare).
            let (counts, server) = (sim.counts(), sim.server());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(10));
                every.tick().await;
                loop {
                    every.tick().await;
                    let st = server.stats();
                    println!(
                        "mux: {} connections accepted, {} dropped; sessions {} open, {} opened, {} resumed, {} expired; {} chunks echoed",
                        counts.connections.load(std::sync::atomic::Ordering::Relaxed),
                        counts.dropped.load(std::sync::atomic::Ordering::Relaxed),
                        st.sessions,
                        st.opened,
                        st.resumed,
                        st.expired,
                        counts.echoed.load(std::sync::atomic::Ordering::Relaxed),
                    );
                }
            });
            sim.run().await;
            Ok(ExitCode::SUCCESS)
        }
        UpstreamMode::Delay => {
            let to = args
                .to
                .as_deref()
                .ok_or_else(|| Error::Usage("--mode delay needs --to ADDR".into()))?;
            let up = args.up_latency.unwrap_or(args.latency);
            let down = args.down_latency.unwrap_or(args.latency);
            let relay = Relay::bind(&args.listen, to, up, down, !args.no_connect_delay).await?;
            println!(
                "delay relay listening on {} → {to} (+{up:?} up, +{down:?} down)",
                relay.local_addr()?
            );
            relay.run().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
