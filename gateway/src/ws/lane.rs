//! One direction of a WebSocket relay: reads frames from one peer, checks
//! them against RFC 6455 and writes them to the other, frame by frame.
//!
//! Frames are never reassembled, and payloads are not even buffered whole:
//! bytes are transformed in place in a per-thread scratch buffer (unmask,
//! validate UTF-8, re-mask toward the upstream with a fresh key) and written
//! out with one `write` per read, so a burst of small frames costs one
//! `recv` and one `send`. Only what the sink does not take at once is
//! copied into a buffer the lane owns, and the lane stops reading its
//! source until that is written: a slow reader holds at most one read's
//! worth of bytes in the gateway, and an idle session holds no buffer at
//! all.

use crate::error::close;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use agentmux_filters::rate_limit::{Admission, SessionMessages};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{self, Head, Utf8Stream, Violation, op};
use crate::metrics::LatencyHistogram;

/// Live counters a lane bumps once per read.
#[derive(Clone, Debug)]
pub(crate) struct LaneCounters {
    pub(crate) messages: Counter,
    pub(crate) bytes: Counter,
    pub(crate) relay: Option<LatencyHistogram>,
}

/// Room before the read area for bytes carried over from the last read (an
/// unfinished header or control frame: at most 14 + 125 bytes).
const CARRY_ROOM: usize = 256;
/// Reads per pump call before yielding, so one busy direction cannot
/// starve the other or other sessions on the same thread.
const READS_PER_POLL: usize = 32;
/// One read in this many is timed for `agentmux_ws_relay_seconds`.
const RELAY_SAMPLE: u32 = 8;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Which way a lane carries frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Agent → upstream: frames arrive masked and leave masked (fresh key).
    Up,
    /// Upstream → agent: frames arrive and leave unmasked.
    Down,
}

/// What a pump call ended with.
#[derive(Debug)]
pub(crate) enum Pumped {
    /// Waiting for the source or the sink.
    Pending,
    /// Did some work and gave the thread back; poll again.
    Yield,
    /// The source sent a close frame, now forwarded.
    Closed,
    /// The source broke the protocol.
    Violation(Violation),
    /// The source ended the stream (EOF or read error) without a close.
    SourceGone,
    /// Writing to the sink failed.
    SinkGone,
    /// The next message is over its rate: hold the source this long.
    Throttled(Duration),
    /// The source's messages stayed over their rate past the delay bound.
    RateExceeded,
}

/// One relay direction's state.
#[derive(Debug)]
pub(crate) struct Lane {
    dir: Dir,
    max_message: u64,
    read_size: usize,
    frame: Option<InFrame>,
    msg: Option<Msg>,
    carry: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// A close frame went out on this lane's sink.
    pub(crate) close_sent: bool,
    /// The source's close frame was forwarded; later input is ignored.
    source_closed: bool,
    /// No more reading (draining after a close or an error).
    pub(crate) reading: bool,
    /// Payload of the keepalive ping the agent should answer (Up only).
    pub(crate) expect_pong: Option<[u8; 8]>,
    /// The carried bytes may hold whole frames (handshake leftovers) and
    /// must be processed before waiting for more input.
    carry_ready: bool,
    /// Bytes read since the relay last looked (keepalive).
    pub(crate) activity: bool,
    /// Per-message rate limit of the source (agents only).
    pub(crate) gate: Option<SessionMessages>,
    counters: Option<LaneCounters>,
    /// Complete messages relayed.
    pub(crate) messages: u64,
    /// Bytes read from the source.
    pub(crate) bytes: u64,
    /// Reads so far (for sampling relay time).
    reads: u32,
}

#[derive(Debug)]
struct InFrame {
    remaining: u64,
    key_in: Option<[u8; 4]>,
    key_out: Option<[u8; 4]>,
    phase: usize,
    fin: bool,
    text: bool,
}

#[derive(Debug)]
struct Msg {
    text: bool,
    bytes: u64,
    utf8: Utf8Stream,
}

/// Result of transforming one buffer in place.
struct Processed {
    /// Bytes at the start of the buffer to write out.
    out_len: usize,
    /// Input bytes used; the rest is carried to the next read.
    consumed: usize,
    event: Option<Pumped>,
}

impl Lane {
    pub(crate) fn new(dir: Dir, max_message: usize, read_size: usize) -> Self {
        Self {
            dir,
            max_message: max_message as u64,
            read_size: read_size.clamp(1024, 64 * 1024),
            frame: None,
            msg: None,
            carry: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            close_sent: false,
            source_closed: false,
            reading: true,
            expect_pong: None,
            carry_ready: false,
            gate: None,
            counters: None,
            activity: false,
            messages: 0,
            bytes: 0,
            reads: 0,
        }
    }

