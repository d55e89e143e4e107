//! Bad input: each violation gets its typed ERROR, and only the offender —
//! the session, or the connection for undecodable input — is closed.
//! Sessions of a closed connection stay resumable.

use bytes::{BufMut, BytesMut};
use fastwebsockets::{Frame as WsFrame, OpCode, Payload};

use super::raw::{RawPeer, data, empty_frames, is_error};
use super::*;

/// A server whose sessions echo, with `config`, and a raw peer on it.
async fn echo_server(config: ServerConfig) -> (MuxServer, RawPeer) {
    let server = server(config);
    let (peer, conn) = RawPeer::connect(&server).await;
    serve(conn, |s| numbered_echo(s, mpsc::unbounded_channel().0));
    (server, peer)
}

fn header(t: u8, session: u64, seq: u64, len: u32) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(t);
    b.put_u8(0);
    b.put_u64(session);
    b.put_u64(seq);
    b.put_u32(len);
    b
}

#[tokio::test]
async fn bad_frame_closes_only_its_connection_and_sessions_resume_elsewhere() {
    let (server, mut peer) = echo_server(ServerConfig::default()).await;
    // A well-behaved neighbour on another connection.
    let (conn, neighbour) = connect(&server).await;
    serve(conn, |s| numbered_echo(s, mpsc::unbounded_channel().0));
    let mut other = neighbour.open(50, open_request(1000)).await.unwrap();

    peer.open(1, 1000).await;
    peer.send(&[data(1, 1, b"m-0")]).await;
    peer.expect(|f| matches!(f, Frame::Data { seq: 1, .. })).await;
    peer.send_bytes(header(0x42, 1, 0, 0)).await;
    let (frames, close) = peer.until_close().await;
    assert!(
        frames.iter().any(|f| is_error(f, 0, ErrorCode::UnknownType)),
        "{frames:?}"
    );
    assert_eq!(close, Some(1002));

    // The neighbour never noticed.
    other.send(numbered(1, 10)).await.unwrap();
    assert_eq!(number(&other.recv().await.unwrap()), 1);

    // The session was detached, not failed: it resumes on a new connection.
    let (mut peer, _conn) = RawPeer::connect(&server).await;
    peer.send(&[Frame::Resume {
        session: 1,
        last_seq: 1,
        limit: 1000,
    }])
    .await;
    let answer = peer.expect(|f| matches!(f, Frame::Resume { .. })).await;
    assert!(
        matches!(
            answer,
            Frame::Resume {
                session: 1,
                last_seq: 1,
                ..
            }
        ),
        "{answer:?}"
    );
    peer.send(&[data(1, 2, b"m-1")]).await;
    let echo = peer.expect(|f| matches!(f, Frame::Data { .. })).await;
    assert!(matches!(echo, Frame::Data { seq: 2, .. }), "{echo:?}");
}

#[tokio::test]
async fn undecodable_messages_close_the_connection_with_their_code() {
    let too_big = header(0x03, 1, 1, (MAX_FRAME_PAYLOAD + 1) as u32);
    let mut truncated = header(0x04, 1, 1, 0);
    truncated.truncate(10);
    let zero_session = header(0x03, 0, 1, 0);
    let mut wrong_way = BytesMut::new();
    let open_ok = Frame::OpenOk {
        session: 1,
        window: 1,
        subprotocol: None,
    };
    encode(&open_ok, &mut wrong_way).unwrap();
    let cases = [
        (too_big, ErrorCode::FrameTooLarge, 1009),
        (truncated, ErrorCode::Protocol, 1002),
        (zero_session, ErrorCode::Protocol, 1002),
        (wrong_way, ErrorCode::Protocol, 1002),
        (BytesMut::new(), ErrorCode::Protocol, 1002),
    ];
    for (bytes, code, close_code) in cases {
        let (_server, mut peer) = echo_server(ServerConfig::default()).await;
        peer.send_bytes(bytes).await;
        let (frames, close) = peer.until_close().await;
        assert!(frames.iter().any(|f| is_error(f, 0, code)), "{code}: {frames:?}");
        assert_eq!(close, Some(close_code), "{code}");
    }
    // Text messages and broken WebSocket fragmentation, too.
    let (_server, mut peer) = echo_server(ServerConfig::default()).await;
    peer.send_ws(WsFrame::text(Payload::Borrowed(b"{}"))).await;
    let (frames, close) = peer.until_close().await;
    assert!(frames.iter().any(|f| is_error(f, 0, ErrorCode::Protocol)));
    assert_eq!(close, Some(1002));
    let (_server, mut peer) = echo_server(ServerConfig::default()).await;
    peer.send_ws(WsFrame::new(true, OpCode::Continuation, None, Payload::Borrowed(b"x")))
        .await;
    assert_eq!(peer.until_close().await.1, Some(1002));
}

