//! The load shedder's response future: moves the in-flight slot from the
//! request into the response body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;

use super::{InFlightBody, Overloaded};
use crate::BoxError;

pin_project! {
    /// The inner future, holding the request's slot until the response
    /// arrives (then the body holds it), or an immediate [`Overloaded`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: crate::future::ResponseFuture<F>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner: crate::future::ResponseFuture::inner(future),
            permit: Some(permit),
        }
    }

    pub(super) fn rejected(overloaded: Overloaded) -> Self {
        Self {
            inner: crate::future::ResponseFuture::rejected(overloaded),
            permit: None,
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<InFlightBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        match this.permit.take() {
            Some(permit) => Poll::Ready(Ok(response.map(|body| InFlightBody::new(body, permit)))),
            None => Poll::Ready(Err("response future polled after completion".into())),
        }
    }
}
