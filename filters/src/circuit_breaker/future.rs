//! The circuit breaker's response future: classifies the outcome and
//! reports it through the request's permit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::{CircuitOpen, Outcome, Permit};
use crate::{BoxError, StatusSet};

pin_project! {
    /// The inner future plus the permit its outcome is reported through, or
    /// an immediate [`CircuitOpen`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: crate::future::ResponseFuture<F>,
        permit: Option<Permit>,
        failures: StatusSet,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, permit: Permit, failures: StatusSet) -> Self {
        Self {
            inner: crate::future::ResponseFuture::inner(future),
            permit: Some(permit),
            failures,
        }
    }

    pub(super) fn rejected(open: CircuitOpen) -> Self {
        Self {
            inner: crate::future::ResponseFuture::rejected(open),
            permit: None,
            failures: StatusSet::empty(),
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(permit) = this.permit.take() {
            let outcome = match &result {
                Ok(res) if !this.failures.contains(res.status()) => Outcome::Success,
                _ => Outcome::Failure,
            };
            permit.record(outcome);
        }
        Poll::Ready(result)
    }
}
