//! A WebSocket session's relay: two lanes in one task, the close handshake,
//! keepalive pings, and what each side hears when the other fails.
//!
//! Both directions run in one future (no task per direction, no channel
//! between them): each poll pumps agent → upstream, then upstream → agent.
//!
//! Ending a session:
//! - a close frame from either side is forwarded; when both sides have
//!   sent one the handshake is complete and both transports are shut down;
//!   a side that does not answer a close within `CLOSE_TIMEOUT` is cut;
//! - the agent vanishing (EOF, reset) sends the upstream `1001`;
//! - the upstream vanishing sends the agent `1011` at once;
//! - a protocol violation earns its sender `1002`/`1007`/`1009` and the
//!   other side `1001` (agent at fault) or `1011` (upstream at fault);
//! - gateway shutdown sends both sides `1001`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use agentmux_filters::rate_limit::SessionMessages;

use super::lane::{Dir, Lane, LaneCounters, Pumped};
use crate::session::drain::DrainWatch;

/// How long a side may take to answer a close (or to take our last bytes).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const PING_PAYLOAD: [u8; 8] = *b"agentmux";

pub use crate::error::SessionOutcome;
use crate::error::close;

/// Counts of a finished session.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// Messages agent → upstream.
    pub messages_up: u64,
    /// Messages upstream → agent.
    pub messages_down: u64,
    /// Bytes read from the agent.
    pub bytes_up: u64,
    /// Bytes read from the upstream.
    pub bytes_down: u64,
    /// Why it ended.
    pub end: SessionOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// One side sent a close; waiting for the other's.
    Closing,
    /// Writing out what is owed, then shutting the transports.
    Flushing,
    Shutdown,
    Done,
}

/// Settings of one relay.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelayParams {
    pub(crate) max_message: usize,
    pub(crate) read_size: usize,
    pub(crate) keepalive: Option<Duration>,
}

impl RelayParams {
    /// A route's relay settings: reads of at most 16 KiB (and never more
    /// than the route lets a slow reader hold).
    pub(crate) fn for_route(ws: &crate::config::WebSocketParams) -> Self {
        Self {
            max_message: ws.max_message_bytes,
            read_size: ws.max_buffered_bytes.min(16 * 1024),
            keepalive: ws.keepalive_interval,
        }
    }
}

/// The relay future; resolves when the session is over.
pub(crate) struct Relay<A, U> {
    agent: A,
    upstream: U,
    up: Lane,
    down: Lane,
    phase: Phase,
    end: Option<SessionOutcome>,
    deadline: Option<Pin<Box<Sleep>>>,
    drain: Option<DrainWatch>,
    keepalive: Option<(Duration, Pin<Box<Sleep>>, u32)>,
    /// Holding the agent's next message back (message rate limit).
    throttle: Option<Pin<Box<Sleep>>>,
}

