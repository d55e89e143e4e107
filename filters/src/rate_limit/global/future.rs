//! The response future of [`super::GlobalRateLimit`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::rate_limit::RateLimited;

/// Waiting for a lease: resolves to the decision.
pub(super) type WaitFuture = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send>>;

pin_project! {
    /// The inner service's future, an immediate rejection, or a short wait
    /// for the first lease of a key before calling the inner service.
    pub struct ResponseFuture<F, S, R> {
        #[pin]
        kind: Kind<F, S, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, S, R> {
        Inner {
            #[pin]
            future: F,
        },
        Rejected {
            error: Option<BoxError>,
        },
        Waiting {
            wait: WaitFuture,
            pending: Option<(S, R)>,
        },
    }
}

impl<F, S, R> ResponseFuture<F, S, R> {
    pub(super) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(super) fn rejected(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Rejected {
                error: Some(error.into()),
            },
        }
    }

    pub(super) fn waiting(wait: WaitFuture, service: S, request: R) -> Self {
        Self {
            kind: Kind::Waiting {
                wait,
                pending: Some((service, request)),
            },
        }
    }
}

impl<F, S, R, T, E> Future for ResponseFuture<F, S, R>
where
    S: Service<R, Future = F>,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let future = match self.as_mut().project().kind.project() {
                KindProj::Inner { future } => return future.poll(cx).map_err(Into::into),
                KindProj::Rejected { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "response future polled after completion".into())));
                }
                KindProj::Waiting { wait, pending } => {
                    let decision = ready!(wait.as_mut().poll(cx));
                    let Some((mut service, request)) = pending.take() else {
                        return Poll::Ready(Err("response future polled after completion".into()));
                    };
                    match decision {
                        Ok(()) => service.call(request),
                        Err(limited) => return Poll::Ready(Err(limited.into())),
                    }
                }
            };
            self.set(Self::inner(future));
        }
    }
}
