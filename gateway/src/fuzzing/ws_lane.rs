//! The WebSocket frame lane: an agent's bytes (masked frames expected)
//! through the agent → upstream lane over an in-memory source and sink,
//! then what the relay does when the lane stops (its close frames).
//!
//! Input: byte 0 sets the read size (`1 + 3 × b`, 255: everything at
//! once), byte 1 the sink (bits 0–1: at most 1, 5, 64 or any bytes per
//! write; bit 2: every other write is `Pending`; bit 3: every other read
//! is `Pending`), byte 2 the message limit (`16 + 4 × b` bytes); the rest
//! is the agent's stream.
//!
//! Invariants, beyond "no panic" and "no endless loop":
//! - the lane never holds more than one read plus one carried control
//!   frame (`1024 + 14 + 125` bytes);
//! - it ends as a reference model of RFC 6455 (whole-buffer, written
//!   independently of `ws::frame`) says: closed, source gone, or a
//!   violation with exactly the model's close code (1002, 1007, 1009),
//!   which is the code of the close frame the relay sends the agent;
//! - the upstream receives exactly the model's accepted frames (valid,
//!   masked, same payloads), then at most the frame in progress (whole or
//!   cut short), then the relay's `1001` close only when it stopped
//!   between frames;
//! - it counts as many messages as the model.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ws::lane::{Dir, Lane, Pumped};

/// The lane's read size (the smallest it allows).
const READ_SIZE: usize = 1024;
/// One read plus a carried control frame with its header.
const HELD_BOUND: usize = READ_SIZE + 14 + 125;

/// Runs one agent stream through a lane, asserting the invariants in the
/// module docs.
pub fn ws_lane(data: &[u8]) {
    let [read, write, max, input @ ..] = data else {
        return;
    };
    let max_message = 16 + usize::from(*max) * 4;
    let mut lane = Lane::new(Dir::Up, max_message, READ_SIZE);
    let mut src = Source {
        data: input,
        chunk: if *read == 255 {
            usize::MAX
        } else {
            1 + usize::from(*read) * 3
        },
        stall: write & 8 != 0,
        stalled: false,
    };
    let mut sink = Sink {
        bytes: Vec::new(),
        cap: [1, 5, 64, usize::MAX][usize::from(write & 3)],
        stall: write & 4 != 0,
        stalled: false,
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 0usize;
    let end = loop {
        let event = lane.pump(&mut cx, &mut src, &mut sink);
        assert!(lane.held() <= HELD_BOUND, "lane holds {} bytes", lane.held());
        match event {
            Pumped::Pending | Pumped::Yield => {
                polls += 1;
                assert!(polls < 16 * (input.len() + 64), "no progress after {polls} polls");
            }
            Pumped::Closed | Pumped::SourceGone | Pumped::Violation(_) => break event,
            other => panic!("unexpected {other:?} without a sink error or a rate limit"),
        }
    };
    // What the relay does next (`Relay::on_up`).
    let mut agent = Vec::new();
    match end {
        Pumped::Violation(v) => {
            let mut down = Lane::new(Dir::Down, max_message, READ_SIZE);
            down.send_close(v.close_code(), v.reason());
            assert!(down.flush_out(&mut cx, &mut agent).is_ready());
            lane.send_close(1001, "agent protocol error");
        }
        Pumped::SourceGone => lane.send_close(1001, "agent disconnected"),
        _ => {}
    }
    sink.stall = false;
    assert!(lane.flush_out(&mut cx, &mut sink).is_ready(), "the sink took nothing");
    let want = model(input, max_message as u64);
    match (&end, want.end) {
        (Pumped::Violation(v), End::Violation(code)) => {
            assert_eq!(v.close_code(), code, "{v:?}");
            check_agent_close(&agent, code);
        }
        (Pumped::Closed, End::Closed) | (Pumped::SourceGone, End::Gone) => {}
        (got, want) => panic!("the lane ended with {got:?}, the model with {want:?}"),
    }
    assert_eq!(lane.messages, want.messages, "messages relayed");
    check_upstream(&sink.bytes, &want);
}

/// A frame as the model and the checks see it: payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Closed,
    Gone,
    Violation(u16),
}

/// What the lane must do with a stream.
#[derive(Debug)]
struct Expected {
    /// Frames passed whole.
    frames: Vec<Frame>,
    /// The data frame in progress when the stream stopped (its payload as
    /// far as it arrived), which may have been passed whole or in part.
    tail: Option<Frame>,
    end: End,
    messages: u64,
}

