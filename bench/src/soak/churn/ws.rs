//! The WebSocket kinds of the churn: clean sessions, abandoned half-open
//! ones and protocol violations, each on the bare client of
//! [`super::super::wire`].

use std::time::Duration;

use super::{Churn, WS_PATH, filler, io_outcome};
use crate::soak::wire::{Ws, encode, op};

/// How long the client waits for the gateway to end the stream after a
/// close handshake.
const EOF_WAIT: Duration = Duration::from_secs(6);

/// Opens a session and echoes one message, so the relay is up and
/// carrying data before the operation does its part.
async fn open_and_echo(churn: &Churn, messages: usize) -> Result<Ws, String> {
    let mut ws = Ws::open(churn.addr, WS_PATH).await?;
    for i in 0..messages {
        let text = rand::random_bool(0.5);
        let payload = filler(rand::random_range(8..512), text);
        let opcode = if text { op::TEXT } else { op::BINARY };
        ws.send(true, opcode, &payload).await.map_err(|e| io_outcome(&e))?;
        match ws.next_data().await {
            Ok(Some(f)) if f.opcode == op::CLOSE => return Err(format!("close {} mid-session", f.close_code())),
            Ok(Some(f)) if f.fin && f.opcode == opcode && f.payload == payload => {}
            Ok(Some(_)) => return Err("echo mismatch".into()),
            Ok(None) => return Err("eof mid-session".into()),
            Err(e) => return Err(io_outcome(&e)),
        }
        if i + 1 < messages {
            tokio::time::sleep(Duration::from_millis(rand::random_range(10..200))).await;
        }
    }
    Ok(ws)
}

/// Waits for the close frame that answers ours or the gateway's own, then
/// for the end of the stream: `close CODE`, or what went wrong instead.
/// After a protocol violation (`answer`) every frame counts (a ping, or
/// the big ping's pong, is not an answer to it) and the gateway's close
/// is echoed, as RFC 6455 §5.5.1 asks.
async fn await_close(ws: &mut Ws, answer: bool) -> String {
    for _ in 0..16 {
        let next = if answer { ws.next().await } else { ws.next_data().await };
        match next {
            Ok(Some(f)) if f.opcode == op::CLOSE => {
                let code = f.close_code();
                if answer {
                    // The gateway may already have let go, so a failure
                    // here is not counted.
                    let _ = ws.send_close(code).await;
                }
                return match tokio::time::timeout(EOF_WAIT, ws.next()).await {
                    Ok(Ok(None) | Err(_)) => format!("close {code}"),
                    Ok(Ok(Some(_))) => format!("close {code}, then data"),
                    Err(_) => format!("close {code}, no eof"),
                };
            }
            // Data still in flight before the close, or a ping: skip it.
            Ok(Some(_)) => {}
            Ok(None) => return "eof, no close".into(),
            Err(e) => return io_outcome(&e),
        }
    }
    "no close".into()
}

/// Open, echo one to five messages, close with 1000.
pub(super) async fn clean(churn: &Churn) -> String {
    let mut ws = match open_and_echo(churn, rand::random_range(1..=5)).await {
        Ok(ws) => ws,
        Err(why) => return why,
    };
    if let Err(e) = ws.send_close(1000).await {
        return io_outcome(&e);
    }
    await_close(&mut ws, false).await
}

/// Open, echo one message, then neither read nor write for the hold time:
/// the gateway should ping, close with 1001 when no pong comes, and cut
/// the connection when the close is not answered either. What it sent
/// meanwhile is read afterwards without answering, and the socket is
/// dropped with a reset (no FIN), as a vanished agent's would be.
pub(super) async fn half_open(churn: &Churn) -> String {
    let mut ws = match open_and_echo(churn, 1).await {
        Ok(ws) => ws,
        Err(why) => return why,
    };
    tokio::time::sleep(churn.hold).await;
    let (pings, close, ended) = ws.drain_unanswered(Duration::from_millis(300)).await;
    let _ = ws.stream.set_zero_linger();
    drop(ws);
    match (close, ended) {
        (Some(code), true) => format!("close {code} + eof"),
        (Some(code), false) => format!("close {code}, still open"),
        (None, true) => "eof, no close".into(),
        (None, false) if pings > 0 => "pinged, still open".into(),
        (None, false) => "nothing, still open".into(),
    }
}

/// Open, echo one message, send one frame that breaks RFC 6455 and wait for
/// the gateway's close; answer it and wait for the end of the stream.
pub(super) async fn violation(churn: &Churn, variant: &str) -> String {
    let mut ws = match open_and_echo(churn, 1).await {
        Ok(ws) => ws,
        Err(why) => return why,
    };
    let mask = Some(rand::random());
    let frame = match variant {
        "unmasked" => encode(true, op::BINARY, None, b"an unmasked client frame"),
        // 0xC3 starts a two-byte sequence; 0x28 cannot continue it.
        "bad_utf8" => encode(true, op::TEXT, mask, &[0xC3, 0x28, 0xA0, 0xA1]),
        "bad_opcode" => encode(true, 0x3, mask, b"reserved opcode"),
        // Control frames carry at most 125 bytes.
        "big_control" => encode(true, op::PING, mask, &[b'p'; 200]),
        _ => encode(true, op::CONTINUATION, mask, b"a continuation of nothing"),
    };
    if let Err(e) = ws.send_raw(&frame).await {
        return io_outcome(&e);
    }
    await_close(&mut ws, true).await
}
