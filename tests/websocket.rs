//! WebSocket mode end to end: the real binary between tokio-tungstenite
//! agents (an independent implementation) and upstreams that record every
//! frame the gateway sends them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use agentmux_tests::ws::{self, RawFrame, Script, encode, read_close, read_frame};
use agentmux_tests::{Gateway, TLS, eventually};

fn config(endpoint: &str, tls: bool, extra_route: &str, extra_cluster: &str) -> String {
    let cluster = if endpoint == "echo" {
        "kind = \"echo\"".to_owned()
    } else {
        format!("endpoints = [\"{endpoint}\"]")
    };
    format!(
        r#"
[[listeners]]
name = "agents"
listen = "127.0.0.1:0"
{}

[[routes]]
name = "sessions"
match = {{ path_prefix = "/ws" }}
mode = "websocket"
cluster = "up"
{extra_route}

[clusters.up]
{cluster}
{extra_cluster}
"#,
        if tls { TLS } else { "" }
    )
}

async fn next_data(c: &mut tokio_tungstenite::WebSocketStream<Box<dyn ws::Io>>) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

fn close_of(m: Message) -> (u16, String) {
    match m {
        Message::Close(Some(f)) => (u16::from(f.code), f.reason.to_string()),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn text_and_binary_echo_through_tls() {
    let gw = Gateway::start(&config("echo", true, "", ""));
    let (mut c, resp) = ws::connect(gw.addr(), Some(&gw.ca()), "/ws/chat", None).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        c.send(Message::text(format!("hello {i} ✓"))).await.unwrap();
        assert_eq!(next_data(&mut c).await, Message::text(format!("hello {i} ✓")));
        let bin: Vec<u8> = (0..(i * 997)).map(|x| (x % 256) as u8).collect();
        c.send(Message::binary(bin.clone())).await.unwrap();
        assert_eq!(next_data(&mut c).await, Message::binary(bin));
    }
    c.close(None).await.unwrap();
}

#[tokio::test]
async fn fragments_and_interleaved_pings_arrive_in_order_and_unmerged() {
    let (up, log) = ws::spawn_upstream(Script::Echo).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    c.send(Message::Frame(Frame::message("hel", OpCode::Data(Data::Text), false)))
        .await
        .unwrap();
    c.send(Message::Ping("between".into())).await.unwrap();
    c.send(Message::Frame(Frame::message("lo", OpCode::Data(Data::Continue), true)))
        .await
        .unwrap();
    // The echo reassembles on the client side; the pong answers our ping.
    let mut got_pong = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"between");
                got_pong = true;
            }
            Message::Text(t) => {
                assert_eq!(t.as_str(), "hello");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(got_pong);
    let frames = log.lock().unwrap().frames.clone();
    let want = [
        RawFrame {
            fin: false,
            opcode: 1,
            masked: true,
            payload: b"hel".to_vec(),
        },
        RawFrame {
            fin: true,
            opcode: 9,
            masked: true,
            payload: b"between".to_vec(),
        },
        RawFrame {
            fin: true,
            opcode: 0,
            masked: true,
            payload: b"lo".to_vec(),
        },
    ];
    assert_eq!(frames[..3], want);
}

#[tokio::test]
async fn close_codes_and_reasons_pass_both_ways() {
    // Agent closes with an application code.
    let gw = Gateway::start(&config("echo", false, "", ""));
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    c.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "done here".into(),
    })))
    .await
    .unwrap();
    assert_eq!(close_of(next_data(&mut c).await), (4001, "done here".into()));

    // Upstream closes first: the agent sees its code and reason.
    let mut close = encode(true, 1, b"bye soon", None);
    close.extend(encode(
        true,
        8,
        &[&4002u16.to_be_bytes()[..], b"upstream says bye"].concat(),
        None,
    ));
    let (up, _) = ws::spawn_upstream(Script::Send(close)).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    assert_eq!(next_data(&mut c).await, Message::text("bye soon"));
    assert_eq!(close_of(next_data(&mut c).await), (4002, "upstream says bye".into()));
}

