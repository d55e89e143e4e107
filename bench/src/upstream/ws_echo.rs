//! WebSocket echo of the simulator. Every data frame goes back as it came
//! (fin, opcode, payload), rebuilt with `Frame::new(.., None, ..)`: a frame
//! read on the server side is unmasked but keeps its mask key, and written
//! back as is it would go out masked, which strict clients reject.
//!
//! Without added latency the echo is a plain read/write loop; with latency
//! the halves are split and a queue holds each frame until its due time, so
//! latency does not cap a session's throughput at one message per delay.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use fastwebsockets::upgrade::UpgradeFut;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::Sim;
use super::faults::{Verdict, dropped};

type ServerWs = WebSocket<TokioIo<Upgraded>>;

/// Runs one echo session once the upgrade completes.
pub(crate) async fn session(upgrade: UpgradeFut, sim: Arc<Sim>) {
    let Ok(ws) = upgrade.await else { return };
    echo(ws, sim).await;
}

/// Runs one echo session on an RFC 8441 stream (an extended CONNECT
/// answered 200) once hyper hands it over.
pub(crate) async fn session_on_stream(upgrade: hyper::upgrade::OnUpgrade, sim: Arc<Sim>) {
    let Ok(io) = upgrade.await else { return };
    let mut ws = WebSocket::after_handshake(TokioIo::new(io), fastwebsockets::Role::Server);
    // As the upgrade path sets them (fastwebsockets' `UpgradeFut`).
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    echo(ws, sim).await;
}

async fn echo(ws: ServerWs, sim: Arc<Sim>) {
    if sim.faults.latency.is_zero() {
        echo_inline(ws, &sim).await;
    } else {
        echo_delayed(ws, &sim).await;
    }
}

async fn echo_inline(mut ws: ServerWs, sim: &Sim) {
    let mut kill = sim.kill.clone();
    kill.borrow_and_update();
    loop {
        // Cancelling the read only happens on a drop: the connection is
        // abandoned, so the lost partial frame does not matter.
        let frame = tokio::select! {
            frame = ws.read_frame() => frame,
            _ = dropped(&mut kill) => return,
        };
        let Ok(frame) = frame else { return };
        match frame.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let reply = match sim.faults.roll() {
                    Verdict::Drop => return,
                    Verdict::Error => Frame::close(1011, b"injected error"),
                    Verdict::Pass => {
                        let mut payload = frame.payload;
                        sim.faults.maybe_corrupt(payload.to_mut());
                        Frame::new(frame.fin, frame.opcode, None, payload)
                    }
                };
                let closing = reply.opcode == OpCode::Close;
                if write(&mut ws, reply).await.is_err() || closing {
                    return;
                }
            }
            // auto_close already answered the close; pings got their pong.
            OpCode::Close => return,
            OpCode::Ping | OpCode::Pong => {}
        }
    }
}

async fn write(ws: &mut ServerWs, frame: Frame<'_>) -> Result<(), WebSocketError> {
    ws.write_frame(frame).await?;
    ws.flush().await
}

/// A frame waiting for its due time.
struct Due {
    at: Instant,
    fin: bool,
    opcode: OpCode,
    payload: BytesMut,
}

async fn echo_delayed(ws: ServerWs, sim: &Sim) {
    let (mut rx, mut tx) = ws.split(tokio::io::split);
    rx.set_auto_close(false);
    rx.set_auto_pong(false);
    let (queue, mut due) = mpsc::channel::<Due>(1024);
    let latency = sim.faults.latency;
    let mut kill = sim.kill.clone();
    kill.borrow_and_update();
    let mut no_send = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
    let reader = async move {
        loop {
            let Ok(frame) = rx.read_frame(&mut no_send).await else {
                return;
            };
            let (opcode, fin) = (frame.opcode, frame.fin);
            let mut payload = match frame.payload {
                Payload::Bytes(bytes) => bytes,
                other => BytesMut::from(&other[..]),
            };
            let (opcode, stop) = match opcode {
                OpCode::Ping => (OpCode::Pong, false),
                OpCode::Pong => continue,
                OpCode::Close => (OpCode::Close, true),
                _ => match sim.faults.roll() {
                    Verdict::Drop => return,
                    Verdict::Error => {
                        payload = BytesMut::from(&b"\x03\xf3injected error"[..]);
                        (OpCode::Close, true)
                    }
                    Verdict::Pass => {
                        sim.faults.maybe_corrupt(&mut payload);
                        (opcode, false)
                    }
                },
            };
            if queue
                .send(Due {
                    at: Instant::now() + latency,
                    fin,
                    opcode,
                    payload,
                })
                .await
                .is_err()
                || stop
            {
                return;
            }
        }
    };
    let writer = async move {
        while let Some(item) = due.recv().await {
            tokio::time::sleep_until(item.at.into()).await;
            let frame = Frame::new(item.fin, item.opcode, None, Payload::Bytes(item.payload));
            let failed = match tx.write_frame(frame).await {
                Ok(()) => tx.flush().await.is_err(),
                Err(_) => true,
            };
            if failed || item.opcode == OpCode::Close {
                return;
            }
        }
    };
    // The writer drains the queue after the reader stops (close echoed
    // last); a drop signal abandons both at once.
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = dropped(&mut kill) => {}
    }
}
