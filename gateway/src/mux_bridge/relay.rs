//! One agent's mux-mode session: its WebSocket on one side, its mux
//! session on the other, both directions concurrently.
//!
//! Agent → upstream awaits the session's credit before reading further, so
//! an agent the upstream cannot keep up with is slowed by TCP backpressure
//! alone while its neighbours on the same connection flow. Upstream → agent
//! takes chunks only as fast as the agent's socket accepts them, which in
//! turn holds back the upstream's credit for this session only.
//!
//! Keepalive (the route's `websocket.keepalive_interval`, as in websocket
//! mode): an agent that sent nothing for an interval is pinged; one that
//! leaves two pings in a row unanswered is closed with 1001 and its mux session
//! closed (CLOSE 1001 upstream), so a half-open agent does not hold an
//! upstream session for ever. An agent the relay is not reading (waiting
//! for the upstream's credit or the message rate) is not judged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentmux_filters::rate_limit::SessionMessages;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use futures_util::FutureExt;

use super::agent::{AgentEvent, AgentReader, AgentWriter, MAX_BATCH};
use crate::error::Cause;
use crate::error::{SessionOutcome, close};
use crate::metrics::RouteMetrics;
use crate::mux::{Chunk, MuxSession, SessionEnd, SessionError};
use crate::ws::frame::op;

/// Chunks already received are written to the agent together up to this
/// many bytes.
const BATCH_BYTES: usize = 64 * 1024;

/// The close reason an agent hears when its gateway stops and leaves the
/// session to be taken over elsewhere (close code 1012, service restart).
const HANDOVER_REASON: &str = "gateway restarting: reconnect with agentmux-session to carry on";

/// How long the upstream may take to answer an agent's close (and a
/// closing agent to take its close frame).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The payload of keepalive pings (as in websocket mode).
const PING_PAYLOAD: &[u8] = b"agentmux";

/// What the writing half is asked to send besides upstream data.
enum Control {
    Pong(bytes::Bytes),
    Close(u16, String),
    /// A keepalive ping.
    Ping,
    /// The agent did not answer: close it and end the session.
    KeepaliveTimeout,
}

/// Control frames the writing half may have waiting at once; a sender
/// past it waits (an agent flooding pings is slowed, not buffered).
const CONTROL_QUEUE: usize = 8;

/// The writing half's list of control frames to send, filled by the
/// reading half and the keepalive. Not a channel: a tokio `mpsc` allocates
/// a 32-slot block and a cache-padded header up front (1.7 KiB, most of an
/// idle mux session's memory) for frames an idle session rarely sends.
/// This lives in the session's task and allocates only while frames wait.
#[derive(Default)]
struct Controls {
    queue: Mutex<VecDeque<Control>>,
    /// Something was queued (the writer waits on it).
    queued: Notify,
    /// Something was taken (a sender of a full queue waits on it).
    taken: Notify,
}

impl Controls {
    /// Queues `c`, or hands it back when the queue is full.
    fn push(&self, c: Control) -> Result<(), Control> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= CONTROL_QUEUE {
            return Err(c);
        }
        q.push_back(c);
        drop(q);
        self.queued.notify_one();
        Ok(())
    }

    /// Queues `c`, waiting for room.
    async fn send(&self, mut c: Control) {
        loop {
            // Made before the check: a `taken` in between is not missed
            // (`notify_one` leaves a permit when no one waits).
            let room = self.taken.notified();
            match self.push(c) {
                Ok(()) => return,
                Err(back) => c = back,
            }
            room.await;
        }
    }

    /// The next control frame to send.
    async fn recv(&self) -> Control {
        loop {
            let next = self.queued.notified();
            let popped = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let c = q.pop_front();
                if q.is_empty() {
                    // Give the slots back: an idle session keeps none.
                    *q = VecDeque::new();
                }
                c
            };
            if let Some(c) = popped {
                self.taken.notify_one();
                return c;
            }
            next.await;
        }
    }
}

