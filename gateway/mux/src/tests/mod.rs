//! Tests of the server and client over in-memory pipes: sessions, ordering,
//! fragments, credit, close, resume, bad input. `raw` speaks the protocol
//! frame by frame to provoke what a correct client never sends.

mod bad_input;
mod flow;
mod hostile_upstream;
mod raw;
mod resume;
mod takeover;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::mpsc;

use super::*;

/// A server with short timers and no keepalive (tests drive time).
fn server(config: ServerConfig) -> MuxServer {
    MuxServer::new(ServerConfig {
        keepalive: None,
        ..config
    })
}

fn client_config() -> ClientConfig {
    ClientConfig {
        keepalive: None,
        ..ClientConfig::default()
    }
}

/// A client connection to `server` over a fresh pipe, and the server's end.
async fn connect(server: &MuxServer) -> (MuxConnection, MuxClientConnection) {
    connect_via(&MuxClient::new(client_config()), server).await
}

/// As `connect`, for a client whose connections share sessions.
async fn connect_via(client: &MuxClient, server: &MuxServer) -> (MuxConnection, MuxClientConnection) {
    let (a, b) = tokio::io::duplex(64 << 10);
    let srv = server.clone();
    let accept = tokio::spawn(async move { srv.accept(b).await });
    let client = client.connect(a, "upstream.test", "/mux").await.unwrap();
    let conn = accept.await.unwrap().unwrap();
    (conn, client)
}

fn open_request(window: u32) -> Open {
    Open {
        window,
        route: "sessions".into(),
        identity: "agent-7".into(),
        path: "/ws/chat?x=1".into(),
        headers: vec![(
            HeaderName::from_static("x-agent-id"),
            HeaderValue::from_static("agent-7"),
        )],
        subprotocols: vec!["chat.v2".into(), "chat.v1".into()],
    }
}

/// Serves every session of `conn` (and of nothing else) with `app`.
fn serve<F, Fut>(mut conn: MuxConnection, app: F)
where
    F: Fn(MuxSession) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(session) = conn.next_session().await {
            tokio::spawn(app(session));
        }
    });
}

/// Echoes every message back; reports the numbered messages it saw in
/// order (`n` per message, parsed from "…-n").
async fn numbered_echo(mut session: MuxSession, seen: mpsc::UnboundedSender<(u64, u64)>) {
    while let Some(msg) = session.recv().await {
        let n = number(&msg);
        let _ = seen.send((session.id(), n));
        if session.send(msg).await.is_err() {
            return;
        }
    }
    let _ = session.close(1000, "");
}

fn number(msg: &Message) -> u64 {
    let text = std::str::from_utf8(msg.as_bytes()).unwrap();
    text.rsplit('-').next().unwrap().parse().unwrap()
}

fn numbered(i: u64, pad: usize) -> Message {
    Message::Text(format!("{}-{i}", "x".repeat(pad)))
}

/// Waits (bounded) for `cond`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn binary(len: usize, byte: u8) -> Message {
    Message::Binary(Bytes::from(vec![byte; len]))
}
