//! Unit tests of the session's phases: every transition observable, the
//! ones that do not apply refused and changing nothing.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{Answer, Phase, ResumePoint, SessionParams, State};
use crate::conn::{ConnShared, Out};
use crate::frame::{ErrorCode, Frame, PartialMessage, TakeoverOk};
use crate::message::{SessionEnd, SessionError, Takeover};
use crate::session::shared::{Shared, Start};

fn params() -> SessionParams {
    SessionParams {
        window: 1000,
        replay_limit: 1 << 20,
        max_message: 1 << 20,
        budget: None,
        ack_on_take: true,
    }
}

fn state(phase: Phase) -> State {
    State::new(7, params(), 1000, phase)
}

fn conn() -> (Arc<ConnShared>, mpsc::UnboundedReceiver<Out>) {
    ConnShared::for_tests()
}

/// The frames queued on a connection so far.
fn sent(rx: &mut mpsc::UnboundedReceiver<Out>) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Ok(out) = rx.try_recv() {
        if let Out::Frame(f) = out {
            frames.push(f);
        }
    }
    frames
}

fn takeover_ok() -> TakeoverOk {
    TakeoverOk {
        session: 7,
        last_seq: 4,
        received_bytes: 30,
        messages: 2,
        partial: Some(PartialMessage { text: true, bytes: 5 }),
        limit: 500,
        replay_seq: 3,
        replay_bytes: 20,
        granted: 1020,
        subprotocol: Some("chat".into()),
    }
}

#[test]
fn an_open_is_answered_once_and_then_live() {
    let (link, _rx) = conn();
    let (tx, mut answer) = oneshot::channel();
    let mut st = state(Phase::opening(link.clone(), tx));
    assert!(st.phase().is_opening() && st.phase().is_attached_to(link.id));
    st.open_accepted(300, Some("chat".into())).unwrap();
    assert_eq!(answer.try_recv(), Ok(Ok(())));
    assert!(matches!(st.phase(), Phase::Live(_)) && st.phase().is_attached_to(link.id));
    assert_eq!(st.subprotocol.as_deref(), Some("chat"));
    assert_eq!(st.room().unwrap().bytes, 1000, "the larger limit stands");
    assert_eq!(
        st.open_accepted(300, None),
        Err(ErrorCode::InvalidState),
        "a second OPEN_OK"
    );
}

#[test]
fn a_close_before_open_ok_refuses_the_open() {
    let (link, mut rx) = conn();
    let (tx, mut answer) = oneshot::channel();
    let mut st = state(Phase::opening(link, tx));
    assert_eq!(st.on_close(1, 1008, "no".into()), Ok(true));
    st.refused(1008, "no".into());
    let refused = SessionEnd::Closed {
        code: 1008,
        reason: "no".into(),
    };
    assert_eq!(answer.try_recv(), Ok(Err(refused)));
    // Live: dropping it answers the upstream's CLOSE with ours.
    assert!(matches!(st.phase(), Phase::Live(_)));
    st.close_on_drop();
    assert!(matches!(sent(&mut rx)[..], [Frame::Close { code: 1000, .. }]));
    assert_eq!(
        st.open_accepted(1, None),
        Err(ErrorCode::InvalidState),
        "a late OPEN_OK"
    );
}

