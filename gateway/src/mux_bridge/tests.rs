//! The mux relay against a real mux session (library client and server
//! over a pipe) with paused time: keepalive pings to the agent.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::relay::{self, RelayParams};
use crate::error::SessionOutcome;
use crate::mux::{
    ClientConfig, Message, MuxClient, MuxClientConnection, MuxConnection, MuxServer, MuxSession, Open, ServerConfig,
    SessionEnd,
};
use crate::ws::frame::{self, op};

/// A session opened through the library: the gateway's end, the
/// upstream's end, and the connections carrying it (kept alive).
async fn session_pair() -> (MuxSession, MuxSession, MuxClientConnection, MuxConnection) {
    session_pair_with(ServerConfig::default().window).await
}

/// As `session_pair`, the upstream granting `window` bytes of credit.
async fn session_pair_with(window: u32) -> (MuxSession, MuxSession, MuxClientConnection, MuxConnection) {
    let server = MuxServer::new(ServerConfig {
        keepalive: None,
        window,
        ..ServerConfig::default()
    });
    let client = MuxClient::new(ClientConfig {
        keepalive: None,
        ..ClientConfig::default()
    });
    let (a, b) = tokio::io::duplex(64 << 10);
    let srv = server.clone();
    let accept = tokio::spawn(async move { srv.accept(b).await });
    let conn = client.connect(a, "upstream.test", "/mux").await.unwrap();
    let mut upstream = accept.await.unwrap().unwrap();
    let open = Open {
        window: 1 << 16,
        route: "mux".into(),
        path: "/".into(),
        ..Open::default()
    };
    let session = conn.open(1, open).await.unwrap();
    let far = upstream.next_session().await.unwrap();
    (session, far, conn, upstream)
}

/// Runs the relay for `session` with keepalive `every`; returns the
/// agent's end of the pipe and the relay's outcome.
fn relay(session: MuxSession, every: Duration) -> (DuplexStream, tokio::task::JoinHandle<SessionOutcome>) {
    let (relay_end, agent) = tokio::io::duplex(64 << 10);
    let params = RelayParams {
        max_message: 1 << 20,
        keepalive: Some(every),
        skip: None,
        handover: false,
    };
    let metrics = crate::metrics::Metrics::new().route("mux");
    let drain = Arc::new(crate::session::drain::Drain::default()).watch();
    let task = tokio::spawn(relay::run(
        relay_end,
        bytes::Bytes::new(),
        session,
        params,
        None,
        metrics,
        drain,
    ));
    (agent, task)
}

/// The next whole frame the gateway wrote to the agent (opcode, payload),
/// within ten minutes of paused time; `None` at the end of the stream.
async fn next_frame(agent: &mut DuplexStream, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(Duration::from_secs(600), read_frame(agent, buf))
        .await
        .expect("the gateway wrote the agent nothing")
}

