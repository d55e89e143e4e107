//! One mux connection: a WebSocket carrying many sessions, driven by a
//! reader task and a writer task, for either role.
//!
//! The reader decodes each binary message, applies its frames to the
//! sessions (acknowledging received DATA once per session per message,
//! riding along with the next frames written or within [`ACK_DELAY`]) and
//! hands OPEN, OPEN_OK and RESUME to the role (server or client). The
//! writer drains a queue that sessions fill without ever blocking and packs
//! whatever is queued into as few WebSocket messages as the limits allow.
//!
//! How it fails: a bad message (any [`DecodeError`](super::DecodeError)),
//! a text message, a broken WebSocket fragment sequence or a connection-wide
//! ERROR from the peer ends the connection: ERROR with session 0 and a
//! WebSocket close are sent, and every session on it is *detached*, not
//! failed, so it can be resumed on another connection. Session-level
//! violations fail that session only. Keepalive: with an interval set, the
//! writer pings and the reader gives up after three silent intervals.

mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::WebSocket;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::frame::{ErrorCode, Frame, MAX_MESSAGE_LEN};
use super::session::SessionHandle;
use super::session::shared::{Shared, error_frame, lock};
use super::session::state::Detachment;

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The peer closed the WebSocket (or the stream ended cleanly).
    PeerClosed,
    /// The peer sent a connection-wide ERROR.
    PeerError {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The peer broke the protocol; this side sent ERROR and closed.
    Protocol {
        /// The code sent.
        code: ErrorCode,
        /// What was wrong.
        message: String,
    },
    /// Reading or writing the transport failed.
    Io(String),
    /// Nothing arrived for three keepalive intervals.
    Timeout,
    /// This side aborted it.
    Aborted,
}

impl EndReason {
    /// Every [`kind`](Self::kind), for exporting a counter per kind.
    pub const KINDS: [&'static str; 6] = ["peer_closed", "peer_error", "protocol", "io", "timeout", "aborted"];

    /// A short name of the kind of end, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::PeerError { .. } => "peer_error",
            Self::Protocol { .. } => "protocol",
            Self::Io(_) => "io",
            Self::Timeout => "timeout",
            Self::Aborted => "aborted",
        }
    }
}

/// The end of a connection: why, and which sessions it left detached
/// (still alive, waiting to be resumed elsewhere).
#[derive(Clone, Debug)]
pub struct ConnectionEnd {
    /// Why the connection ended.
    pub reason: EndReason,
    /// Sessions it carried that are now detached.
    pub detached: Vec<SessionHandle>,
}

/// A session a dying connection left detached, and since when.
pub(crate) struct DetachedSession {
    pub(crate) session: Arc<Shared>,
    /// The detachment a grace timer expires (if it is still detached then).
    pub(crate) since: Detachment,
}

/// What the role (server or client) does with the frames and events that
/// are not plain session traffic.
pub(crate) trait Role: Send + Sync + 'static {
    /// OPEN, OPEN_OK or RESUME arrived. An error is fatal to the
    /// connection (a frame the role never receives).
    fn on_frame(&self, conn: &Arc<ConnShared>, frame: Frame) -> Result<(), ErrorCode>;
    /// Whether this side knows session `id` (on any connection): frames
    /// for it that reach a connection it has left are stale, not unknown.
    fn is_known(&self, id: u64) -> bool;
    /// The connection ended; these sessions were on it.
    fn on_detached(&self, sessions: Vec<DetachedSession>);
    /// The peer broke the protocol on one session (past its credit or
    /// frame bound, a sequence gap, ...): it failed and ERROR `code` was
    /// sent. For counting; the session is already dealt with.
    fn on_violation(&self, code: ErrorCode);
}

/// What the writer task sends.
pub(crate) enum Out {
    Frame(Frame),
    /// Take what is waiting in [`ConnShared::control`].
    Control,
    /// Write a WebSocket close with this code, then stop.
    Close(u16),
}

/// Most ERRORs for unknown sessions waiting to be written; beyond it they
/// are dropped (the peer is confused, and answering every frame of a
/// flood would only grow our memory).
const MAX_PENDING_ERRORS: usize = 1024;

