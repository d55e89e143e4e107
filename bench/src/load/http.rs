//! One HTTP session of a load run: a keep-alive HTTP/1.1 connection sending
//! one request at a time (more concurrency = more sessions), paced by the
//! plan. POST bodies are self-checking payloads; an echo target's response
//! body is checked for order and content. A non-2xx status counts as an
//! `http_status` error and the session goes on; a broken connection ends
//! it and the slot reconnects.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::pacer::Pacer;
use super::target::SessionError;
use super::{ConnLimits, ConnOutcome, Ctx};
use crate::payload::{self, Mismatch, OrderCheck, Stamp};
use crate::report::{ErrorKind, Metric, Recorder, Samples};

/// Connects and performs the (local) HTTP/1 client handshake.
pub(crate) async fn connect(ctx: &Ctx) -> Result<SendRequest<Full<Bytes>>, SessionError> {
    let start = Instant::now();
    let io = ctx.plan.target.connect(&ctx.rec, ctx.plan.timeout).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SessionError::new(ErrorKind::Io, e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    ctx.rec.record(Metric::Setup, super::target::micros(start.elapsed()));
    Ok(sender)
}

/// Runs one HTTP session.
pub(crate) async fn run(ctx: &Arc<Ctx>, session: u64, limits: ConnLimits) -> ConnOutcome {
    let plan = &ctx.plan;
    let mut sender = match connect(ctx).await {
        Ok(s) => s,
        Err(error) => {
            return ConnOutcome {
                sent: 0,
                error: Some(error),
            };
        }
    };
    Recorder::add(&ctx.rec.sessions_opened, 1);
    Recorder::add(&ctx.rec.sessions_active, 1);
    let mut order = OrderCheck::new(session);
    let mut latency = Samples::new(&ctx.rec, Metric::Latency);
    let mut pacer = Pacer::new(ctx, &limits);
    let mut buf = Vec::with_capacity(plan.size);
    let mut seq = 0u64;
    let has_body = plan.method != Method::GET && plan.method != Method::HEAD;
    let mut error = None;
    while let Some(sent_ns) = pacer.next(ctx, &limits, seq).await {
        let origin = super::latency_origin(sent_ns, ctx.now_ns());
        let body = if has_body {
            payload::encode(plan.kind, plan.size, Stamp { session, seq, sent_ns }, &mut buf);
            Bytes::copy_from_slice(&buf)
        } else {
            Bytes::new()
        };
        let result = exchange(ctx, &mut sender, body.clone()).await;
        seq += 1;
        Recorder::add(&ctx.rec.sent, 1);
        Recorder::add(&ctx.rec.bytes_sent, body.len() as u64);
        match result {
            Ok((status, reply)) if status.is_success() => {
                latency.push(ctx.now_ns().saturating_sub(origin) / 1000);
                Recorder::add(&ctx.rec.received, 1);
                Recorder::add(&ctx.rec.bytes_received, reply.len() as u64);
                if plan.verify {
                    match payload::decode(plan.kind, plan.size, &reply).and_then(|s| order.check(s)) {
                        Ok(()) => {}
                        Err(Mismatch::Content) => Recorder::add(&ctx.rec.mismatched, 1),
                        Err(Mismatch::Order) => Recorder::add(&ctx.rec.out_of_order, 1),
                    }
                }
            }
            Ok((status, _)) => {
                // Keep the order check in step: this sequence is consumed.
                order = OrderCheck::resume(session, seq);
                ctx.fail(&SessionError::new(ErrorKind::HttpStatus, format!("status {status}")));
            }
            Err(e) => {
                Recorder::add(&ctx.rec.unanswered, 1);
                error = Some(e);
                break;
            }
        }
    }
    ctx.rec.sessions_active.fetch_sub(1, Ordering::Relaxed);
    if error.is_none() {
        Recorder::add(&ctx.rec.sessions_closed, 1);
    }
    ConnOutcome { sent: seq, error }
}

async fn exchange(
    ctx: &Ctx,
    sender: &mut SendRequest<Full<Bytes>>,
    body: Bytes,
) -> Result<(http::StatusCode, Bytes), SessionError> {
    let plan = &ctx.plan;
    let mut request = http::Request::builder()
        .method(plan.method.clone())
        .uri(plan.target.path_and_query.as_str())
        .header(http::header::HOST, plan.target.authority.as_str());
    if !body.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, "application/octet-stream");
    }
    for (name, value) in &plan.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| SessionError::new(ErrorKind::Protocol, e))?;
    let exchange = async {
        sender.ready().await.map_err(|e| SessionError::new(ErrorKind::Io, e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| SessionError::new(ErrorKind::Io, e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SessionError::new(ErrorKind::Io, e))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(plan.timeout, exchange)
        .await
        .map_err(|_| SessionError::new(ErrorKind::Timeout, "no response within the timeout"))?
}