#[tokio::test]
async fn unknown_session_gets_one_error_and_the_connection_continues() {
    let (_server, mut peer) = echo_server(ServerConfig::default()).await;
    peer.send(&[data(77, 1, b"a"), data(77, 2, b"b"), Frame::Ack { session: 78, seq: 1 }])
        .await;
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let f = peer.expect(|f| matches!(f, Frame::Error { .. })).await;
        errors.push(f);
    }
    assert!(is_error(&errors[0], 77, ErrorCode::UnknownSession), "{errors:?}");
    assert!(is_error(&errors[1], 78, ErrorCode::UnknownSession), "{errors:?}");
    // An ERROR for an unknown session is never answered.
    peer.send(&[Frame::Error {
        session: 79,
        code: ErrorCode::Internal,
        message: String::new(),
    }])
    .await;
    peer.open(1, 1000).await;
    peer.send(&[data(1, 1, b"m-0")]).await;
    let next = peer
        .expect(|f| matches!(f, Frame::Data { .. } | Frame::Error { .. }))
        .await;
    assert!(matches!(next, Frame::Data { session: 1, .. }), "{next:?}");
}

#[tokio::test]
async fn data_past_the_window_fails_only_that_session() {
    let server = server(ServerConfig {
        window: 100,
        ..ServerConfig::default()
    });
    let (mut peer, mut conn) = RawPeer::connect(&server).await;
    peer.open(1, 1000).await;
    peer.open(2, 1000).await;
    let mut victim = conn.next_session().await.unwrap();
    tokio::spawn(numbered_echo(
        conn.next_session().await.unwrap(),
        mpsc::unbounded_channel().0,
    ));

    peer.send(&[data(1, 1, &[b'x'; 150])]).await;
    let err = peer.expect(|f| matches!(f, Frame::Error { .. })).await;
    assert!(is_error(&err, 1, ErrorCode::FlowControl), "{err:?}");
    assert_eq!(victim.recv().await, None);
    assert_eq!(
        victim.end(),
        Some(SessionEnd::Failed(SessionError::Protocol(ErrorCode::FlowControl)))
    );
    assert_eq!(victim.send(binary(1, 0)).await.unwrap_err().close_code(), 1011);
    // The other session is untouched.
    peer.send(&[data(2, 1, b"m-5")]).await;
    let echo = peer.expect(|f| matches!(f, Frame::Data { .. })).await;
    assert!(matches!(echo, Frame::Data { session: 2, .. }), "{echo:?}");
}

#[tokio::test]
async fn empty_data_past_the_frame_bound_fails_only_that_session() {
    let server = server(ServerConfig::default());
    let (mut peer, mut conn) = RawPeer::connect(&server).await;
    peer.open(1, 1000).await;
    peer.open(2, 1000).await;
    // Session 1's application does not read; session 2 echoes.
    let victim = conn.next_session().await.unwrap();
    tokio::spawn(numbered_echo(
        conn.next_session().await.unwrap(),
        mpsc::unbounded_channel().0,
    ));

    // Empty DATA costs no credit: only the frame bound stops the flood.
    for message in empty_frames(1, 1, MAX_HELD_FRAMES as u64 + 1) {
        peer.send(&message).await;
    }
    let mut acked = 0;
    let err = loop {
        match peer
            .expect(|f| matches!(f, Frame::Ack { session: 1, .. } | Frame::Error { .. }))
            .await
        {
            Frame::Ack { seq, .. } => acked = acked.max(seq),
            err => break err,
        }
    };
    assert!(is_error(&err, 1, ErrorCode::FlowControl), "{err:?}");
    // A sender within its own bound would have waited: the upstream
    // acknowledged no more than it may hold beyond that bound.
    assert!(acked <= (MAX_HELD_FRAMES - MAX_UNACKED_FRAMES) as u64, "{acked}");
    assert_eq!(
        victim.end(),
        Some(SessionEnd::Failed(SessionError::Protocol(ErrorCode::FlowControl)))
    );
    assert_eq!(server.stats().violations, 1);
    // The other session is untouched.
    peer.send(&[data(2, 1, b"m-5")]).await;
    let echo = peer.expect(|f| matches!(f, Frame::Data { .. })).await;
    assert!(matches!(echo, Frame::Data { session: 2, .. }), "{echo:?}");
}

