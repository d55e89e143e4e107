//! The analytics task: owns the [`Engine`], takes ticks from a bounded
//! channel, sends alert events to the sinks and publishes what readers need
//! after every tick.
//!
//! Nothing here blocks the data path: the producer `try_send`s one tick a
//! second (a full queue means the task is behind; dropping a tick costs
//! one second of resolution), readers take the published state from a
//! `watch` channel, and history — the one request that needs the engine
//! itself — is a message to the task answered on a oneshot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::alert::{AlertChange, AlertEvent, AlertStats, Severity};
use super::engine::{AnalyticsParams, Engine};
use super::feed::{FeedUpdate, History, feed_update, history};
use super::series::Window;
use super::tick::{ScopeKey, Tick};
use super::webhook::{self, WebhookParams};

/// Ticks that may wait for the task before the producer's `try_send`
/// fails.
pub const TICK_QUEUE: usize = 8;

/// The state readers see, replaced after every tick.
#[derive(Debug)]
pub struct Published {
    /// Ticks processed so far.
    pub seq: u64,
    /// The feed update (alerts, recommendations, pool targets included).
    pub update: FeedUpdate,
    /// `update` as JSON, serialised once for every dashboard client: send
    /// it as one SSE event, `data: {json}\n\n`.
    pub json: Arc<str>,
}

struct HistoryQuery {
    window: Window,
    scope: Option<ScopeKey>,
    reply: oneshot::Sender<Option<History>>,
}

/// The gateway's handle on the analytics task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AnalyticsHandle {
    published: watch::Receiver<Arc<Published>>,
    queries: mpsc::Sender<HistoryQuery>,
    stats: Arc<AlertStats>,
}

impl std::fmt::Debug for HistoryQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryQuery").field("window", &self.window).finish()
    }
}

impl AnalyticsHandle {
    /// A receiver that wakes after each tick (for the SSE feed: send
    /// `json` whenever it changes; with 1 s ticks that is well inside the
    /// 500 ms update budget of the page, which also redraws on its own).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.published.clone()
    }

    /// The newest published state (admin API: `update.alerts`,
    /// `update.recommendations`, `update.pool_targets`).
    pub fn latest(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }

    /// Alert counters for `/metrics`.
    pub fn stats(&self) -> Arc<AlertStats> {
        self.stats.clone()
    }

    /// One window of history. `None` if the scope is unknown or the task
    /// has stopped.
    pub async fn history(&self, window: Window, scope: Option<ScopeKey>) -> Option<History> {
        let (reply, rx) = oneshot::channel();
        let q = HistoryQuery { window, scope, reply };
        self.queries.send(q).await.ok()?;
        rx.await.ok().flatten()
    }
}

/// Starts the analytics task (and the webhook task when `webhook` is
/// given). Send one [`Tick`] per second on the returned sender; the task
/// ends when every sender is dropped.
pub fn spawn(params: AnalyticsParams, webhook: Option<WebhookParams>) -> (mpsc::Sender<Tick>, AnalyticsHandle) {
    let (tick_tx, tick_rx) = mpsc::channel(TICK_QUEUE);
    let (query_tx, query_rx) = mpsc::channel(16);
    let engine = Engine::new(params);
    let first = publish(&engine, 0);
    let (pub_tx, pub_rx) = watch::channel(first);
    let stats = Arc::new(AlertStats::default());
    let hook = webhook.map(|w| webhook::spawn(w, stats.clone()));
    let sinks = Sinks {
        stats: stats.clone(),
        webhook: hook,
    };
    tokio::spawn(run(engine, tick_rx, query_rx, pub_tx, sinks));
    let handle = AnalyticsHandle {
        published: pub_rx,
        queries: query_tx,
        stats,
    };
    (tick_tx, handle)
}

/// Like [`spawn`], but the task pulls a tick from `source` every second
/// itself (missed seconds are skipped, not bunched).
pub fn spawn_polling<F>(params: AnalyticsParams, webhook: Option<WebhookParams>, mut source: F) -> AnalyticsHandle
where
    F: FnMut() -> Tick + Send + 'static,
{
    let (tx, handle) = spawn(params, webhook);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            if tx.send(source()).await.is_err() {
                return;
            }
        }
    });
    handle
}

struct Sinks {
    stats: Arc<AlertStats>,
    webhook: Option<mpsc::Sender<AlertEvent>>,
}

impl Sinks {
    fn emit(&self, e: AlertEvent) {
        log(&e);
        self.stats.count(&e);
        if let Some(hook) = &self.webhook
            && hook.try_send(e).is_err()
        {
            self.stats
                .webhook_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn log(e: &AlertEvent) {
    let a = &e.alert;
    let (id, kind, scope) = (a.id, a.kind.as_str(), a.scope.to_string());
    match (e.change, a.severity) {
        (AlertChange::Cleared, _) => {
            tracing::info!(id, kind, %scope, "alert cleared: {}", a.message);
        }
        (change, Severity::Critical) => {
            tracing::error!(id, kind, %scope, ?change, "alert: {}", a.message);
        }
        (change, Severity::Warning) => {
            tracing::warn!(id, kind, %scope, ?change, "alert: {}", a.message);
        }
    }
}

async fn run(
    mut engine: Engine,
    mut ticks: mpsc::Receiver<Tick>,
    mut queries: mpsc::Receiver<HistoryQuery>,
    published: watch::Sender<Arc<Published>>,
    sinks: Sinks,
) {
    let mut seq = 0u64;
    let mut queries_open = true;
    loop {
        tokio::select! {
            q = queries.recv(), if queries_open => match q {
                Some(q) => {
                    let _ = q.reply.send(history(&engine, q.window, q.scope.as_ref()));
                }
                None => queries_open = false,
            },
            t = ticks.recv() => {
                let Some(t) = t else { return };
                seq += 1;
                for e in engine.ingest(&t) {
                    sinks.emit(e);
                }
                sinks.stats.set_active(&engine.alerts_active());
                published.send_replace(publish(&engine, seq));
            }
        }
    }
}

fn publish(engine: &Engine, seq: u64) -> Arc<Published> {
    let update = feed_update(engine);
    let json = serde_json::to_string(&update).unwrap_or_else(|_| "{}".to_owned());
    Arc::new(Published {
        seq,
        update,
        json: Arc::from(json),
    })
}
