//! Sessions open, exchange ordered messages, fragment, wait for credit and
//! close; versions are negotiated.

use super::raw::RawPeer;
use super::*;

#[tokio::test]
async fn sessions_open_and_exchange_ordered_messages() {
    let server = server(ServerConfig::default());
    let (conn, client) = connect(&server).await;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    serve(conn, move |s| numbered_echo(s, seen_tx.clone()));

    let mut tasks = Vec::new();
    for id in 1..=8u64 {
        let session = client.open(id, open_request(64 << 10)).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = session.split();
            let writer = tokio::spawn(async move {
                for i in 0..200 {
                    tx.send(numbered(i, (i % 7) as usize * 100)).await.unwrap();
                }
                tx
            });
            for i in 0..200 {
                assert_eq!(number(&rx.recv().await.unwrap()), i, "session {id}");
            }
            let mut tx = writer.await.unwrap();
            tx.close(1000, "done").unwrap();
            assert_eq!(rx.recv().await, None);
            assert_eq!(
                rx.end(),
                Some(SessionEnd::Closed {
                    code: 1000,
                    reason: String::new()
                })
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The upstream saw every message of every session once, in order.
    let mut next = std::collections::HashMap::new();
    while let Ok((id, n)) = seen_rx.try_recv() {
        let expected = next.entry(id).or_insert(0u64);
        assert_eq!(n, *expected);
        *expected += 1;
    }
    assert_eq!(next.len(), 8);
    assert!(next.values().all(|n| *n == 200));
    eventually("sessions forgotten", || server.stats().sessions == 0).await;
    assert_eq!(client.session_count(), 0);
}

#[tokio::test]
async fn open_carries_route_identity_headers_and_subprotocol() {
    let server = server(ServerConfig {
        subprotocols: Some(vec!["chat.v1".into()]),
        ..ServerConfig::default()
    });
    let (mut conn, client) = connect(&server).await;
    let opening = tokio::spawn(async move { client.open(5, open_request(1000)).await.unwrap() });
    let upstream = conn.next_session().await.unwrap();
    let agent = opening.await.unwrap();
    let open = upstream.open_request();
    assert_eq!((open.route.as_str(), open.identity.as_str()), ("sessions", "agent-7"));
    assert_eq!(open.path, "/ws/chat?x=1");
    assert_eq!(open.header_map()["x-agent-id"], "agent-7");
    assert_eq!(open.subprotocols, ["chat.v2", "chat.v1"]);
    // The server prefers what it speaks, not the agent's first choice.
    assert_eq!(upstream.subprotocol().as_deref(), Some("chat.v1"));
    assert_eq!(agent.subprotocol().as_deref(), Some("chat.v1"));
    assert_eq!(upstream.id(), 5);
}

#[tokio::test]
async fn fragments_are_reassembled_and_large_messages_split() {
    let server = server(ServerConfig::default());
    let (mut conn, client) = connect(&server).await;
    let opening = tokio::spawn(async move { client.open(1, open_request(8 << 20)).await.unwrap() });
    let mut upstream = conn.next_session().await.unwrap();
    let mut agent = opening.await.unwrap();

    // The agent relays three fragments; the upstream gets one message.
    for (i, part) in ["hel", "lo ", "world"].iter().enumerate() {
        let chunk = Chunk {
            text: true,
            fin: i == 2,
            payload: Bytes::from_static(part.as_bytes()),
        };
        agent.send_chunk(chunk).await.unwrap();
    }
    assert_eq!(upstream.recv().await, Some(Message::Text("hello world".into())));

    // A 3.5 MiB message goes as frames of at most 1 MiB; a relay sees them
    // one by one, the last with fin.
    let big = Bytes::from((0..(7 << 19)).map(|i| i as u8).collect::<Vec<u8>>());
    // Received concurrently: the gateway acknowledges what it takes, so
    // the upstream's replay bound (1 MiB) makes the send wait for it.
    let receiving = async {
        let mut got = Vec::new();
        loop {
            let chunk = agent.recv_chunk().await.unwrap();
            assert!(!chunk.text && chunk.payload.len() <= MAX_FRAME_PAYLOAD);
            got.extend_from_slice(&chunk.payload);
            if chunk.fin {
                return got;
            }
        }
    };
    let (sent, got) = tokio::join!(upstream.send(Message::Binary(big.clone())), receiving);
    sent.unwrap();
    assert_eq!(Bytes::from(got), big);
    // Mixing text and binary within one message is refused locally.
    let text = Chunk {
        text: true,
        fin: false,
        payload: Bytes::from_static(b"a"),
    };
    agent.send_chunk(text).await.unwrap();
    let bin = Chunk {
        text: false,
        fin: true,
        payload: Bytes::from_static(b"b"),
    };
    assert!(matches!(
        agent.send_chunk(bin).await,
        Err(SessionError::InvalidInput(_))
    ));
}

#[tokio::test]
async fn window_stops_a_sender_and_reopens_without_stalling_others() {
    let server = server(ServerConfig {
        window: 1000,
        ..ServerConfig::default()
    });
    let (mut conn, client) = connect(&server).await;
    let c = client.clone();
    let opening = tokio::spawn(async move {
        let slow = c.open(1, open_request(1000)).await.unwrap();
        let fast = c.open(2, open_request(1000)).await.unwrap();
        (slow, fast)
    });
    let mut slow_up = conn.next_session().await.unwrap();
    let fast_up = conn.next_session().await.unwrap();
    let (slow, mut fast) = opening.await.unwrap();
    tokio::spawn(numbered_echo(fast_up, mpsc::unbounded_channel().0));

    // The slow upstream reads nothing: 1000 bytes of credit, then a wait.
    let (mut slow_tx, _slow_rx) = slow.split();
    for _ in 0..3 {
        slow_tx.send(binary(300, 1)).await.unwrap();
    }
    let pending = tokio::spawn(async move {
        slow_tx.send(binary(300, 2)).await.unwrap();
        slow_tx
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "sender ran past the window");

    // Meanwhile the other session on the same connection flows freely.
    for i in 0..50 {
        fast.send(numbered(i, 500)).await.unwrap();
        assert_eq!(number(&fast.recv().await.unwrap()), i);
    }
    assert!(!pending.is_finished());

    // Reading returns credit: the blocked send completes, its message
    // whole (100 bytes went before the wait, 200 after).
    for _ in 0..3 {
        assert_eq!(slow_up.recv().await, Some(binary(300, 1)));
    }
    let mut slow_tx = pending.await.unwrap();
    assert_eq!(slow_up.recv().await, Some(binary(300, 2)));
    slow_tx.send(binary(300, 3)).await.unwrap();
    assert_eq!(slow_up.recv().await, Some(binary(300, 3)));
}

#[tokio::test]
async fn empty_messages_to_a_slow_reader_wait_instead_of_failing_the_session() {
    // Empty messages cost no credit: the frame bounds alone hold the
    // sender back, and a sender within them never trips the receiver's.
    let server = server(ServerConfig::default());
    let (mut conn, client) = connect(&server).await;
    let mut session = client.open(1, open_request(1000)).await.unwrap();
    let mut reader = conn.next_session().await.unwrap();
    let n = MAX_HELD_FRAMES + MAX_UNACKED_FRAMES;
    let sending = tokio::spawn(async move {
        for _ in 0..n {
            session.send(Message::Binary(Bytes::new())).await?;
        }
        Ok::<_, SessionError>(session)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sending.is_finished(), "the sender never waited");
    for i in 0..n {
        assert_eq!(reader.recv().await, Some(Message::Binary(Bytes::new())), "message {i}");
    }
    let session = sending.await.unwrap().unwrap();
    assert_eq!(reader.end(), None);
    assert_eq!(session.end(), None);
    assert_eq!(server.stats().violations, 0);
}

#[tokio::test]
async fn close_from_either_side_and_drop_closes_with_1001() {
    let server = server(ServerConfig::default());
    let (mut conn, client) = connect(&server).await;
    let c = client.clone();
    let opening = tokio::spawn(async move {
        (
            c.open(1, open_request(1000)).await.unwrap(),
            c.open(2, open_request(1000)).await.unwrap(),
        )
    });
    let mut up1 = conn.next_session().await.unwrap();
    let up2 = conn.next_session().await.unwrap();
    let (mut a1, mut a2) = opening.await.unwrap();

    // The upstream closes first; the agent sees the code and answers.
    up1.close(4001, "policy").unwrap();
    assert_eq!(a1.recv().await, None);
    assert_eq!(
        a1.end(),
        Some(SessionEnd::Closed {
            code: 4001,
            reason: "policy".into()
        })
    );
    assert_eq!(
        a1.send(binary(1, 0)).await.ok(),
        Some(()),
        "sending after the peer's close is allowed"
    );
    a1.close(1000, "").unwrap();
    assert_eq!(a1.send(binary(1, 0)).await, Err(SessionError::Closed));
    assert_eq!(up1.recv().await, Some(binary(1, 0)));
    assert_eq!(up1.recv().await, None);

    // Dropping an upstream session closes it with 1001.
    drop(up2);
    assert_eq!(a2.recv().await, None);
    assert_eq!(
        a2.end(),
        Some(SessionEnd::Closed {
            code: 1001,
            reason: String::new()
        })
    );
    drop(a2);
    assert!(matches!(up1.close(1006, ""), Err(SessionError::InvalidInput(_))));
    eventually("registry empty", || server.stats().sessions == 0).await;
}

#[tokio::test]
async fn version_is_negotiated_by_subprotocol() {
    let server = server(ServerConfig::default());
    let (peer, conn) = RawPeer::try_connect(&server, "agentmux.v2").await;
    assert!(peer.is_err(), "a client offering only v2 must be refused");
    assert!(matches!(
        conn,
        Err(server::AcceptError::Refused(server::UpgradeRefused::Version { .. }))
    ));
    // Offering v2 and v1 selects v1.
    let (peer, conn) = RawPeer::try_connect(&server, "agentmux.v2, agentmux.v1").await;
    assert!(peer.is_ok() && conn.is_ok());

    // A client refuses a WebSocket upstream that does not select agentmux.v1.
    let (a, b) = tokio::io::duplex(4096);
    tokio::spawn(plain_websocket_server(b));
    let err = MuxClient::new(client_config())
        .connect(a, "plain", "/ws")
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Version { selected: None }), "{err}");
}

/// A WebSocket server that ignores subprotocols.
async fn plain_websocket_server(io: tokio::io::DuplexStream) {
    let service = hyper::service::service_fn(|mut req: http::Request<hyper::body::Incoming>| async move {
        let (resp, _upgrade) = fastwebsockets::upgrade::upgrade(&mut req).unwrap();
        Ok::<_, std::convert::Infallible>(resp)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades()
        .await;
}

#[tokio::test]
async fn too_many_sessions_are_refused_per_connection() {
    let server = server(ServerConfig {
        max_sessions_per_connection: 2,
        ..ServerConfig::default()
    });
    let (conn, client) = connect(&server).await;
    serve(conn, |s| numbered_echo(s, mpsc::unbounded_channel().0));
    let _a = client.open(1, open_request(100)).await.unwrap();
    let _b = client.open(2, open_request(100)).await.unwrap();
    let err = client.open(3, open_request(100)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            OpenError::Failed(SessionError::Peer {
                code: ErrorCode::TooManySessions,
                ..
            })
        ),
        "{err}"
    );
    // Another connection takes it.
    let (conn2, client2) = connect(&server).await;
    serve(conn2, |s| numbered_echo(s, mpsc::unbounded_channel().0));
    let mut c = client2.open(3, open_request(100)).await.unwrap();
    c.send(numbered(9, 0)).await.unwrap();
    assert_eq!(number(&c.recv().await.unwrap()), 9);
}

/// Payload bytes of session `id` in DATA frames until `want` arrived.
async fn data_bytes(peer: &mut RawPeer, id: u64, want: usize) -> usize {
    let mut got = 0;
    while got < want {
        if let Frame::Data { session, payload, .. } = peer.expect(|f| matches!(f, Frame::Data { .. })).await {
            assert_eq!(session, id, "only session {id} has anything to send");
            got += payload.len();
        }
    }
    got
}

#[tokio::test]
async fn a_total_replay_budget_is_shared_and_freed_by_any_sessions_ack() {
    let budget = ReplayBudget::new(150);
    let server = server(ServerConfig {
        replay_budget: Some(budget.clone()),
        ..ServerConfig::default()
    });
    let (mut peer, mut conn) = RawPeer::connect(&server).await;
    peer.open(1, 1 << 20).await;
    peer.open(2, 1 << 20).await;
    let mut a = conn.next_session().await.unwrap();
    let mut b = conn.next_session().await.unwrap();

    // Session 1 keeps 100 unacknowledged bytes; session 2, well within its
    // own bound and credit, gets only the 50 left in the total.
    a.send(binary(100, b'a')).await.unwrap();
    assert_eq!(data_bytes(&mut peer, 1, 100).await, 100);
    let sender = tokio::spawn(async move { b.send(binary(100, b'b')).await.map(|()| b) });
    assert_eq!(data_bytes(&mut peer, 2, 50).await, 50);
    assert_eq!(budget.used(), 150);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!sender.is_finished(), "session 2 must wait for budget");

    // An ACK on the other session frees the budget and wakes it.
    peer.send(&[Frame::Ack { session: 1, seq: 1 }]).await;
    assert_eq!(data_bytes(&mut peer, 2, 50).await, 50);
    let b = sender.await.unwrap().unwrap();
    assert_eq!(budget.used(), 100);
    peer.send(&[Frame::Ack { session: 2, seq: 2 }]).await;
    eventually("session 2 acknowledged", || budget.used() == 0).await;
    // A session that fails gives its unacknowledged bytes back too: it
    // will never be replayed.
    a.send(binary(30, b'c')).await.unwrap();
    assert_eq!(budget.used(), 30);
    peer.send(&[Frame::Error {
        session: 1,
        code: ErrorCode::Internal,
        message: String::new(),
    }])
    .await;
    eventually("the failed session's bytes freed", || budget.used() == 0).await;
    drop(b);
}

/// New DATA is acknowledged with the next frames written, or on its own
/// within `ACK_DELAY` when nothing else goes out, also while the one
/// timer the writer keeps is already running from an earlier ACK.
#[tokio::test(start_paused = true)]
async fn acks_ride_along_or_go_within_the_ack_delay() {
    use super::raw::data;
    use crate::conn::ACK_DELAY;
    use tokio::time::Instant;

    let server = server(ServerConfig::default());
    let (mut peer, mut conn) = RawPeer::connect(&server).await;
    peer.open(1, 1 << 20).await;
    let mut session = conn.next_session().await.unwrap();
    let acked = |seq: u64| move |f: &Frame| matches!(f, Frame::Ack { session: 1, seq: s } if *s == seq);

    // Nothing else to send: the ACK goes on its own, after the delay.
    let sent = Instant::now();
    peer.send(&[data(1, 1, b"a")]).await;
    peer.expect(acked(1)).await;
    let waited = sent.elapsed();
    assert!(waited > Duration::ZERO && waited <= ACK_DELAY, "waited {waited:?}");
    assert_eq!(session.recv().await.unwrap().as_bytes(), b"a");

    // The session answers at once: the ACK rides along, no waiting.
    let sent = Instant::now();
    peer.send(&[data(1, 2, b"b")]).await;
    assert_eq!(session.recv().await.unwrap().as_bytes(), b"b");
    session.send(Message::Binary(Bytes::from_static(b"B"))).await.unwrap();
    peer.expect(acked(2)).await;
    assert_eq!(sent.elapsed(), Duration::ZERO);

    // The timer armed for ACK 2 still runs; ACK 3 is owed part way
    // through it and goes when it runs out, sooner than a delay of its own.
    tokio::time::sleep(ACK_DELAY / 2).await;
    let sent = Instant::now();
    peer.send(&[data(1, 3, b"c")]).await;
    peer.expect(acked(3)).await;
    let waited = sent.elapsed();
    assert!(waited > Duration::ZERO && waited < ACK_DELAY, "waited {waited:?}");

    // And a later one, after the timer ran out idle, waits its own delay.
    tokio::time::sleep(ACK_DELAY * 3).await;
    let sent = Instant::now();
    peer.send(&[data(1, 4, b"d")]).await;
    peer.expect(acked(4)).await;
    let waited = sent.elapsed();
    assert!(waited > Duration::ZERO && waited <= ACK_DELAY, "waited {waited:?}");
}
