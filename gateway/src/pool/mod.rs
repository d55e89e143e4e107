//! The warm pool of upstream connections of one endpoint.
//!
//! Each endpoint has a pool per kind of connection its routes need: an HTTP
//! pool (HTTP/1.1 connections lent one request at a time, HTTP/2
//! connections shared by many streams) and a raw pool (connected TCP+TLS
//! transports that a WebSocket session takes over for its whole life).
//!
//! - **Warm before traffic.** A maintenance task opens `min_connections` at
//!   start and keeps them open with no traffic at all, replacing any that
//!   die; a predicted demand (see [`Pool::set_target_hint`]) raises the
//!   target up to `max_connections`.
//! - **Fair and bounded.** Acquirers wait in FIFO order up to
//!   `acquire_timeout` and then fail with [`AcquireError::Exhausted`]
//!   (HTTP 503, WebSocket close 1013). At most `max_connections` are open
//!   or connecting at once, in use or not.
//! - **Never a bad connection.** An idle connection is checked for EOF and
//!   stray bytes before it is handed out; a lease that saw an error is
//!   closed, not pooled again; an HTTP/1.1 request that failed before any
//!   byte was written is retried by the caller on a fresh connection.
//! - **Lifecycle.** Connections past `connection_ttl` are recycled (HTTP/2
//!   ones drain their streams first), connections above the target unused
//!   for `idle_timeout` are closed. [`Pool::snapshot`] counts connections
//!   per [`LifeState`].
//!
//! The pool state sits behind one short mutex: acquire and release are a
//! few pointer moves under it, never I/O. Connects run in spawned tasks
//! that hand their result to the head of the wait queue.

mod conn;
mod maintain;
mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use conn::{HttpLease, LeaseSlot, RawLease, SendError, Unusable};
pub use state::{LifeState, PoolSnapshot};

use crate::config::{PoolParams, UpstreamProtocol};
use crate::connect::{ConnectError, Connector};
use crate::error::{Cause, ProxyError};
use conn::{Conn, H2Entry, Idle, Parts, Taken};

/// What a pool lends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// HTTP connections (HTTP/1.1 or HTTP/2 per the protocol setting).
    Http(UpstreamProtocol),
    /// Connected transports for WebSocket upgrades.
    Raw,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// No connection became free within `acquire_timeout`.
    #[error("no upstream connection available within {waited:?} (pool of {max} is busy)")]
    Exhausted {
        /// How long the acquirer waited.
        waited: Duration,
        /// The pool's `max_connections`.
        max: usize,
    },
    /// Opening a connection failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP handshake on a new connection failed.
    #[error("HTTP handshake with upstream failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// The pool was shut down (its cluster was removed by a reload).
    #[error("upstream pool is closed")]
    Closed,
}

/// A handle to one endpoint's pool; clones share it.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("endpoint", &self.shared.endpoint).finish()
    }
}

struct Shared {
    endpoint: Arc<str>,
    flavor: Flavor,
    connector: Connector,
    params: PoolParams,
    inner: Mutex<Inner>,
    /// Wakes the maintenance task early (a connection died, target moved).
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    /// Connections the predictor wants open; 0 when prediction is off.
    target_hint: AtomicUsize,
    /// Smoothed time to open a connection, in nanoseconds (sizes a raw
    /// pool's spares from the forecast arrival rate).
    connect_ns: std::sync::atomic::AtomicU64,
    /// Connections opened since the pool started (what its sizing cost:
    /// set against the sessions or requests served).
    opened: std::sync::atomic::AtomicU64,
    /// False while the endpoint is ejected by health checks.
    enabled: AtomicBool,
}

type Waiter = oneshot::Sender<Result<Taken, AcquireError>>;

/// Where a finished connect goes.
enum Recipient {
    /// Into the pool, then to the head of the wait queue.
    Pool,
    /// To the one acquirer that asked for a fresh connection.
    Fresh(Waiter),
}

