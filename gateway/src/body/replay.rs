//! The request body inside a route stack: streamed, and on routes with a
//! retry filter kept as it passes so an attempt can be replayed.
//!
//! Nothing is read before the stack asks for it. A body that may be
//! replayed (its declared size within the retry filter's
//! `max_body_bytes`) shares one buffer between the request and the copies
//! the retry filter makes: the first attempt streams the agent's body to
//! the upstream and keeps each chunk; a later attempt reads the kept
//! chunks, then whatever of the body has not arrived yet. So auth, rate
//! limits, circuits and shedding decide before a byte is read, a slow or
//! unauthenticated client cannot make the gateway wait for its body
//! first, and the first attempt keeps its first-byte latency. Attempts
//! never run at once (the retry filter waits for one to fail before the
//! next), so the shared state is only ever read by one of them.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{Body, BoxError, boxed};

/// A request body on its way upstream.
pub enum ProxyBody {
    /// Streamed through as it arrives, sent once.
    Stream(Body),
    /// Streamed through and kept, so a retry can send it again.
    Replay(Replay),
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stream(_) => f.write_str("Stream"),
            Self::Replay(_) => f.write_str("Replay"),
        }
    }
}

impl ProxyBody {
    /// Wraps the agent's body: replayable when the route retries and the
    /// body is declared to fit in `replay_limit`, else streamed once.
    pub fn new<B>(body: B, replay_limit: Option<usize>) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let fits = |limit: usize| body.size_hint().upper().is_some_and(|u| u <= limit as u64);
        match replay_limit {
            Some(limit) if fits(limit) => Self::Replay(Replay::new(boxed(body))),
            _ => Self::Stream(boxed(body)),
        }
    }

    /// The body in the form the pool's connections send.
    pub fn into_body(self) -> Body {
        match self {
            Self::Stream(b) => b,
            Self::Replay(r) => boxed(r),
        }
    }
}

impl HttpBody for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Stream(b) => Pin::new(b).poll_frame(cx),
            Self::Replay(r) => Pin::new(r).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(b) => b.is_end_stream(),
            Self::Replay(r) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(b) => b.size_hint(),
            Self::Replay(r) => r.size_hint(),
        }
    }
}

impl agentmux_filters::retry::ReplayableBody for ProxyBody {
    fn try_clone(&self) -> Option<Self> {
        match self {
            Self::Stream(_) => None,
            Self::Replay(r) => r.try_clone().map(Self::Replay),
        }
    }
}

/// What the copies of one replayable body share.
struct Shared {
    /// The agent's body, until it has ended.
    source: Option<Body>,
    /// Every data chunk read from it so far.
    kept: Vec<Bytes>,
    /// Trailers, if the body had them.
    trailers: Option<http::HeaderMap>,
    /// The source failed: no copy can be complete.
    failed: bool,
    size_hint: SizeHint,
}

/// One copy of a replayable body (see the module docs).
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
    /// The next kept chunk this copy sends.
    next: usize,
    trailers_sent: bool,
}

impl Replay {
    fn new(source: Body) -> Self {
        let size_hint = source.size_hint();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(source),
                kept: Vec::new(),
                trailers: None,
                failed: false,
                size_hint,
            })),
            next: 0,
            trailers_sent: false,
        }
    }

    /// A copy that sends the whole body again; `None` once the source has
    /// failed.
    fn try_clone(&self) -> Option<Self> {
        let shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (!shared.failed).then(|| Self {
            shared: self.shared.clone(),
            next: 0,
            trailers_sent: false,
        })
    }
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut shared = this.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(chunk) = shared.kept.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        let Some(source) = shared.source.as_mut() else {
            if !this.trailers_sent
                && let Some(t) = shared.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                shared.source = None;
                shared.failed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    shared.kept.push(data.clone());
                    this.next += 1;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(t) = frame.trailers_ref() {
                        shared.trailers = Some(t.clone());
                        this.trailers_sent = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.next >= shared.kept.len()
            && (self.trailers_sent || shared.trailers.is_none())
            && shared.source.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.size_hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn chunks(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_copy_replays_what_the_first_attempt_streamed_then_the_rest() {
        let first = Replay::new(chunks(&["ab", "cd", "ef"]));
        let copy = first.try_clone().unwrap();
        let mut first = first;
        // The first attempt got two chunks, then failed (dropped).
        let a = first.frame().await.unwrap().unwrap().into_data().unwrap();
        let b = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!((&a[..], &b[..]), (&b"ab"[..], &b"cd"[..]));
        drop(first);
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn nothing_is_read_until_asked() {
        let body = Replay::new(chunks(&["ab"]));
        let shared = body.shared.lock().unwrap();
        assert!(shared.kept.is_empty() && shared.source.is_some());
    }

    #[tokio::test]
    async fn a_failed_source_cannot_be_replayed() {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"x"))), Err("cut".into())];
        let mut body = Replay::new(boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        ))));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.try_clone().is_none());
    }
}
