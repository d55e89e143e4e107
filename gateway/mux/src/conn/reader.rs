//! The reader task of a connection: WebSocket messages in, frames applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{OpCode, Payload, WebSocketError, WebSocketRead};
use tokio::io::{AsyncRead, ReadHalf};

use super::{ConnShared, EndReason, Out, Role};
use crate::codec::decode_message;
use crate::frame::{ErrorCode, Frame, MAX_MESSAGE_LEN};
use crate::session::AckDue;

/// A reason to end the connection, with what to tell the peer.
struct Fatal {
    code: ErrorCode,
    message: String,
}

impl Fatal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Runs until the connection ends, then detaches its sessions.
pub(super) async fn run<S, R>(
    mut rd: WebSocketRead<ReadHalf<S>>,
    conn: Arc<ConnShared>,
    role: R,
    idle: Option<Duration>,
) where
    S: AsyncRead + Send + Unpin + 'static,
    R: Role,
{
    let reason = tokio::select! {
        // Cancellation first: an abort must lose what is buffered, as a
        // network failure would. It drops a read in progress, which is
        // fine: the connection is abandoned with it (read_frame is not
        // cancel-safe).
        biased;
        () = conn.cancel.cancelled() => None,
        reason = read_loop(&mut rd, &conn, &role, idle) => Some(reason),
    };
    if let Some(reason) = reason {
        let close_code = match &reason {
            EndReason::Protocol { code, message } => {
                tracing::warn!(conn = conn.id, %code, ?message, "mux connection closed: peer broke the protocol");
                conn.send(Frame::Error {
                    session: 0,
                    code: *code,
                    message: message.clone(),
                });
                Some(code.close_code())
            }
            EndReason::PeerClosed => Some(1000),
            EndReason::PeerError { code, .. } if *code == ErrorCode::GoingAway => Some(1001),
            EndReason::PeerError { .. } => Some(1002),
            EndReason::Io(_) | EndReason::Timeout | EndReason::Aborted => None,
        };
        conn.set_reason(reason);
        match close_code {
            // The writer sends what is queued, the close, then stops.
            Some(code) => {
                let _ = conn.tx.send(Out::Close(code));
            }
            None => conn.cancel.cancel(),
        }
    }
    conn.teardown(&role);
}

async fn read_loop<S, R>(
    rd: &mut WebSocketRead<ReadHalf<S>>,
    conn: &Arc<ConnShared>,
    role: &R,
    idle: Option<Duration>,
) -> EndReason
where
    S: AsyncRead + Send + Unpin + 'static,
    R: Role,
{
    let mut assembler = Assembler::default();
    loop {
        let frame = match read_frame(rd, idle).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return EndReason::Timeout,
            Err(WebSocketError::UnexpectedEOF) => return EndReason::PeerClosed,
            Err(WebSocketError::FrameTooLarge) => {
                return protocol(Fatal::new(ErrorCode::FrameTooLarge, "WebSocket message too large"));
            }
            Err(e) => return EndReason::Io(e.to_string()),
        };
        let message = match frame.opcode {
            OpCode::Close => return EndReason::PeerClosed,
            OpCode::Ping => {
                conn.pong(frame.payload);
                continue;
            }
            OpCode::Pong => continue,
            OpCode::Text => {
                return protocol(Fatal::new(ErrorCode::Protocol, "text WebSocket message"));
            }
            OpCode::Binary | OpCode::Continuation => match assembler.push(frame) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(fatal) => return protocol(fatal),
            },
        };
        if let Err(end) = process(conn, role, message) {
            return end;
        }
    }
}

fn protocol(fatal: Fatal) -> EndReason {
    EndReason::Protocol {
        code: fatal.code,
        message: fatal.message,
    }
}

/// One WebSocket frame as read, its payload owned.
struct WsFrame {
    opcode: OpCode,
    fin: bool,
    payload: Bytes,
}

