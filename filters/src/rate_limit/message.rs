//! WebSocket message rate limits: per session and per key.
//!
//! The gateway's relay calls [`SessionMessages::admit`] before forwarding
//! each agent message. A message over the rate is *delayed* until it
//! conforms; meanwhile the relay stops reading that agent's socket, so TCP
//! backpressure slows the agent down and no message is dropped.
//!
//! A session may be held back like this for at most `max_delay` in a row:
//! the clock starts at the first delayed message and resets as soon as a
//! message passes without waiting (the agent fell back under its rate). An
//! agent that keeps sending faster than its rate for longer than that, or a
//! message that alone would have to wait longer (a key's rate shared by too
//! many busy sessions, or a period longer than `max_delay`), fails with
//! [`MessageRateExceeded`] at once — waiting first would only hold the
//! socket longer for the same outcome — and the gateway closes the session
//! with 1008.

use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use super::error::{MessageRateExceeded, MessageScope};
use super::key::LimitKey;
use super::keyed::{KeyedGcra, quota};
use crate::governor_clock::TokioClock;
use crate::params::nonzero_duration;
use crate::{FilterMetrics, InvalidParam};

/// Validated parameters of the WebSocket message limits.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageLimitParams {
    session_quota: Quota,
    key_quota: Quota,
    max_delay: Duration,
}

impl MessageLimitParams {
    /// Each session may send `messages_per_second` (bursts of `burst`); all
    /// sessions of one key together `key_messages_per_second` (bursts of
    /// `key_burst`). A session may be held back for at most `max_delay`
    /// (> 0) in a row.
    pub fn new(
        messages_per_second: f64,
        burst: u32,
        key_messages_per_second: f64,
        key_burst: u32,
        max_delay: Duration,
    ) -> Result<Self, InvalidParam> {
        Ok(Self {
            session_quota: quota("messages_per_second", messages_per_second, "burst", burst)?,
            key_quota: quota(
                "key_messages_per_second",
                key_messages_per_second,
                "key_burst",
                key_burst,
            )?,
            max_delay: nonzero_duration("max_delay", max_delay)?,
        })
    }
}

/// The shared per-key message limits; hands out one [`SessionMessages`] per
/// WebSocket session. Cheap to clone; clones share the per-key buckets.
#[derive(Clone, Debug)]
pub struct MessageLimiter {
    params: MessageLimitParams,
    per_key: Arc<KeyedGcra>,
    metrics: Arc<dyn FilterMetrics>,
}

impl MessageLimiter {
    /// A limiter with empty buckets.
    pub fn new(params: MessageLimitParams, metrics: Arc<dyn FilterMetrics>) -> Self {
        let per_key = Arc::new(KeyedGcra::new(params.key_quota, metrics.clone()));
        Self {
            params,
            per_key,
            metrics,
        }
    }

    /// The limits of one new session of `key`. Keep it for the session's
    /// lifetime: it holds the session's own bucket.
    pub fn session(&self, key: LimitKey) -> SessionMessages {
        let session = RateLimiter::direct_with_clock(self.params.session_quota, TokioClock::new());
        SessionMessages {
            key,
            session,
            throttled_since: None,
            limiter: self.clone(),
            session_cell_held: false,
            waited: false,
        }
    }

