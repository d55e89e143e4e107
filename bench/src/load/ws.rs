//! One WebSocket session of a load run: open (connect, TLS, upgrade), then a
//! writer task paced by the plan and a reader that checks every echo for
//! order and content and records latency.
//!
//! fastwebsockets' `read_frame` is not cancel-safe (it consumes a frame
//! header before the payload has arrived), so the reader only ever cancels
//! a read when it abandons the connection or when nothing is in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketRead, WebSocketWrite};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{Notify, Semaphore};

use super::pacer::Pacer;
use super::target::{SessionError, micros};
use super::{ConnLimits, ConnOutcome, Ctx, Pacing, Target, Wire};
use crate::cli::PayloadKind;
use crate::payload::{self, Mismatch, OrderCheck, Stamp};
use crate::report::{ErrorKind, Metric, Recorder, Samples};

/// An open client WebSocket.
pub(crate) type Ws = WebSocket<TokioIo<Upgraded>>;
type Rx = WebSocketRead<ReadHalf<TokioIo<Upgraded>>>;
type Tx = WebSocketWrite<WriteHalf<TokioIo<Upgraded>>>;

/// Opens a WebSocket to `target`, recording connect, TLS, upgrade and
/// total setup time.
pub(crate) async fn open(
    target: &Target,
    headers: &[(http::HeaderName, http::HeaderValue)],
    rec: &Recorder,
    timeout: std::time::Duration,
) -> Result<Ws, SessionError> {
    let start = Instant::now();
    let io = target.connect(rec, timeout).await?;
    let upgrade_start = Instant::now();
    let mut request = http::Request::builder()
        .method("GET")
        .uri(target.path_and_query.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "upgrade")
        .header("sec-websocket-key", fastwebsockets::handshake::generate_key())
        .header("sec-websocket-version", "13");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| SessionError::new(ErrorKind::Handshake, e))?;
    let upgrade = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| SessionError::new(ErrorKind::Handshake, e))?;
        tokio::spawn(async move {
            // Ends when the connection is handed over to the upgrade.
            let _ = conn.with_upgrades().await;
        });
        let mut response = sender
            .send_request(request)
            .await
            .map_err(|e| SessionError::new(ErrorKind::Handshake, e))?;
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(SessionError::new(
                ErrorKind::Handshake,
                format!("upgrade answered {}", response.status()),
            ));
        }
        hyper::upgrade::on(&mut response)
            .await
            .map_err(|e| SessionError::new(ErrorKind::Handshake, e))
    };
    let upgraded = tokio::time::timeout(timeout, upgrade)
        .await
        .map_err(|_| SessionError::new(ErrorKind::Handshake, "upgrade timed out"))??;
    rec.record(Metric::Handshake, micros(upgrade_start.elapsed()));
    rec.record(Metric::Setup, micros(start.elapsed()));
    let mut ws = WebSocket::after_handshake(TokioIo::new(upgraded), Role::Client);
    // The reader answers nothing by itself: pings from an echo target are
    // not expected, and a close is handled explicitly below.
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    Ok(ws)
}

/// The HTTP/2 connections of a `ws-h2` run: each carries up to
/// `--h2-streams` sessions as RFC 8441 extended CONNECT streams; a session
/// that finds them all full (or closed) opens another.
#[derive(Default)]
pub(crate) struct H2Conns {
    conns: tokio::sync::Mutex<Vec<H2Conn>>,
}

struct H2Conn {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    streams: Arc<AtomicU64>,
}

/// A session's place on an HTTP/2 connection, given back on drop.
pub(crate) struct StreamSlot(Arc<AtomicU64>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl H2Conns {
    /// Opens a WebSocket session as a stream: CONNECT with `:protocol
    /// websocket`, answered 200, then WebSocket frames on the stream.
    pub(crate) async fn open(
        &self,
        target: &Target,
        headers: &[(http::HeaderName, http::HeaderValue)],
        rec: &Recorder,
        timeout: std::time::Duration,
        per_conn: usize,
    ) -> Result<(Ws, Option<StreamSlot>), SessionError> {
        let start = Instant::now();
        let (mut send, slot) = self.connection(target, rec, timeout, per_conn as u64).await?;
        let upgrade_start = Instant::now();
        let scheme = if target.tls.is_some() { "https" } else { "http" };
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("{scheme}://{}{}", target.authority, target.path_and_query))
            .header("sec-websocket-version", "13");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| SessionError::new(ErrorKind::Handshake, e))?;
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let upgrade = async {
            let response = send
                .send_request(request)
                .await
                .map_err(|e| SessionError::new(ErrorKind::Handshake, e))?;
            if response.status() != http::StatusCode::OK {
                return Err(SessionError::new(
                    ErrorKind::Handshake,
                    format!("extended CONNECT answered {}", response.status()),
                ));
            }
            hyper::upgrade::on(response)
                .await
                .map_err(|e| SessionError::new(ErrorKind::Handshake, e))
        };
        let upgraded = tokio::time::timeout(timeout, upgrade)
            .await
            .map_err(|_| SessionError::new(ErrorKind::Handshake, "extended CONNECT timed out"))??;
        rec.record(Metric::Handshake, micros(upgrade_start.elapsed()));
        rec.record(Metric::Setup, micros(start.elapsed()));
        let mut ws = WebSocket::after_handshake(TokioIo::new(upgraded), Role::Client);
        ws.set_auto_pong(false);
        ws.set_auto_close(false);
        Ok((ws, Some(slot)))
    }

    /// A connection with a free stream, opened when none has one.
    async fn connection(
        &self,
        target: &Target,
        rec: &Recorder,
        timeout: std::time::Duration,
        per_conn: u64,
    ) -> Result<(hyper::client::conn::http2::SendRequest<Empty<Bytes>>, StreamSlot), SessionError> {
        let mut conns = self.conns.lock().await;
        conns.retain(|c| !c.send.is_closed());
        if let Some(c) = conns.iter().find(|c| c.streams.load(Ordering::Relaxed) < per_conn) {
            c.streams.fetch_add(1, Ordering::Relaxed);
            return Ok((c.send.clone(), StreamSlot(c.streams.clone())));
        }
        let io = target.connect(rec, timeout).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SessionError::new(ErrorKind::Handshake, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let streams = Arc::new(AtomicU64::new(1));
        conns.push(H2Conn {
            send: send.clone(),
            streams: streams.clone(),
        });
        Ok((send, StreamSlot(streams)))
    }
}

