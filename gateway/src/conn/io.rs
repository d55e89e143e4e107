//! A transport wrapper that puts a deadline on the phases of a connection
//! that hyper leaves open: the first request head (answered `408 Request
//! Timeout`, slowloris), the HTTP/2 preface and first SETTINGS frame, and
//! the head of each later HTTP/1.1 request.
//!
//! hyper's own `header_read_timeout` only closes the connection, starts
//! when the connection goes idle (so it cannot tell an idle keep-alive
//! connection from a slow head) and does nothing for HTTP/2. This wrapper
//! sees every byte the agent sends:
//!
//! - **First HTTP/1.1 head**: until the first request reaches the service
//!   a deadline runs; when it passes, a complete 408 response is written
//!   straight to the transport (nothing else has been written yet, so the
//!   bytes cannot interleave with a response) and the read fails, which
//!   ends the connection.
//! - **HTTP/2** (ALPN `h2`, or the prior-knowledge preface seen on a
//!   plaintext connection): the 24-byte preface and the client's first
//!   SETTINGS frame must arrive within the same deadline, else the read
//!   fails — a client that opens a connection and sends nothing, or only
//!   the preface, cannot hold a connection slot.
//! - **Later HTTP/1.1 heads**: when bytes arrive on a connection with
//!   nothing in flight, the next request head must be complete within the
//!   deadline, else the read fails (no 408 here: hyper may still be
//!   flushing the previous response).
//!
//! Idle time between requests is not this wrapper's business: the
//! listener's idle watchdog ([`super::activity`]) closes connections with
//! nothing in flight for `idle_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::activity::{Activity, Cut};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface and the header of the first frame.
const H2_HEAD: usize = 24 + 9;
/// HTTP/2 frame type SETTINGS.
const SETTINGS: u8 = 0x4;