#[derive(Default)]
struct Inner {
    /// Exclusive connections (HTTP/1.1, raw), most recently used last.
    idle: Vec<Idle>,
    /// Shared HTTP/2 connections.
    h2: Vec<H2Entry>,
    waiters: VecDeque<Waiter>,
    connecting: usize,
    /// Exclusive connections lent out.
    leased: usize,
    /// Consecutive failed connects (drives warm-up backoff).
    failures: u32,
    /// Warm-up slots that failed and wait out the backoff.
    failed_slots: usize,
    backoff_until: Option<Instant>,
    /// Whether this endpoint spoke HTTP/2 last time (one connection then
    /// serves many waiters).
    seen_h2: bool,
}

impl Pool {
    /// Creates a pool and starts its maintenance task, which opens the
    /// minimum connections at once.
    pub(crate) fn new(endpoint: Arc<str>, flavor: Flavor, connector: Connector, params: PoolParams) -> Self {
        let shared = Arc::new(Shared {
            endpoint,
            flavor,
            connector,
            params,
            inner: Mutex::new(Inner {
                seen_h2: flavor == Flavor::Http(UpstreamProtocol::Http2),
                ..Inner::default()
            }),
            wake: Arc::new(Notify::new()),
            shutdown: CancellationToken::new(),
            target_hint: AtomicUsize::new(0),
            connect_ns: std::sync::atomic::AtomicU64::new(0),
            opened: std::sync::atomic::AtomicU64::new(0),
            enabled: AtomicBool::new(true),
        });
        tokio::spawn(maintain::run(Arc::downgrade(&shared), shared.shutdown.clone()));
        Self { shared }
    }

    /// A pool of plaintext TCP connections to `addr`, outside any cluster:
    /// default settings except `min_connections` (kept warm) and
    /// `max_connections` (raised to at least `min_connections` and 1). For
    /// benchmarks and tools (`agentmux-bench pool` times its acquires); the
    /// gateway builds its pools from the config file. Call it inside a
    /// tokio runtime: warming starts at once.
    #[doc(hidden)]
    pub fn for_tcp(addr: std::net::SocketAddr, flavor: Flavor, min_connections: usize, max_connections: usize) -> Self {
        let params = PoolParams {
            min_connections,
            max_connections: max_connections.max(min_connections).max(1),
            ..PoolParams::default()
        };
        let connector = Connector::Net {
            addr: crate::config::EndpointAddr::Ip(addr),
            tls: None,
            timeout: Duration::from_secs(5),
            keepalive: None,
        };
        Self::new(addr.to_string().into(), flavor, connector, params)
    }

    /// Lends an HTTP connection (HTTP pools only).
    pub async fn acquire_http(&self) -> Result<HttpLease, AcquireError> {
        HttpLease::new(self.acquire(false).await?).ok_or(AcquireError::Closed)
    }

    /// Lends an HTTP connection opened for this request alone, skipping
    /// idle ones: the retry path after a pooled connection failed before
    /// the request was written.
    pub async fn acquire_fresh_http(&self) -> Result<HttpLease, AcquireError> {
        HttpLease::new(self.acquire(true).await?).ok_or(AcquireError::Closed)
    }

    /// Takes a connected transport for a WebSocket session (raw pools).
    /// `fresh` skips idle transports.
    pub async fn acquire_raw(&self, fresh: bool) -> Result<RawLease, AcquireError> {
        RawLease::new(self.acquire(fresh).await?).ok_or(AcquireError::Closed)
    }

