//! Pooled connections, opening them, and the leases that lend them out.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::{AcquireError, Flavor, Recipient, Shared};
use crate::body::Body;
use crate::config::UpstreamProtocol;
use crate::connect::UpstreamIo;

/// An open connection the pool owns.
pub(super) enum Conn {
    H1(http1::SendRequest<Body>, Meta),
    Raw(UpstreamIo, Meta),
    H2(H2Entry),
}

impl Conn {
    pub(super) fn age(&self, now: Instant) -> Duration {
        let created = match self {
            Conn::H1(_, m) | Conn::Raw(_, m) => m.created,
            Conn::H2(e) => e.meta.created,
        };
        now.saturating_duration_since(created)
    }
}

/// Facts about a connection that outlive its moves between idle and lent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    pub(super) created: Instant,
}

/// An exclusive connection waiting in the pool.
pub(super) struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    pub(super) fn new(conn: Conn) -> Self {
        Self {
            conn,
            since: Instant::now(),
        }
    }

    pub(super) fn unused_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    pub(super) fn age(&self, now: Instant) -> Duration {
        self.conn.age(now)
    }

    /// Keeps the entry (and its idle time) if the connection is still fit.
    pub(super) fn checked(mut self) -> Option<Self> {
        let usable = match &mut self.conn {
            Conn::H1(send, _) => !send.is_closed(),
            Conn::Raw(io, _) => io.is_idle_usable(),
            Conn::H2(e) => !e.is_closed(),
        };
        usable.then_some(self)
    }

    /// The connection, if it is still fit to lend: not closed by the peer,
    /// no stray bytes waiting.
    pub(super) fn into_usable(self) -> Option<Conn> {
        self.checked().map(|i| i.conn)
    }
}

/// A shared HTTP/2 connection and its stream accounting.
pub(super) struct H2Entry {
    send: http2::SendRequest<Body>,
    meta: Meta,
    last_used: Instant,
    streams: Arc<H2Streams>,
}

/// Stream counts of one HTTP/2 connection, updated without the pool lock.
struct H2Streams {
    in_flight: AtomicUsize,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS, as hyper last saw it.
    peer_max: AtomicUsize,
    /// Past its TTL: takes no new streams, closes when the last one ends.
    draining: AtomicBool,
}

impl H2Entry {
    pub(super) fn has_capacity(&self, cap: usize) -> bool {
        let limit = cap.min(self.streams.peer_max.load(Ordering::Relaxed));
        !self.send.is_closed()
            && !self.streams.draining.load(Ordering::Relaxed)
            && self.streams.in_flight.load(Ordering::Relaxed) < limit
    }

    pub(super) fn take_stream(&mut self, now: Instant) -> StreamParts {
        self.streams.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_used = now;
        StreamParts {
            send: self.send.clone(),
            streams: self.streams.clone(),
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.streams.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    pub(super) fn is_draining(&self) -> bool {
        self.streams.draining.load(Ordering::Relaxed)
    }

    pub(super) fn start_draining(&self) {
        self.streams.draining.store(true, Ordering::Relaxed);
    }

    pub(super) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.meta.created)
    }

    pub(super) fn unused_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_used)
    }

    pub(super) fn state(&self, now: Instant, idle_after: Duration, enabled: bool) -> super::LifeState {
        use super::LifeState;
        let busy = self.in_flight() > 0;
        if self.is_draining() || (self.is_closed() && busy) {
            LifeState::Recycling
        } else if busy && !enabled {
            LifeState::Unhealthy
        } else if busy {
            LifeState::Active
        } else if self.unused_for(now) >= idle_after {
            LifeState::Idle
        } else {
            LifeState::Ready
        }
    }
}

/// One stream's claim on a shared HTTP/2 connection.
pub(super) struct StreamParts {
    send: http2::SendRequest<Body>,
    streams: Arc<H2Streams>,
}

impl StreamParts {
    pub(super) fn release(self) {
        self.streams.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a lease holds.
pub(super) enum Parts {
    /// An exclusive connection (HTTP/1.1 or raw, not yet taken apart).
    Exclusive(Conn),
    /// A stream on a shared HTTP/2 connection.
    Stream(StreamParts),
    /// A raw transport now owned by a session; only the slot remains.
    Gone,
}

/// A claim on a pooled connection. Dropping it gives the connection back
/// (or frees its slot); it must never be dropped while the pool lock is
/// held, which is why the pool disarms leases it takes back under the lock.
pub(super) struct Taken {
    parts: Option<Parts>,
    pool: Arc<Shared>,
    reusable: bool,
    pub(super) fresh: bool,
}

impl Taken {
    pub(super) fn new(parts: Parts, pool: Arc<Shared>, fresh: bool) -> Self {
        Self {
            parts: Some(parts),
            pool,
            reusable: true,
            fresh,
        }
    }

    /// Takes the parts out without giving them back.
    pub(super) fn disarm(mut self) -> Option<Parts> {
        self.parts.take()
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            self.pool.release(parts, self.reusable);
        }
    }
}

/// Opens one connection and files the result with the pool.
pub(super) async fn open(shared: Arc<Shared>, to: Recipient) {
    let started = Instant::now();
    let result = establish(&shared).await;
    if result.is_ok() {
        // An EWMA (weight 1/4) of connect times; a lost race between two
        // connects only drops one sample.
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let old = shared.connect_ns.load(std::sync::atomic::Ordering::Relaxed);
        let new = if old == 0 { took } else { old - old / 4 + took / 4 };
        shared.connect_ns.store(new, std::sync::atomic::Ordering::Relaxed);
    }
    shared.connected(result, to);
}

/// Connects and, for HTTP pools, performs the HTTP/1.1 or HTTP/2 handshake.
pub(super) async fn establish(shared: &Arc<Shared>) -> Result<Conn, AcquireError> {
    let io = shared.connector.connect().await?;
    let meta = Meta {
        created: Instant::now(),
    };
    let Flavor::Http(protocol) = shared.flavor else {
        return Ok(Conn::Raw(io, meta));
    };
    let h2 = match protocol {
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Auto => io.alpn_is_h2(),
    };
    let weak = Arc::downgrade(shared);
    if h2 {
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(AcquireError::Handshake)?;
        let streams = Arc::new(H2Streams {
            in_flight: AtomicUsize::new(0),
            peer_max: AtomicUsize::new(usize::MAX),
            draining: AtomicBool::new(false),
        });
        tokio::spawn(drive_h2(conn, streams.clone(), weak));
        Ok(Conn::H2(H2Entry {
            send,
            meta,
            last_used: meta.created,
            streams,
        }))
    } else {
        let (send, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(AcquireError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
            }
            wake(&weak);
        });
        Ok(Conn::H1(send, meta))
    }
}

