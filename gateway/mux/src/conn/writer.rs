//! The writer task of a connection: queued frames out, batched.
//!
//! Whatever is queued when the writer wakes goes out together: frames are
//! packed into one binary WebSocket message until it is full, so under
//! load many sessions share one message and one system call.

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame as WsFrame, OpCode, Payload, WebSocketError, WebSocketWrite};
use tokio::io::{AsyncWrite, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use super::{ConnShared, EndReason, Out};
use crate::codec::Batch;
use crate::frame::Frame;
use crate::session::shared::lock;

/// How long the final close may take to write before the transport is
/// dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Writer<S> = WebSocketWrite<WriteHalf<S>>;

/// Runs until the queue closes, a close is written, or the connection is
/// cancelled; a write error ends the connection.
pub(super) async fn run<S>(
    mut wr: Writer<S>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn: Arc<ConnShared>,
    keepalive: Option<Duration>,
) where
    S: AsyncWrite + Send + Unpin + 'static,
{
    let mut ticker = keepalive.map(|period| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let result = tokio::select! {
        // An abort stops writing at once; queued frames are lost (and
        // replayed by their sessions after a resume).
        biased;
        () = conn.cancel.cancelled() => Ok(()),
        r = write_loop(&mut wr, &conn, &mut rx, &mut ticker) => r,
    };
    if let Err(e) = result {
        conn.set_reason(EndReason::Io(e.to_string()));
    }
    conn.cancel.cancel();
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn write_loop<S>(
    wr: &mut Writer<S>,
    conn: &ConnShared,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    ticker: &mut Option<Interval>,
) -> Result<(), WebSocketError>
where
    S: AsyncWrite + Send + Unpin + 'static,
{
    let mut batch = Batch::new();
    // When waiting ACKs must go even if nothing else does. One timer,
    // armed at most once per ACK_DELAY and left to run out even when the
    // ACKs rode along meanwhile: arming a timer wakes the runtime's driver
    // (an eventfd write and one more epoll_wait), and a new timer per
    // batch did that about 1,500 times a second under a 10,000 msg/s echo.
    let ack_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(ack_timer);
    let mut armed = false;
    loop {
        let first = tokio::select! {
            item = rx.recv() => item,
            () = tick(ticker) => {
                wr.write_frame(WsFrame::new(true, OpCode::Ping, None, Payload::Borrowed(b""))).await?;
                wr.flush().await?;
                continue;
            }
            () = conn.ack_timer.notified(), if !armed => {
                ack_timer.as_mut().reset(tokio::time::Instant::now() + super::ACK_DELAY);
                armed = true;
                continue;
            }
            () = &mut ack_timer, if armed => {
                armed = false;
                if !lock(&conn.control).acks_waiting() {
                    continue;
                }
                Some(Out::Control)
            }
        };
        let Some(first) = first else {
            return Ok(());
        };
        let mut closing = stage(wr, &mut batch, conn, first).await?;
        while closing.is_none() {
            match rx.try_recv() {
                Ok(item) => closing = stage(wr, &mut batch, conn, item).await?,
                Err(_) => break,
            }
        }
        // Waiting ACKs ride along with whatever goes out now.
        if !batch.is_empty() {
            let waiting = lock(&conn.control).take_acks();
            for frame in &waiting {
                push(wr, &mut batch, frame).await?;
            }
        }
        write_batch(wr, &mut batch).await?;
        wr.flush().await?;
        if let Some(code) = closing {
            let close = async {
                wr.write_frame(WsFrame::close(code, b"")).await?;
                wr.flush().await
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            return Ok(());
        }
    }
}

/// Adds one queued item to the batch, writing the batch first when the
/// item does not fit or must follow it. Returns a close code to stop with.
async fn stage<S>(
    wr: &mut Writer<S>,
    batch: &mut Batch,
    conn: &ConnShared,
    item: Out,
) -> Result<Option<u16>, WebSocketError>
where
    S: AsyncWrite + Send + Unpin + 'static,
{
    match item {
        Out::Frame(frame) => push(wr, batch, &frame).await?,
        Out::Control => {
            let replies = lock(&conn.control).take();
            for frame in &replies.frames {
                push(wr, batch, frame).await?;
            }
            if let Some(payload) = replies.pong {
                write_batch(wr, batch).await?;
                let pong = WsFrame::pong(Payload::Owned(payload.to_vec()));
                wr.write_frame(pong).await?;
            }
        }
        Out::Close(code) => return Ok(Some(code)),
    }
    Ok(None)
}

/// Adds a frame to the batch, writing the batch first if it is full.
async fn push<S>(wr: &mut Writer<S>, batch: &mut Batch, frame: &Frame) -> Result<(), WebSocketError>
where
    S: AsyncWrite + Send + Unpin + 'static,
{
    if !batch.fits(frame) {
        write_batch(wr, batch).await?;
    }
    if let Err(e) = batch.push(frame) {
        // Sessions only build valid frames; a bug here must not take the
        // connection down with it.
        tracing::error!(error = %e, "dropped an invalid outgoing mux frame");
    }
    Ok(())
}

async fn write_batch<S>(wr: &mut Writer<S>, batch: &mut Batch) -> Result<(), WebSocketError>
where
    S: AsyncWrite + Send + Unpin + 'static,
{
    if batch.is_empty() {
        return Ok(());
    }
    let message = WsFrame::binary(Payload::Bytes(batch.take()));
    wr.write_frame(message).await
}