    async fn acquire(&self, fresh: bool) -> Result<Taken, AcquireError> {
        let start = Instant::now();
        let shared = &self.shared;
        let rx = {
            let mut inner = shared.lock();
            if shared.shutdown.is_cancelled() {
                return Err(AcquireError::Closed);
            }
            if !fresh && let Some(parts) = shared.try_take(&mut inner) {
                return Ok(Taken::new(parts, shared.clone(), false));
            }
            let (tx, rx) = oneshot::channel();
            if fresh && Shared::open_count(&inner) < shared.params.max_connections {
                shared.spawn_connect(&mut inner, Recipient::Fresh(tx));
            } else {
                inner.waiters.push_back(tx);
                shared.dispatch(&mut inner);
            }
            rx
        };
        match tokio::time::timeout(shared.params.acquire_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AcquireError::Closed),
            Err(_) => Err(AcquireError::Exhausted {
                waited: start.elapsed(),
                max: shared.params.max_connections,
            }),
        }
    }

    /// Counts connections by lifecycle state.
    pub fn snapshot(&self) -> PoolSnapshot {
        self.shared.snapshot()
    }

    /// Sets the number of connections a demand forecast wants open. The pool
    /// keeps `max(min_connections, hint)` open, capped at `max_connections`.
    pub fn set_target_hint(&self, hint: usize) {
        let old = self.shared.target_hint.swap(hint, Ordering::Relaxed);
        if old != hint {
            self.shared.wake.notify_one();
        }
    }

    /// How long opening a connection takes, smoothed (zero before the
    /// first connect).
    pub fn connect_time(&self) -> Duration {
        Duration::from_nanos(self.shared.connect_ns.load(Ordering::Relaxed))
    }

    /// Whether the pool lends transports that sessions keep (WebSocket),
    /// rather than HTTP connections that come back.
    pub fn is_raw(&self) -> bool {
        self.shared.flavor == Flavor::Raw
    }

    /// Marks the endpoint healthy or ejected. While ejected the pool keeps
    /// nothing warm and closes leases when they come back.
    pub fn set_enabled(&self, enabled: bool) {
        if self.shared.enabled.swap(enabled, Ordering::Relaxed) != enabled {
            self.shared.wake.notify_one();
        }
    }

    /// Closes the pool: waiters fail, idle connections close, leases close
    /// when returned. Used when a reload removes the cluster.
    pub fn close(&self) {
        self.shared.shutdown.cancel();
        let (idle, h2, waiters) = {
            let mut inner = self.shared.lock();
            (
                std::mem::take(&mut inner.idle),
                std::mem::take(&mut inner.h2),
                std::mem::take(&mut inner.waiters),
            )
        };
        drop((idle, h2));
        for w in waiters {
            let _ = w.send(Err(AcquireError::Closed));
        }
    }

    /// The pool's settings.
    pub fn params(&self) -> &PoolParams {
        &self.shared.params
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under this lock can panic halfway through an update that
        // matters more than losing the pool, so recover from poisoning.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections open or opening, which `max_connections` bounds.
    fn open_count(inner: &Inner) -> usize {
        inner.idle.len() + inner.h2.len() + inner.connecting + inner.leased
    }

    /// Connections to keep open: the minimum, raised by a forecast.
    fn target(&self) -> usize {
        let hint = self.target_hint.load(Ordering::Relaxed);
        self.params.min_connections.max(hint).min(self.params.max_connections)
    }

    /// Takes a usable connection without waiting, if there is one.
    fn try_take(&self, inner: &mut Inner) -> Option<Parts> {
        let cap = self.params.max_streams_per_connection as usize;
        if let Some(e) = inner.h2.iter_mut().find(|e| e.has_capacity(cap)) {
            return Some(Parts::Stream(e.take_stream(Instant::now())));
        }
        loop {
            // HTTP connections come back, so the most recently used goes
            // out first (the rest can idle out). A raw transport never
            // comes back: the oldest spare goes first, which keeps every
            // spare's age bounded (no spare sits until a middlebox's idle
            // timeout cuts it) and hands out connections long established.
            let idle = match self.flavor {
                Flavor::Raw if !inner.idle.is_empty() => inner.idle.remove(0),
                _ => inner.idle.pop()?,
            };
            if let Some(conn) = idle.into_usable() {
                inner.leased += 1;
                if self.flavor == Flavor::Raw {
                    // A raw transport never comes back: have the
                    // maintenance task open its replacement now rather
                    // than at the next tick, so the next session finds a
                    // warm one too.
                    self.wake.notify_one();
                }
                return Some(Parts::Exclusive(conn));
            }
        }
    }

    /// Hands free connections to waiters in FIFO order and opens new ones
    /// for those still waiting, within `max_connections`.
    fn dispatch(self: &Arc<Self>, inner: &mut Inner) {
        while let Some(w) = inner.waiters.front() {
            if w.is_closed() {
                inner.waiters.pop_front();
                continue;
            }
            let Some(parts) = self.try_take(inner) else {
                break;
            };
            let Some(w) = inner.waiters.pop_front() else {
                break;
            };
            if let Err(Ok(taken)) = w.send(Ok(Taken::new(parts, self.clone(), false))) {
                // The waiter gave up between the check and the send. Take the
                // parts back without running the lease's drop (which would
                // lock the pool again).
                if let Some(parts) = taken.disarm() {
                    drop(self.release_locked(inner, parts, true));
                }
            }
        }
        let waiting = inner.waiters.iter().filter(|w| !w.is_closed()).count();
        if waiting == 0 {
            return;
        }
        let per_conn = if inner.seen_h2 {
            self.params.max_streams_per_connection as usize
        } else {
            1
        };
        let covered = inner.connecting * per_conn;
        let wanted = waiting.saturating_sub(covered).div_ceil(per_conn);
        self.start_connects(inner, wanted);
    }

    /// Starts up to `n` connects for the pool, within `max_connections`.
    fn start_connects(self: &Arc<Self>, inner: &mut Inner, n: usize) -> usize {
        let room = self.params.max_connections.saturating_sub(Self::open_count(inner));
        let n = n.min(room);
        for _ in 0..n {
            self.spawn_connect(inner, Recipient::Pool);
        }
        n
    }

    /// Opens one connection in a task of its own, so an acquirer that gives
    /// up (timeout, agent gone) never leaves the count of connects wrong.
    fn spawn_connect(self: &Arc<Self>, inner: &mut Inner, to: Recipient) {
        if self.shutdown.is_cancelled() {
            return;
        }
        inner.connecting += 1;
        tokio::spawn(conn::open(self.clone(), to));
    }

    /// Gives back what a lease held, under the lock. Returns a connection to
    /// close, which the caller drops after unlocking.
    fn release_locked(&self, inner: &mut Inner, parts: Parts, reusable: bool) -> Option<Conn> {
        match parts {
            Parts::Exclusive(conn) => {
                inner.leased -= 1;
                let keep = reusable
                    && self.enabled.load(Ordering::Relaxed)
                    && !self.shutdown.is_cancelled()
                    && conn.age(Instant::now()) < self.params.connection_ttl;
                if keep {
                    inner.idle.push(Idle::new(conn));
                    None
                } else {
                    Some(conn)
                }
            }
            Parts::Stream(stream) => {
                stream.release();
                None
            }
            Parts::Gone => {
                inner.leased -= 1;
                None
            }
        }
    }

    /// A lease ended: pool what it held and serve the next waiter.
    fn release(self: &Arc<Self>, parts: Parts, reusable: bool) {
        let mut inner = self.lock();
        let closed = self.release_locked(&mut inner, parts, reusable);
        self.dispatch(&mut inner);
        drop(inner);
        drop(closed);
    }

    /// Files the result of a connect: hands the connection to whoever
    /// asked for it or pools it, or passes the error on and backs off.
    fn connected(self: &Arc<Self>, result: Result<Conn, AcquireError>, to: Recipient) {
        let mut inner = self.lock();
        inner.connecting -= 1;
        let conn = match result {
            Ok(conn) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                conn
            }
            Err(e) => {
                inner.failures = inner.failures.saturating_add(1);
                inner.failed_slots = (inner.failed_slots + 1).min(self.target());
                inner.backoff_until = Some(Instant::now() + backoff(inner.failures));
                match to {
                    Recipient::Fresh(w) => {
                        let _ = w.send(Err(e));
                        self.dispatch(&mut inner);
                    }
                    Recipient::Pool => self.fail_next(&mut inner, e),
                }
                return;
            }
        };
        inner.failures = 0;
        inner.failed_slots = 0;
        inner.backoff_until = None;
        let fresh = match to {
            Recipient::Fresh(w) => w,
            Recipient::Pool => {
                match conn {
                    Conn::H2(entry) => {
                        inner.seen_h2 = true;
                        inner.h2.push(entry);
                    }
                    other => inner.idle.push(Idle::new(other)),
                }
                return self.dispatch(&mut inner);
            }
        };
        let parts = match conn {
            Conn::H2(mut entry) => {
                inner.seen_h2 = true;
                let parts = Parts::Stream(entry.take_stream(Instant::now()));
                inner.h2.push(entry);
                parts
            }
            other => {
                inner.leased += 1;
                Parts::Exclusive(other)
            }
        };
        if let Err(Ok(taken)) = fresh.send(Ok(Taken::new(parts, self.clone(), true)))
            && let Some(parts) = taken.disarm()
        {
            drop(self.release_locked(&mut inner, parts, true));
        }
        self.dispatch(&mut inner);
    }

    /// Gives a connect error to the first waiter still waiting, so an
    /// unreachable upstream answers 502 at once instead of a late 503.
    fn fail_next(self: &Arc<Self>, inner: &mut Inner, mut e: AcquireError) {
        while let Some(w) = inner.waiters.pop_front() {
            match w.send(Err(e)) {
                Err(Err(back)) => e = back,
                _ => break,
            }
        }
        self.dispatch(inner);
    }

    fn snapshot(&self) -> PoolSnapshot {
        let inner = self.lock();
        let now = Instant::now();
        let idle_after = self.params.health_check_interval;
        let enabled = self.enabled.load(Ordering::Relaxed);
        let mut s = PoolSnapshot {
            initializing: inner.connecting,
            failed: inner.failed_slots,
            waiters: inner.waiters.iter().filter(|w| !w.is_closed()).count(),
            open: Self::open_count(&inner),
            opened: self.opened.load(Ordering::Relaxed),
            ..PoolSnapshot::default()
        };
        if enabled {
            s.active = inner.leased;
        } else {
            s.unhealthy = inner.leased;
        }
        for i in &inner.idle {
            if i.unused_for(now) >= idle_after {
                s.idle += 1;
            } else {
                s.ready += 1;
            }
        }
        for e in &inner.h2 {
            match e.state(now, idle_after, enabled) {
                LifeState::Active => s.active += 1,
                LifeState::Idle => s.idle += 1,
                LifeState::Recycling => s.recycling += 1,
                LifeState::Unhealthy => s.unhealthy += 1,
                _ => s.ready += 1,
            }
        }
        s
    }
}