/// Drives an HTTP/2 connection, publishing the peer's stream limit as it
/// changes so the pool opens another connection before streams queue.
async fn drive_h2(
    mut conn: http2::Connection<TokioIo<UpstreamIo>, Body, TokioExecutor>,
    streams: Arc<H2Streams>,
    pool: Weak<Shared>,
) {
    let result = poll_fn(|cx| {
        streams
            .peer_max
            .store(conn.current_max_send_streams(), Ordering::Relaxed);
        Pin::new(&mut conn).poll(cx)
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
    }
    wake(&pool);
}

/// Tells the pool's maintenance task that a connection went away, so it is
/// replaced now rather than at the next tick.
fn wake(pool: &Weak<Shared>) {
    if let Some(p) = pool.upgrade() {
        p.wake.notify_one();
    }
}

/// A pooled connection that could not take a request, with nothing more
/// said (it was closed or closing).
#[derive(Debug, thiserror::Error)]
#[error("connection unusable")]
pub struct Unusable;

/// Why a request could not be exchanged on a lent connection.
#[derive(Debug)]
pub enum SendError {
    /// Nothing was written: the request comes back for another connection.
    NotSent {
        /// The request, untouched.
        request: Box<Request<Body>>,
        /// What was wrong with the connection.
        cause: Option<hyper::Error>,
    },
    /// The exchange failed after the request (or part of it) went out.
    Failed(hyper::Error),
}

/// An HTTP connection (or HTTP/2 stream) lent for one request.
pub struct HttpLease {
    taken: Taken,
}

impl std::fmt::Debug for HttpLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLease")
            .field("h2", &self.is_h2())
            .field("fresh", &self.taken.fresh)
            .finish()
    }
}

impl HttpLease {
    pub(super) fn new(taken: Taken) -> Option<Self> {
        match &taken.parts {
            Some(Parts::Exclusive(Conn::H1(..)) | Parts::Stream(_)) => Some(Self { taken }),
            _ => None,
        }
    }

    /// Whether the exchange goes over HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.taken.parts, Some(Parts::Stream(_)))
    }

    /// Whether the connection was opened for this request alone.
    pub fn is_fresh(&self) -> bool {
        self.taken.fresh
    }

    /// Sends the request and waits for the response head.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let result = match &mut self.taken.parts {
            Some(Parts::Exclusive(Conn::H1(send, _))) => {
                if let Err(e) = send.ready().await {
                    self.taken.reusable = false;
                    return Err(SendError::NotSent {
                        request: Box::new(req),
                        cause: Some(e),
                    });
                }
                send.try_send_request(req).await
            }
            Some(Parts::Stream(s)) => {
                if let Err(e) = s.send.ready().await {
                    return Err(SendError::NotSent {
                        request: Box::new(req),
                        cause: Some(e),
                    });
                }
                s.send.try_send_request(req).await
            }
            // `HttpLease::new` admits only the two kinds above.
            _ => {
                return Err(SendError::NotSent {
                    request: Box::new(req),
                    cause: None,
                });
            }
        };
        result.map_err(|mut e| {
            self.taken.reusable = false;
            match e.take_message() {
                Some(req) => SendError::NotSent {
                    request: Box::new(req),
                    cause: Some(e.into_error()),
                },
                None => SendError::Failed(e.into_error()),
            }
        })
    }

    /// Marks the connection as not to be pooled again (a timeout or error
    /// left it in an unknown state).
    pub fn mark_broken(&mut self) {
        self.taken.reusable = false;
    }
}

/// A connected upstream transport taken over by a WebSocket session, and
/// the pool slot it occupies until the session ends.
pub struct RawLease {
    io: UpstreamIo,
    slot: Taken,
}

impl std::fmt::Debug for RawLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLease").field("fresh", &self.slot.fresh).finish()
    }
}

impl RawLease {
    pub(super) fn new(mut taken: Taken) -> Option<Self> {
        match taken.parts.take() {
            Some(Parts::Exclusive(Conn::Raw(io, _))) => {
                taken.parts = Some(Parts::Gone);
                Some(Self { io, slot: taken })
            }
            other => {
                taken.parts = other;
                None
            }
        }
    }

    /// Whether the transport was connected for this session alone.
    pub fn is_fresh(&self) -> bool {
        self.slot.fresh
    }

    /// The transport and the slot guard; keep the guard for the session's
    /// life so the pool counts the connection as active.
    pub fn into_parts(self) -> (UpstreamIo, LeaseSlot) {
        (self.io, LeaseSlot { _slot: self.slot })
    }
}

/// Holds a pool slot for a session's life.
#[allow(missing_debug_implementations)]
pub struct LeaseSlot {
    _slot: Taken,
}