impl<A, U> Relay<A, U>
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    /// A relay between `agent` and `upstream`. `agent_early` and
    /// `upstream_early` are WebSocket bytes each side sent right after its
    /// handshake, read already by the HTTP layer: relayed first.
    pub(crate) fn new(agent: A, upstream: U, params: RelayParams, early: (&[u8], &[u8]), drain: DrainWatch) -> Self {
        let (agent_early, upstream_early) = early;
        let mut up = Lane::new(Dir::Up, params.max_message, params.read_size);
        up.preload(agent_early);
        let mut down = Lane::new(Dir::Down, params.max_message, params.read_size);
        down.preload(upstream_early);
        Self {
            agent,
            upstream,
            up,
            down,
            phase: Phase::Open,
            end: None,
            deadline: None,
            drain: Some(drain),
            keepalive: params.keepalive.map(|d| (d, Box::pin(tokio::time::sleep(d)), 0)),
            throttle: None,
        }
    }

    /// Applies a per-session message rate limit to the agent's messages.
    pub(crate) fn with_messages(mut self, gate: Option<SessionMessages>) -> Self {
        self.up.gate = gate;
        self
    }

    /// Reports live message, byte and relay-time counts.
    pub(crate) fn with_counters(mut self, up: LaneCounters, down: LaneCounters) -> Self {
        self.up.set_counters(up);
        self.down.set_counters(down);
        self
    }

    fn summary(&self) -> Summary {
        Summary {
            messages_up: self.up.messages,
            messages_down: self.down.messages,
            bytes_up: self.up.bytes,
            bytes_down: self.down.bytes,
            end: self.end.unwrap_or(SessionOutcome::Closed),
        }
    }

    /// Records why the session ends (the first reason wins) and moves on.
    fn finish(&mut self, reason: SessionOutcome, phase: Phase) {
        self.end.get_or_insert(reason);
        if phase == Phase::Flushing {
            self.up.reading = false;
            self.down.reading = false;
        }
        if self.phase != phase {
            self.phase = phase;
            if self.deadline.is_none() {
                self.deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
            }
        }
    }

    /// Reacts to what the agent → upstream lane reported.
    fn on_up(&mut self, event: Pumped) {
        match event {
            Pumped::Closed => {
                self.up.reading = false;
                let phase = if self.down.close_sent {
                    Phase::Flushing
                } else {
                    Phase::Closing
                };
                self.finish(SessionOutcome::Closed, phase);
            }
            Pumped::Violation(v) => {
                self.down.send_close(v.close_code(), v.reason());
                self.end(SessionOutcome::AgentViolation(v.close_code()));
            }
            Pumped::SourceGone => self.end(SessionOutcome::AgentGone),
            Pumped::SinkGone => self.end(SessionOutcome::UpstreamGone),
            Pumped::Throttled(wait) => {
                // Stop reading the agent: TCP backpressure slows it down.
                self.up.reading = false;
                self.throttle = Some(Box::pin(tokio::time::sleep(wait)));
            }
            Pumped::RateExceeded => self.end(SessionOutcome::RateLimited),
            Pumped::Pending | Pumped::Yield => {}
        }
    }

    /// Reacts to what the upstream → agent lane reported.
    fn on_down(&mut self, event: Pumped) {
        match event {
            Pumped::Closed => {
                self.down.reading = false;
                let phase = if self.up.close_sent {
                    Phase::Flushing
                } else {
                    Phase::Closing
                };
                self.finish(SessionOutcome::Closed, phase);
            }
            Pumped::Violation(v) => {
                self.up.send_close(v.close_code(), v.reason());
                self.end(SessionOutcome::UpstreamViolation(v.close_code()));
            }
            Pumped::SourceGone if self.phase == Phase::Closing => {
                // An agent that started the close gets a plain answer.
                self.down.send_close(close::NORMAL, "upstream connection lost");
                self.finish(SessionOutcome::UpstreamGone, Phase::Flushing);
            }
            Pumped::SourceGone => self.end(SessionOutcome::UpstreamGone),
            Pumped::SinkGone => self.end(SessionOutcome::AgentGone),
            // Only agents are rate limited.
            Pumped::Throttled(_) | Pumped::RateExceeded | Pumped::Pending | Pumped::Yield => {}
        }
    }

    /// Ends the session this way: each side the gateway closes hears what
    /// `SessionOutcome::closes` says, then what is owed is flushed.
    fn end(&mut self, outcome: SessionOutcome) {
        self.send_closes(outcome);
        self.finish(outcome, Phase::Flushing);
    }

    fn send_closes(&mut self, outcome: SessionOutcome) {
        let closes = outcome.closes();
        if let Some((code, reason)) = closes.agent {
            self.down.send_close(code, reason);
        }
        if let Some((code, reason)) = closes.upstream {
            self.up.send_close(code, reason);
        }
    }

    /// Pings a quiet agent; ends the session when two pings in a row go
    /// unanswered (nothing at all heard from the agent for three intervals).
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) {
        let Some((interval, timer, missed)) = self.keepalive.as_mut() else {
            return;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return;
        }
        let interval = *interval;
        timer.as_mut().reset(tokio::time::Instant::now() + interval);
        let _ = timer.as_mut().poll(cx);
        if std::mem::take(&mut self.up.activity) {
            *missed = 0;
        } else if *missed >= MISSED_PINGS {
            self.end(SessionOutcome::KeepaliveTimeout);
        } else if self.down.send_ping(&PING_PAYLOAD) {
            self.up.expect_pong = Some(PING_PAYLOAD);
            *missed += 1;
        }
    }
}

/// Unanswered keepalive pings after which an agent is taken for gone.
const MISSED_PINGS: u32 = 2;

impl<A, U> Future for Relay<A, U>
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Summary;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Summary> {
        let this = self.get_mut();
        loop {
            if let Some(d) = this.drain.as_mut()
                && d.poll_started(cx)
            {
                this.drain = None;
                this.send_closes(SessionOutcome::Draining);
                this.finish(SessionOutcome::Draining, Phase::Closing);
            }
            if let Some(d) = this.deadline.as_mut()
                && d.as_mut().poll(cx).is_ready()
                && this.phase != Phase::Done
            {
                // A side did not answer in time: stop waiting for it.
                this.phase = Phase::Done;
            }
            match this.phase {
                Phase::Open | Phase::Closing => {
                    if this.phase == Phase::Open {
                        this.poll_keepalive(cx);
                    }
                    if let Some(t) = this.throttle.as_mut()
                        && t.as_mut().poll(cx).is_ready()
                    {
                        this.throttle = None;
                        this.up.resume();
                    }
                    let before = this.phase;
                    let a = this.up.pump(cx, &mut this.agent, &mut this.upstream);
                    let yielded = matches!(a, Pumped::Yield);
                    // A new throttle's timer has not been polled yet, so it
                    // would not wake this task: go round once to register it.
                    let throttled = matches!(a, Pumped::Throttled(_));
                    this.on_up(a);
                    if this.phase != before || throttled {
                        continue;
                    }
                    let b = this.down.pump(cx, &mut this.upstream, &mut this.agent);
                    let yielded = yielded || matches!(b, Pumped::Yield);
                    this.on_down(b);
                    if this.phase != before || yielded {
                        if yielded && this.phase == before {
                            return Poll::Pending;
                        }
                        continue;
                    }
                    return Poll::Pending;
                }
                Phase::Flushing => {
                    let a = this.up.flush_out(cx, &mut this.upstream);
                    let b = this.down.flush_out(cx, &mut this.agent);
                    // A side that errors will never take the bytes: done.
                    if a.is_pending() || b.is_pending() {
                        return Poll::Pending;
                    }
                    this.phase = Phase::Shutdown;
                }
                Phase::Shutdown => {
                    let a = Pin::new(&mut this.upstream).poll_shutdown(cx);
                    let b = Pin::new(&mut this.agent).poll_shutdown(cx);
                    if a.is_pending() || b.is_pending() {
                        return Poll::Pending;
                    }
                    this.phase = Phase::Done;
                }
                Phase::Done => return Poll::Ready(this.summary()),
            }
        }
    }
}