    /// Reports messages, bytes and relay time to these counters.
    pub(crate) fn set_counters(&mut self, counters: LaneCounters) {
        self.counters = Some(counters);
    }

    /// Processes held input before reading again (after a throttle).
    pub(crate) fn resume(&mut self) {
        self.reading = true;
        self.carry_ready = !self.carry.is_empty();
    }

    /// Seeds the lane with bytes that arrived with the handshake.
    pub(crate) fn preload(&mut self, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        self.carry_ready = !self.carry.is_empty();
    }

    /// Bytes the lane holds between pumps: output the sink has not taken
    /// and input carried to the next read.
    pub(crate) fn held(&self) -> usize {
        self.out.len() + self.carry.len()
    }

    /// Whether the sink is between frames, so the gateway may add its own.
    pub(crate) fn at_boundary(&self) -> bool {
        self.frame.is_none()
    }

    /// Queues a close frame to the sink, if the sink is between frames and
    /// has not had one yet.
    pub(crate) fn send_close(&mut self, code: u16, reason: &str) {
        if self.close_sent || !self.at_boundary() {
            return;
        }
        let payload = frame::close_payload(code, reason);
        let mask = self.out_mask();
        frame::write_control(&mut self.out, op::CLOSE, &payload, mask);
        self.close_sent = true;
    }

    /// Queues a ping to the sink when it is between frames.
    pub(crate) fn send_ping(&mut self, payload: &[u8]) -> bool {
        if self.close_sent || !self.at_boundary() {
            return false;
        }
        let mask = self.out_mask();
        frame::write_control(&mut self.out, op::PING, payload, mask);
        true
    }

    fn out_mask(&self) -> Option<[u8; 4]> {
        (self.dir == Dir::Up).then(rand::random::<[u8; 4]>)
    }

    /// Moves frames from `src` to `sink` until one of them blocks.
    pub(crate) fn pump<S, K>(&mut self, cx: &mut Context<'_>, src: &mut S, sink: &mut K) -> Pumped
    where
        S: AsyncRead + Unpin,
        K: AsyncWrite + Unpin,
    {
        for _ in 0..READS_PER_POLL {
            match self.flush_out(cx, sink) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Pumped::SinkGone,
                Poll::Pending => return Pumped::Pending,
            }
            if !self.reading {
                return Pumped::Pending;
            }
            if self.carry_ready {
                self.carry_ready = false;
                if let Some(event) = self.process_carry(cx, sink) {
                    return event;
                }
                continue;
            }
            match self.read_once(cx, src, sink) {
                Poll::Pending => return Pumped::Pending,
                Poll::Ready(Some(event)) => return event,
                Poll::Ready(None) => {}
            }
        }
        cx.waker().wake_by_ref();
        Pumped::Yield
    }