#[test]
fn a_takeover_answered_to_its_caller_goes_live_where_the_upstream_says() {
    let (link, mut rx) = conn();
    let (tx, mut answer) = oneshot::channel();
    let mut st = state(Phase::taking_over(link.clone(), tx));
    assert!(st.phase().is_taking_over() && !st.phase().is_parked());
    let mut insane = takeover_ok();
    insane.messages = 9;
    assert_eq!(st.adopt(&link, &insane), Err(ErrorCode::Protocol));
    assert!(st.phase().is_taking_over(), "refused: nothing changed");
    st.adopt(&link, &takeover_ok()).unwrap();
    let at = Takeover {
        messages: 2,
        partial: Some(PartialMessage { text: true, bytes: 5 }),
    };
    assert_eq!(answer.try_recv(), Ok(Ok(at)));
    assert!(matches!(st.phase(), Phase::Live(_)) && st.phase().is_attached_to(link.id));
    assert_eq!((st.ack_seq(), st.granted(), st.acked_seq()), (3, 1020, 4));
    assert_eq!(st.text_under_way(), Some(true), "the agent's message goes on");
    assert_eq!(st.subprotocol.as_deref(), Some("chat"));
    assert!(sent(&mut rx).is_empty(), "adopting sends nothing");
    assert_eq!(
        st.adopt(&link, &takeover_ok()),
        Err(ErrorCode::InvalidState),
        "a second TAKEOVER_OK"
    );
}

#[test]
fn a_takeover_whose_caller_gave_up_is_parked_and_sends_nothing() {
    let (link, mut rx) = conn();
    let (tx, answer) = oneshot::channel();
    let mut st = state(Phase::taking_over(link.clone(), tx));
    assert!(st.abandon_takeover());
    assert!(!st.abandon_takeover(), "only once");
    drop(answer);
    assert!(st.phase().is_parked() && st.phase().is_taking_over());
    assert!(matches!(st.room(), Err(SessionError::Aborted(_))));
    let (other, _) = conn();
    let (tx, _answer) = oneshot::channel();
    assert_eq!(
        st.begin_resume(&other, tx).err(),
        Some(SessionError::InvalidInput("session is parked for a takeover"))
    );
    st.close_on_drop();
    // The late answer parks it where it is.
    st.adopt(&link, &takeover_ok()).unwrap();
    assert!(matches!(st.phase(), Phase::Parked(_)) && st.phase().is_attached_to(link.id));
    assert!(sent(&mut rx).is_empty(), "no CLOSE, no ACK: the session is not ours");
}

#[test]
fn a_detached_abandoned_takeover_stays_parked() {
    let (link, _rx) = conn();
    let (tx, _answer) = oneshot::channel();
    let mut st = state(Phase::taking_over(link.clone(), tx));
    st.abandon_takeover();
    assert!(st.detach(link.id).is_some());
    assert!(matches!(st.phase(), Phase::Parked(_)) && st.phase().is_detached());
}

#[test]
fn a_lost_connection_detaches_an_open_and_its_caller_sees_it() {
    let (link, _rx) = conn();
    let (tx, mut answer) = oneshot::channel();
    let mut st = state(Phase::opening(link.clone(), tx));
    assert_eq!(st.detach(link.id + 1), None, "another connection");
    assert!(st.detach(link.id).is_some());
    assert_eq!(answer.try_recv(), Err(oneshot::error::TryRecvError::Closed));
    assert!(matches!(st.phase(), Phase::Live(_)) && st.phase().is_detached());
}

#[test]
fn a_resume_moves_the_session_and_replays_what_the_peer_lacks() {
    let (a, mut a_rx) = conn();
    let (b, mut b_rx) = conn();
    let mut st = state(Phase::live(a.clone()));
    st.push_data(false, true, Bytes::from_static(b"one"));
    let (tx, mut answer) = oneshot::channel();
    let resume = st.begin_resume(&b, tx).unwrap();
    assert!(matches!(resume, Frame::Resume { last_seq: 0, .. }));
    assert!(st.phase().is_resuming_on(b.id) && !st.phase().is_attached_to(a.id));
    let (again, _) = oneshot::channel();
    assert_eq!(
        st.begin_resume(&b, again).err(),
        Some(SessionError::InvalidInput("session is already on this connection"))
    );
    // Sent while resuming: kept, not emitted anywhere.
    st.push_data(false, true, Bytes::from_static(b"two"));
    assert_eq!(sent(&mut a_rx).len(), 1);
    assert_eq!(
        st.open_accepted(1, None),
        Err(ErrorCode::InvalidState),
        "OPEN_OK is no answer"
    );
    let at = ResumePoint {
        last_seq: 0,
        limit: 2000,
    };
    st.attach(&b, at, Answer::None).unwrap();
    assert_eq!(answer.try_recv(), Ok(Ok(())));
    assert!(matches!(st.phase(), Phase::Live(_)) && st.phase().is_attached_to(b.id));
    let replayed = sent(&mut b_rx);
    assert!(matches!(
        replayed[..],
        [
            Frame::Data { seq: 1, .. },
            Frame::Data { seq: 2, .. },
            Frame::Window { .. }
        ]
    ));
}

