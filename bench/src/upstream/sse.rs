//! SSE endpoint of the simulator: streams tokens like an LLM API, one
//! `data: <seq> <token>` event per token after a delay, then `data:
//! [DONE]`. `?tokens=N&delay_ms=D` override the defaults per request.
//! Faults: the error roll happens once per request (500 before the stream
//! starts); drop and corruption roll per token (a drop aborts the body,
//! which the client sees as a broken connection).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;

use super::Sim;
use super::faults::{Verdict, dropped};
use super::http::{Body, BoxError, full};
use crate::payload;

/// Starts a token stream for `req`.
pub(crate) async fn respond(req: &Request<Incoming>, sim: Arc<Sim>) -> Response<Body> {
    let (mut tokens, mut delay) = (sim.sse_tokens, sim.sse_delay);
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("tokens", n)) => tokens = n.parse().unwrap_or(tokens),
            Some(("delay_ms", n)) => delay = n.parse().map(Duration::from_millis).unwrap_or(delay),
            _ => {}
        }
    }
    if !sim.faults.latency.is_zero() {
        tokio::time::sleep(sim.faults.latency).await;
    }
    if sim.faults.roll() == Verdict::Error {
        let mut response = Response::new(full("injected error\n"));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(produce(tx, sim, tokens, delay));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Response::new(StreamBody::new(stream).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    response
}

async fn produce(tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>, sim: Arc<Sim>, tokens: u64, delay: Duration) {
    let mut kill = sim.kill.clone();
    kill.borrow_and_update();
    for seq in 0..tokens {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = dropped(&mut kill) => {
                let _ = tx.send(Err("connection dropped".into())).await;
                return;
            }
        }
        if sim.faults.roll() == Verdict::Drop {
            let _ = tx.send(Err("injected drop".into())).await;
            return;
        }
        let mut event = format!("id: {seq}\ndata: {seq} {}\n\n", payload::sse_token(seq)).into_bytes();
        // Corrupt inside the token, not the framing, so the checker sees it.
        let token_start = event.len().saturating_sub(14);
        let token_end = event.len().saturating_sub(2);
        sim.faults.maybe_corrupt(&mut event[token_start..token_end]);
        if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")))).await;
}