fn response_408() -> Vec<u8> {
    let body = "{\"error\":\"request_timeout\",\"message\":\"request headers not received in time\"}\n";
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

enum Phase {
    /// HTTP/1.1, waiting for the first request head; `maybe_h2` while
    /// the bytes so far could be the HTTP/2 preface.
    FirstHead { sleep: Pin<Box<Sleep>>, maybe_h2: bool },
    /// HTTP/2: waiting for the preface and the first SETTINGS frame;
    /// `seen` bytes of them so far, the first `H2_HEAD` kept in `head`.
    H2Preface {
        sleep: Pin<Box<Sleep>>,
        head: [u8; H2_HEAD],
        seen: usize,
    },
    /// HTTP/1.1 between requests: the next head, once it starts, must be
    /// complete by the deadline (`None` until a byte arrives).
    NextHead(Option<(Pin<Box<Sleep>>, u64)>),
    /// Writing the 408, `n` bytes done.
    Answering(Vec<u8>, usize),
    /// HTTP/2 under way: nothing to watch here.
    Off,
}

/// See the module docs.
pub(crate) struct DeadlineIo<T> {
    inner: T,
    phase: Phase,
    timeout: Duration,
    activity: Arc<Activity>,
    /// Bytes read so far (saturating; only the first few matter).
    read: usize,
}

impl<T> DeadlineIo<T> {
    /// Wraps `inner`: `h2` when ALPN chose HTTP/2.
    pub(crate) fn new(inner: T, timeout: Duration, activity: Arc<Activity>, h2: bool) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        let phase = if h2 {
            Phase::H2Preface {
                sleep,
                head: [0; H2_HEAD],
                seen: 0,
            }
        } else {
            Phase::FirstHead { sleep, maybe_h2: true }
        };
        Self {
            inner,
            phase,
            timeout,
            activity,
            read: 0,
        }
    }

    /// The transport, without the wrapper (after an upgrade, when the
    /// heads are long done).
    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    /// Moves on as requests arrive and bytes are read.
    fn observe(&mut self, new: &[u8]) {
        let before = self.read;
        self.read = self.read.saturating_add(new.len());
        match &mut self.phase {
            Phase::FirstHead { .. } if self.activity.requests() > 0 => self.phase = Phase::NextHead(None),
            Phase::FirstHead { sleep, maybe_h2 } => {
                // A plaintext agent speaking HTTP/2 with prior knowledge:
                // once its preface is in, the HTTP/2 rules apply.
                if !*maybe_h2 || new.is_empty() {
                    return;
                }
                let at = before.min(H2_PREFACE.len());
                let upto = (H2_PREFACE.len() - at).min(new.len());
                if new[..upto] != H2_PREFACE[at..at + upto] {
                    *maybe_h2 = false;
                    return;
                }
                if self.read >= H2_PREFACE.len() {
                    let mut head = [0; H2_HEAD];
                    head[..H2_PREFACE.len()].copy_from_slice(H2_PREFACE);
                    let rest = &new[upto..];
                    let take = rest.len().min(H2_HEAD - H2_PREFACE.len());
                    head[H2_PREFACE.len()..H2_PREFACE.len() + take].copy_from_slice(&rest[..take]);
                    let deadline = sleep.deadline();
                    self.phase = Phase::H2Preface {
                        sleep: Box::pin(tokio::time::sleep_until(deadline)),
                        head,
                        seen: self.read,
                    };
                    self.h2_progress();
                }
            }
            Phase::H2Preface { head, seen, .. } => {
                let at = (*seen).min(H2_HEAD);
                let take = new.len().min(H2_HEAD - at);
                head[at..at + take].copy_from_slice(&new[..take]);
                *seen = seen.saturating_add(new.len());
                self.h2_progress();
            }
            Phase::NextHead(armed) => {
                let requests = self.activity.requests();
                match armed {
                    Some((_, at)) if requests > *at => *armed = None,
                    None if !new.is_empty() && self.activity.in_flight() == 0 => {
                        let sleep = Box::pin(tokio::time::sleep_until(Instant::now() + self.timeout));
                        *armed = Some((sleep, requests));
                    }
                    _ => {}
                }
            }
            Phase::Answering(..) | Phase::Off => {}
        }
    }

    /// Done watching once the preface and the whole first SETTINGS frame
    /// are in (or the first frame is not SETTINGS: hyper refuses that).
    fn h2_progress(&mut self) {
        if let Phase::H2Preface { head, seen, .. } = &self.phase {
            if *seen < H2_HEAD {
                return;
            }
            let len = usize::from(head[24]) << 16 | usize::from(head[25]) << 8 | usize::from(head[26]);
            if head[27] != SETTINGS || *seen >= H2_HEAD + len {
                self.phase = Phase::Off;
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Phase::Answering(bytes, done) = &mut this.phase {
            while *done < bytes.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*done..]))?;
                if n == 0 {
                    break;
                }
                *done += n;
            }
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request header timeout")));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let new = &buf.filled()[before..];
            this.observe(new);
            return result;
        }
        if result.is_pending() {
            this.observe(&[]);
            let expired = match &mut this.phase {
                Phase::FirstHead { sleep, .. } | Phase::H2Preface { sleep, .. } | Phase::NextHead(Some((sleep, _))) => {
                    sleep.as_mut().poll(cx).is_ready()
                }
                _ => false,
            };
            if expired {
                match this.phase {
                    Phase::FirstHead { .. } => {
                        this.activity.cut(Cut::HeaderTimeout);
                        this.phase = Phase::Answering(response_408(), 0);
                        // Start writing now; the read stays pending until done.
                        cx.waker().wake_by_ref();
                    }
                    _ => {
                        let why = match this.phase {
                            Phase::H2Preface { .. } => Cut::PrefaceTimeout,
                            _ => Cut::HeaderTimeout,
                        };
                        this.activity.cut(why);
                        this.phase = Phase::Off;
                        let e = io::Error::new(io::ErrorKind::TimedOut, "request head or HTTP/2 preface timeout");
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
