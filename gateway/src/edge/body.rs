//! The agent's request body, bounded in size and in time as it streams.
//!
//! A body declared larger than the route's `max_request_body_bytes` is
//! refused before anything runs (413, see [`super::admit_body`]); one that
//! grows past it while streaming fails with [`BodyError::TooLarge`], and
//! one not complete within `request_body_timeout` of its request head with
//! [`BodyError::TimedOut`] — a client that trickles a body cannot hold a
//! connection slot for longer. Nothing is read until a filter or the mode
//! asks for it, so auth, rate limits, circuits and shedding decide first.
//!
//! Failing the stream tells whoever is reading it: the upstream exchange
//! fails with this error in its source chain, and the edge answers the
//! agent 413 or 408 (`crate::error::ProxyError::from_box` finds it).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::config::BodyParams;
pub use crate::error::BodyError;

/// See the module docs.
#[derive(Debug)]
pub struct EdgeBody<B = Incoming> {
    inner: B,
    limits: BodyParams,
    received: u64,
    /// When the body must be complete.
    deadline: Option<Instant>,
    /// Armed on the first read that has to wait: most bodies are empty or
    /// arrive with their head, and never need a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl<B> EdgeBody<B> {
    /// Wraps the agent's body; the deadline counts from now.
    pub fn new(inner: B, limits: BodyParams) -> Self {
        Self {
            inner,
            limits,
            received: 0,
            deadline: limits.timeout.map(|t| Instant::now() + t),
            sleep: None,
            failed: false,
        }
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.failed = true;
        self.sleep = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl<B> HttpBody for EdgeBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<crate::body::BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.limits.max_bytes {
                        let limit = this.limits.max_bytes;
                        return this.fail(BodyError::TooLarge { limit });
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(BodyError::Read(e.into())),
            Poll::Ready(None) => {
                this.sleep = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(deadline) = this.deadline else {
                    return Poll::Pending;
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                ready!(sleep.as_mut().poll(cx));
                let after = this.limits.timeout.unwrap_or_default();
                this.fail(BodyError::TimedOut(after))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use std::time::Duration;

    use http_body_util::BodyExt;
    use http_body_util::StreamBody;
    use tokio::sync::mpsc;

    use super::*;

    type Item = Result<Frame<Bytes>, Infallible>;

    fn body(
        limits: BodyParams,
    ) -> (
        mpsc::Sender<Item>,
        EdgeBody<impl HttpBody<Data = Bytes, Error = Infallible> + Unpin>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Item>(8);
        let chunks = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, EdgeBody::new(StreamBody::new(chunks), limits))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_is_cut_at_its_deadline() {
        let limits = BodyParams {
            max_bytes: 1 << 20,
            timeout: Some(Duration::from_secs(30)),
        };
        let (tx, mut b) = body(limits);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a")))).await.unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let e = b.frame().await.unwrap().unwrap_err();
        assert!(matches!(e, BodyError::TimedOut(_)), "{e:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(b.frame().await.is_none(), "a cut body ends");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_growing_past_the_limit_fails_as_it_passes() {
        let limits = BodyParams {
            max_bytes: 5,
            timeout: None,
        };
        let (tx, mut b) = body(limits);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc")))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"def")))).await.unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        let e = b.frame().await.unwrap().unwrap_err();
        assert!(matches!(e, BodyError::TooLarge { limit: 5 }), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_time_and_size_passes_untouched() {
        let limits = BodyParams {
            max_bytes: 6,
            timeout: Some(Duration::from_secs(1)),
        };
        let (tx, b) = body(limits);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc")))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"def")))).await.unwrap();
        drop(tx);
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abcdef");
    }
}
