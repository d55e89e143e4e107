//! Helpers shared by the filter tests: a body fed from a channel and a few
//! request/response builders.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

use crate::BoxError;

/// A streaming body whose frames come from a channel; it ends when the
/// sender is dropped.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl ChannelBody {
    pub(crate) fn new() -> (mpsc::Sender<Result<Bytes, BoxError>>, Self) {
        let (tx, rx) = mpsc::channel(16);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|item| item.map(|res| res.map(Frame::data)))
    }
}

/// A request with an empty body.
pub(crate) fn request(method: http::Method) -> http::Request<()> {
    let mut req = http::Request::new(());
    *req.method_mut() = method;
    req
}

/// A response with `status` and `body`.
pub(crate) fn response<B>(status: u16, body: B) -> http::Response<B> {
    let mut res = http::Response::new(body);
    *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
    res
}
