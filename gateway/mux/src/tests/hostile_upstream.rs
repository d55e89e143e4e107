//! The gateway side against an upstream that breaks the rules or never
//! answers: every wait has an end, every session it gives up is forgotten
//! on both sides, and one bad session never costs the others.

use super::raw::{RawPeer, data, empty_frames, is_error};
use super::*;

/// A client whose connection goes to a bare upstream.
async fn bare_upstream() -> (MuxClient, RawPeer, MuxClientConnection) {
    let client = MuxClient::new(client_config());
    let (peer, conn) = RawPeer::upstream_for(&client).await;
    (client, peer, conn)
}

/// Opens session `id`, the bare upstream accepting it.
async fn open_accepted(up: &mut RawPeer, conn: &MuxClientConnection, id: u64) -> MuxSession {
    let opening = tokio::spawn({
        let conn = conn.clone();
        async move { conn.open(id, open_request(1000)).await }
    });
    assert_eq!(up.expect_open().await, id);
    up.send(&[Frame::OpenOk {
        session: id,
        window: 1000,
        subprotocol: None,
    }])
    .await;
    opening.await.unwrap().unwrap()
}

fn takeover_ok(session: u64) -> Frame {
    Frame::TakeoverOk(Box::new(TakeoverOk {
        session,
        last_seq: 0,
        received_bytes: 0,
        messages: 0,
        partial: None,
        limit: 1000,
        replay_seq: 0,
        replay_bytes: 0,
        granted: 1000,
        subprotocol: None,
    }))
}

#[tokio::test]
async fn an_open_never_answered_is_given_up_on_both_sides_when_its_caller_stops_waiting() {
    let (client, mut up, conn) = bare_upstream().await;
    // The caller's deadline (the gateway's handshake timeout) passes.
    let waited = tokio::time::timeout(Duration::from_millis(50), conn.open(1, open_request(1000))).await;
    assert!(waited.is_err(), "the bare upstream answered nothing");
    assert_eq!(up.expect_open().await, 1);
    // The upstream is told to forget it (ERROR, not a CLOSE that would
    // wait for an answer), and so is this side.
    let err = up.expect(|f| f.session() == 1).await;
    assert!(is_error(&err, 1, ErrorCode::Internal), "{err:?}");
    assert_eq!((client.session_count(), conn.session_count()), (0, 0));
    // A late OPEN_OK finds nothing: UNKNOWN_SESSION, and nothing is kept.
    up.send(&[Frame::OpenOk {
        session: 1,
        window: 1000,
        subprotocol: None,
    }])
    .await;
    let err = up.expect(|f| f.session() == 1).await;
    assert!(is_error(&err, 1, ErrorCode::UnknownSession), "{err:?}");
    assert_eq!(client.session_count(), 0);
    // The connection carries on.
    let mut s = open_accepted(&mut up, &conn, 2).await;
    up.send(&[data(2, 1, b"m-0")]).await;
    assert_eq!(number(&s.recv().await.unwrap()), 0);
}

#[tokio::test]
async fn an_open_too_large_to_encode_is_refused_before_anything_is_sent() {
    let (client, mut up, conn) = bare_upstream().await;
    let mut many = open_request(1000);
    many.headers = (0..MAX_OPEN_HEADERS + 1)
        .map(|i| {
            (
                HeaderName::try_from(format!("x-h{i}")).unwrap(),
                HeaderValue::from_static("v"),
            )
        })
        .collect();
    let mut long = open_request(1000);
    long.headers = vec![(
        HeaderName::from_static("x-big"),
        HeaderValue::try_from("v".repeat(MAX_OPEN_LEN)).unwrap(),
    )];
    for (id, open) in [(1, many), (2, long)] {
        let refused = tokio::time::timeout(Duration::from_secs(1), conn.open(id, open))
            .await
            .expect("an OPEN the writer cannot encode was waited on");
        assert!(matches!(refused, Err(OpenError::Invalid(_))), "{refused:?}");
    }
    assert_eq!(client.session_count(), 0);
    // Nothing went out for them: the next frame is the next OPEN.
    let _s = open_accepted(&mut up, &conn, 3).await;
}

#[tokio::test]
async fn a_takeover_never_answered_is_parked_then_forgotten_with_its_connection() {
    let (client, mut up, conn) = bare_upstream().await;
    let waited = tokio::time::timeout(Duration::from_millis(50), conn.take_over(5, open_request(1000), 0)).await;
    assert!(waited.is_err(), "the bare upstream answered nothing");
    assert!(matches!(
        up.expect(|f| f.session() == 5).await,
        Frame::Takeover { session: 5, .. }
    ));
    // Its answer may still come: another takeover of it here waits.
    let again = conn.take_over(5, open_request(1000), 0).await;
    assert!(matches!(again, Err(OpenError::InUse(5))), "{again:?}");
    // The late answer parks it (nothing is sent for it: no CLOSE); then
    // the agent's next try may take it over again.
    up.send(&[takeover_ok(5)]).await;
    let retry = tokio::spawn({
        let conn = conn.clone();
        async move {
            loop {
                match conn.take_over(5, open_request(1000), 0).await {
                    Err(OpenError::InUse(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                    other => return other,
                }
            }
        }
    });
    let next = up.expect(|f| f.session() == 5).await;
    assert!(matches!(next, Frame::Takeover { session: 5, .. }), "{next:?}");
    up.send(&[takeover_ok(5)]).await;
    let (taken, at) = retry.await.unwrap().unwrap();
    assert_eq!(at.messages, 0);
    drop(taken);
    // A parked session whose connection ends is forgotten here.
    let waited = tokio::time::timeout(Duration::from_millis(50), conn.take_over(6, open_request(1000), 0)).await;
    assert!(waited.is_err());
    assert_eq!(client.session_count(), 2, "5 (closing) and 6 (parked)");
    drop(up);
    conn.closed().await;
    eventually("the parked session forgotten", || client.session_count() == 1).await;
}

#[tokio::test]
async fn an_upstream_flooding_empty_data_fails_only_that_session() {
    let (_client, mut up, conn) = bare_upstream().await;
    // The agent behind session 1 does not read.
    let victim = open_accepted(&mut up, &conn, 1).await;
    let mut other = open_accepted(&mut up, &conn, 2).await;
    for message in empty_frames(1, 1, MAX_HELD_FRAMES as u64 + 1) {
        up.send(&message).await;
    }
    let err = up.expect(|f| matches!(f, Frame::Error { .. })).await;
    assert!(is_error(&err, 1, ErrorCode::FlowControl), "{err:?}");
    assert_eq!(
        victim.end(),
        Some(SessionEnd::Failed(SessionError::Protocol(ErrorCode::FlowControl)))
    );
    up.send(&[data(2, 1, b"m-3")]).await;
    assert_eq!(number(&other.recv().await.unwrap()), 3);
}