/// The next WebSocket frame; `None` on idle timeout.
async fn read_frame<S>(
    rd: &mut WebSocketRead<ReadHalf<S>>,
    idle: Option<Duration>,
) -> Result<Option<WsFrame>, WebSocketError>
where
    S: AsyncRead + Send + Unpin + 'static,
{
    // Nothing is ever "obligated" (auto close and pong are off).
    let mut nothing = |_| async { Ok::<(), std::convert::Infallible>(()) };
    let read = rd.read_frame(&mut nothing);
    let frame = match idle {
        Some(limit) => match tokio::time::timeout(limit, read).await {
            Ok(frame) => frame?,
            Err(_) => return Ok(None),
        },
        None => read.await?,
    };
    let payload = match frame.payload {
        Payload::Bytes(b) => b.freeze(),
        other => Bytes::from(Vec::from(other)),
    };
    Ok(Some(WsFrame {
        opcode: frame.opcode,
        fin: frame.fin,
        payload,
    }))
}

/// Joins WebSocket fragments into whole messages, within the size limit.
#[derive(Default)]
struct Assembler {
    partial: Option<BytesMut>,
}

impl Assembler {
    fn push(&mut self, frame: WsFrame) -> Result<Option<Bytes>, Fatal> {
        let WsFrame { opcode, fin, payload } = frame;
        let mut buf = match (opcode, self.partial.take()) {
            (OpCode::Binary, None) if fin => return Ok(Some(payload)),
            (OpCode::Binary, None) => BytesMut::new(),
            (OpCode::Continuation, Some(buf)) => buf,
            _ => {
                return Err(Fatal::new(ErrorCode::Protocol, "bad WebSocket fragment sequence"));
            }
        };
        if buf.len() + payload.len() > MAX_MESSAGE_LEN {
            return Err(Fatal::new(ErrorCode::FrameTooLarge, "WebSocket message too large"));
        }
        buf.extend_from_slice(&payload);
        if fin {
            return Ok(Some(buf.freeze()));
        }
        self.partial = Some(buf);
        Ok(None)
    }
}

/// Applies one message. Sessions it touched get one cumulative ACK each,
/// and an unknown session id one ERROR, however many frames named it.
fn process<R: Role>(conn: &Arc<ConnShared>, role: &R, message: Bytes) -> Result<(), EndReason> {
    let frames = decode_message(message).map_err(|e| protocol(Fatal::new(e.code(), e.to_string())))?;
    let mut acks: HashMap<u64, u64> = HashMap::new();
    let mut soon: HashMap<u64, u64> = HashMap::new();
    let mut unknown: Vec<u64> = Vec::new();
    for frame in frames {
        match frame {
            Frame::Open { .. }
            | Frame::OpenOk { .. }
            | Frame::Resume { .. }
            | Frame::Takeover { .. }
            | Frame::TakeoverOk(_) => {
                role.on_frame(conn, frame)
                    .map_err(|code| protocol(Fatal::new(code, "frame not expected in this direction")))?;
            }
            Frame::Error {
                session: 0,
                code,
                message,
            } => {
                tracing::info!(conn = conn.id, %code, ?message, "mux peer ended the connection");
                return Err(EndReason::PeerError { code, message });
            }
            other => {
                let id = other.session();
                match conn.session(id) {
                    Some(s) => match s.on_frame(conn, other) {
                        Ok(Some(AckDue::Now(seq))) => {
                            acks.insert(id, seq);
                        }
                        Ok(Some(AckDue::Soon(seq))) => {
                            soon.insert(id, seq);
                        }
                        Ok(None) => {}
                        Err(code) => {
                            tracing::debug!(conn = conn.id, session = id, %code, "mux session failed: the peer broke the protocol on it");
                            role.on_violation(code);
                        }
                    },
                    // Never answer an ERROR with an ERROR; a session that
                    // moved to another connection gets leftovers here.
                    None if matches!(other, Frame::Error { .. }) || role.is_known(id) => {}
                    None if unknown.contains(&id) => {}
                    None => {
                        tracing::debug!(conn = conn.id, session = id, "frame for unknown mux session");
                        unknown.push(id);
                        conn.unknown_session(id);
                    }
                }
            }
        }
    }
    if !acks.is_empty() {
        conn.ack(acks);
    }
    if !soon.is_empty() {
        conn.ack_soon(soon);
    }
    Ok(())
}
