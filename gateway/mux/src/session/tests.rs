//! Unit tests of the session state machine, without connections.

use bytes::Bytes;

use super::state::{Phase, ReplayBudget, SessionParams, State};
use crate::frame::{ErrorCode, MAX_FRAME_PAYLOAD};
use crate::message::{Chunk, SessionError};

fn state(window: u32, replay_limit: usize, peer_limit: u64) -> State {
    let params = SessionParams {
        window,
        replay_limit,
        max_message: 1 << 20,
        budget: None,
        ack_on_take: false,
    };
    State::new(7, params, peer_limit, Phase::detached())
}

#[test]
fn a_shared_budget_caps_room_and_is_given_back_on_ack_and_drop() {
    let budget = ReplayBudget::new(150);
    let params = SessionParams {
        window: 1000,
        replay_limit: 100,
        max_message: 1 << 20,
        budget: Some(budget.clone()),
        ack_on_take: false,
    };
    let mut a = State::new(1, params.clone(), 1 << 20, Phase::detached());
    let mut b = State::new(2, params, 1 << 20, Phase::detached());
    assert_eq!(a.room().unwrap().bytes, 100, "own bound first");
    a.push_data(false, true, Bytes::from(vec![0; 100]));
    assert_eq!(b.room().unwrap().bytes, 50, "what the total has left");
    b.push_data(false, true, Bytes::from(vec![0; 50]));
    assert_eq!((a.room().unwrap().bytes, b.room().unwrap().bytes), (0, 0));
    assert_eq!(budget.used(), 150);
    a.on_ack(1).unwrap();
    assert_eq!(budget.used(), 50);
    assert_eq!(b.room().unwrap().bytes, 50, "own bound again");
    drop(b);
    assert_eq!(budget.used(), 0, "a dropped session's buffer is given back");
}

fn chunk(len: usize) -> Chunk {
    Chunk {
        text: false,
        fin: true,
        payload: Bytes::from(vec![0; len]),
    }
}

#[test]
fn credit_counts_payload_bytes_and_limits_only_grow() {
    let mut st = state(100, 4 << 20, 250);
    assert_eq!(st.room().unwrap().bytes, 250);
    st.push_data(false, true, Bytes::from(vec![0; 200]));
    assert_eq!(st.room().unwrap().bytes, 50);
    st.on_window(270);
    assert_eq!(st.room().unwrap().bytes, 70);
    st.on_window(260); // stale: ignored
    assert_eq!(st.room().unwrap().bytes, 70);
    // Out of credit, an empty frame may still go (it costs nothing).
    st.push_data(false, true, Bytes::from(vec![0; 70]));
    let room = st.room().unwrap();
    assert_eq!((room.bytes, room.frame), (0, true));
    // The frame limit caps room even with plenty of credit.
    st.on_window(u64::MAX);
    assert_eq!(st.room().unwrap().bytes, MAX_FRAME_PAYLOAD);
}

#[test]
fn receiver_enforces_its_grant_and_regrants_at_half() {
    let mut st = state(100, 1 << 20, 0);
    assert_eq!(st.on_data(1, chunk(60)), Ok(true));
    assert_eq!(st.on_data(2, chunk(41)), Err(ErrorCode::FlowControl));
    assert_eq!(st.on_data(2, chunk(40)), Ok(true));
    assert_eq!(st.granted(), 100);
    st.take_chunk().unwrap(); // 60 consumed: 40 left <= 50, grant again
    assert_eq!(st.granted(), 160);
    st.take_chunk().unwrap();
    assert_eq!(st.granted(), 160, "100 consumed, 60 left: no grant yet");
}

#[test]
fn duplicates_are_dropped_and_gaps_refused() {
    let mut st = state(1000, 1 << 20, 0);
    assert_eq!(st.on_data(1, chunk(1)), Ok(true));
    assert_eq!(st.on_data(1, chunk(1)), Ok(false));
    assert_eq!(st.on_data(3, chunk(1)), Err(ErrorCode::Sequence));
    assert_eq!(st.ack_seq(), 1);
    assert_eq!(st.on_close(2, 1000, String::new()), Ok(true));
    assert_eq!(st.on_close(2, 1000, String::new()), Ok(false));
    assert_eq!(st.on_data(3, chunk(1)), Err(ErrorCode::InvalidState));
    let text = Chunk {
        text: true,
        fin: false,
        payload: Bytes::new(),
    };
    let mut st = state(1000, 1 << 20, 0);
    assert_eq!(st.on_data(1, text), Ok(true));
    assert_eq!(
        st.on_data(2, chunk(1)),
        Err(ErrorCode::InvalidState),
        "text flag changed"
    );
}