#[tokio::test]
async fn sequence_and_state_violations_fail_the_session() {
    let (_server, mut peer) = echo_server(ServerConfig::default()).await;
    peer.open(1, 1000).await;
    peer.send(&[data(1, 2, b"m-0")]).await;
    let err = peer.expect(|f| matches!(f, Frame::Error { .. })).await;
    assert!(is_error(&err, 1, ErrorCode::Sequence), "{err:?}");

    peer.open(2, 1000).await;
    let close = Frame::Close {
        session: 2,
        seq: 1,
        code: 1000,
        reason: String::new(),
    };
    peer.send(&[close, data(2, 2, b"m-1")]).await;
    let err = peer.expect(|f| matches!(f, Frame::Error { .. })).await;
    assert!(is_error(&err, 2, ErrorCode::InvalidState), "{err:?}");

    peer.open(3, 1000).await;
    peer.send(&[Frame::Ack { session: 3, seq: 5 }]).await;
    let err = peer.expect(|f| matches!(f, Frame::Error { .. })).await;
    assert!(is_error(&err, 3, ErrorCode::Sequence), "{err:?}");

    // Duplicates are dropped, not errors: the echo comes once.
    peer.open(4, 1000).await;
    peer.send(&[data(4, 1, b"m-0"), data(4, 1, b"m-0")]).await;
    peer.send(&[data(4, 2, b"m-1")]).await;
    let first = peer.expect(|f| matches!(f, Frame::Data { .. })).await;
    let second = peer.expect(|f| matches!(f, Frame::Data { .. })).await;
    assert!(matches!(
        (&first, &second),
        (Frame::Data { seq: 1, .. }, Frame::Data { seq: 2, .. })
    ));
}

#[tokio::test]
async fn bad_text_and_oversized_messages_fail_the_session() {
    let server = server(ServerConfig {
        max_message: 1000,
        ..ServerConfig::default()
    });
    let (mut peer, conn) = RawPeer::connect(&server).await;
    serve(conn, |mut s| async move { while s.recv().await.is_some() {} });
    peer.open(1, 1000).await;
    let bad_text = Frame::Data {
        session: 1,
        seq: 1,
        text: true,
        fin: true,
        payload: Bytes::from_static(&[0xff, 0xfe]),
    };
    peer.send(&[bad_text]).await;
    let err = peer.expect(|f| matches!(f, Frame::Error { .. })).await;
    assert!(is_error(&err, 1, ErrorCode::InvalidUtf8), "{err:?}");

    peer.open(2, 1000).await;
    let part = |seq, fin| Frame::Data {
        session: 2,
        seq,
        text: false,
        fin,
        payload: Bytes::from(vec![0; 600]),
    };
    peer.send(&[part(1, false), part(2, true)]).await;
    let err = peer.expect(|f| matches!(f, Frame::Error { .. })).await;
    assert!(is_error(&err, 2, ErrorCode::MessageTooLarge), "{err:?}");
}

#[tokio::test]
async fn connection_error_from_the_peer_detaches_and_silence_times_out() {
    let (server, mut peer) = echo_server(ServerConfig::default()).await;
    peer.open(1, 1000).await;
    peer.send(&[Frame::Error {
        session: 0,
        code: ErrorCode::GoingAway,
        message: "draining".into(),
    }])
    .await;
    assert_eq!(peer.until_close().await.1, Some(1001));
    assert_eq!(server.stats().sessions, 1, "the session waits to be resumed");

    // A peer that stops answering pings is given up after three intervals.
    let server = MuxServer::new(ServerConfig {
        keepalive: Some(Duration::from_millis(30)),
        ..ServerConfig::default()
    });
    let (_silent, conn) = RawPeer::connect(&server).await;
    let end = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    assert_eq!(end.reason, EndReason::Timeout);
}
