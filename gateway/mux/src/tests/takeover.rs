//! Takeover: another gateway instance, with a session table of its own,
//! carries a session on after the instance that opened it died, knowing
//! only how many messages the agent received. The upstream replays what
//! the agent lacks and says what the agent must resend; a count the
//! upstream can no longer honour is refused, never papered over.

use super::*;

/// Echoes each whole message and reports every chunk as it arrives (so
/// the test sees a partly received message).
async fn chunk_echo(mut session: MuxSession, seen: mpsc::UnboundedSender<String>) {
    let mut msg = Vec::new();
    while let Some(c) = session.recv_chunk().await {
        let _ = seen.send(String::from_utf8(c.payload.to_vec()).unwrap());
        msg.extend_from_slice(&c.payload);
        if c.fin {
            let text = String::from_utf8(std::mem::take(&mut msg)).unwrap();
            if session.send(Message::Text(text)).await.is_err() {
                return;
            }
        }
    }
}

async fn next_text(s: &mut MuxSession) -> String {
    match tokio::time::timeout(Duration::from_secs(10), s.recv()).await {
        Ok(Some(Message::Text(t))) => t,
        other => panic!("expected a text message, got {other:?}"),
    }
}

fn peer_code(e: OpenError) -> ErrorCode {
    match e {
        OpenError::Failed(SessionError::Peer { code, .. }) => code,
        other => panic!("expected an ERROR from the upstream, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_by_another_gateway_resumes_where_the_agent_stands() {
    let server = server(ServerConfig::default());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let seen_next = async |seen: &mut mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("upstream saw nothing")
            .unwrap()
    };

    // Gateway A: ten whole messages and half of an eleventh reach the
    // upstream; its agent takes four of the ten echoes, then A dies.
    let a = MuxClient::new(client_config());
    let (conn_a, link_a) = connect_via(&a, &server).await;
    let tx = seen_tx.clone();
    serve(conn_a, move |s| chunk_echo(s, tx.clone()));
    let mut on_a = link_a.open(9, open_request(4096)).await.unwrap();
    for i in 0..10 {
        on_a.send(Message::Text(format!("m{i}"))).await.unwrap();
        assert_eq!(seen_next(&mut seen).await, format!("m{i}"));
    }
    for i in 0..4 {
        assert_eq!(next_text(&mut on_a).await, format!("m{i}"));
    }
    let half = Bytes::from_static(b"m10-first-half");
    on_a.send_chunk(Chunk {
        text: true,
        fin: false,
        payload: half.clone(),
    })
    .await
    .unwrap();
    assert_eq!(seen_next(&mut seen).await, "m10-first-half");
    link_a.abort();
    let end = link_a.closed().await;
    assert_eq!(end.detached.len(), 1);
    // A is dead: its session is neither resumed nor closed.
    let _dead = on_a;

    // Gateway B, a stranger to the session.
    let b = MuxClient::new(client_config());
    let (conn_b, link_b) = connect_via(&b, &server).await;
    let tx = seen_tx.clone();
    serve(conn_b, move |s| chunk_echo(s, tx.clone()));
    // Counts the upstream cannot honour are refused, and change nothing:
    // fewer messages than A's agent took (their echoes were acknowledged
    // and dropped), more than were ever sent, a session never opened.
    let e = link_b.take_over(9, open_request(4096), 3).await.unwrap_err();
    assert_eq!(peer_code(e), ErrorCode::ReplayUnavailable);
    let e = link_b.take_over(9, open_request(4096), 50).await.unwrap_err();
    assert_eq!(peer_code(e), ErrorCode::Sequence);
    let e = link_b.take_over(77, open_request(4096), 0).await.unwrap_err();
    assert_eq!(peer_code(e), ErrorCode::UnknownSession);

    let (mut on_b, at) = link_b.take_over(9, open_request(4096), 4).await.unwrap();
    assert_eq!(at.messages, 10, "the upstream has ten whole messages");
    assert_eq!(
        at.partial,
        Some(PartialMessage {
            text: true,
            bytes: half.len() as u64
        })
    );
    // What A's agent never got, once each, in order.
    for i in 4..10 {
        assert_eq!(next_text(&mut on_b).await, format!("m{i}"));
    }
    // The agent resends message 10 whole; the part the upstream has is
    // skipped, the rest completes the message.
    on_b.send_chunk(Chunk {
        text: true,
        fin: true,
        payload: Bytes::from_static(b"-second-half"),
    })
    .await
    .unwrap();
    assert_eq!(seen_next(&mut seen).await, "-second-half");
    assert_eq!(next_text(&mut on_b).await, "m10-first-half-second-half");
    on_b.send(Message::Text("m11".into())).await.unwrap();
    assert_eq!(seen_next(&mut seen).await, "m11");
    assert_eq!(next_text(&mut on_b).await, "m11");
    assert_eq!(server.stats().taken_over, 1);
    assert_eq!(server.stats().expired, 0);

    on_b.close(1000, "done").unwrap();
    assert_eq!(on_b.recv().await, None);
    assert!(matches!(on_b.end(), Some(SessionEnd::Closed { code: 1000, .. })));
    eventually("the session forgotten upstream", || server.stats().sessions == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_session_is_left_intact_for_a_takeover() {
    let server = server(ServerConfig::default());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let a = MuxClient::new(client_config());
    let (conn_a, link_a) = connect_via(&a, &server).await;
    let (conn_a2, link_a2) = connect_via(&a, &server).await;
    for conn in [conn_a, conn_a2] {
        let tx = seen_tx.clone();
        serve(conn, move |s| chunk_echo(s, tx.clone()));
    }
    let mut on_a = link_a.open(5, open_request(4096)).await.unwrap();
    on_a.send(Message::Text("m0".into())).await.unwrap();
    assert_eq!(next_text(&mut on_a).await, "m0");
    on_a.send(Message::Text("m1".into())).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), "m0");
    assert_eq!(seen.recv().await.unwrap(), "m1");

    // A stops: it parks the session. Nothing more is delivered or sent,
    // dropping it sends no CLOSE, and it will not be resumed from here.
    let handle = on_a.handle();
    handle.park();
    assert!(handle.is_parked());
    assert_eq!(on_a.recv().await, None);
    assert!(on_a.send(Message::Text("late".into())).await.is_err());
    drop(on_a);
    assert!(matches!(
        link_a2.resume(&handle).await,
        Err(ResumeError::NotResumable(_))
    ));

    // B takes it over while A's connection still carries it: the echo of
    // m1, never delivered by A, comes to B; the upstream saw no close.
    let b = MuxClient::new(client_config());
    let (conn_b, link_b) = connect_via(&b, &server).await;
    let tx = seen_tx.clone();
    serve(conn_b, move |s| chunk_echo(s, tx.clone()));
    let (mut on_b, at) = link_b.take_over(5, open_request(4096), 1).await.unwrap();
    assert_eq!((at.messages, at.partial), (2, None));
    assert_eq!(next_text(&mut on_b).await, "m1");
    on_b.send(Message::Text("m2".into())).await.unwrap();
    assert_eq!(next_text(&mut on_b).await, "m2");
    assert_eq!(seen.recv().await.unwrap(), "m2", "the upstream got only m2 after m1");
    assert_eq!(server.stats().taken_over, 1);
}

/// The gateway acknowledges what its application takes; an application
/// that lets go with messages still waiting must not leave the upstream
/// holding the session (and its replay memory) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_dropped_with_messages_waiting_still_finishes_upstream() {
    let server = server(ServerConfig::default());
    let (mut conn, client) = connect(&server).await;
    let opening = tokio::spawn(async move {
        let s = client.open(3, open_request(4096)).await.unwrap();
        (client, s)
    });
    let mut upstream = conn.next_session().await.unwrap();
    let (_client, agent) = opening.await.unwrap();
    for i in 0..3 {
        upstream.send(Message::Text(format!("m{i}"))).await.unwrap();
    }
    drop(agent);
    // The gateway's CLOSE arrives; the upstream answers with its own.
    assert_eq!(upstream.recv().await, None);
    upstream.close(1000, "").unwrap();
    eventually("the upstream forgets the session", || server.stats().sessions == 0).await;
}