    /// Writes the owned output, then flushes the sink (TLS needs it).
    pub(crate) fn flush_out<K: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        sink: &mut K,
    ) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            match Pin::new(&mut *sink).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !self.out.is_empty() {
            self.out_pos = 0;
            // Give large buffers back: an idle session should hold none.
            if self.out.capacity() > 4096 {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        }
        Pin::new(sink).poll_flush(cx)
    }

    /// One read, transform and write. `Ready(None)` means "read again".
    fn read_once<S, K>(&mut self, cx: &mut Context<'_>, src: &mut S, sink: &mut K) -> Poll<Option<Pumped>>
    where
        S: AsyncRead + Unpin,
        K: AsyncWrite + Unpin,
    {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let want = CARRY_ROOM.max(self.carry.len()) + self.read_size;
            if scratch.len() < want {
                scratch.resize(want, 0);
            }
            let start = CARRY_ROOM.max(self.carry.len()) - self.carry.len();
            let read_at = start + self.carry.len();
            scratch[start..read_at].copy_from_slice(&self.carry);
            let mut rb = ReadBuf::new(&mut scratch[read_at..read_at + self.read_size]);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Some(Pumped::SourceGone)),
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Some(Pumped::SourceGone));
            }
            self.bytes += n as u64;
            self.activity = true;
            self.carry.clear();
            // Relay time is sampled, one read in RELAY_SAMPLE: its two
            // clock reads were most of what metrics cost per message, and
            // quantiles do not need every burst.
            self.reads = self.reads.wrapping_add(1);
            let timer = self
                .counters
                .as_ref()
                .and_then(|c| c.relay.as_ref())
                .filter(|_| self.reads % RELAY_SAMPLE == 1)
                .map(|_| std::time::Instant::now());
            let before = self.messages;
            let buf = &mut scratch[start..read_at + n];
            let p = self.process(buf);
            if p.consumed < buf.len() {
                self.carry.extend_from_slice(&buf[p.consumed..]);
            }
            if self.carry.capacity() > 4096 && self.carry.is_empty() {
                self.carry = Vec::new();
            }
            self.write_direct(cx, sink, &buf[..p.out_len]);
            if let Some(c) = &self.counters {
                c.bytes.inc_by(n as u64);
                c.messages.inc_by(self.messages - before);
                if let (Some(h), Some(t)) = (&c.relay, timer) {
                    h.observe(t.elapsed());
                }
            }
            Poll::Ready(p.event)
        })
    }

    /// Processes carried bytes without reading first.
    fn process_carry<K: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, sink: &mut K) -> Option<Pumped> {
        let mut buf = std::mem::take(&mut self.carry);
        let p = self.process(&mut buf);
        self.carry.extend_from_slice(&buf[p.consumed..]);
        self.write_direct(cx, sink, &buf[..p.out_len]);
        p.event
    }

    /// Writes straight from the scratch buffer; what the sink does not take
    /// now is kept in the lane's own buffer.
    fn write_direct<K: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, sink: &mut K, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.out.is_empty() {
            match Pin::new(&mut *sink).poll_write(cx, bytes) {
                Poll::Ready(Ok(n)) if n > 0 => bytes = &bytes[n..],
                // Errors and stalls surface on the next flush.
                _ => break,
            }
        }
        self.out.extend_from_slice(bytes);
    }

    /// Transforms `buf` in place: checks each frame, re-masks toward the
    /// upstream, drops what must not pass, and compacts what passes to the
    /// front.
    fn process(&mut self, buf: &mut [u8]) -> Processed {
        let (mut r, mut w) = (0usize, 0usize);
        // Where the frame being streamed starts in the output, if it
        // started in this buffer: a frame that fails mid-payload is then
        // cut whole, leaving the sink between frames for a close frame.
        let mut frame_w: Option<usize> = None;
        while r < buf.len() {
            if self.source_closed {
                // Nothing may follow a close frame; ignore it.
                r = buf.len();
                break;
            }
            if self.frame.is_some() {
                if let Err(v) = self.payload(buf, &mut r, &mut w) {
                    if let Some(start) = frame_w {
                        w = start;
                        self.frame = None;
                    }
                    return violation(w, buf.len(), v);
                }
                continue;
            }
            let head = match frame::parse_head(&buf[r..], self.dir == Dir::Up) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(v) => return violation(w, buf.len(), v),
            };
            if !head.is_control() && head.opcode != op::CONTINUATION && self.msg.is_none() {
                // A new message: does it fit the agent's message rate?
                match self.gate.as_mut().map(SessionMessages::try_admit) {
                    None | Some(Admission::Now) => {}
                    Some(Admission::Wait(d)) => {
                        return Processed {
                            out_len: w,
                            consumed: r,
                            event: Some(Pumped::Throttled(d)),
                        };
                    }
                    Some(Admission::Exceeded(_)) => {
                        return Processed {
                            out_len: w,
                            consumed: buf.len(),
                            event: Some(Pumped::RateExceeded),
                        };
                    }
                }
            }
            let step = if head.is_control() {
                self.control(buf, head, &mut r, &mut w)
            } else {
                frame_w = Some(w);
                self.data_head(buf, head, &mut r, &mut w).map(|()| None)
            };
            match step {
                Ok(None) => {}
                Ok(Some(Pumped::Pending)) => break,
                Ok(Some(event)) => {
                    let consumed = if self.source_closed { buf.len() } else { r };
                    return Processed {
                        out_len: w,
                        consumed,
                        event: Some(event),
                    };
                }
                Err(v) => {
                    if let (Some(start), false) = (frame_w, head.is_control()) {
                        w = start;
                        self.frame = None;
                    }
                    return violation(w, buf.len(), v);
                }
            }
        }
        Processed {
            out_len: w,
            consumed: r,
            event: None,
        }
    }

    /// Handles a whole control frame; `Some(Pending)` when it is not all
    /// here yet.
    fn control(&mut self, buf: &mut [u8], h: Head, r: &mut usize, w: &mut usize) -> Result<Option<Pumped>, Violation> {
        let total = h.header_len + h.len as usize;
        if buf.len() - *r < total {
            return Ok(Some(Pumped::Pending));
        }
        let (hs, ps) = (*r, *r + h.header_len);
        let payload = &mut buf[ps..hs + total];
        if let Some(k) = h.mask {
            frame::apply_mask(payload, k, 0);
        }
        let mut event = None;
        match h.opcode {
            op::CLOSE => {
                let code = frame::check_close(payload)?;
                // Some clients reject 1014 (bad gateway); say 1011 instead.
                if self.dir == Dir::Down && code == Some(close::BAD_GATEWAY) {
                    payload[..2].copy_from_slice(&close::INTERNAL.to_be_bytes());
                }
                self.source_closed = true;
                if self.close_sent {
                    // The gateway already sent this sink its own close (a
                    // drain or an error); a second close frame would break
                    // the sink's close handshake, so this one ends here.
                    *r += total;
                    return Ok(Some(Pumped::Closed));
                }
                self.close_sent = true;
                event = Some(Pumped::Closed);
            }
            op::PONG if self.expect_pong.is_some_and(|p| payload == p) => {
                // The answer to our own keepalive ping, not the upstream's:
                // swallowed.
                self.expect_pong = None;
                *r += total;
                return Ok(None);
            }
            _ => {}
        }
        if self.dir == Dir::Up {
            let key: [u8; 4] = rand::random();
            buf[ps - 4..ps].copy_from_slice(&key);
            frame::apply_mask(&mut buf[ps..hs + total], key, 0);
        }
        keep(buf, w, hs, hs + total);
        *r += total;
        Ok(event)
    }

    /// Starts a data frame: fragmentation and size rules, fresh mask.
    fn data_head(&mut self, buf: &mut [u8], h: Head, r: &mut usize, w: &mut usize) -> Result<(), Violation> {
        match (h.opcode, &self.msg) {
            (op::CONTINUATION, None) | (op::TEXT | op::BINARY, Some(_)) => {
                return Err(Violation::BadFragmentation);
            }
            _ => {}
        }
        let msg = self.msg.get_or_insert(Msg {
            text: h.opcode == op::TEXT,
            bytes: 0,
            utf8: Utf8Stream::default(),
        });
        msg.bytes = msg.bytes.saturating_add(h.len);
        if msg.bytes > self.max_message {
            return Err(Violation::TooLarge);
        }
        let key_out = (self.dir == Dir::Up).then(rand::random::<[u8; 4]>);
        if let Some(k) = key_out {
            buf[*r + h.header_len - 4..*r + h.header_len].copy_from_slice(&k);
        }
        keep(buf, w, *r, *r + h.header_len);
        *r += h.header_len;
        self.frame = Some(InFrame {
            remaining: h.len,
            key_in: h.mask,
            key_out,
            phase: 0,
            fin: h.fin,
            text: msg.text,
        });
        if h.len == 0 {
            self.end_frame()?;
        }
        Ok(())
    }

    /// Streams the available part of the current data frame's payload.
    fn payload(&mut self, buf: &mut [u8], r: &mut usize, w: &mut usize) -> Result<(), Violation> {
        let Some(f) = self.frame.as_mut() else {
            return Ok(());
        };
        let n = (buf.len() - *r).min(usize::try_from(f.remaining).unwrap_or(usize::MAX));
        let chunk = &mut buf[*r..*r + n];
        match (f.text, f.key_in, f.key_out) {
            (false, Some(a), Some(b)) => {
                // Unmask and re-mask in one pass.
                let k = [a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]];
                frame::apply_mask(chunk, k, f.phase);
            }
            (text, key_in, key_out) => {
                if let Some(k) = key_in {
                    frame::apply_mask(chunk, k, f.phase);
                }
                if text && let Some(m) = self.msg.as_mut() {
                    m.utf8.feed(chunk)?;
                }
                if let Some(k) = key_out {
                    frame::apply_mask(chunk, k, f.phase);
                }
            }
        }
        f.phase = (f.phase + n) % 4;
        f.remaining -= n as u64;
        keep(buf, w, *r, *r + n);
        *r += n;
        if f.remaining == 0 {
            self.end_frame()?;
        }
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), Violation> {
        let fin = self.frame.take().is_some_and(|f| f.fin);
        if fin {
            if let Some(mut m) = self.msg.take()
                && m.text
            {
                m.utf8.finish()?;
            }
            self.messages += 1;
        }
        Ok(())
    }
}

fn violation(out_len: usize, consumed: usize, v: Violation) -> Processed {
    Processed {
        out_len,
        consumed,
        event: Some(Pumped::Violation(v)),
    }
}

/// Moves `buf[start..end]` down to the write cursor.
fn keep(buf: &mut [u8], w: &mut usize, start: usize, end: usize) {
    if *w != start {
        buf.copy_within(start..end, *w);
    }
    *w += end - start;
}
