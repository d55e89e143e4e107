//! The retry filter's response future: attempt, classify, back off, repeat.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::body::clone_request;
use super::classify::{AttemptOutcome, RetryClassifier};
use super::{ReplayableBody, Shared};
use crate::BoxError;

pin_project! {
    /// Drives one request through its attempts.
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        // The service for further attempts; `None` when the request cannot
        // be retried (its body is not replayable, or one attempt is the max).
        service: Option<S>,
        // A copy of the request for the next attempt.
        spare: Option<Request<B>>,
        // Attempts sent so far.
        attempts: u32,
        shared: Arc<Shared<C>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        Backoff { #[pin] sleep: Sleep },
        Ready,
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    pub(super) fn new(
        future: S::Future,
        service: Option<S>,
        spare: Option<Request<B>>,
        shared: Arc<Shared<C>>,
    ) -> Self {
        Self {
            state: State::Called { future },
            service,
            spare,
            attempts: 1,
            shared,
        }
    }
}

impl<S, B, RB, C> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: ReplayableBody,
    C: RetryClassifier,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let Some(spare) = this.spare.as_ref() else {
                        return Poll::Ready(result);
                    };
                    if !this.shared.may_retry(spare, &result, *this.attempts) {
                        return Poll::Ready(result);
                    }
                    // The failed response (and its body) is dropped here.
                    let delay = this.shared.backoff.delay(*this.attempts - 1);
                    this.state.set(State::Backoff {
                        sleep: tokio::time::sleep(delay),
                    });
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let (Some(service), Some(request)) = (this.service.as_mut(), this.spare.take()) else {
                        return Poll::Ready(Err("retry future polled after completion".into()));
                    };
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    *this.attempts += 1;
                    if *this.attempts < this.shared.max_attempts {
                        *this.spare = clone_request(&request);
                    }
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

impl<C: RetryClassifier> Shared<C> {
    /// Whether attempt number `attempts` (1-based) may be followed by
    /// another: the classifier says so, attempts remain, and the budget
    /// pays. Counts retries and budget exhaustion.
    fn may_retry<B, RB>(&self, request: &Request<B>, result: &Result<Response<RB>, BoxError>, attempts: u32) -> bool {
        let outcome = match result {
            Ok(res) => AttemptOutcome::Response(res.status(), res.headers()),
            Err(e) => AttemptOutcome::Error(&**e),
        };
        if attempts >= self.max_attempts || !self.classifier.should_retry(request, outcome) {
            return false;
        }
        if !self.budget.withdraw() {
            self.metrics.budget_exhausted();
            return false;
        }
        self.metrics.retried();
        true
    }
}