/// State shared by the writer task and the reader.
struct Shared {
    /// Sent, not yet answered.
    outstanding: AtomicU64,
    /// Where each message's latency counts from (ns since epoch, see
    /// `latency_origin`), in order; an echo target answers in order.
    sent_at: Mutex<VecDeque<u64>>,
    writer_done: AtomicBool,
    /// Rung when the writer finishes with nothing outstanding.
    idle: Notify,
    /// Closed-loop window.
    window: Semaphore,
}

/// Runs one session until its limits, then closes it with 1000.
pub(crate) async fn run(ctx: &Arc<Ctx>, session: u64, limits: ConnLimits) -> ConnOutcome {
    let plan = &ctx.plan;
    let opened = match plan.wire {
        Wire::WsH2 => {
            ctx.h2
                .open(&plan.target, &plan.headers, &ctx.rec, plan.timeout, plan.h2_streams)
                .await
        }
        _ => open(&plan.target, &plan.headers, &ctx.rec, plan.timeout)
            .await
            .map(|ws| (ws, None)),
    };
    // An HTTP/2 session's stream slot, given back when the session ends.
    let (ws, _stream) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            return ConnOutcome {
                sent: 0,
                error: Some(error),
            };
        }
    };
    Recorder::add(&ctx.rec.sessions_opened, 1);
    Recorder::add(&ctx.rec.sessions_active, 1);
    let (rx, tx) = ws.split(tokio::io::split);
    let window = match plan.pacing {
        Pacing::ClosedLoop { in_flight, .. } => in_flight as usize,
        Pacing::FixedRate { .. } => 0,
    };
    let shared = Arc::new(Shared {
        outstanding: AtomicU64::new(0),
        sent_at: Mutex::new(VecDeque::new()),
        writer_done: AtomicBool::new(false),
        idle: Notify::new(),
        window: Semaphore::new(window),
    });
    let writer = tokio::spawn(write_loop(ctx.clone(), tx, shared.clone(), session, limits));
    let read = read_loop(ctx, rx, &shared, session).await;
    let outcome = match read {
        Ok(()) => match writer.await {
            Ok((mut tx, sent, None)) => {
                let _ = tx.write_frame(Frame::close(1000, b"")).await;
                let _ = tx.flush().await;
                Recorder::add(&ctx.rec.sessions_closed, 1);
                ConnOutcome { sent, error: None }
            }
            Ok((_, sent, Some(error))) => ConnOutcome {
                sent,
                error: Some(error),
            },
            Err(e) => ConnOutcome {
                sent: 0,
                error: Some(SessionError::new(ErrorKind::Protocol, e)),
            },
        },
        Err(error) => {
            // Abandon the connection; the writer may be parked on a full
            // socket or an empty window.
            writer.abort();
            let sent = match writer.await {
                Ok((_, sent, _)) => sent,
                Err(_) => 0,
            };
            let lost = shared.outstanding.load(Ordering::SeqCst);
            Recorder::add(&ctx.rec.unanswered, lost);
            ConnOutcome {
                sent,
                error: Some(error),
            }
        }
    };
    ctx.rec.sessions_active.fetch_sub(1, Ordering::Relaxed);
    outcome
}

