//! What a connection has in flight, and the idle watchdog that closes it
//! when it has had nothing for `idle_timeout`.
//!
//! A request counts as in flight from the moment the service is called
//! until its response body has ended (an SSE stream keeps its connection
//! busy for as long as it runs), so an HTTP/2 connection with an open
//! stream is never idle, and an HTTP/1.1 keep-alive connection waiting
//! for its next request is. When the watchdog fires, the listener shuts
//! the connection down gracefully: HTTP/1.1 closes, HTTP/2 sends GOAWAY.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use crate::body::{Body, BoxError};

/// One connection's activity, shared by its service and its watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `born` when `in_flight` last fell to zero.
    idle_since_ms: AtomicU64,
    /// Which deadline ended the connection, if one did (a [`Cut`]).
    cut: AtomicU8,
}

/// A deadline that ended a connection, counted in
/// `agentmux_listener_connections_cut_total{listener,reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// A request head not complete in time (408 for the first one).
    HeaderTimeout,
    /// The HTTP/2 preface and first SETTINGS not received in time.
    PrefaceTimeout,
    /// Nothing in flight for `idle_timeout`.
    Idle,
    /// The TLS handshake failed or timed out.
    TlsHandshake,
}

impl Cut {
    /// Every reason, for the metric's label values.
    pub(crate) const ALL: [Cut; 4] = [
        Self::HeaderTimeout,
        Self::PrefaceTimeout,
        Self::Idle,
        Self::TlsHandshake,
    ];

    /// The `reason` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::PrefaceTimeout => "preface_timeout",
            Self::Idle => "idle",
            Self::TlsHandshake => "tls_handshake",
        }
    }
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            cut: AtomicU8::new(0),
        })
    }

    /// Records the deadline that is ending the connection.
    pub(crate) fn cut(&self, why: Cut) {
        let i = Cut::ALL.iter().position(|c| *c == why).unwrap_or(0);
        self.cut.store(u8::try_from(i + 1).unwrap_or(0), Ordering::Relaxed);
    }

    /// The deadline that ended the connection, if one did.
    pub(crate) fn cut_by(&self) -> Option<Cut> {
        let i = usize::from(self.cut.load(Ordering::Relaxed));
        i.checked_sub(1).and_then(|i| Cut::ALL.get(i).copied())
    }

    /// A request starts; it stays in flight until the guard is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Something other than a request keeps the connection busy (a
    /// WebSocket session on one of its HTTP/2 streams) until the guard is
    /// dropped; not counted as a request.
    pub(crate) fn hold(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Requests started on the connection so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests whose responses have not ended.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
    }

    /// Resolves once the connection has had nothing in flight for
    /// `timeout`. One timer per connection, re-armed at most once per
    /// `timeout` while requests keep it busy.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let deadline = if self.in_flight() == 0 {
                self.idle_since() + timeout
            } else {
                now + timeout
            };
            if self.in_flight() == 0 && deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Keeps a request in flight (see [`Activity::start`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps an agent's HTTP/2 connection busy while a WebSocket session runs
/// on one of its streams (RFC 8441): the CONNECT's response ends at once,
/// and without it the idle watchdog would send GOAWAY under live
/// sessions. The listener puts one in an extended CONNECT's extensions;
/// the session kind takes it for the session's life.
#[derive(Clone, Debug)]
pub(crate) struct ConnHold(#[allow(dead_code)] Arc<InFlight>);

impl ConnHold {
    pub(crate) fn new(in_flight: InFlight) -> Self {
        Self(Arc::new(in_flight))
    }
}

/// A response body that keeps its request in flight until it ends (or is
/// dropped, when the agent goes away).
pub(crate) struct TrackedBody {
    inner: Body,
    in_flight: Option<InFlight>,
}

impl TrackedBody {
    pub(crate) fn new(inner: Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None | Some(Err(_)))) || this.inner.is_end_stream() {
            this.in_flight = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends() {
        let a = Activity::new();
        let timeout = Duration::from_secs(60);
        let guard = a.start();
        let watch = tokio::spawn({
            let a = a.clone();
            async move {
                let started = Instant::now();
                a.idle_for(timeout).await;
                started.elapsed()
            }
        });
        // A long request (an SSE stream) keeps the connection busy.
        tokio::time::sleep(Duration::from_secs(150)).await;
        assert!(!watch.is_finished());
        drop(guard);
        let waited = watch.await.unwrap();
        assert!(waited >= Duration::from_secs(210), "{waited:?}");
        assert!(waited <= Duration::from_secs(241), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_a_request_is_idle_from_birth() {
        let a = Activity::new();
        let started = Instant::now();
        a.idle_for(Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
