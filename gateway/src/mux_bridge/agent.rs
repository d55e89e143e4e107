//! The agent's side of a mux-mode session: a server-role WebSocket that
//! turns the agent's frames into mux chunks and mux chunks back into
//! frames, enforcing RFC 6455 as the websocket mode's relay does.
//!
//! Frames are not reassembled: each frame's payload becomes one or more
//! chunks as it arrives (a large frame is passed on in pieces, so memory
//! per session stays at one read), with the message's FIN on the last.
//! Pieces under 16 KiB are copied out of the read buffer: the session keeps
//! each until the upstream acknowledges it, and a small slice must not keep
//! a whole buffer alive meanwhile.

use std::cell::RefCell;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::close;
use crate::mux::Chunk;
use crate::ws::frame::{self, Utf8Stream, Violation, op};

/// Passing on part of a frame is worth it from this many bytes.
const PIECE: usize = 16 * 1024;

/// Most bytes one read takes from an agent.
const READ_SIZE: usize = 16 * 1024;

thread_local! {
    /// Where agents' bytes land first, one per worker thread.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// What the agent sent.
#[derive(Debug)]
pub(crate) enum AgentEvent {
    /// Part of a message.
    Data(Chunk),
    /// A ping to answer.
    Ping(Bytes),
    /// A close frame: its code and reason, if any.
    Close(Option<(u16, String)>),
}

/// Reads and checks the agent's frames. `next` is cancel-safe: all state
/// lives in the struct and a read only ever appends to the buffer.
pub(crate) struct AgentReader<R> {
    io: R,
    buf: BytesMut,
    max_message: u64,
    /// The data frame being passed on: bytes left, mask and its phase, FIN.
    frame: Option<(u64, [u8; 4], usize, bool)>,
    /// The message being passed on: text?, bytes so far, UTF-8 state.
    msg: Option<(bool, u64, Utf8Stream)>,
    /// Set on every read that brought bytes (a pong, or part of a frame
    /// not passed on yet, counts): the relay's keepalive looks at it.
    heard: Option<Arc<AtomicBool>>,
}

impl<R: AsyncRead + Unpin> AgentReader<R> {
    pub(crate) fn new(io: R, early: &[u8], max_message: usize) -> Self {
        Self {
            io,
            buf: BytesMut::from(early),
            max_message: max_message as u64,
            frame: None,
            msg: None,
            heard: None,
        }
    }

    /// Reports every read that brings bytes in `heard`.
    pub(crate) fn with_heard(mut self, heard: Arc<AtomicBool>) -> Self {
        self.heard = Some(heard);
        self
    }

    /// The next event; `Ok(None)` when the agent closed the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<AgentEvent>, Violation> {
        loop {
            if let Some(ev) = self.parse()? {
                return Ok(Some(ev));
            }
            if self.buf.is_empty() {
                // Everything read was passed on: no memory is kept while
                // the agent is quiet (chunks already handed out keep
                // theirs until they are written).
                self.buf = BytesMut::new();
            }
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// One read into the thread's scratch buffer, appended to `buf`: a
    /// session waiting for its agent holds no read buffer of its own.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let mut rb = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            self.buf.extend_from_slice(rb.filled());
            if let (Some(heard), false) = (&self.heard, rb.filled().is_empty()) {
                heard.store(true, Ordering::Relaxed);
            }
            Poll::Ready(Ok(rb.filled().len()))
        })
    }

    fn parse(&mut self) -> Result<Option<AgentEvent>, Violation> {
        // A loop, not recursion: a buffer full of pongs must not grow the stack.
        loop {
            match self.step()? {
                Step::Event(ev) => return Ok(Some(ev)),
                Step::NeedMore => return Ok(None),
                Step::Again => {}
            }
        }
    }

    fn step(&mut self) -> Result<Step, Violation> {
        if let Some((left, key, phase, fin)) = self.frame {
            let avail = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            // Wait for a worthwhile piece unless the frame ends here.
            if avail == 0 || (avail < PIECE && (avail as u64) < left) {
                return Ok(Step::NeedMore);
            }
            let mut piece = if avail < PIECE {
                // A small piece gets its own allocation: the session keeps
                // it for replay until the upstream acknowledges it (longer
                // across a resume), and a slice would pin the whole read
                // buffer it came in (up to one read and a partial frame).
                let piece = BytesMut::from(&self.buf[..avail]);
                self.buf.advance(avail);
                piece
            } else {
                // A piece this large is at least a quarter of the buffer it
                // shares (which holds under one piece and one read).
                self.buf.split_to(avail)
            };
            frame::apply_mask(&mut piece, key, phase);
            let left = left - avail as u64;
            let last = left == 0;
            let text = self.msg.as_ref().is_some_and(|m| m.0);
            if let Some((true, _, utf8)) = self.msg.as_mut() {
                utf8.feed(&piece)?;
            }
            self.frame = (!last).then_some((left, key, (phase + avail) % 4, fin));
            let end_of_message = last && fin;
            if end_of_message && let Some((true, _, mut utf8)) = self.msg.take() {
                utf8.finish()?;
            }
            if end_of_message {
                self.msg = None;
            }
            return Ok(Step::Event(AgentEvent::Data(Chunk {
                text,
                fin: end_of_message,
                payload: piece.freeze(),
            })));
        }
        let Some(h) = frame::parse_head(&self.buf, true)? else {
            return Ok(Step::NeedMore);
        };
        if h.is_control() {
            let total = h.header_len + h.len as usize;
            if self.buf.len() < total {
                return Ok(Step::NeedMore);
            }
            self.buf.advance(h.header_len);
            let mut payload = self.buf.split_to(h.len as usize);
            if let Some(k) = h.mask {
                frame::apply_mask(&mut payload, k, 0);
            }
            return Ok(match h.opcode {
                op::PING => Step::Event(AgentEvent::Ping(payload.freeze())),
                op::CLOSE => {
                    let code = frame::check_close(&payload)?;
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                    Step::Event(AgentEvent::Close(code.map(|c| (c, reason))))
                }
                // Unsolicited pongs are allowed and mean nothing here.
                _ => Step::Again,
            });
        }
        match (h.opcode, &self.msg) {
            (op::CONTINUATION, None) | (op::TEXT | op::BINARY, Some(_)) => return Err(Violation::BadFragmentation),
            _ => {}
        }
        let msg = self.msg.get_or_insert((h.opcode == op::TEXT, 0, Utf8Stream::default()));
        msg.1 = msg.1.saturating_add(h.len);
        if msg.1 > self.max_message {
            return Err(Violation::TooLarge);
        }
        self.buf.advance(h.header_len);
        let key = h.mask.unwrap_or_default();
        if h.len == 0 {
            // An empty frame still carries the message's FIN.
            let text = msg.0;
            if h.fin {
                if let Some((true, _, mut utf8)) = self.msg.take() {
                    utf8.finish()?;
                }
                self.msg = None;
            }
            return Ok(Step::Event(AgentEvent::Data(Chunk {
                text,
                fin: h.fin,
                payload: Bytes::new(),
            })));
        }
        self.frame = Some((h.len, key, 0, h.fin));
        Ok(Step::Again)
    }
}

