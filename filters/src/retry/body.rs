//! Request bodies that can be sent more than once.

use bytes::Bytes;

/// A request body the retry filter can copy before sending, to send the
/// copy if the first attempt fails.
///
/// The gateway implements this for its body type: a body buffered in full
/// (up to the route's replay limit) clones cheaply; a streaming body that
/// is not (yet) buffered returns `None`, and its request is sent exactly
/// once.
pub trait ReplayableBody: Sized {
    /// A copy of the body as it will be sent, or `None` if it cannot be
    /// replayed.
    fn try_clone(&self) -> Option<Self>;
}

impl ReplayableBody for () {
    fn try_clone(&self) -> Option<Self> {
        Some(())
    }
}

impl ReplayableBody for Bytes {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for String {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D: Clone> ReplayableBody for http_body_util::Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayableBody for http_body_util::Empty<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

/// A copy of `req` (method, URI, version, headers, extensions and body),
/// or `None` if its body cannot be replayed.
pub(super) fn clone_request<B: ReplayableBody>(req: &http::Request<B>) -> Option<http::Request<B>> {
    let body = req.body().try_clone()?;
    let mut clone = http::Request::new(body);
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    *clone.extensions_mut() = req.extensions().clone();
    Some(clone)
}