async fn read_frame(agent: &mut DuplexStream, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    loop {
        if let Some(h) = frame::parse_head(buf, false).unwrap() {
            let end = h.header_len + h.len as usize;
            if buf.len() >= end {
                let payload = buf[h.header_len..end].to_vec();
                buf.drain(..end);
                return Some((h.opcode, payload));
            }
        }
        let mut chunk = [0u8; 1024];
        let n = agent.read(&mut chunk).await.unwrap();
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut out = Vec::new();
    frame::write_head(&mut out, true, opcode, payload.len(), Some(key));
    let start = out.len();
    out.extend_from_slice(payload);
    frame::apply_mask(&mut out[start..], key, 0);
    out
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_is_pinged_then_closed_and_its_session_released() {
    let (session, mut far, _conn, _upstream) = session_pair().await;
    let every = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    let (mut agent, task) = relay(session, every);

    let mut buf = Vec::new();
    let ping = next_frame(&mut agent, &mut buf).await.unwrap();
    assert_eq!(ping, (op::PING, b"agentmux".to_vec()));
    let pinged_at = started.elapsed();
    assert!(pinged_at >= every && pinged_at < 2 * every, "{pinged_at:?}");
    // The agent never answers (a half-open connection): a second ping,
    // then the close.
    let (opcode, _) = next_frame(&mut agent, &mut buf).await.unwrap();
    assert_eq!(opcode, op::PING);
    let (opcode, payload) = next_frame(&mut agent, &mut buf).await.unwrap();
    assert_eq!(opcode, op::CLOSE);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    let closed_at = started.elapsed();
    assert!(
        closed_at >= pinged_at + 2 * every && closed_at < 4 * every,
        "{closed_at:?}"
    );
    assert_eq!(task.await.unwrap(), SessionOutcome::KeepaliveTimeout);
    // The upstream's session is released, not left open for ever.
    assert_eq!(far.recv().await, None);
    assert!(
        matches!(far.end(), Some(SessionEnd::Closed { code: 1001, .. })),
        "{:?}",
        far.end()
    );
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_answers_pings_is_kept() {
    let (session, mut far, _conn, _upstream) = session_pair().await;
    let every = Duration::from_secs(30);
    let (mut agent, task) = relay(session, every);
    let mut buf = Vec::new();
    for _ in 0..3 {
        let (opcode, payload) = next_frame(&mut agent, &mut buf).await.unwrap();
        assert_eq!(opcode, op::PING);
        agent.write_all(&masked(op::PONG, &payload)).await.unwrap();
    }
    // Five intervals and more have passed (pings at 1, 3 and 5).
    assert!(!task.is_finished(), "{:?}", task.await);
    agent.write_all(&masked(op::TEXT, b"still here")).await.unwrap();
    assert_eq!(far.recv().await, Some(Message::Text("still here".into())));
    drop(agent);
    assert_eq!(task.await.unwrap(), SessionOutcome::AgentGone);
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_talks_is_never_pinged() {
    let (session, mut far, _conn, _upstream) = session_pair().await;
    let every = Duration::from_secs(30);
    let (mut agent, task) = relay(session, every);
    for i in 0..10 {
        tokio::time::sleep(every / 2).await;
        let text = format!("m{i}");
        agent.write_all(&masked(op::TEXT, text.as_bytes())).await.unwrap();
        assert_eq!(far.recv().await, Some(Message::Text(text)));
    }
    // Five intervals passed: nothing came to the agent but its session.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(1), agent.read(&mut byte)).await;
    assert!(read.is_err(), "the agent was sent {read:?}");
    assert!(!task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn an_agent_held_back_by_credit_is_not_judged_silent() {
    // The upstream grants 1000 bytes and does not read: the relay stops
    // reading the agent, whose silence then says nothing about it.
    let (session, mut far, _conn, _upstream) = session_pair_with(1000).await;
    let every = Duration::from_secs(30);
    let (mut agent, task) = relay(session, every);
    agent.write_all(&masked(op::BINARY, &[7u8; 5000])).await.unwrap();
    tokio::time::sleep(5 * every).await;
    assert!(!task.is_finished(), "{:?}", task.await);
    // Reading returns the credit; the message arrives whole.
    assert_eq!(far.recv().await, Some(Message::Binary(vec![7u8; 5000].into())));
}

/// An idle mux session's memory is mostly its task, and the relay's
/// future is most of the task: whatever any await point holds (a write's
/// slices, a limiter's wait, a copy of the route's metrics) is reserved
/// for the session's whole life. It was 3,152 bytes before the writer
/// stopped keeping its slice arrays across the write (`bench/results/mux-idle`).
#[tokio::test]
async fn the_relay_future_stays_small() {
    let (session, _far, _c, _u) = session_pair().await;
    let (relay_end, _agent) = tokio::io::duplex(64);
    let params = RelayParams {
        max_message: 1 << 20,
        keepalive: Some(Duration::from_secs(1)),
        skip: None,
        handover: false,
    };
    let metrics = crate::metrics::Metrics::new().route("mux");
    let drain = Arc::new(crate::session::drain::Drain::default()).watch();
    let fut = relay::run(relay_end, bytes::Bytes::new(), session, params, None, metrics, drain);
    let size = std::mem::size_of_val(&fut);
    assert!(size <= 2_048, "the relay's future is {size} bytes");
}
