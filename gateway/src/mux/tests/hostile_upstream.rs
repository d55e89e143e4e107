//! The gateway side against an upstream that breaks the rules: one bad
//! session never costs the others.

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