#[test]
fn a_refused_resume_changes_nothing() {
    let (a, _a_rx) = conn();
    let mut st = state(Phase::live(a.clone()));
    let at = ResumePoint { last_seq: 5, limit: 0 };
    assert_eq!(st.attach(&a, at, Answer::Resume), Err(ErrorCode::Sequence));
    assert!(st.phase().is_attached_to(a.id));
    let (link, _rx) = conn();
    let (tx, _answer) = oneshot::channel();
    let mut opening = state(Phase::opening(link.clone(), tx));
    let at = ResumePoint { last_seq: 0, limit: 0 };
    assert_eq!(opening.attach(&link, at, Answer::None), Err(ErrorCode::InvalidState));
    assert!(opening.phase().is_opening());
}

#[test]
fn a_cancelled_resume_leaves_the_session_detached() {
    let (a, _a_rx) = conn();
    let (b, _b_rx) = conn();
    let mut st = state(Phase::live(a));
    let (tx, mut answer) = oneshot::channel();
    st.begin_resume(&b, tx).unwrap();
    st.cancel_resume(b.id + 1);
    assert!(st.phase().is_resuming_on(b.id), "another connection's RESUME");
    st.cancel_resume(b.id);
    assert!(st.phase().is_detached());
    assert_eq!(answer.try_recv(), Err(oneshot::error::TryRecvError::Closed));
}

#[test]
fn only_a_live_session_can_be_parked() {
    let (link, _rx) = conn();
    let mut st = state(Phase::live(link.clone()));
    assert!(st.park());
    assert!(!st.park(), "already parked");
    assert!(st.phase().is_parked() && st.phase().is_attached_to(link.id));
    let (tx, _answer) = oneshot::channel();
    let mut opening = state(Phase::opening(link.clone(), tx));
    assert!(!opening.park(), "not ours yet");
    let mut failed = state(Phase::live(link));
    failed.fail(SessionError::Expired);
    assert!(!failed.park(), "over");
    assert!(!failed.phase().has_been_parked());
    // A parked session that fails still says it was parked.
    st.fail(SessionError::Expired);
    assert!(!st.phase().is_parked() && st.phase().has_been_parked());
}

#[test]
fn failure_tells_the_waiter_and_is_final() {
    let (a, _a_rx) = conn();
    let (b, _b_rx) = conn();
    let mut st = state(Phase::live(a));
    let (tx, mut answer) = oneshot::channel();
    st.begin_resume(&b, tx).unwrap();
    st.fail(SessionError::Expired);
    st.fail(SessionError::Closed);
    assert_eq!(answer.try_recv(), Ok(Err(SessionEnd::Failed(SessionError::Expired))));
    assert_eq!(st.phase().failure(), Some(&SessionError::Expired), "the first wins");
    let at = ResumePoint { last_seq: 0, limit: 0 };
    assert_eq!(st.attach(&b, at, Answer::None), Err(ErrorCode::UnknownSession));
    let (tx, _) = oneshot::channel();
    assert_eq!(st.begin_resume(&b, tx).err(), Some(SessionError::Expired));
    // Removing it hands back the connection that still lists it, once.
    assert_eq!(st.remove().map(|c| c.id), Some(b.id));
    assert!(st.phase().is_removed() && st.remove().is_none());
    assert_eq!(st.end(), Some(SessionEnd::Failed(SessionError::Expired)));
}