/// What one session's relay is told besides its two ends.
pub(crate) struct RelayParams {
    /// Largest agent message (`websocket.max_message_bytes`).
    pub(crate) max_message: usize,
    /// Ping an agent silent this long (`websocket.keepalive_interval`).
    pub(crate) keepalive: Option<Duration>,
    /// After a takeover: the agent's first message is one the upstream
    /// has part of (its TEXT bit and bytes); those first bytes of the
    /// resent copy are dropped, the rest completes the message.
    pub(crate) skip: Option<(bool, u64)>,
    /// When the gateway drains, the session is parked (left intact
    /// upstream for another instance to take over) and the agent gets
    /// 1012, instead of both sides being closed with 1001.
    pub(crate) handover: bool,
}

/// What the keepalive looks at; each half writes its part.
#[derive(Default)]
struct Liveness {
    /// The agent sent bytes since the last look (set by its reader).
    heard: Arc<AtomicBool>,
    /// The reading half is waiting for the agent, not for credit or for
    /// the message rate: only then is the agent's silence its own.
    listening: AtomicBool,
    /// Keepalive pings sent since the agent was last heard.
    missed: AtomicU32,
}

/// Unanswered keepalive pings after which an agent is taken for gone (as
/// in websocket mode).
const MISSED_PINGS: u32 = 2;

impl Liveness {
    /// One keepalive interval passed: what to do about the agent.
    fn look(&self) -> Option<Control> {
        let heard = self.heard.swap(false, Ordering::Relaxed);
        if heard || !self.listening.load(Ordering::Relaxed) {
            self.missed.store(0, Ordering::Relaxed);
            None
        } else if self.missed.load(Ordering::Relaxed) >= MISSED_PINGS {
            // Two pings, an interval each, and not a byte back.
            Some(Control::KeepaliveTimeout)
        } else {
            Some(Control::Ping)
        }
    }
}

