//! A response body that holds the upstream connection's lease until the
//! body has been read to its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::BoxError;
use crate::metrics::LatencyHistogram;
use crate::pool::HttpLease;
use crate::upstream::ActiveGuard;

/// Where to record the time to the first body byte.
pub(crate) struct FirstByte {
    pub(crate) histogram: LatencyHistogram,
    pub(crate) since: tokio::time::Instant,
}

/// Streams an upstream response to the agent frame by frame (no
/// buffering, so SSE events pass as they come) and gives the connection
/// back to the pool when the last frame has passed. A body dropped before
/// its end (agent gone) or failing mid-way marks the connection broken: an
/// HTTP/1.1 connection with an unread response cannot be reused.
pub(crate) struct LeaseBody {
    inner: Incoming,
    lease: Option<HttpLease>,
    _active: Option<ActiveGuard>,
    first_byte: Option<FirstByte>,
}

impl LeaseBody {
    pub(crate) fn new(inner: Incoming, lease: HttpLease, active: Option<ActiveGuard>, first_byte: FirstByte) -> Self {
        Self {
            inner,
            lease: Some(lease),
            _active: active,
            first_byte: Some(first_byte),
        }
    }

    fn finish(&mut self, clean: bool) {
        if let Some(mut lease) = self.lease.take()
            && !clean
        {
            lease.mark_broken();
        }
        self._active = None;
    }
}

impl HttpBody for LeaseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(fb) = this.first_byte.take() {
                    fb.histogram.observe(fb.since.elapsed());
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LeaseBody {
    fn drop(&mut self) {
        // An empty body may never be polled; it still ended cleanly.
        let clean = self.inner.is_end_stream();
        self.finish(clean);
    }
}
