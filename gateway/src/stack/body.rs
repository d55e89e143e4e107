//! The request body inside a route stack: buffered (replayable, so the
//! retry filter can send it again) or streaming.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{Body, BoxError, boxed};

/// A request body on its way upstream.
pub(crate) enum ProxyBody {
    /// Read in full before sending (small bodies on routes with retries).
    Full(Option<Bytes>),
    /// Streamed through as it arrives.
    Stream(Body),
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(b) => write!(f, "Full({} bytes)", b.as_ref().map_or(0, Bytes::len)),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl ProxyBody {
    /// Reads the agent's body into memory when it is known to fit in
    /// `limit`; otherwise streams it (and it will not be retried).
    pub(crate) async fn prepare(body: Incoming, limit: Option<usize>) -> Result<Self, BoxError> {
        let fits = |limit: usize| body.size_hint().upper().is_some_and(|u| u <= limit as u64);
        match limit {
            Some(limit) if fits(limit) => Ok(Self::Full(Some(body.collect().await?.to_bytes()))),
            _ => Ok(Self::Stream(boxed(body))),
        }
    }

    /// The body in the form the pool's connections send.
    pub(crate) fn into_body(self) -> Body {
        match self {
            Self::Full(b) => crate::body::full(b.unwrap_or_default()),
            Self::Stream(b) => b,
        }
    }
}

impl HttpBody for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Self::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Self::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(b) => b.size_hint(),
        }
    }
}

impl agentmux_filters::retry::ReplayableBody for ProxyBody {
    fn try_clone(&self) -> Option<Self> {
        match self {
            Self::Full(b) => Some(Self::Full(b.clone())),
            Self::Stream(_) => None,
        }
    }
}