/// Replies the reader owes the peer, coalesced so a peer that floods us
/// without reading cannot grow them without bound: one ACK per session
/// (the highest), the latest pong only (RFC 6455 allows that), and a
/// capped list of ERRORs for unknown sessions.
#[derive(Default)]
pub(crate) struct Control {
    acks: HashMap<u64, u64>,
    pong: Option<Bytes>,
    errors: Vec<Frame>,
    /// An `Out::Control` is queued and not yet taken.
    signalled: bool,
    /// ACKs wait to ride along; the writer was told to send them within
    /// [`ACK_DELAY`] if nothing else goes out first.
    soon: bool,
}

impl Control {
    /// Keeps the highest ACK owed per session.
    fn merge_acks(&mut self, acks: impl IntoIterator<Item = (u64, u64)>) {
        for (session, seq) in acks {
            let at = self.acks.entry(session).or_insert(seq);
            *at = (*at).max(seq);
        }
    }

    /// ACKs that wait to ride along (and the writer was told of).
    pub(crate) fn acks_waiting(&self) -> bool {
        self.soon
    }

    /// Takes only the pending ACKs (to ride along with other frames).
    pub(crate) fn take_acks(&mut self) -> Vec<Frame> {
        self.soon = false;
        self.acks
            .drain()
            .map(|(session, seq)| Frame::Ack { session, seq })
            .collect()
    }

    /// Takes the pending replies.
    pub(crate) fn take(&mut self) -> Replies {
        self.signalled = false;
        let mut frames = self.take_acks();
        frames.append(&mut self.errors);
        Replies {
            frames,
            pong: self.pong.take(),
        }
    }
}

/// Replies taken from [`Control`] for the writer.
pub(crate) struct Replies {
    /// ACKs and ERRORs, to batch with other frames.
    pub(crate) frames: Vec<Frame>,
    /// The payload of the pong to write, if a ping awaits one.
    pub(crate) pong: Option<Bytes>,
}

/// Longest an ACK of new DATA waits for other frames to ride along with
/// (a write of its own for each would double the writes of an echo load).
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(5);

/// The part of a connection that sessions and handles share.
pub(crate) struct ConnShared {
    pub(crate) id: u64,
    tx: mpsc::UnboundedSender<Out>,
    pub(crate) control: Mutex<Control>,
    /// Wakes the writer to send waiting ACKs within [`ACK_DELAY`].
    pub(crate) ack_timer: tokio::sync::Notify,
    /// Sessions on this connection; `None` once it has been torn down, so
    /// nothing can be added to a dead connection and then never detached.
    sessions: Mutex<Option<HashMap<u64, Arc<Shared>>>>,
    cancel: CancellationToken,
    reason: Mutex<Option<EndReason>>,
    end: watch::Sender<Option<ConnectionEnd>>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl ConnShared {
    /// Queues a frame for the writer (dropped if the connection is gone:
    /// session frames that matter are kept for replay by the session).
    pub(crate) fn send(&self, frame: Frame) {
        let _ = self.tx.send(Out::Frame(frame));
    }

    /// A connection with no tasks yet, and its writer's queue.
    fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(ConnShared {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            tx,
            control: Mutex::default(),
            ack_timer: tokio::sync::Notify::new(),
            sessions: Mutex::new(Some(HashMap::new())),
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            end: watch::Sender::new(None),
        });
        (conn, rx)
    }

    /// A connection with no tasks, for tests of what sessions queue on it.
    #[cfg(test)]
    pub(crate) fn for_tests() -> (Arc<Self>, mpsc::UnboundedReceiver<Out>) {
        Self::new()
    }

    /// Owes the peer replies: updates the control slot with `f` and wakes
    /// the writer if it was not woken already.
    pub(crate) fn reply(&self, f: impl FnOnce(&mut Control)) {
        let mut control = lock(&self.control);
        f(&mut control);
        if !control.signalled {
            control.signalled = true;
            let _ = self.tx.send(Out::Control);
        }
    }

    pub(crate) fn ack(&self, acks: impl IntoIterator<Item = (u64, u64)>) {
        self.reply(|c| c.merge_acks(acks));
    }