#[tokio::test]
async fn invalid_utf8_from_the_agent_closes_with_1007() {
    let (up, log) = ws::spawn_upstream(Script::Echo).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (mut tcp, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(&encode(true, 1, &[0xC3, 0x28], Some([9, 8, 7, 6])))
        .await
        .unwrap();
    assert_eq!(read_close(&mut tcp).await.unwrap().0, 1007);
    // The upstream is told the agent went away.
    let code = eventually(Duration::from_secs(10), || async {
        let frames = log.lock().unwrap().frames.clone();
        frames
            .iter()
            .find(|f| f.opcode == 8)
            .map(|f| u16::from_be_bytes([f.payload[0], f.payload[1]]))
    })
    .await;
    assert_eq!(code, 1001);
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_spare_other_sessions() {
    let gw = Gateway::start(&config("echo", false, "", ""));
    let (mut good, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    // An unmasked frame from a client.
    let (mut tcp, _) = ws::raw_client(gw.addr(), "/ws", "").await;
    tcp.write_all(&encode(true, 2, b"unmasked", None)).await.unwrap();
    assert_eq!(read_close(&mut tcp).await.unwrap().0, 1002);
    // A continuation with nothing to continue.
    let (mut tcp, _) = ws::raw_client(gw.addr(), "/ws", "").await;
    tcp.write_all(&encode(true, 0, b"orphan", Some([1, 2, 3, 4])))
        .await
        .unwrap();
    assert_eq!(read_close(&mut tcp).await.unwrap().0, 1002);
    // The well-behaved session is untouched.
    good.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_data(&mut good).await, Message::text("still here"));
}

#[tokio::test]
async fn upstream_violation_gets_1002_and_the_agent_1011() {
    // A masked frame from a server is a violation.
    let (up, log) = ws::spawn_upstream(Script::Send(encode(true, 1, b"masked", Some([1, 1, 1, 1])))).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    assert_eq!(close_of(next_data(&mut c).await).0, 1011);
    let code = eventually(Duration::from_secs(10), || async {
        let frames = log.lock().unwrap().frames.clone();
        frames
            .iter()
            .find(|f| f.opcode == 8)
            .map(|f| u16::from_be_bytes([f.payload[0], f.payload[1]]))
    })
    .await;
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn subprotocol_is_negotiated_through_and_extensions_are_not_offered() {
    let (up, log) = ws::spawn_upstream(Script::Protocol("chat.v1")).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (tcp, head) = ws::raw_client(
        gw.addr(),
        "/ws?room=1",
        "sec-websocket-protocol: chat.v2, chat.v1\r\nsec-websocket-extensions: permessage-deflate\r\nx-agent: 7\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("sec-websocket-protocol: chat.v1"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("extensions"), "{head}");
    drop(tcp);
    let up_head = log.lock().unwrap().heads[0].to_ascii_lowercase();
    assert!(up_head.starts_with("get /ws?room=1 http/1.1"), "{up_head}");
    assert!(
        up_head.contains("sec-websocket-protocol: chat.v2, chat.v1"),
        "{up_head}"
    );
    assert!(!up_head.contains("sec-websocket-extensions"), "{up_head}");
    assert!(
        up_head.contains("x-agent: 7") && up_head.contains("x-forwarded-for: 127.0.0.1"),
        "{up_head}"
    );

    // An upstream choosing a subprotocol nobody offered is refused: 502.
    let (up, _) = ws::spawn_upstream(Script::Protocol("evil")).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (_, head) = ws::raw_client(gw.addr(), "/ws", "sec-websocket-protocol: chat.v1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
}

#[tokio::test]
async fn bad_upgrades_and_refusals_get_clear_http_answers() {
    let (up, _) = ws::spawn_upstream(Script::Refuse(403)).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (_, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    // Not an upgrade at all.
    let r = agentmux_tests::client::get_plain(gw.addr(), "/ws", &[]).await;
    assert_eq!(r.status, 426);
    // A malformed key.
    let r = agentmux_tests::client::get_plain(
        gw.addr(),
        "/ws",
        &[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "short"),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Sec-WebSocket-Key"), "{}", r.text());
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let gw = Gateway::start(&config("echo", false, "websocket = { max_message_bytes = 1024 }", ""));
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    c.send(Message::binary(vec![1u8; 1000])).await.unwrap();
    assert_eq!(next_data(&mut c).await, Message::binary(vec![1u8; 1000]));
    c.send(Message::binary(vec![1u8; 2000])).await.unwrap();
    assert_eq!(close_of(next_data(&mut c).await).0, 1009);
}

#[tokio::test]
async fn idle_agents_get_keepalive_pings() {
    let gw = Gateway::start(&config(
        "echo",
        false,
        "websocket = { keepalive_interval = \"200ms\" }",
        "",
    ));
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(m, Message::Ping(_)), "{m:?}");
    // tungstenite answers pings while it is polled; the session stays up
    // across several keepalive intervals.
    let until = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(m) = tokio::time::timeout_at(until, c.next()).await {
        assert!(matches!(m, Some(Ok(Message::Ping(_)))), "{m:?}");
    }
    c.send(Message::text("alive")).await.unwrap();
    assert_eq!(next_data(&mut c).await, Message::text("alive"));
}

#[tokio::test]
async fn upstream_dying_mid_session_sends_the_agent_1011() {
    let (up, _) = ws::spawn_upstream(Script::DropAfter(1)).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (mut c, _) = ws::connect(gw.addr(), None, "/ws", None).await.unwrap();
    c.send(Message::text("one")).await.unwrap();
    assert_eq!(next_data(&mut c).await, Message::text("one"));
    let (code, reason) = close_of(next_data(&mut c).await);
    assert_eq!(code, 1011);
    assert!(reason.contains("upstream"), "{reason}");
}

/// A reader that does not read must not make the gateway buffer the
/// upstream's output: the upstream's writes stall at socket-buffer sizes.
#[tokio::test]
async fn slow_reader_backpressures_the_upstream() {
    const TOTAL: u64 = 256 << 20;
    let (up, log) = ws::spawn_upstream(Script::Flood(TOTAL)).await;
    let gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (mut tcp, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"));
    // Wait until the upstream stops making progress.
    let mut last = 0;
    let stalled_at = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = log.lock().unwrap().written.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break now;
        }
        last = now;
    };
    assert!(
        stalled_at < 64 << 20,
        "upstream wrote {stalled_at} bytes to a reader that reads nothing"
    );
    // Reading resumes the flow and every byte arrives intact.
    let pattern = ws::pattern(64 * 1024);
    for _ in 0..(stalled_at / (64 * 1024)) + 8 {
        let f = read_frame(&mut tcp).await.unwrap();
        assert_eq!(f.payload, pattern);
    }
}

#[tokio::test]
async fn a_thousand_concurrent_sessions_through_tls() {
    let gw = Gateway::start(&config("echo", true, "", "[clusters.up.pool]\nmax_connections = 2000"));
    let (addr, ca) = (gw.addr(), gw.ca());
    let mut tasks = Vec::new();
    for s in 0..1000 {
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = ws::connect(addr, Some(&ca), "/ws", None).await.unwrap();
            for m in 0..5 {
                let payload = format!("session {s} message {m}");
                c.send(Message::text(payload.clone())).await.unwrap();
                assert_eq!(next_data(&mut c).await, Message::text(payload));
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    assert_eq!(clients.len(), 1000);
    for mut c in clients {
        c.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_relayed_first() {
    // One worker thread (the current-thread runtime) on purpose: the
    // benchmark configuration.
    let gw = Gateway::start(&format!(
        "[runtime]\nworker_threads = 1\n{}",
        config("echo", false, "", "")
    ));
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    // The request and two frames in one write: hyper reads the frames
    // along with the head, and the gateway must relay them before
    // anything it reads from the socket later.
    let mut bytes = b"GET /ws HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
    bytes.extend(encode(true, 1, b"early one", Some([1, 2, 3, 4])));
    bytes.extend(encode(true, 2, b"early two", Some([5, 6, 7, 8])));
    tcp.write_all(&bytes).await.unwrap();
    let head = ws::read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(&encode(true, 1, b"later", Some([9, 9, 9, 9])))
        .await
        .unwrap();
    for (opcode, payload) in [(1, &b"early one"[..]), (2, b"early two"), (1, b"later")] {
        let f = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut tcp))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((f.opcode, f.masked, &f.payload[..]), (opcode, false, payload));
    }
}

#[tokio::test]
async fn a_draining_gateway_closes_sessions_with_1001() {
    let (up, log) = ws::spawn_upstream(Script::Echo).await;
    let mut gw = Gateway::start(&config(&up.to_string(), false, "", ""));
    let (mut tcp, head) = ws::raw_client(gw.addr(), "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    gw.signal("TERM");
    assert_eq!(read_close(&mut tcp).await.unwrap().0, 1001);
    let code = eventually(Duration::from_secs(10), || async {
        let frames = log.lock().unwrap().frames.clone();
        frames
            .iter()
            .find(|f| f.opcode == 8)
            .map(|f| u16::from_be_bytes([f.payload[0], f.payload[1]]))
    })
    .await;
    assert_eq!(code, 1001);
    // Both sides answer the close, so the drain ends well before its timeout.
    tcp.write_all(&encode(true, 8, &1001u16.to_be_bytes(), Some([1, 2, 3, 4])))
        .await
        .unwrap();
    assert!(gw.wait(Duration::from_secs(20)).is_some());
}