/// Where the resent copy of a partly delivered message stands.
enum Resent {
    /// Still inside what the upstream has: drop this chunk, skip on.
    Skip((bool, u64)),
    /// Past it: pass this on.
    Chunk(Chunk),
    /// Not the same message.
    Mismatch(&'static str),
}

/// Drops the first bytes of a resent message that the upstream already
/// has (`partial`: its TEXT bit and byte count).
fn resent((text, left): (bool, u64), mut chunk: Chunk) -> Resent {
    if chunk.text != text {
        return Resent::Mismatch("resent message is not the one the upstream has part of");
    }
    let len = chunk.payload.len() as u64;
    if len < left || (len == left && !chunk.fin) {
        if chunk.fin {
            return Resent::Mismatch("resent message is shorter than the part the upstream has");
        }
        return Resent::Skip((text, left - len));
    }
    chunk.payload = chunk.payload.slice(usize::try_from(left).unwrap_or(usize::MAX)..);
    Resent::Chunk(chunk)
}

/// Runs the session until either side ends it; returns how it ended.
pub(crate) async fn run<A>(
    agent: A,
    early: bytes::Bytes,
    session: MuxSession,
    params: RelayParams,
    mut gate: Option<Box<SessionMessages>>,
    metrics: RouteMetrics,
    drain: crate::session::drain::DrainWatch,
) -> SessionOutcome
where
    A: AsyncRead + AsyncWrite + Send + 'static,
{
    let RelayParams {
        max_message,
        keepalive,
        skip,
        handover,
    } = params;
    let live = Liveness::default();
    let (rd, wr) = tokio::io::split(agent);
    let mut reader = AgentReader::new(rd, &early, max_message).with_heard(live.heard.clone());
    // The reader copied them; `early` may share hyper's whole read buffer
    // (16 KiB after an upgrade), which an idle session must not keep.
    drop(early);
    let mut writer = AgentWriter::new(wr);
    let handle = session.handle();
    let parked = handle.clone();
    let (mut tx, mut rx) = session.split();
    let controls = &Controls::default();
    let m_up = metrics.clone();

    let live = &live;

    // Agent → upstream.
    let up = async move {
        let mut first = true;
        let mut skip = skip;
        loop {
            live.listening.store(true, Ordering::Relaxed);
            let next = reader.next().await;
            live.listening.store(false, Ordering::Relaxed);
            let ev = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    let (code, reason) = upstream_close(SessionOutcome::AgentGone);
                    let _ = tx.close(code, reason);
                    return SessionOutcome::AgentGone;
                }
                Err(v) => {
                    controls.send(Control::Close(v.close_code(), v.reason().into())).await;
                    let outcome = SessionOutcome::AgentViolation(v.close_code());
                    let (code, reason) = upstream_close(outcome);
                    let _ = tx.close(code, reason);
                    return outcome;
                }
            };
            match ev {
                AgentEvent::Data(chunk) => {
                    let chunk = match skip.take() {
                        None => chunk,
                        Some(partial) => match resent(partial, chunk) {
                            Resent::Skip(left) => {
                                skip = Some(left);
                                continue;
                            }
                            Resent::Chunk(rest) => rest,
                            Resent::Mismatch(why) => {
                                controls.send(Control::Close(close::POLICY, why.into())).await;
                                let _ = tx.close(close::POLICY, why);
                                return SessionOutcome::AgentViolation(close::POLICY);
                            }
                        },
                    };
                    if first
                        && let Some(g) = gate.as_mut()
                        && g.admit().await.is_err()
                    {
                        let closes = SessionOutcome::RateLimited.closes();
                        if let Some((code, reason)) = closes.agent {
                            controls.send(Control::Close(code, reason.into())).await;
                        }
                        let (code, reason) = upstream_close(SessionOutcome::RateLimited);
                        let _ = tx.close(code, reason);
                        return SessionOutcome::RateLimited;
                    }
                    first = chunk.fin;
                    m_up.bytes_up.inc_by(chunk.payload.len() as u64);
                    if chunk.fin {
                        m_up.messages_up.inc();
                    }
                    if tx.send_chunk(chunk).await.is_err() {
                        return SessionOutcome::UpstreamGone;
                    }
                }
                AgentEvent::Ping(p) => {
                    controls.send(Control::Pong(p)).await;
                }
                AgentEvent::Close(c) => {
                    // 1005 means "no code": the mux carries 1000 instead.
                    let (code, reason) = c.unwrap_or((close::NORMAL, String::new()));
                    let _ = tx.close(code, &reason);
                    return SessionOutcome::Closed;
                }
            }
        }
    };

    // Upstream → agent (and the control frames the reading half asks for).
    let down = async move {
        loop {
            tokio::select! {
                chunk = rx.recv_chunk() => match chunk {
                    Some(c) => {
                        // Whatever else is waiting goes out in the same
                        // write (no allocation unless there is more).
                        let mut more = Vec::new();
                        let mut bytes = c.payload.len();
                        while more.len() + 1 < MAX_BATCH && bytes < BATCH_BYTES {
                            match rx.recv_chunk().now_or_never() {
                                Some(Some(next)) => {
                                    bytes += next.payload.len();
                                    more.push(next);
                                }
                                _ => break,
                            }
                        }
                        metrics.bytes_down.inc_by(bytes as u64);
                        let messages = std::iter::once(&c).chain(&more).filter(|c| c.fin).count();
                        metrics.messages_down.inc_by(messages as u64);
                        if writer.chunks(&c, &more).await.is_err() {
                            return (SessionOutcome::AgentGone, writer);
                        }
                    }
                    None if parked.is_parked() => {
                        writer.close(close::SERVICE_RESTART, HANDOVER_REASON).await;
                        return (SessionOutcome::Draining, writer);
                    }
                    None => {
                        let (code, reason, why) = match rx.end() {
                            Some(SessionEnd::Closed { code, reason }) => (code, reason, SessionOutcome::Closed),
                            // The upstream broke the protocol on this
                            // session (past its credit or frame bound, a
                            // sequence gap): counted as its violation.
                            Some(SessionEnd::Failed(e @ SessionError::Protocol(_))) => {
                                (e.close_code(), e.to_string(), SessionOutcome::UpstreamViolation(e.close_code()))
                            }
                            Some(SessionEnd::Failed(e)) => (e.close_code(), e.to_string(), SessionOutcome::UpstreamGone),
                            None => (close::INTERNAL, "upstream session ended".to_owned(), SessionOutcome::UpstreamGone),
                        };
                        writer.close(code, &reason).await;
                        return (why, writer);
                    }
                },
                ctl = controls.recv() => match ctl {
                    Control::Pong(p) => {
                        let _ = writer.control(op::PONG, &p).await;
                    }
                    Control::Close(code, reason) => {
                        writer.close(code, &reason).await;
                        return (SessionOutcome::AgentViolation(code), writer);
                    }
                    Control::Ping => {
                        if writer.control(op::PING, PING_PAYLOAD).await.is_ok() {
                            live.missed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Control::KeepaliveTimeout => {
                        writer.close(Cause::KeepaliveTimeout.mapping().1, "keepalive timeout").await;
                        return (SessionOutcome::KeepaliveTimeout, writer);
                    }
                },
            }
        }
    };

    let mut drain = drain;
    let draining = std::future::poll_fn(|cx| {
        if drain.poll_started(cx) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    tokio::pin!(up, down, draining);
    let mut ticker = keepalive.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut up_end = None;
    let mut drained = false;
    let mut timed_out = false;
    // Once the session is ending, how long the rest may take: fixed when
    // the first side is done (later events do not push it back).
    let mut close_by: Option<tokio::time::Instant> = None;
    let ending = |drained: bool, timed_out: bool, up_end: Option<SessionOutcome>, other: SessionOutcome| {
        if drained {
            SessionOutcome::Draining
        } else if timed_out {
            SessionOutcome::KeepaliveTimeout
        } else {
            up_end.unwrap_or(other)
        }
    };
    loop {
        tokio::select! {
            r = &mut up, if up_end.is_none() => {
                up_end = Some(r);
                close_by.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_WAIT);
            }
            (r, _writer) = &mut down => {
                return ending(drained, timed_out, up_end, r);
            }
            () = until(close_by) => {
                // The other side did not finish closing in time.
                return ending(drained, timed_out, up_end, SessionOutcome::Closed);
            }
            () = tick(&mut ticker), if up_end.is_none() && !drained && !timed_out => {
                if let Some(ask) = live.look() {
                    if matches!(ask, Control::KeepaliveTimeout) {
                        timed_out = true;
                        close_by.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_WAIT);
                    }
                    // Full only while the writing half is stuck on the
                    // agent: a ping could not go out anyway, and a timeout
                    // ends the session at `close_by` regardless.
                    let _ = controls.push(ask);
                }
            }
            _ = &mut draining, if !drained => {
                drained = true;
                close_by.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_WAIT);
                if handover {
                    // Left as it is upstream for another instance to take
                    // over: the writing half tells the agent (1012).
                    handle.park();
                } else {
                    // Tell the agent; dropping the reading half (below,
                    // when this function returns) closes the mux session.
                    let (code, reason) = SessionOutcome::Draining.closes().agent.unwrap_or((close::GOING_AWAY, ""));
                    controls.send(Control::Close(code, reason.into())).await;
                }
            }
        }
    }
}