#[test]
fn acks_trim_the_replay_buffer_and_free_room() {
    let mut st = state(1000, 250, u64::MAX);
    st.push_data(false, true, Bytes::from(vec![0; 100]));
    st.push_data(false, true, Bytes::from(vec![0; 100]));
    assert_eq!(st.room().unwrap().bytes, 50, "replay bound");
    assert_eq!(st.on_ack(3), Err(ErrorCode::Sequence), "never sent");
    assert_eq!(st.on_ack(1), Ok(()));
    assert_eq!(st.room().unwrap().bytes, 150);
    st.push_close(1000, String::new());
    assert_eq!(st.room().err(), Some(SessionError::Closed));
    assert!(!st.finished());
    st.on_ack(3).unwrap();
    st.on_close(1, 1000, String::new()).unwrap();
    assert!(st.finished());
}

#[test]
fn failure_is_sticky_and_first_wins() {
    let mut st = state(1000, 1000, 1000);
    st.fail(SessionError::Expired);
    st.fail(SessionError::Protocol(ErrorCode::Sequence));
    assert_eq!(st.room().err(), Some(SessionError::Expired));
    assert!(st.recv_done());
}

#[test]
fn a_kept_chunk_does_not_pin_the_buffer_it_arrived_in() {
    // A 4 MiB read buffer of which one DATA payload of 10 bytes is kept
    // while the application does not read.
    let buffer = Bytes::from(vec![7u8; 4 << 20]);
    let mut st = state(1000, 1 << 20, 0);
    assert!(
        st.on_data(
            1,
            Chunk {
                text: false,
                fin: true,
                payload: buffer.slice(100..110),
            }
        )
        .unwrap()
    );
    // Nothing in the inbox shares the buffer any more.
    assert!(buffer.is_unique(), "the inbox keeps the 4 MiB buffer alive");
    let kept = st.take_chunk().unwrap();
    assert_eq!(&kept.payload[..], &[7u8; 10]);
    let range = buffer.as_ptr_range();
    assert!(!range.contains(&kept.payload.as_ptr()));
    // Empty payloads allocate nothing.
    assert!(
        st.on_data(
            2,
            Chunk {
                text: false,
                fin: true,
                payload: buffer.slice(5..5),
            }
        )
        .unwrap()
    );
    assert!(buffer.is_unique());
}

#[test]
fn held_frames_are_bounded_and_acknowledged_on_arrival_only_so_far() {
    use crate::frame::{MAX_HELD_FRAMES, MAX_UNACKED_FRAMES};
    let ahead = (MAX_HELD_FRAMES - MAX_UNACKED_FRAMES) as u64;
    let empty = || Chunk {
        text: false,
        fin: true,
        payload: Bytes::new(),
    };
    let mut st = state(1000, 1 << 20, 0);
    for seq in 1..=ahead {
        assert!(st.on_data(seq, empty()).unwrap());
        assert!(st.acks_on_arrival());
    }
    assert_eq!(st.ack_point(), ahead);
    // Past it, frames wait for the application before they are ACKed.
    assert!(st.on_data(ahead + 1, empty()).unwrap());
    assert!(!st.acks_on_arrival());
    assert_eq!(st.ack_point(), ahead);
    st.take_chunk().unwrap();
    assert_eq!(st.ack_point(), ahead + 1, "a taken frame frees one held back");
    // Up to the bound: a sender within MAX_UNACKED_FRAMES of the ACK
    // point can always send; one more frame fails the session.
    let mut seq = ahead + 2;
    while seq <= st.ack_point() + MAX_UNACKED_FRAMES as u64 {
        assert!(st.on_data(seq, empty()).unwrap(), "frame {seq}");
        seq += 1;
    }
    assert_eq!(st.on_data(seq, empty()), Err(ErrorCode::FlowControl));
}
