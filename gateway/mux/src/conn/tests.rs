//! Unit tests of the connection's reply coalescing.

use bytes::Bytes;

use super::*;

#[test]
fn replies_are_coalesced_and_bounded() {
    let (conn, mut rx) = ConnShared::new();
    // A peer flooding duplicates, pings and unknown ids while not reading.
    for i in 0..10_000u64 {
        conn.ack([(1, i), (2, i / 2)]);
        conn.pong(Bytes::from(i.to_string()));
        conn.unknown_session(100 + i);
    }
    // One wake-up for the writer, however many replies are owed.
    assert!(matches!(rx.try_recv(), Ok(Out::Control)));
    assert!(rx.try_recv().is_err());
    let Replies { frames, pong } = lock(&conn.control).take();
    let mut acks: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Ack { session, seq } => Some((*session, *seq)),
            _ => None,
        })
        .collect();
    acks.sort_unstable();
    assert_eq!(acks, [(1, 9999), (2, 4999)]);
    assert_eq!(frames.len() - acks.len(), MAX_PENDING_ERRORS);
    assert_eq!(pong.as_deref(), Some(&b"9999"[..]));
    // Taken: the next reply wakes the writer again.
    conn.ack([(1, 10_000)]);
    assert!(matches!(rx.try_recv(), Ok(Out::Control)));
}

#[test]
fn a_torn_down_connection_takes_no_sessions() {
    struct NoRole;
    impl Role for NoRole {
        fn on_frame(&self, _: &Arc<ConnShared>, _: Frame) -> Result<(), ErrorCode> {
            Ok(())
        }
        fn is_known(&self, _: u64) -> bool {
            false
        }
        fn on_detached(&self, _: Vec<DetachedSession>) {}
        fn on_violation(&self, _: ErrorCode) {}
    }
    let (conn, _rx) = ConnShared::new();
    conn.teardown(&NoRole);
    assert!(conn.is_closed());
    let params = crate::session::state::SessionParams {
        window: 1,
        replay_limit: 1,
        max_message: 1,
        budget: None,
        ack_on_take: false,
    };
    let start = crate::session::shared::Start {
        id: 1,
        open: Default::default(),
        params,
        registry: None,
    };
    let session = Shared::new(start, crate::session::state::Phase::live(conn.clone()));
    assert!(!conn.insert(session));
    assert_eq!(conn.session_count(), 0);
}
