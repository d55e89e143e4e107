//! A transport wrapper that answers `408 Request Timeout` to an agent that
//! does not finish its first request head in time (slowloris).
//!
//! hyper's own `header_read_timeout` only closes the connection; an agent
//! should learn why. Until the first request reaches the service, this
//! wrapper keeps a deadline; when it passes, it writes a complete 408
//! response straight to the transport (nothing else has been written yet,
//! so the bytes cannot interleave with a response) and then fails the read,
//! which ends the connection. Later requests on a keep-alive connection are
//! covered by hyper's timeout. HTTP/2 connections are left alone: a 408 in
//! HTTP/1 syntax would be garbage to them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

fn response_408() -> Vec<u8> {
    let body = "{\"error\":\"request_timeout\",\"message\":\"request headers not received in time\"}\n";
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

enum Guard {
    /// Waiting for the first request head.
    Armed(Pin<Box<Sleep>>),
    /// Writing the 408, `n` bytes done.
    Answering(Vec<u8>, usize),
    /// A request arrived, or the connection speaks HTTP/2.
    Off,
}

/// See the module docs.
pub(crate) struct HeaderTimeoutIo<T> {
    inner: T,
    guard: Guard,
    first_request: Arc<AtomicBool>,
    /// Bytes seen so far, up to the length of the HTTP/2 preface.
    seen: Vec<u8>,
}

impl<T> HeaderTimeoutIo<T> {
    /// Wraps `inner`; the service sets `first_request` when a request
    /// arrives.
    pub(crate) fn new(inner: T, timeout: Duration, first_request: Arc<AtomicBool>, h2: bool) -> Self {
        let guard = if h2 {
            Guard::Off
        } else {
            Guard::Armed(Box::pin(tokio::time::sleep(timeout)))
        };
        Self {
            inner,
            guard,
            first_request,
            seen: Vec::new(),
        }
    }

    /// The transport, without the guard (after an upgrade, when the first
    /// request is long done).
    pub(crate) fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeaderTimeoutIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.guard, Guard::Armed(_)) && this.first_request.load(Ordering::Relaxed) {
            this.guard = Guard::Off;
        }
        if let Guard::Answering(bytes, done) = &mut this.guard {
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
            if this.seen.len() < H2_PREFACE.len() && matches!(this.guard, Guard::Armed(_)) {
                let new = &buf.filled()[before..];
                let take = (H2_PREFACE.len() - this.seen.len()).min(new.len());
                this.seen.extend_from_slice(&new[..take]);
                if this.seen.len() == H2_PREFACE.len() && this.seen == H2_PREFACE {
                    this.guard = Guard::Off;
                }
            }
            return result;
        }
        if result.is_pending()
            && let Guard::Armed(sleep) = &mut this.guard
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.guard = Guard::Answering(response_408(), 0);
            // Start writing now; the read stays pending until done.
            cx.waker().wake_by_ref();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeaderTimeoutIo<T> {
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