/// The reference model: RFC 6455 §5 for a server reading a client, over
/// the whole stream at once. A rule is broken as soon as the bytes that
/// break it have arrived; text must be UTF-8 at every point (no prefix
/// that cannot be completed) and at the end of the message.
fn model(input: &[u8], max: u64) -> Expected {
    let mut want = Expected {
        frames: Vec::new(),
        tail: None,
        end: End::Gone,
        messages: 0,
    };
    // The message in progress: text or not, bytes so far, text so far.
    let mut msg: Option<(bool, u64, Vec<u8>)> = None;
    let mut rest = input;
    loop {
        let [b0, b1, ..] = *rest else { return want };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 || !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) || b1 & 0x80 == 0 {
            want.end = End::Violation(1002);
            return want;
        }
        let (len, at) = match b1 & 0x7F {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            126 | 127 => return want,
            n => (u64::from(n), 2),
        };
        if len >= 1 << 63 {
            want.end = End::Violation(1002);
            return want;
        }
        let control = opcode >= 8;
        if control && (!fin || len > 125) {
            want.end = End::Violation(1002);
            return want;
        }
        let Some(key) = rest.get(at..at + 4) else {
            return want;
        };
        let key = [key[0], key[1], key[2], key[3]];
        let body = &rest[at + 4..];
        let unmask = |bytes: &[u8]| -> Vec<u8> { bytes.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect() };
        if control {
            let len = len as usize;
            let Some(payload) = body.get(..len) else {
                return want;
            };
            let payload = unmask(payload);
            if opcode == 8 {
                if payload.len() == 1 {
                    want.end = End::Violation(1002);
                    return want;
                }
                if payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                        want.end = End::Violation(1002);
                        return want;
                    }
                    if std::str::from_utf8(&payload[2..]).is_err() {
                        want.end = End::Violation(1007);
                        return want;
                    }
                }
                want.frames.push(Frame { fin, opcode, payload });
                want.end = End::Closed;
                return want;
            }
            want.frames.push(Frame { fin, opcode, payload });
            rest = &body[len..];
            continue;
        }
        let (text, so_far, mut utf8) = match (opcode, msg.take()) {
            (0, Some(m)) => m,
            (1 | 2, None) => (opcode == 1, 0, Vec::new()),
            _ => {
                want.end = End::Violation(1002);
                return want;
            }
        };
        let size = so_far.saturating_add(len);
        if size > max {
            want.end = End::Violation(1009);
            return want;
        }
        let arrived = body.len().min(len as usize);
        let payload = unmask(&body[..arrived]);
        let frame = Frame {
            fin,
            opcode,
            payload: payload.clone(),
        };
        if text {
            utf8.extend_from_slice(&payload);
            let broken = match std::str::from_utf8(&utf8) {
                Ok(_) => false,
                // Cut inside a character: broken only if the message ends.
                Err(e) if e.error_len().is_none() => fin && arrived as u64 == len,
                Err(_) => true,
            };
            if broken {
                want.tail = Some(frame);
                want.end = End::Violation(1007);
                return want;
            }
        }
        if (arrived as u64) < len {
            want.tail = Some(frame);
            return want;
        }
        want.frames.push(frame);
        if fin {
            want.messages += 1;
        } else {
            msg = Some((text, size, utf8));
        }
        rest = &body[arrived..];
    }
}

/// The upstream's bytes against the model (see the module docs).
fn check_upstream(bytes: &[u8], want: &Expected) {
    let (got, partial) = frames(bytes, true);
    let n = want.frames.len();
    assert!(
        got.len() >= n && got[..n] == want.frames[..],
        "upstream got {got:?}, the model passes {:?}",
        want.frames
    );
    let mut rest = &got[n..];
    if let (Some(first), Some(tail)) = (rest.first(), &want.tail)
        && first.opcode != 8
    {
        assert_eq!(first, tail, "the frame in progress");
        rest = &rest[1..];
    }
    if let Some((head, payload)) = &partial {
        let tail = want.tail.as_ref();
        assert!(
            rest.is_empty()
                && tail.is_some_and(|t| t.fin == head.fin && t.opcode == head.opcode && t.payload.starts_with(payload)),
            "cut frame {head:?} {payload:?} after {rest:?}, the model's tail is {tail:?}"
        );
        return;
    }
    match want.end {
        End::Closed => assert!(rest.is_empty(), "frames after the close: {rest:?}"),
        End::Gone | End::Violation(_) => {
            let [close] = rest else {
                panic!("the relay's close is not alone at the end: {rest:?}");
            };
            assert_eq!(close.opcode, 8, "{close:?}");
            assert_eq!(close.payload.get(..2), Some(&1001u16.to_be_bytes()[..]), "{close:?}");
        }
    }
}

/// The close frame the agent gets: one unmasked frame with `code`.
fn check_agent_close(bytes: &[u8], code: u16) {
    let (got, partial) = frames(bytes, false);
    assert!(partial.is_none(), "a cut close frame to the agent");
    let [close] = &got[..] else {
        panic!("the agent got {got:?}, not one close frame");
    };
    assert_eq!(close.opcode, 8);
    assert_eq!(close.payload.get(..2), Some(&code.to_be_bytes()[..]));
    assert!(std::str::from_utf8(&close.payload[2..]).is_ok());
}

