//! A mux-speaking echo upstream for tests, built on the gateway library's
//! upstream side (`agentmux::mux::MuxServer`), with a switch that drops
//! every connection (the gateway must resume its sessions), and a relay
//! that can inject garbage into one connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentmux::mux::{Batch, Frame, MuxServer, ServerConfig, decode_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A running mux echo upstream.
pub struct MuxEcho {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// The upstream's library server (its stats: sessions known now).
    pub server: MuxServer,
    kill: Arc<Notify>,
}

impl MuxEcho {
    /// Drops every live connection now (sessions stay known, to resume).
    pub fn kill_all(&self) {
        self.kill.notify_waiters();
    }
}

/// Echoes every chunk back as it came; `delay` before each echo.
pub async fn spawn_mux_echo(delay: Duration) -> MuxEcho {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = MuxServer::new(ServerConfig::default());
    let accepted = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(Notify::new());
    let (acc, k, server_handle) = (accepted.clone(), kill.clone(), server.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (server, acc, kill) = (server.clone(), acc.clone(), k.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = server.accept(tcp).await else { return };
                acc.fetch_add(1, Ordering::SeqCst);
                loop {
                    tokio::select! {
                        s = conn.next_session() => match s {
                            Some(s) => { tokio::spawn(echo(s, delay)); }
                            None => return,
                        },
                        _ = kill.notified() => {
                            conn.abort();
                            return;
                        }
                    }
                }
            });
        }
    });
    MuxEcho {
        addr,
        accepted,
        server: server_handle,
        kill,
    }
}

/// A mux upstream that accepts connections (selecting `agentmux.v1`)
/// and answers pings, but never answers an OPEN in time: with
/// `late_open_ok`, it sends OPEN_OK that long after the OPEN. It records
/// every mux frame the gateway sends.
pub async fn spawn_mux_silent(late_open_ok: Option<Duration>) -> (SocketAddr, Arc<Mutex<Vec<Frame>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(silent(tcp, late_open_ok, log.clone()));
        }
    });
    (addr, seen)
}

async fn silent(mut tcp: TcpStream, late_open_ok: Option<Duration>, log: Arc<Mutex<Vec<Frame>>>) {
    use crate::ws::{accept, encode, header, read_frame, read_head};
    let head = read_head(&mut tcp).await;
    if head.is_empty() {
        return; // a pre-warmed connection closed unused
    }
    let key = header(&head, "sec-websocket-key").unwrap_or("").to_owned();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\nsec-websocket-protocol: agentmux.v1\r\n\r\n",
        accept(&key)
    );
    tcp.write_all(resp.as_bytes()).await.unwrap();
    let (mut rd, wr) = tcp.into_split();
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    while let Some(f) = read_frame(&mut rd).await {
        match f.opcode {
            0x9 => {
                let pong = encode(true, 0xA, &f.payload, None);
                let _ = wr.lock().await.write_all(&pong).await;
            }
            0x2 => {
                let Ok(frames) = decode_message(bytes::Bytes::from(f.payload)) else {
                    return;
                };
                for frame in frames {
                    if let (Frame::Open { session, .. }, Some(after)) = (&frame, late_open_ok) {
                        let (session, wr) = (*session, wr.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let mut batch = Batch::new();
                            batch
                                .push(&Frame::OpenOk {
                                    session,
                                    window: 1 << 16,
                                    subprotocol: None,
                                })
                                .unwrap();
                            let msg = encode(true, 0x2, &batch.take(), None);
                            let _ = wr.lock().await.write_all(&msg).await;
                        });
                    }
                    log.lock().unwrap().push(frame);
                }
            }
            0x8 => return,
            _ => {}
        }
    }
}

async fn echo(mut s: agentmux::mux::MuxSession, delay: Duration) {
    while let Some(chunk) = s.recv_chunk().await {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if s.send_chunk(chunk).await.is_err() {
            return;
        }
    }
    let _ = s.close(1000, "bye");
}

/// A TCP relay in front of `to`; `poison()` writes a garbage WebSocket
/// frame toward the gateway on every connection open now.
pub struct Poisoner {
    pub addr: SocketAddr,
    poison: Arc<Notify>,
}

impl Poisoner {
    pub fn poison(&self) {
        self.poison.notify_waiters();
    }
}

pub async fn spawn_poisoner(to: SocketAddr) -> Poisoner {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let poison = Arc::new(Notify::new());
    let p = poison.clone();
    tokio::spawn(async move {
        loop {
            let Ok((down, _)) = listener.accept().await else { return };
            let Ok(up) = TcpStream::connect(to).await else { return };
            let p = p.clone();
            tokio::spawn(relay(down, up, p));
        }
    });
    Poisoner { addr, poison }
}

async fn relay(down: TcpStream, up: TcpStream, poison: Arc<Notify>) {
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let to_up = tokio::spawn(async move { tokio::io::copy(&mut dr, &mut uw).await });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = ur.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => if dw.write_all(&buf[..n]).await.is_err() { break },
            },
            _ = poison.notified() => {
                // A binary WebSocket message holding a frame of unknown type.
                let junk = [0x82u8, 6, 0xEE, 0, 0, 0, 0, 0];
                let _ = dw.write_all(&junk).await;
            }
        }
    }
    to_up.abort();
}