async fn write_loop(
    ctx: Arc<Ctx>,
    mut tx: Tx,
    shared: Arc<Shared>,
    session: u64,
    limits: ConnLimits,
) -> (Tx, u64, Option<SessionError>) {
    let plan = &ctx.plan;
    let opcode = match plan.kind {
        PayloadKind::Text => OpCode::Text,
        PayloadKind::Binary => OpCode::Binary,
    };
    let mut buf = Vec::with_capacity(plan.size);
    let mut seq = 0u64;
    let mut error = None;
    let mut pacer = Pacer::new(&ctx, &limits);
    loop {
        // Closed loop: wait for room in the window first.
        if matches!(plan.pacing, Pacing::ClosedLoop { .. }) {
            match shared.window.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        let Some(sent_ns) = pacer.next(&ctx, &limits, seq).await else {
            break;
        };
        payload::encode(plan.kind, plan.size, Stamp { session, seq, sent_ns }, &mut buf);
        if let Ok(mut q) = shared.sent_at.lock() {
            q.push_back(super::latency_origin(sent_ns, ctx.now_ns()));
        }
        shared.outstanding.fetch_add(1, Ordering::SeqCst);
        let len = buf.len() as u64;
        let frame = Frame::new(true, opcode, None, Payload::BorrowedMut(&mut buf));
        let written = match tx.write_frame(frame).await {
            Ok(()) => tx.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            error = Some(SessionError::new(ErrorKind::Io, e));
            break;
        }
        Recorder::add(&ctx.rec.sent, 1);
        Recorder::add(&ctx.rec.bytes_sent, len);
        seq += 1;
    }
    shared.writer_done.store(true, Ordering::SeqCst);
    if shared.outstanding.load(Ordering::SeqCst) == 0 {
        shared.idle.notify_one();
    }
    (tx, seq, error)
}

async fn read_loop(ctx: &Ctx, mut rx: Rx, shared: &Shared, session: u64) -> Result<(), SessionError> {
    let plan = &ctx.plan;
    let mut order = OrderCheck::new(session);
    let mut latency = Samples::new(&ctx.rec, Metric::Latency);
    let mut drain_until: Option<Instant> = None;
    let mut no_send = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
    loop {
        let outstanding = shared.outstanding.load(Ordering::SeqCst);
        if shared.writer_done.load(Ordering::SeqCst) {
            if outstanding == 0 {
                return Ok(());
            }
            drain_until.get_or_insert_with(|| Instant::now() + plan.drain);
        }
        let reply_deadline = (outstanding > 0).then(|| Instant::now() + plan.timeout);
        let deadline = match (drain_until, reply_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let frame = tokio::select! {
            frame = rx.read_frame(&mut no_send) => frame,
            // Only rung with nothing in flight: cancelling the read is safe.
            _ = shared.idle.notified() => continue,
            _ = sleep_until_opt(deadline) => {
                return Err(SessionError::new(ErrorKind::Timeout, format!("{outstanding} replies missing")));
            }
        };
        let frame = frame.map_err(|e| classify(&e))?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => on_echo(ctx, shared, &frame.payload, &mut order, &mut latency),
            OpCode::Close => return on_close(shared, &frame.payload),
            OpCode::Ping | OpCode::Pong => {}
            OpCode::Continuation => {
                return Err(SessionError::new(
                    ErrorKind::Protocol,
                    "fragmented reply (not produced by an echo of single frames)",
                ));
            }
        }
    }
}

/// One echoed message: latency, counts, and the payload check.
fn on_echo(ctx: &Ctx, shared: &Shared, payload: &[u8], order: &mut OrderCheck, latency: &mut Samples<'_>) {
    let now = ctx.now_ns();
    let sent_ns = shared.sent_at.lock().ok().and_then(|mut q| q.pop_front());
    shared.outstanding.fetch_sub(1, Ordering::SeqCst);
    shared.window.add_permits(1);
    Recorder::add(&ctx.rec.received, 1);
    Recorder::add(&ctx.rec.bytes_received, payload.len() as u64);
    if let Some(sent_ns) = sent_ns {
        latency.push(now.saturating_sub(sent_ns) / 1000);
    }
    let plan = &ctx.plan;
    if plan.verify {
        match payload::decode(plan.kind, plan.size, payload).and_then(|stamp| order.check(stamp)) {
            Ok(()) => {}
            Err(Mismatch::Content) => Recorder::add(&ctx.rec.mismatched, 1),
            Err(Mismatch::Order) => Recorder::add(&ctx.rec.out_of_order, 1),
        }
    }
}

/// A close from the peer ends the session: cleanly only with 1000 and
/// nothing outstanding.
fn on_close(shared: &Shared, payload: &[u8]) -> Result<(), SessionError> {
    let code = match payload.get(..2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 1005,
    };
    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
    if code == 1000 && shared.outstanding.load(Ordering::SeqCst) == 0 {
        return Ok(());
    }
    Err(SessionError::new(
        ErrorKind::Closed,
        format!("peer closed with {code} {reason}"),
    ))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn classify(err: &fastwebsockets::WebSocketError) -> SessionError {
    use fastwebsockets::WebSocketError as E;
    let kind = match err {
        E::IoError(_) | E::UnexpectedEOF | E::ConnectionClosed => ErrorKind::Io,
        _ => ErrorKind::Protocol,
    };
    SessionError::new(kind, err)
}
