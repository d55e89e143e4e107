//! A bare WebSocket client for the churn: the upgrade written by hand and
//! frames encoded and decoded here, because the churn must also send what
//! no WebSocket library will (unmasked frames, undefined opcodes, oversized
//! pings, orphan continuations, broken UTF-8) and must be able to stop
//! reading and writing at any point without a library answering pings or
//! closes behind its back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opcodes of RFC 6455 §5.2.
pub(crate) mod op {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// Largest frame the client accepts from the gateway (the churn's own
/// messages are under 1 KiB; anything near this is a broken stream).
const MAX_FRAME: u64 = 1 << 20;
/// Largest response head to an upgrade.
const MAX_HEAD: usize = 16 * 1024;

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame (1005, "no status", when it has none).
    pub(crate) fn close_code(&self) -> u16 {
        match self.payload.as_slice() {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 1005,
        }
    }
}

/// Encodes one frame; `mask` masks the payload as a client must.
pub(crate) fn encode(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Decodes the frame at the start of `buf`: `Ok(None)` until all of it is
/// there, else the frame and the bytes it took.
pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, &'static str> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err("frame too large");
    }
    let mask = if b1 & 0x80 != 0 {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    let end = at + len as usize;
    let Some(body) = buf.get(at..end) else { return Ok(None) };
    let payload = match mask {
        Some(key) => body.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect(),
        None => body.to_vec(),
    };
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        payload,
    };
    Ok(Some((frame, end)))
}

/// The status code of a response head (`HTTP/1.1 408 ...`).
pub(crate) fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_whitespace();
    words.next().filter(|w| w.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// Where a response head ends (just past the blank line).
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Why a WebSocket could not be opened, as a tally outcome.
pub(crate) type Refused = String;

/// An open client WebSocket over plain TCP.
pub(crate) struct Ws {
    pub(crate) stream: TcpStream,
    buf: Vec<u8>,
}

impl Ws {
    /// Connects and upgrades; a refusal names what went wrong
    /// (`connect error`, `handshake 503`, ...).
    pub(crate) async fn open(addr: SocketAddr, path: &str) -> Result<Self, Refused> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|_| "connect error".to_string())?;
        let _ = stream.set_nodelay(true);
        let key = fastwebsockets::handshake::generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|_| "handshake io error".to_string())?;
        let mut buf = Vec::with_capacity(1024);
        let end = loop {
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD {
                return Err("handshake head too large".into());
            }
            let mut chunk = [0u8; 2048];
            match stream.read(&mut chunk).await {
                Ok(0) => return Err("handshake eof".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err("handshake io error".into()),
            }
        };
        match status_of(&buf[..end]) {
            Some(101) => {}
            Some(code) => return Err(format!("handshake {code}")),
            None => return Err("handshake garbage".into()),
        }
        buf.drain(..end);
        Ok(Self { stream, buf })
    }

    /// Sends one masked frame.
    pub(crate) async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let bytes = encode(fin, opcode, Some(rand::random()), payload);
        self.stream.write_all(&bytes).await
    }

    /// Sends bytes as they are (a hand-made, possibly invalid, frame).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends a close frame with `code`.
    pub(crate) async fn send_close(&mut self, code: u16) -> std::io::Result<()> {
        self.send(true, op::CLOSE, &code.to_be_bytes()).await
    }

    /// The next frame; `Ok(None)` on a clean end of stream.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(why) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why)),
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame that is not a ping or pong (pings are answered).
    pub(crate) async fn next_data(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            match self.next().await? {
                Some(f) if f.opcode == op::PING => self.send(true, op::PONG, &f.payload).await?,
                Some(f) if f.opcode == op::PONG => {}
                other => return Ok(other),
            }
        }
    }

    /// Reads whatever the gateway sent while the client was not looking,
    /// without answering: (pings seen, the close code if a close came,
    /// whether the stream ended). Stops at the end of the stream or after
    /// `quiet` without a byte.
    pub(crate) async fn drain_unanswered(&mut self, quiet: Duration) -> (u32, Option<u16>, bool) {
        let (mut pings, mut close) = (0, None);
        for _ in 0..64 {
            match tokio::time::timeout(quiet, self.next()).await {
                Ok(Ok(Some(f))) if f.opcode == op::PING => pings += 1,
                Ok(Ok(Some(f))) if f.opcode == op::CLOSE => close = Some(f.close_code()),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return (pings, close, true),
                // A reset counts as the end too: the gateway let go.
                Ok(Err(_)) => return (pings, close, true),
                Err(_) => return (pings, close, false),
            }
        }
        (pings, close, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_at_every_length_form() {
        for len in [0usize, 5, 125, 126, 300, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let bytes = encode(true, op::BINARY, mask, &payload);
                let (frame, used) = decode(&bytes).unwrap().unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(frame.payload, payload, "len {len} mask {mask:?}");
                assert!(frame.fin);
                // Every prefix is incomplete, not an error.
                assert_eq!(decode(&bytes[..bytes.len() - 1]), Ok(None));
            }
        }
    }

    #[test]
    fn headers_are_what_rfc6455_says() {
        // Unmasked 3-byte text: FIN|TEXT, length 3.
        assert_eq!(encode(true, op::TEXT, None, b"abc"), [0x81, 3, b'a', b'b', b'c']);
        // A 126-byte ping uses the 16-bit length form: the oversized control frame.
        let ping = encode(true, op::PING, Some([0; 4]), &[0; 126]);
        assert_eq!(&ping[..4], &[0x89, 0x80 | 126, 0, 126]);
        // An undefined opcode goes out as given.
        assert_eq!(encode(false, 0x3, None, b"")[0], 0x03);
        let close = decode(&[0x88, 2, 0x03, 0xEA]).unwrap().unwrap().0;
        assert_eq!(close.close_code(), 1002);
        assert_eq!(decode(&[0x88, 0]).unwrap().unwrap().0.close_code(), 1005);
        assert!(decode(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn response_heads_parse() {
        assert_eq!(status_of(b"HTTP/1.1 408 Request Timeout\r\n\r\n"), Some(408));
        assert_eq!(
            status_of(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
            Some(101)
        );
        assert_eq!(status_of(b"garbage\r\n"), None);
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
