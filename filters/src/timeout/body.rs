//! The idle timeout for streaming response bodies.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::IdleTimeout;
use crate::{BoxError, FilterMetrics, TimeoutKind};

pin_project! {
    /// A response body that fails with [`IdleTimeout`] when no frame arrives
    /// within the idle duration. The clock starts when the body is created
    /// (so the wait for the first byte counts) and restarts on every frame.
    #[derive(Debug)]
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        // Boxed so the body stays `Unpin` when `B` is: callers can poll it
        // without pinning it themselves.
        sleep: Pin<Box<Sleep>>,
        idle: Duration,
        timed_out: bool,
        metrics: Arc<dyn FilterMetrics>,
    }
}

impl<B> TimeoutBody<B> {
    /// Wraps `inner`; must be called inside a Tokio runtime.
    pub fn new(inner: B, idle: Duration, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(idle)),
            idle,
            timed_out: false,
            metrics,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.sleep.as_mut().reset(Instant::now() + *this.idle);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *this.timed_out = true;
                this.metrics.timed_out(TimeoutKind::Idle);
                Poll::Ready(Some(Err(IdleTimeout::new(*this.idle).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
