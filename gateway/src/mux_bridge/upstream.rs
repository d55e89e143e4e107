//! The mux connections of a cluster: a few long-lived upstream WebSockets
//! per endpoint, opened at start on transports from the endpoint's warm
//! pool, kept at their number, and the resume of every session a dead
//! connection leaves behind.
//!
//! One [`MuxClient`] per endpoint: a session can move only between
//! connections of the same client, and the upstream keeps its state per
//! endpoint. When a connection ends, its detached sessions are resumed on
//! the least-loaded live connection (a new one is opened if none is live)
//! within `resume_timeout`; past it, or when the upstream cannot replay,
//! the session is given up: its agent hears 1011 and
//! `agentmux_mux_sessions_lost_total` counts it. Agents of resumed sessions
//! notice only a delay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::MuxParams;
pub(crate) use crate::metrics::MuxCounters;
use crate::mux::{ClientConfig, MuxClient, MuxClientConnection, ReplayBudget, ResumeError, SessionHandle};
use crate::upstream::Endpoint;

/// One endpoint's mux connections.
pub(crate) struct MuxEndpoint {
    pub(crate) endpoint: Arc<Endpoint>,
    client: MuxClient,
    conns: Mutex<Vec<Arc<MuxClientConnection>>>,
    /// Signalled when a connection comes up.
    up: Notify,
    params: MuxParams,
    pub(crate) counters: MuxCounters,
    authority: String,
}

/// A cluster's mux endpoints.
pub(crate) struct MuxCluster {
    pub(crate) endpoints: Vec<Arc<MuxEndpoint>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for MuxCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxCluster")
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

/// Session ids: a random per-process prefix over a counter, unique across
/// gateway instances sharing an upstream without coordination.
pub(crate) fn next_session_id() -> u64 {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| u64::from(rand::random::<u32>() | 1) << 32);
    prefix | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF)
}

impl MuxCluster {
    /// Starts the connection keepers of every endpoint.
    pub(crate) fn start(endpoints: &[Arc<Endpoint>], params: &MuxParams, counters: &MuxCounters) -> Self {
        let shutdown = CancellationToken::new();
        let endpoints = endpoints
            .iter()
            .map(|e| {
                // One budget per endpoint: sessions resume only on their
                // endpoint's connections, and an endpoint whose connections
                // stall must not spend the replay room of the others.
                let budget = ReplayBudget::new(params.replay_total_bytes);
                let client = MuxClient::new(ClientConfig {
                    replay_limit: params.replay_bytes,
                    replay_budget: Some(budget),
                    max_message: 64 << 20,
                    keepalive: Some(Duration::from_secs(15)),
                });
                let me = Arc::new(MuxEndpoint {
                    endpoint: e.clone(),
                    client,
                    conns: Mutex::new(Vec::new()),
                    up: Notify::new(),
                    params: params.clone(),
                    counters: counters.clone(),
                    authority: e.label().to_owned(),
                });
                for _ in 0..params.connections {
                    tokio::spawn(keep_one(me.clone(), shutdown.child_token()));
                }
                me
            })
            .collect();
        Self { endpoints, shutdown }
    }

