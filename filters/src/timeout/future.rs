//! The request timeout's response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::Elapsed;
use crate::{BoxError, FilterMetrics, TimeoutKind};

pin_project! {
    /// The inner future, raced against the request timeout.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        after: Duration,
        metrics: Arc<dyn FilterMetrics>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, after: Duration, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep(after),
            after,
            metrics,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The inner future first: a response that is ready when the timer
        // fires still wins.
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                this.metrics.timed_out(TimeoutKind::Request);
                Poll::Ready(Err(Elapsed::new(*this.after).into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

pin_project! {
    /// The inner future; its response body gets wrapped in a
    /// [`super::TimeoutBody`].
    #[derive(Debug)]
    pub struct ResponseBodyFuture<F> {
        #[pin]
        inner: F,
        idle: Duration,
        metrics: Arc<dyn FilterMetrics>,
    }
}

impl<F> ResponseBodyFuture<F> {
    pub(super) fn new(inner: F, idle: Duration, metrics: Arc<dyn FilterMetrics>) -> Self {
        Self { inner, idle, metrics }
    }
}

impl<F, RB, E> Future for ResponseBodyFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<super::TimeoutBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx)).map_err(Into::into)?;
        let (idle, metrics) = (*this.idle, this.metrics.clone());
        Poll::Ready(Ok(response.map(|body| super::TimeoutBody::new(body, idle, metrics))))
    }
}