    /// Owes the peer ACKs that can wait: they go with the next frames
    /// written, or within [`ACK_DELAY`].
    pub(crate) fn ack_soon(&self, acks: impl IntoIterator<Item = (u64, u64)>) {
        let mut control = lock(&self.control);
        control.merge_acks(acks);
        if !control.signalled && !control.soon {
            control.soon = true;
            self.ack_timer.notify_one();
        }
    }

    pub(crate) fn pong(&self, payload: Bytes) {
        self.reply(|c| c.pong = Some(payload));
    }

    pub(crate) fn unknown_session(&self, id: u64) {
        self.reply(|c| {
            if c.errors.len() < MAX_PENDING_ERRORS {
                c.errors.push(error_frame(id, ErrorCode::UnknownSession));
            }
        });
    }

    pub(crate) fn session(&self, id: u64) -> Option<Arc<Shared>> {
        lock(&self.sessions).as_ref()?.get(&id).cloned()
    }

    /// Adds a session; false if the connection is already gone.
    #[must_use]
    pub(crate) fn insert(&self, shared: Arc<Shared>) -> bool {
        match lock(&self.sessions).as_mut() {
            Some(map) => {
                map.insert(shared.id, shared);
                true
            }
            None => false,
        }
    }

    /// Forgets a session that ended or moved to another connection.
    pub(crate) fn forget(&self, id: u64) {
        if let Some(map) = lock(&self.sessions).as_mut() {
            map.remove(&id);
        }
    }

    pub(crate) fn session_count(&self) -> usize {
        lock(&self.sessions).as_ref().map_or(0, HashMap::len)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.end.borrow().is_some()
    }

    /// Records why the connection ends; the first reason wins.
    fn set_reason(&self, reason: EndReason) {
        lock(&self.reason).get_or_insert(reason);
    }

    /// Ends the connection now, without a close handshake (its sessions
    /// detach).
    pub(crate) fn abort(&self) {
        self.set_reason(EndReason::Aborted);
        self.cancel.cancel();
    }

    /// Waits until the connection has ended and its sessions detached.
    pub(crate) async fn closed(&self) -> ConnectionEnd {
        let mut rx = self.end.subscribe();
        loop {
            if let Some(end) = rx.borrow_and_update().clone() {
                return end;
            }
            if rx.changed().await.is_err() {
                return ConnectionEnd {
                    reason: EndReason::Aborted,
                    detached: Vec::new(),
                };
            }
        }
    }

    /// Detaches every session and publishes the end.
    fn teardown(&self, role: &dyn Role) {
        let sessions: Vec<_> = lock(&self.sessions)
            .take()
            .map(|map| map.into_values().collect())
            .unwrap_or_default();
        let detached: Vec<_> = sessions
            .into_iter()
            .filter_map(|session| {
                let since = session.detach(self.id)?;
                Some(DetachedSession { session, since })
            })
            .collect();
        let handles = detached
            .iter()
            .map(|d| SessionHandle {
                shared: d.session.clone(),
            })
            .collect();
        role.on_detached(detached);
        let reason = lock(&self.reason).clone().unwrap_or(EndReason::PeerClosed);
        self.end.send_replace(Some(ConnectionEnd {
            reason,
            detached: handles,
        }));
    }
}

/// Starts the reader and writer tasks of a connection over an upgraded
/// WebSocket.
pub(crate) fn spawn<S, R>(ws: WebSocket<S>, role: R, keepalive: Option<Duration>) -> Arc<ConnShared>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    R: Role,
{
    let (conn, rx) = ConnShared::new();
    let mut ws = ws;
    // Control frames are handled here, not by the library: pongs go
    // through the writer queue and a close is answered explicitly.
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    ws.set_max_message_size(MAX_MESSAGE_LEN + 1);
    let (rd, wr) = ws.split(tokio::io::split);
    tokio::spawn(writer::run(wr, rx, conn.clone(), keepalive));
    let idle = keepalive.map(|k| k * 3);
    tokio::spawn(reader::run(rd, conn.clone(), role, idle));
    conn
}