    /// Stops keeping connections (cluster removed or gateway stopping).
    pub(crate) fn close(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for MuxCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl MuxEndpoint {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<MuxClientConnection>>> {
        self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live connection carrying the fewest sessions, waiting up to
    /// `wait` for one to come up.
    pub(crate) async fn least_loaded(&self, wait: Duration) -> Option<Arc<MuxClientConnection>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.up.notified();
            if let Some(c) = self.pick(|_| true) {
                return Some(c);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn pick(&self, ok: impl Fn(&MuxClientConnection) -> bool) -> Option<Arc<MuxClientConnection>> {
        self.lock()
            .iter()
            .filter(|c| !c.is_closed() && ok(c))
            .min_by_key(|c| c.session_count())
            .cloned()
    }

    /// Live connections now.
    pub(crate) fn live(&self) -> usize {
        self.lock().iter().filter(|c| !c.is_closed()).count()
    }

    /// Opens one mux connection on a pooled transport.
    async fn connect(&self) -> Result<Arc<MuxClientConnection>, MuxConnectError> {
        let pool = self.endpoint.raw.as_ref().ok_or(MuxConnectError::NoPool)?;
        let lease = pool.acquire_raw(false).await?;
        // The transport belongs to the mux connection for its whole life.
        let (io, slot) = lease.into_parts();
        let conn = self.client.connect(io, &self.authority, &self.params.path).await?;
        let conn = Arc::new(conn);
        self.lock().push(conn.clone());
        self.counters.connections.inc();
        // Keep the pool slot until the connection ends.
        let watch = conn.clone();
        tokio::spawn(async move {
            let _ = watch.closed().await;
            drop(slot);
        });
        self.up.notify_waiters();
        Ok(conn)
    }

    fn forget(&self, conn: &Arc<MuxClientConnection>) {
        self.lock().retain(|c| !Arc::ptr_eq(c, conn));
        self.counters.connections.dec();
    }

    /// Re-attaches one detached session, trying live connections (and a
    /// new one when none is live) until `resume_timeout`.
    async fn resume(self: &Arc<Self>, handle: SessionHandle, dead: u64) {
        let deadline = tokio::time::Instant::now() + self.params.resume_timeout;
        loop {
            if handle.end().is_some() {
                return; // ended meanwhile (agent left): nothing to resume
            }
            if handle.is_parked() {
                return; // left for another instance to take over
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                handle.abort("session could not be resumed in time");
                self.counters.lost.inc();
                return;
            }
            let Some(conn) = self.pick(|c| c.id() != dead) else {
                let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), self.up.notified()).await;
                continue;
            };
            match tokio::time::timeout(left, conn.resume(&handle)).await {
                Ok(Ok(())) => {
                    self.counters.resumed.inc();
                    return;
                }
                Ok(Err(ResumeError::ConnectionLost)) | Err(_) => continue,
                Ok(Err(ResumeError::NotResumable(_))) => return,
                Ok(Err(ResumeError::Failed(e))) => {
                    tracing::warn!(session = handle.id(), error = %e, "mux session lost: upstream could not resume it");
                    self.counters.lost.inc();
                    return;
                }
            }
        }
    }
}

/// Why a mux connection could not be opened (logged, then retried with
/// backoff).
#[derive(Debug, thiserror::Error)]
enum MuxConnectError {
    /// The cluster was built without a WebSocket pool (a bug: mux routes
    /// always get one).
    #[error("cluster has no WebSocket pool")]
    NoPool,
    /// No upstream transport could be had.
    #[error(transparent)]
    Acquire(#[from] crate::pool::AcquireError),
    /// The transport came, the mux upgrade on it failed.
    #[error(transparent)]
    Handshake(#[from] crate::mux::ConnectError),
}

/// Keeps one mux connection slot filled: connects (with backoff while the
/// upstream fails), waits for the connection to end, resumes its sessions
/// elsewhere, and connects again.
///
/// When the cluster is closed (a reload rebuilt or removed it, or the
/// gateway stops) the connection is [`retire`]d, not cut.
async fn keep_one(me: Arc<MuxEndpoint>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let conn = tokio::select! {
            r = me.connect() => r,
            _ = shutdown.cancelled() => return,
        };
        let conn = match conn {
            Ok(c) => {
                failures = 0;
                c
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = crate::pool::backoff(failures);
                if failures == 1 {
                    tracing::warn!(endpoint = me.endpoint.label(), error = %e, "cannot open a mux connection; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let end = tokio::select! {
            end = conn.closed() => end,
            _ = shutdown.cancelled() => {
                retire(&me, conn).await;
                return;
            }
        };
        me.forget(&conn);
        me.counters.ended(&end.reason);
        tracing::info!(
            endpoint = me.endpoint.label(),
            reason = ?end.reason,
            sessions = end.detached.len(),
            "mux connection ended; resuming its sessions elsewhere"
        );
        let dead = conn.id();
        for handle in end.detached {
            let me = me.clone();
            tokio::spawn(async move { me.resume(handle, dead).await });
        }
    }
}

/// A closed cluster's connection: no new sessions are placed on it, the
/// sessions under way carry on until they end, then it closes. If it dies
/// first, its sessions go through resume, which — with nothing left to
/// resume on — closes their agents with 1011 and counts them lost, rather
/// than leaving them waiting.
async fn retire(me: &Arc<MuxEndpoint>, conn: Arc<MuxClientConnection>) {
    me.forget(&conn);
    let mut check = tokio::time::interval(RETIRE_CHECK);
    loop {
        tokio::select! {
            end = conn.closed() => {
                let dead = conn.id();
                for handle in end.detached {
                    let me = me.clone();
                    tokio::spawn(async move { me.resume(handle, dead).await });
                }
                return;
            }
            _ = check.tick() => {
                if conn.session_count() == 0 {
                    conn.abort();
                    return;
                }
            }
        }
    }
}

/// How often a retiring connection looks whether its sessions are over.
const RETIRE_CHECK: Duration = Duration::from_secs(1);