enum Step {
    Event(AgentEvent),
    NeedMore,
    Again,
}

/// Writes frames to the agent (as a server: unmasked).
pub(crate) struct AgentWriter<W> {
    io: W,
    in_message: bool,
    out: Vec<u8>,
    pub(crate) closed: bool,
}

impl<W: AsyncWrite + Unpin> AgentWriter<W> {
    pub(crate) fn new(io: W) -> Self {
        Self {
            io,
            in_message: false,
            out: Vec::new(),
            closed: false,
        }
    }

    /// Writes chunks as frames, the first of a message as text or binary,
    /// the rest as continuations: every header and payload in one vectored
    /// write (one system call, not two per frame), then a flush.
    /// At most [`MAX_BATCH`] chunks in all: the caller batches no more.
    ///
    /// The slices are rebuilt on each poll rather than kept across the
    /// await: an array of them (and of header ends) is 640 bytes that
    /// every session's task would reserve for its whole life.
    pub(crate) async fn chunks(&mut self, first: &Chunk, more: &[Chunk]) -> std::io::Result<()> {
        debug_assert!(more.len() < MAX_BATCH, "a batch of {} chunks", more.len() + 1);
        self.out.clear();
        let n = (1 + more.len()).min(MAX_BATCH);
        // Each header is 2 to 10 bytes: one byte per chunk says where it ends.
        let mut heads = [0u8; MAX_BATCH];
        let mut total = 0;
        for (i, c) in std::iter::once(first).chain(more).take(n).enumerate() {
            let opcode = match (self.in_message, c.text) {
                (true, _) => op::CONTINUATION,
                (false, true) => op::TEXT,
                (false, false) => op::BINARY,
            };
            self.in_message = !c.fin;
            let before = self.out.len();
            frame::write_head(&mut self.out, c.fin, opcode, c.payload.len(), None);
            heads[i] = (self.out.len() - before) as u8;
            total += c.payload.len();
        }
        total += self.out.len();
        let (io, out) = (&mut self.io, &self.out);
        let mut written = 0;
        std::future::poll_fn(|cx| {
            while written < total {
                let mut slices = [IoSlice::new(&[]); 2 * MAX_BATCH];
                let (mut k, mut start, mut skip) = (0, 0, written);
                for (i, c) in std::iter::once(first).chain(more).take(n).enumerate() {
                    let head = &out[start..start + heads[i] as usize];
                    start += heads[i] as usize;
                    for part in [head, &c.payload[..]] {
                        if skip >= part.len() {
                            skip -= part.len();
                        } else {
                            slices[k] = IoSlice::new(&part[skip..]);
                            skip = 0;
                            k += 1;
                        }
                    }
                }
                let wrote = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k]))?;
                if wrote == 0 {
                    return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero)));
                }
                written += wrote;
            }
            Poll::Ready(Ok(()))
        })
        .await?;
        self.io.flush().await
    }

    /// Writes one chunk as a frame (see [`chunks`](Self::chunks)).
    #[cfg(test)]
    pub(crate) async fn chunk(&mut self, c: &Chunk) -> std::io::Result<()> {
        self.chunks(c, &[]).await
    }

    /// Writes a control frame.
    pub(crate) async fn control(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        frame::write_control(&mut self.out, opcode, payload, None);
        self.io.write_all(&self.out).await?;
        self.io.flush().await
    }

    /// Sends a close frame (once) and shuts the stream down.
    pub(crate) async fn close(&mut self, code: u16, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        // 1014 is valid but some clients reject it.
        let code = if code == close::BAD_GATEWAY {
            close::INTERNAL
        } else {
            code
        };
        let payload = frame::close_payload(code, reason);
        let _ = self.control(op::CLOSE, &payload).await;
        let _ = self.io.shutdown().await;
    }
}