/// The next keepalive tick; never without keepalive.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Completes at `at`; never without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the upstream session hears when the agent's side ends it this way
/// (the table in `crate::error`).
fn upstream_close(outcome: SessionOutcome) -> (u16, &'static str) {
    outcome.closes().upstream.unwrap_or((close::GOING_AWAY, ""))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn chunk(text: bool, fin: bool, payload: &'static [u8]) -> Chunk {
        Chunk {
            text,
            fin,
            payload: Bytes::from_static(payload),
        }
    }

    fn rest(r: Resent) -> Option<(Vec<u8>, bool)> {
        match r {
            Resent::Chunk(c) => Some((c.payload.to_vec(), c.fin)),
            _ => None,
        }
    }

    #[test]
    fn a_resent_message_skips_what_the_upstream_has() {
        assert_eq!(
            rest(resent((true, 5), chunk(true, true, b"abcdefg"))),
            Some((b"fg".to_vec(), true))
        );
        // Across fragments: the first is all known, the second is cut.
        let Resent::Skip(left) = resent((true, 5), chunk(true, false, b"abc")) else {
            panic!("the first fragment is all known");
        };
        assert_eq!(left, (true, 2));
        assert_eq!(
            rest(resent(left, chunk(true, true, b"defg"))),
            Some((b"fg".to_vec(), true))
        );
        // Exactly what the upstream has: an empty last fragment still ends
        // the message.
        assert_eq!(
            rest(resent((false, 3), chunk(false, true, b"xyz"))),
            Some((Vec::new(), true))
        );
        // Not the same message: shorter, or another kind.
        assert!(matches!(
            resent((true, 5), chunk(true, true, b"abc")),
            Resent::Mismatch(_)
        ));
        assert!(matches!(
            resent((true, 1), chunk(false, true, b"abc")),
            Resent::Mismatch(_)
        ));
    }
}