/// Delay before the next connect after `failures` in a row (warm-up
/// connects and mux connections): the retry filter's full-jitter backoff,
/// uniform in [0, min(30 s, 100 ms · 2^n)], so a fleet of gateways does not
/// reconnect to a recovering upstream in lockstep.
pub(crate) fn backoff(failures: u32) -> Duration {
    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(30);
    match agentmux_filters::retry::Backoff::new(BASE, CAP) {
        Ok(b) => b.delay(failures.saturating_sub(1)),
        // The constants satisfy the constructor; this arm is never taken.
        Err(_) => BASE,
    }
}

/// The answer an agent gets when no connection could be had.
impl From<AcquireError> for ProxyError {
    fn from(e: AcquireError) -> Self {
        match e {
            AcquireError::Exhausted { .. } => {
                ProxyError::new(Cause::PoolExhausted, "upstream connection pool exhausted").with_source(e)
            }
            AcquireError::Connect(ConnectError::Timeout { .. }) => {
                ProxyError::new(Cause::UpstreamTimeout, "upstream connect timed out").with_source(e)
            }
            AcquireError::Connect(_) | AcquireError::Handshake(_) => {
                ProxyError::new(Cause::UpstreamConnect, "cannot connect to upstream").with_source(e)
            }
            AcquireError::Closed => ProxyError::new(Cause::Draining, "upstream pool closed").with_source(e),
        }
    }
}