    /// How many keys the per-key table tracks.
    pub fn tracked_keys(&self) -> usize {
        self.per_key.len()
    }
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// The message limits of one WebSocket session.
#[derive(Debug)]
pub struct SessionMessages {
    key: LimitKey,
    session: DirectLimiter,
    /// When the current run of delayed messages began.
    throttled_since: Option<Instant>,
    limiter: MessageLimiter,
    /// [`SessionMessages::try_admit`]: the waiting message already holds
    /// its session cell and now waits for the key's.
    session_cell_held: bool,
    /// [`SessionMessages::try_admit`]: the waiting message has been told to
    /// wait at least once.
    waited: bool,
}

/// What [`SessionMessages::try_admit`] decided for the next message.
#[derive(Debug)]
pub enum Admission {
    /// Send it now.
    Now,
    /// Hold it (stop reading the agent) for this long, then ask again.
    Wait(Duration),
    /// Over the delay bound: close the session with 1008.
    Exceeded(MessageRateExceeded),
}

impl SessionMessages {
    /// Waits until one more message conforms to both the session's and the
    /// key's rate, or fails at once if that would hold the session back for
    /// more than `max_delay` in a row (see the module docs).
    ///
    /// Dropping the future never admits a message; a cell already taken
    /// from the session bucket stays taken.
    pub async fn admit(&mut self) -> Result<(), MessageRateExceeded> {
        let now = Instant::now();
        let deadline = self.throttled_since.unwrap_or(now) + self.limiter.params.max_delay;
        let clock = self.session.clock();
        let session_delayed = self
            .wait(MessageScope::Session, deadline, || {
                self.session
                    .check()
                    .map_err(|not_until| not_until.wait_time_from(clock.now()))
            })
            .await?;
        let key_delayed = self
            .wait(MessageScope::Key, deadline, || self.limiter.per_key.check(&self.key))
            .await?;
        if session_delayed || key_delayed {
            self.throttled_since.get_or_insert(now);
            self.limiter.metrics.message_delayed();
        } else {
            self.throttled_since = None;
        }
        Ok(())
    }

    /// The same decision as [`SessionMessages::admit`] without awaiting,
    /// for callers that drive their own timers (the gateway's relay is a
    /// hand-written future). Ask again for the same message after a
    /// `Wait`; the cell a message already took is not taken twice.
    pub fn try_admit(&mut self) -> Admission {
        let now = Instant::now();
        let deadline = self.throttled_since.unwrap_or(now) + self.limiter.params.max_delay;
        let clock = self.session.clock();
        if !self.session_cell_held {
            match self.session.check() {
                Ok(()) => self.session_cell_held = true,
                Err(not_until) => {
                    return self.hold(
                        MessageScope::Session,
                        now,
                        deadline,
                        not_until.wait_time_from(clock.now()),
                    );
                }
            }
        }
        if let Err(wait) = self.limiter.per_key.check(&self.key) {
            return self.hold(MessageScope::Key, now, deadline, wait);
        }
        self.session_cell_held = false;
        if std::mem::take(&mut self.waited) {
            self.limiter.metrics.message_delayed();
        } else {
            self.throttled_since = None;
        }
        Admission::Now
    }

    fn hold(&mut self, scope: MessageScope, now: Instant, deadline: Instant, wait: Duration) -> Admission {
        if now + wait > deadline {
            self.limiter.metrics.message_rejected();
            self.session_cell_held = false;
            self.waited = false;
            return Admission::Exceeded(MessageRateExceeded::new(scope));
        }
        self.throttled_since.get_or_insert(now);
        self.waited = true;
        Admission::Wait(wait)
    }

    /// The key this session counts against.
    pub fn key(&self) -> &LimitKey {
        &self.key
    }

    /// Takes one cell from a bucket, sleeping while that fits before
    /// `deadline`. Returns whether it had to sleep.
    ///
    /// The two buckets are taken one after the other, not atomically: a
    /// message holds its session cell while it waits for the key's, which
    /// only makes the session slower, never faster, than its rate.
    async fn wait(
        &self,
        scope: MessageScope,
        deadline: Instant,
        check: impl Fn() -> Result<(), Duration>,
    ) -> Result<bool, MessageRateExceeded> {
        let mut delayed = false;
        loop {
            let wait = match check() {
                Ok(()) => return Ok(delayed),
                Err(wait) => wait,
            };
            let until = Instant::now() + wait;
            if until > deadline {
                self.limiter.metrics.message_rejected();
                return Err(MessageRateExceeded::new(scope));
            }
            delayed = true;
            tokio::time::sleep_until(until).await;
        }
    }
}
