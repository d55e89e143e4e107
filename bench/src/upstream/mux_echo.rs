//! `upstream --mode mux`: a mux-speaking echo upstream built on the gateway
//! library's upstream side ([`agentmux::mux::MuxServer`]), for agentmux's
//! `mode = "mux"` routes.
//!
//! Every connection is a mux WebSocket (`agentmux.v1`) from the gateway;
//! every session it carries gets an echo task: each fragment (chunk) goes
//! back as it came — text flag, FIN and payload — so an agent behind the
//! gateway sees its own frames echoed, exactly as the plain simulator's
//! WebSocket echo does. The agent's close is answered with the same code.
//!
//! Faults: `--latency` is a per-message processing delay (each chunk is
//! queued with its due time, so latency does not cap a session's
//! throughput); `--corrupt-rate` flips one byte of an echoed chunk;
//! `--error-rate` closes the session with 1011; `--drop-at` /
//! `--drop-every` abort every open mux connection at once, as a network
//! failure would. The sessions survive for the server's resume grace
//! (30 s), so the gateway resumes them on its next connection with nothing
//! lost — the chaos test of issue 4. `--drop-rate` (one connection per
//! message) makes no sense for connections shared by thousands of
//! sessions and is refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentmux::mux::{Chunk, MuxServer, MuxSession, ServerConfig, SessionEnd, is_valid_close_code};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::faults::{Faults, Verdict, dropped};
use crate::error::Error;

/// Counters of a running mux simulator (for tests and the exit line).
#[derive(Debug, Default)]
pub(crate) struct MuxCounts {
    /// Mux connections accepted.
    pub(crate) connections: AtomicU64,
    /// Connections aborted by a drop.
    pub(crate) dropped: AtomicU64,
    /// Chunks echoed.
    pub(crate) echoed: AtomicU64,
}

/// A bound mux simulator, not yet serving.
pub(crate) struct MuxSim {
    listener: TcpListener,
    server: MuxServer,
    faults: Arc<Faults>,
    kill: watch::Receiver<u64>,
    tls: Option<TlsAcceptor>,
    counts: Arc<MuxCounts>,
}

impl MuxSim {
    /// Binds `listen`. Must run inside a runtime (the drop timer starts here).
    pub(crate) async fn bind(
        listen: &str,
        faults: Faults,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, Error> {
        if faults.drop_rate > 0.0 {
            return Err(Error::Usage(
                "--drop-rate is not supported with --mode mux (a mux connection carries many sessions); \
                 use --drop-at / --drop-every"
                    .into(),
            ));
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("binding {listen}"), e))?;
        let kill = faults.start_drops();
        let server = MuxServer::new(ServerConfig {
            // Room for the capacity runs (15,000+ sessions over 2 connections).
            max_sessions_per_connection: 1 << 16,
            ..ServerConfig::default()
        });
        Ok(Self {
            listener,
            server,
            faults: Arc::new(faults),
            kill,
            tls: tls.map(TlsAcceptor::from),
            counts: Arc::default(),
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))
    }

    /// Its counters.
    pub(crate) fn counts(&self) -> Arc<MuxCounts> {
        self.counts.clone()
    }

    /// The library's own counters (sessions opened, resumed, expired).
    pub(crate) fn server(&self) -> MuxServer {
        self.server.clone()
    }

    /// Serves until the task is dropped.
    pub(crate) async fn run(self) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let conn = Conn {
                server: self.server.clone(),
                faults: self.faults.clone(),
                kill: self.kill.clone(),
                counts: self.counts.clone(),
            };
            tokio::spawn(conn.serve(stream, self.tls.clone()));
        }
    }
}

/// One accepted TCP connection.
struct Conn {
    server: MuxServer,
    faults: Arc<Faults>,
    kill: watch::Receiver<u64>,
    counts: Arc<MuxCounts>,
}

impl Conn {
    async fn serve(mut self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let _ = stream.set_nodelay(true);
        let accepted = match tls {
            None => self.server.accept(stream).await,
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(stream) => self.server.accept(stream).await,
                Err(_) => return,
            },
        };
        // Pooled spare transports the gateway never upgrades end here too.
        let Ok(mut conn) = accepted else { return };
        // Drops apply to mux connections open when they fire, not to later
        // ones (nor to spare transports the gateway has not upgraded yet).
        self.kill.borrow_and_update();
        self.counts.connections.fetch_add(1, Ordering::Relaxed);
        loop {
            tokio::select! {
                session = conn.next_session() => match session {
                    Some(s) => {
                        tokio::spawn(echo(s, self.faults.clone(), self.counts.clone()));
                    }
                    None => return,
                },
                () = dropped(&mut self.kill) => {
                    conn.abort();
                    self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Echoes one session until the gateway closes it.
async fn echo(session: MuxSession, faults: Arc<Faults>, counts: Arc<MuxCounts>) {
    if faults.latency.is_zero() {
        echo_inline(session, &faults, &counts).await;
    } else {
        echo_delayed(session, &faults, &counts).await;
    }
}

/// What to do with one received chunk.
fn treat(mut chunk: Chunk, faults: &Faults) -> Option<Chunk> {
    match faults.roll() {
        Verdict::Pass => {
            if faults.corrupt_rate > 0.0 && !chunk.payload.is_empty() {
                let mut bytes = chunk.payload.to_vec();
                if faults.maybe_corrupt(&mut bytes) {
                    chunk.payload = bytes.into();
                }
            }
            Some(chunk)
        }
        // Error (Drop is refused at bind): the session fails with 1011.
        _ => None,
    }
}

async fn echo_inline(mut session: MuxSession, faults: &Faults, counts: &MuxCounts) {
    while let Some(chunk) = session.recv_chunk().await {
        let Some(chunk) = treat(chunk, faults) else {
            let _ = session.close(1011, "injected error");
            return;
        };
        if session.send_chunk(chunk).await.is_err() {
            return;
        }
        counts.echoed.fetch_add(1, Ordering::Relaxed);
    }
    answer_close(&mut session);
}

/// Answers the gateway's CLOSE with the agent's code (as a WebSocket echo
/// server answers a close frame).
fn answer_close(session: &mut MuxSession) {
    let code = match session.end() {
        Some(SessionEnd::Closed { code, .. }) if is_valid_close_code(code) => code,
        _ => 1000,
    };
    let _ = session.close(code, "");
}

async fn echo_delayed(session: MuxSession, faults: &Faults, counts: &MuxCounts) {
    let latency = faults.latency;
    let (mut tx, mut rx) = session.split();
    let (queue, mut due) = mpsc::channel::<(Instant, Option<Chunk>)>(1024);
    let reader = async move {
        while let Some(chunk) = rx.recv_chunk().await {
            let item = treat(chunk, faults);
            let stop = item.is_none();
            if queue.send((Instant::now() + latency, item)).await.is_err() || stop {
                return None;
            }
        }
        let code = match rx.end() {
            Some(SessionEnd::Closed { code, .. }) if is_valid_close_code(code) => code,
            _ => 1000,
        };
        Some(code)
    };
    let writer = async move {
        while let Some((at, item)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            let Some(chunk) = item else {
                let _ = tx.close(1011, "injected error");
                return tx;
            };
            if tx.send_chunk(chunk).await.is_err() {
                return tx;
            }
            counts.echoed.fetch_add(1, Ordering::Relaxed);
        }
        tx
    };
    // The writer drains the queue after the reader stops; the close goes last.
    let (close, mut tx) = tokio::join!(reader, writer);
    if let Some(code) = close {
        let _ = tx.close(code, "");
    }
}