/// Most chunks [`AgentWriter::chunks`] writes at once.
pub(crate) const MAX_BATCH: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let key = [7, 8, 9, 10];
        frame::write_head(&mut out, fin, opcode, payload.len(), Some(key));
        let start = out.len();
        out.extend_from_slice(payload);
        frame::apply_mask(&mut out[start..], key, 0);
        out
    }

    async fn events(bytes: Vec<u8>) -> Vec<Result<Option<AgentEvent>, Violation>> {
        let mut r = AgentReader::new(&bytes[..], &[], 1 << 20);
        let mut out = Vec::new();
        loop {
            let e = r.next().await;
            let stop = !matches!(e, Ok(Some(_)));
            out.push(e);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn fragments_become_chunks_with_the_message_fin() {
        let mut input = masked(false, op::TEXT, "hé".as_bytes());
        input.extend(masked(true, op::PING, b"p"));
        input.extend(masked(true, op::CONTINUATION, b"llo"));
        let ev = events(input).await;
        let data: Vec<(bool, bool, Vec<u8>)> = ev
            .iter()
            .filter_map(|e| match e {
                Ok(Some(AgentEvent::Data(c))) => Some((c.text, c.fin, c.payload.to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(
            data,
            vec![(true, false, "hé".as_bytes().to_vec()), (true, true, b"llo".to_vec())]
        );
        assert!(
            ev.iter()
                .any(|e| matches!(e, Ok(Some(AgentEvent::Ping(p))) if &p[..] == b"p"))
        );
    }

    #[tokio::test]
    async fn a_small_chunk_does_not_share_the_read_buffer() {
        // One read brings a small frame and the start of a large one: the
        // small one's chunk must not keep the read buffer alive.
        let mut input = masked(true, op::BINARY, b"tiny");
        let big = masked(true, op::BINARY, &[1u8; 64 << 10]);
        input.extend_from_slice(&big[..8 << 10]);
        let mut r = AgentReader::new(&input[..], &[], 1 << 20);
        let Ok(Some(AgentEvent::Data(c))) = r.next().await else {
            panic!("no chunk");
        };
        assert_eq!(&c.payload[..], b"tiny");
        assert!(c.payload.is_unique(), "the chunk shares the reader's buffer");
        assert!(!r.buf.is_empty(), "the large frame's start is still buffered");
    }

    #[tokio::test]
    async fn violations_are_reported() {
        let unmasked = {
            let mut v = Vec::new();
            frame::write_head(&mut v, true, op::BINARY, 1, None);
            v.push(0);
            v
        };
        assert!(matches!(events(unmasked).await[0], Err(Violation::Masking)));
        assert!(matches!(
            events(masked(true, op::TEXT, &[0xFF])).await[0],
            Err(Violation::InvalidUtf8)
        ));
        assert!(matches!(
            events(masked(true, op::CONTINUATION, b"x")).await[0],
            Err(Violation::BadFragmentation)
        ));
    }

    #[tokio::test]
    async fn writer_frames_chunks_as_a_message() {
        let mut out = Vec::new();
        let mut w = AgentWriter::new(&mut out);
        w.chunk(&Chunk {
            text: true,
            fin: false,
            payload: Bytes::from_static(b"ab"),
        })
        .await
        .unwrap();
        w.chunk(&Chunk {
            text: true,
            fin: true,
            payload: Bytes::from_static(b"c"),
        })
        .await
        .unwrap();
        assert_eq!(out, [0x01, 2, b'a', b'b', 0x80, 1, b'c']);
    }

    /// A batch written through a pipe that takes a few bytes at a time
    /// (every write partial, ending inside headers and payloads) arrives
    /// whole and in order.
    #[tokio::test]
    async fn a_batch_survives_partial_writes() {
        let (a, mut b) = tokio::io::duplex(3);
        let chunks: Vec<Chunk> = (0..5u8)
            .map(|i| Chunk {
                text: false,
                fin: i == 4,
                payload: Bytes::from(vec![i; 200 * i as usize]),
            })
            .collect();
        let mut expected = Vec::new();
        let mut w = AgentWriter::new(&mut expected);
        w.chunks(&chunks[0], &chunks[1..]).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got).await.unwrap();
            got
        });
        let mut w = AgentWriter::new(a);
        w.chunks(&chunks[0], &chunks[1..]).await.unwrap();
        drop(w);
        let got = reader.await.unwrap();
        assert_eq!(
            got.len(),
            5 * 2 + 4 * 2 + 200 * 10,
            "five heads, four with a 16-bit length"
        );
        assert_eq!(got, expected);
    }
}
