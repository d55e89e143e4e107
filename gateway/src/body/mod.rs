//! The body type every proxied request and response uses, small
//! constructors for the gateway's own replies, and the request body as
//! the route stack carries it ([`ProxyBody`]: streamed, or kept as it
//! passes so a retry can replay it).

mod replay;

pub use replay::ProxyBody;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors carried through boxed bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body of any origin (agent, upstream, or the gateway itself).
/// Unsync because hyper's bodies need only `Send`.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