#[test]
fn a_finished_session_is_removed_and_cannot_be_resumed() {
    let (a, _a_rx) = conn();
    let mut st = state(Phase::live(a.clone()));
    st.push_close(1000, String::new());
    st.on_close(1, 1000, String::new()).unwrap();
    assert!(!st.is_over(), "our CLOSE is not acknowledged yet");
    st.on_ack(1).unwrap();
    assert!(st.is_over());
    assert_eq!(st.remove().map(|c| c.id), Some(a.id));
    let (b, _) = conn();
    let (tx, _) = oneshot::channel();
    assert_eq!(
        st.begin_resume(&b, tx).err(),
        Some(SessionError::InvalidInput("session has finished"))
    );
    // A failure found afterwards (the last message was not UTF-8) is what
    // the application saw last.
    st.fail(SessionError::Protocol(ErrorCode::InvalidUtf8));
    assert!(st.phase().is_removed());
    assert_eq!(
        st.end(),
        Some(SessionEnd::Failed(SessionError::Protocol(ErrorCode::InvalidUtf8)))
    );
}

#[test]
fn a_resume_of_a_complete_session_the_upstream_forgot_succeeds_empty() {
    let (a, _a_rx) = conn();
    let (b, _b_rx) = conn();
    let mut st = state(Phase::live(a));
    st.push_close(1000, String::new());
    st.on_close(1, 1000, String::new()).unwrap();
    let (tx, mut answer) = oneshot::channel();
    st.begin_resume(&b, tx).unwrap();
    assert!(st.complete_without_ack());
    st.resume_unneeded();
    assert_eq!(answer.try_recv(), Ok(Ok(())));
    assert!(st.phase().is_detached() && st.is_over());
}

fn shared(link: &Arc<ConnShared>) -> Arc<Shared> {
    let start = Start {
        id: 7,
        open: Default::default(),
        params: params(),
        registry: None,
    };
    let shared = Shared::new(start, Phase::live(link.clone()));
    assert!(link.insert(shared.clone()));
    shared
}

#[test]
fn a_grace_timer_expires_only_the_detachment_it_was_set_for() {
    let (a, _a_rx) = conn();
    let (b, _b_rx) = conn();
    let s = shared(&a);
    let first = s.detach(a.id).unwrap();
    assert_eq!(s.detach(a.id), None, "detached once");
    let at = ResumePoint { last_seq: 0, limit: 0 };
    s.attach(&b, at, Answer::Resume).unwrap();
    assert!(!s.expire_if(first), "re-attached since");
    let second = s.detach(b.id).unwrap();
    assert_ne!(first, second);
    assert!(!s.expire_if(first));
    assert!(s.expire_if(second));
    assert_eq!(s.end(), Some(SessionEnd::Failed(SessionError::Expired)));
}

#[test]
fn connections_a_session_leaves_forget_it() {
    let (a, _a_rx) = conn();
    let (b, _b_rx) = conn();
    let s = shared(&a);
    let (tx, _answer) = oneshot::channel();
    s.begin_resume(&b, tx).unwrap();
    assert!(a.session(7).is_none(), "moved away");
    assert!(b.insert(s.clone()));
    s.fail(SessionError::Expired);
    assert!(b.session(7).is_none(), "a failed session is removed");
    assert!(s.lock().phase().is_removed());
}

#[test]
fn a_parked_session_is_forgotten_when_its_connection_ends() {
    let (a, _a_rx) = conn();
    let s = shared(&a);
    s.forget_if_parked();
    assert!(s.end().is_none(), "not parked: kept to be resumed");
    s.park();
    s.detach(a.id).unwrap();
    s.forget_if_parked();
    assert!(matches!(s.end(), Some(SessionEnd::Failed(SessionError::Aborted(_)))));
    assert!(s.lock().phase().has_been_parked());
}
