//! WebSocket helpers for tests: a raw frame-level upstream that records
//! exactly what the gateway sends it, a raw client for sending frames no
//! well-behaved library would, and a tokio-tungstenite client over TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One frame as seen on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Encodes a frame; `mask` for client frames.
pub fn encode(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(m | payload.len() as u8);
    } else if payload.len() <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one frame; `None` at EOF.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<RawFrame> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await.ok()?;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await.ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await.ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await.ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await.ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some(RawFrame {
        fin: h[0] & 0x80 != 0,
        opcode: h[0] & 0x0F,
        masked,
        payload,
    })
}

/// The `Sec-WebSocket-Accept` value for `key`.
pub fn accept(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Reads an HTTP head (up to the blank line).
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read_exact(&mut b).await.is_err() {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A header's value in an HTTP head read by [`read_head`].
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What the raw upstream does after accepting.
#[derive(Clone, Debug)]
pub enum Script {
    /// Echo every frame back unmasked, as it came; answer a close and hang up.
    Echo,
    /// Like `Echo`, but answer the upgrade selecting this subprotocol.
    Protocol(&'static str),
    /// Refuse the upgrade with this status.
    Refuse(u16),
    /// Send these raw bytes right after the `101`, then echo.
    Send(Vec<u8>),
    /// Echo `n` data frames, then drop the TCP connection without a close.
    DropAfter(usize),
    /// Write binary frames of 64 KiB up to this many bytes, as fast as the
    /// gateway takes them, recording progress in `Log::written`.
    Flood(u64),
}

/// What the raw upstream saw.
#[derive(Debug, Default)]
pub struct Log {
    pub heads: Vec<String>,
    pub frames: Vec<RawFrame>,
    pub accepted: usize,
    pub written: AtomicU64,
}

/// A raw WebSocket upstream on a loopback port.
pub async fn spawn_upstream(script: Script) -> (SocketAddr, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let l2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            l2.lock().unwrap().accepted += 1;
            let (log, script) = (l2.clone(), script.clone());
            tokio::spawn(serve(tcp, script, log));
        }
    });
    (addr, log)
}

async fn serve(mut tcp: TcpStream, script: Script, log: Arc<Mutex<Log>>) {
    let head = read_head(&mut tcp).await;
    if head.is_empty() {
        return; // a pre-warmed connection closed unused
    }
    log.lock().unwrap().heads.push(head.clone());
    if let Script::Refuse(status) = script {
        let _ = tcp
            .write_all(format!("HTTP/1.1 {status} Nope\r\ncontent-length: 0\r\n\r\n").as_bytes())
            .await;
        return;
    }
    let key = header(&head, "sec-websocket-key").unwrap_or("").to_owned();
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n",
        accept(&key)
    );
    if let Script::Protocol(p) = &script {
        resp.push_str(&format!("sec-websocket-protocol: {p}\r\n"));
    }
    resp.push_str("\r\n");
    tcp.write_all(resp.as_bytes()).await.unwrap();
    match script {
        Script::Send(bytes) => {
            tcp.write_all(&bytes).await.unwrap();
            echo(tcp, log, usize::MAX).await;
        }
        Script::DropAfter(n) => echo(tcp, log, n).await,
        Script::Flood(total) => {
            let chunk = encode(true, 0x2, &pattern(64 * 1024), None);
            let mut sent = 0;
            while sent < total {
                if tcp.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += 64 * 1024;
                log.lock().unwrap().written.store(sent, Ordering::SeqCst);
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), read_frame(&mut tcp)).await;
        }
        _ => echo(tcp, log, usize::MAX).await,
    }
}

/// The byte pattern flood frames carry, checkable by the reader.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

async fn echo(mut tcp: TcpStream, log: Arc<Mutex<Log>>, data_frames: usize) {
    let mut seen = 0;
    while let Some(f) = read_frame(&mut tcp).await {
        log.lock().unwrap().frames.push(f.clone());
        if f.opcode < 0x8 {
            seen += 1;
        }
        let out = match f.opcode {
            0x9 => encode(true, 0xA, &f.payload, None),
            0xA => continue,
            op => encode(f.fin, op, &f.payload, None),
        };
        if tcp.write_all(&out).await.is_err() || f.opcode == 0x8 {
            return;
        }
        if seen >= data_frames {
            return; // drop the connection without a close frame
        }
    }
}

/// A raw client: TCP (plaintext listener) upgraded by hand.
pub async fn raw_client(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    (tcp, head)
}

/// Reads frames until a close; returns its code and reason.
pub async fn read_close<R: AsyncRead + Unpin>(r: &mut R) -> Option<(u16, String)> {
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), read_frame(r))
            .await
            .ok()??;
        if f.opcode == 0x8 {
            if f.payload.len() < 2 {
                return Some((1005, String::new()));
            }
            let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
            return Some((code, String::from_utf8_lossy(&f.payload[2..]).into_owned()));
        }
    }
}

/// A tokio-tungstenite client over TLS (verifying `ca`) or plaintext.
pub async fn connect(
    addr: SocketAddr,
    ca: Option<&std::path::Path>,
    path: &str,
    protocols: Option<&str>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<Box<dyn Io>>,
        tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let scheme = if ca.is_some() { "wss" } else { "ws" };
    let mut req = format!("{scheme}://localhost:{}{path}", addr.port()).into_client_request()?;
    if let Some(p) = protocols {
        req.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let io: Box<dyn Io> = match ca {
        Some(ca) => Box::new(super::client::connect_tls(addr, super::client::tls_config(ca, &[b"http/1.1"])).await),
        None => Box::new(TcpStream::connect(addr).await.unwrap()),
    };
    tokio_tungstenite::client_async(req, io).await
}

/// Object-safe async I/O for boxing.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
