//! One SSE session of a load run: on a keep-alive connection, request a
//! token stream, read it event by event, then request the next (paced by
//! the plan). Latency is the time to the first token; the gaps between
//! tokens go to their own histogram. With checks on, each `data:` line must
//! be `<seq> <token>` with the simulator's token for that sequence, in
//! order from 0, and the stream must end with `data: [DONE]`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

use super::http::connect;
use super::pacer::Pacer;
use super::target::{SessionError, micros};
use super::{ConnLimits, ConnOutcome, Ctx};
use crate::payload;
use crate::report::{ErrorKind, Metric, Recorder, Samples};

/// Runs one SSE session.
pub(crate) async fn run(ctx: &Arc<Ctx>, _session: u64, limits: ConnLimits) -> ConnOutcome {
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
    let mut pacer = Pacer::new(ctx, &limits);
    let mut streams = 0u64;
    let mut error = None;
    while let Some(sent_ns) = pacer.next(ctx, &limits, streams).await {
        streams += 1;
        Recorder::add(&ctx.rec.sent, 1);
        let origin = super::latency_origin(sent_ns, ctx.now_ns());
        match stream(ctx, &mut sender, origin).await {
            Ok(()) => {}
            Err(Fail::Soft(e)) => ctx.fail(&e),
            Err(Fail::Connection(e)) => {
                error = Some(e);
                break;
            }
        }
    }
    ctx.rec.sessions_active.fetch_sub(1, Ordering::Relaxed);
    if error.is_none() {
        Recorder::add(&ctx.rec.sessions_closed, 1);
    }
    ConnOutcome { sent: streams, error }
}

/// A failed stream: `Soft` leaves the connection usable.
enum Fail {
    Soft(SessionError),
    Connection(SessionError),
}

async fn stream(ctx: &Ctx, sender: &mut SendRequest<Full<Bytes>>, sent_ns: u64) -> Result<(), Fail> {
    let plan = &ctx.plan;
    let mut request = http::Request::builder()
        .method("GET")
        .uri(plan.target.path_and_query.as_str())
        .header(http::header::HOST, plan.target.authority.as_str())
        .header(http::header::ACCEPT, "text/event-stream");
    for (name, value) in &plan.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| Fail::Soft(SessionError::new(ErrorKind::Protocol, e)))?;
    let io = |e: hyper::Error| Fail::Connection(SessionError::new(ErrorKind::Io, e));
    let timeout = |what: &str| {
        Fail::Connection(SessionError::new(
            ErrorKind::Timeout,
            format!("no {what} within the timeout"),
        ))
    };
    sender.ready().await.map_err(io)?;
    let response = tokio::time::timeout(plan.timeout, sender.send_request(request))
        .await
        .map_err(|_| timeout("response"))?
        .map_err(io)?;
    if !response.status().is_success() {
        let status = response.status();
        // Drain the body so the connection can be reused.
        let _ = response.into_body().collect().await;
        return Err(Fail::Soft(SessionError::new(
            ErrorKind::HttpStatus,
            format!("status {status}"),
        )));
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    let mut parser = Events {
        next_seq: 0,
        last_token: None,
        first: true,
    };
    let mut latency = Samples::new(&ctx.rec, Metric::Latency);
    let mut gaps = Samples::new(&ctx.rec, Metric::InterToken);
    loop {
        let frame = match tokio::time::timeout(plan.timeout, body.frame()).await {
            Err(_) => return Err(timeout("token")),
            Ok(None) => {
                return Err(Fail::Soft(SessionError::new(
                    ErrorKind::Protocol,
                    "stream ended without [DONE]",
                )));
            }
            Ok(Some(frame)) => frame.map_err(io)?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = find_event_end(&buf) {
            let event = buf.split_to(end.0);
            buf.advance(end.1);
            if parser.event(ctx, &event, sent_ns, &mut latency, &mut gaps) {
                Recorder::add(&ctx.rec.streams_completed, 1);
                // Whatever follows [DONE] in this response is ignored; the
                // body must still be read to the end to reuse the connection.
                while let Some(Ok(_)) = body.frame().await {}
                return Ok(());
            }
        }
    }
}

/// Where the next blank line ends an event: (event length, separator length).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

struct Events {
    next_seq: u64,
    last_token: Option<Instant>,
    first: bool,
}

impl Events {
    /// Handles one event; returns true on `[DONE]`.
    fn event(
        &mut self,
        ctx: &Ctx,
        event: &[u8],
        sent_ns: u64,
        latency: &mut Samples<'_>,
        gaps: &mut Samples<'_>,
    ) -> bool {
        let text = String::from_utf8_lossy(event);
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.strip_prefix(' ').unwrap_or(data);
            if data == "[DONE]" {
                return true;
            }
            let now = Instant::now();
            if self.first {
                latency.push(ctx.now_ns().saturating_sub(sent_ns) / 1000);
                self.first = false;
            }
            if let Some(last) = self.last_token.replace(now) {
                gaps.push(micros(now - last));
            }
            Recorder::add(&ctx.rec.received, 1);
            Recorder::add(&ctx.rec.bytes_received, data.len() as u64);
            if ctx.plan.verify {
                self.check(ctx, data);
            }
        }
        false
    }

    fn check(&mut self, ctx: &Ctx, data: &str) {
        let parsed = data
            .split_once(' ')
            .and_then(|(seq, token)| seq.parse::<u64>().ok().map(|seq| (seq, token)));
        match parsed {
            Some((seq, token)) if token == payload::sse_token(seq) => {
                if seq != self.next_seq {
                    Recorder::add(&ctx.rec.out_of_order, 1);
                }
                self.next_seq = seq + 1;
            }
            _ => {
                Recorder::add(&ctx.rec.mismatched, 1);
                self.next_seq += 1;
            }
        }
    }
}