/// The frame header a cut frame had.
#[derive(Debug)]
struct Head {
    fin: bool,
    opcode: u8,
}

/// Decodes a frame stream (a client's when `masked`), asserting every
/// frame is valid; a last frame cut short comes back apart with what
/// arrived.
fn frames(mut bytes: &[u8], masked: bool) -> (Vec<Frame>, Option<(Head, Vec<u8>)>) {
    let mut out = Vec::new();
    while let [b0, b1, ..] = *bytes {
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        assert_eq!(b0 & 0x70, 0, "reserved bits sent");
        assert!(matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10), "opcode {opcode} sent");
        assert_eq!(b1 & 0x80 != 0, masked, "wrong masking sent");
        let (len, at) = match b1 & 0x7F {
            126 => (bytes.get(2..4).map(|n| u64::from(u16::from_be_bytes([n[0], n[1]]))), 4),
            127 => (
                bytes
                    .get(2..10)
                    .map(|n| n.iter().fold(0u64, |a, b| a << 8 | u64::from(*b))),
                10,
            ),
            n => (Some(u64::from(n)), 2),
        };
        let key_len = if masked { 4 } else { 0 };
        let (Some(len), Some(key)) = (len, bytes.get(at..at + key_len)) else {
            panic!("a cut frame header sent: {bytes:?}");
        };
        assert!(opcode < 8 || (fin && len <= 125), "a bad control frame sent");
        let body = &bytes[at + key_len..];
        let arrived = body.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let payload: Vec<u8> = body[..arrived]
            .iter()
            .enumerate()
            .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b })
            .collect();
        if (arrived as u64) < len {
            return (out, Some((Head { fin, opcode }, payload)));
        }
        out.push(Frame { fin, opcode, payload });
        bytes = &body[arrived..];
    }
    assert!(bytes.is_empty(), "a cut frame header sent: {bytes:?}");
    (out, None)
}

/// The agent's side: hands out `chunk` bytes per read, then EOF; every
/// other read is `Pending` when `stall` is set.
struct Source<'a> {
    data: &'a [u8],
    chunk: usize,
    stall: bool,
    stalled: bool,
}

impl AsyncRead for Source<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.stall {
            self.stalled = !self.stalled;
            if self.stalled {
                return Poll::Pending;
            }
        }
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// The upstream's side: takes at most `cap` bytes per write; every other
/// write is `Pending` when `stall` is set.
struct Sink {
    bytes: Vec<u8>,
    cap: usize,
    stall: bool,
    stalled: bool,
}

impl AsyncWrite for Sink {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.stall {
            self.stalled = !self.stalled;
            if self.stalled {
                return Poll::Pending;
            }
        }
        let n = self.cap.min(buf.len());
        self.bytes.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        let key = [9, 8, 7, 6];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    #[test]
    fn the_model_gives_each_violation_its_code() {
        let end = |stream: &[u8]| model(stream, 64).end;
        assert_eq!(end(&masked(true, 1, &[0xC3, 0x28])), End::Violation(1007));
        assert_eq!(end(&masked(true, 1, &[b'a', 0xE2, 0x82])), End::Violation(1007));
        assert_eq!(end(&masked(true, 2, &[0; 65])), End::Violation(1009));
        assert_eq!(end(&masked(true, 8, &1005u16.to_be_bytes())), End::Violation(1002));
        assert_eq!(end(&masked(true, 8, &[0x03, 0xE8, 0xFF])), End::Violation(1007));
        assert_eq!(end(&masked(true, 0, b"x")), End::Violation(1002));
        assert_eq!(end(&[0x81, 0x01, b'x']), End::Violation(1002));
        assert_eq!(end(&[0xC1, 0x80]), End::Violation(1002));
        // A header that cannot be judged yet is not a violation.
        assert_eq!(end(&[0x89, 0xFF, 0x00]), End::Gone);
    }

    #[test]
    fn the_model_passes_fragments_and_stops_at_a_close() {
        let mut stream = masked(false, 1, b"a\xC3");
        stream.extend(masked(true, 9, b"ping"));
        stream.extend(masked(true, 0, b"\xA9"));
        stream.extend(masked(true, 8, &1000u16.to_be_bytes()));
        stream.extend(masked(true, 1, b"ignored"));
        let want = model(&stream, 64);
        assert_eq!(want.end, End::Closed);
        assert_eq!(want.messages, 1);
        let ops: Vec<u8> = want.frames.iter().map(|f| f.opcode).collect();
        assert_eq!(ops, [1, 9, 0, 8]);
        let cut = model(&masked(true, 2, &[5; 40])[..20], 64);
        assert_eq!((cut.end, cut.tail.map(|t| t.payload)), (End::Gone, Some(vec![5; 14])));
    }
}
