//! Alerts as values, the book of open and recent ones, and the counters
//! the gateway exports about them.
//!
//! There is at most one open alert per scope and kind: a condition that
//! persists updates that alert (a warning escalates to critical in place)
//! instead of raising new ones, and a condition that returns shortly after
//! clearing *reopens* the alert it cleared rather than starting another.
//! That grouping, together with each detector's minimum duration and
//! hold-down, is what keeps a flapping series from flooding the sinks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Serialize, Serializer};

use super::tick::ScopeKey;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Errors per finished request or session rose above the baseline.
    ErrorRate,
    /// Request latency p99 rose above the baseline.
    LatencyP99,
    /// WebSocket relay latency p99 rose above the baseline.
    RelayLatencyP99,
    /// The message rate moved far from its baseline (either way).
    MessageRate,
    /// Traffic stopped where it normally flows.
    TrafficDrop,
    /// Acquirers queue for pooled connections, wait long, or time out.
    PoolExhaustion,
}

impl AlertKind {
    /// Every kind, in a fixed order (index of counters).
    pub const ALL: [AlertKind; 6] = [
        Self::ErrorRate,
        Self::LatencyP99,
        Self::RelayLatencyP99,
        Self::MessageRate,
        Self::TrafficDrop,
        Self::PoolExhaustion,
    ];

    /// Stable snake_case name (metric label, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::LatencyP99 => "latency_p99",
            Self::RelayLatencyP99 => "relay_latency_p99",
            Self::MessageRate => "message_rate",
            Self::TrafficDrop => "traffic_drop",
            Self::PoolExhaustion => "pool_exhaustion",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::ErrorRate => 0,
            Self::LatencyP99 => 1,
            Self::RelayLatencyP99 => 2,
            Self::MessageRate => 3,
            Self::TrafficDrop => 4,
            Self::PoolExhaustion => 5,
        }
    }
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Agents are failing or stuck.
    Critical,
}

impl Severity {
    /// `"warning"` or `"critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl Serialize for ScopeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One alert, open or cleared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// Unique within the process, increasing.
    pub id: u64,
    /// What it is about.
    pub kind: AlertKind,
    /// Where (`global`, `route:NAME`, `cluster:NAME`).
    pub scope: ScopeKey,
    /// How urgent (the highest reached while open).
    pub severity: Severity,
    /// A sentence for people, with the numbers.
    pub message: String,
    /// The observed value when raised or last escalated.
    pub value: f64,
    /// What the detector expected (baseline).
    pub baseline: f64,
    /// When it was raised, Unix seconds.
    pub started: u64,
    /// When it cleared, Unix seconds; `None` while open.
    pub cleared: Option<u64>,
    /// Times it came back within the reopen window after clearing.
    pub reopened: u32,
}

/// What happened to an alert; each event goes to every sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertChange {
    /// Newly raised.
    Raised,
    /// Severity went up.
    Escalated,
    /// Came back shortly after clearing (same id).
    Reopened,
    /// The condition ended (or the scope went away).
    Cleared,
}

/// An alert and what just happened to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertEvent {
    /// The change.
    pub change: AlertChange,
    /// The alert after the change.
    pub alert: Alert,
}

/// A raise or escalation a detector asks for.
#[derive(Clone, Debug)]
pub(crate) struct Raise {
    pub(crate) scope: ScopeKey,
    pub(crate) kind: AlertKind,
    pub(crate) severity: Severity,
    pub(crate) value: f64,
    pub(crate) baseline: f64,
    pub(crate) message: String,
}

/// Open alerts by scope and kind, plus a bounded list of cleared ones.
#[derive(Debug)]
pub(crate) struct AlertBook {
    next_id: u64,
    active: BTreeMap<(ScopeKey, AlertKind), Alert>,
    recent: VecDeque<Alert>,
    recent_cap: usize,
    reopen_within: u64,
}

impl AlertBook {
    pub(crate) fn new(recent_cap: usize, reopen_within: u64) -> Self {
        Self {
            next_id: 1,
            active: BTreeMap::new(),
            recent: VecDeque::new(),
            recent_cap: recent_cap.max(1),
            reopen_within,
        }
    }

    /// Raises, escalates or reopens; `None` when nothing changed.
    pub(crate) fn raise(&mut self, r: Raise, now: u64) -> Option<AlertEvent> {
        let key = (r.scope.clone(), r.kind);
        if let Some(a) = self.active.get_mut(&key) {
            if r.severity <= a.severity {
                return None;
            }
            a.severity = r.severity;
            a.message = r.message;
            a.value = r.value;
            let alert = a.clone();
            return Some(event(AlertChange::Escalated, alert));
        }
        let reopen = self.recent.iter().position(|a| {
            a.scope == r.scope
                && a.kind == r.kind
                && a.cleared.is_some_and(|c| now.saturating_sub(c) <= self.reopen_within)
        });
        let (change, alert) = match reopen.and_then(|i| self.recent.remove(i)) {
            Some(mut a) => {
                a.cleared = None;
                a.reopened += 1;
                a.severity = r.severity;
                a.message = r.message;
                a.value = r.value;
                (AlertChange::Reopened, a)
            }
            None => (AlertChange::Raised, self.fresh(r, now)),
        };
        self.active.insert(key, alert.clone());
        Some(event(change, alert))
    }

    fn fresh(&mut self, r: Raise, now: u64) -> Alert {
        let id = self.next_id;
        self.next_id += 1;
        Alert {
            id,
            kind: r.kind,
            scope: r.scope,
            severity: r.severity,
            message: r.message,
            value: r.value,
            baseline: r.baseline,
            started: now,
            cleared: None,
            reopened: 0,
        }
    }

    /// Clears the open alert of this scope and kind, if any.
    pub(crate) fn clear(&mut self, scope: &ScopeKey, kind: AlertKind, now: u64, why: &str) -> Option<AlertEvent> {
        let mut a = self.active.remove(&(scope.clone(), kind))?;
        a.cleared = Some(now);
        a.message = format!("{} — cleared: {why}", a.message);
        if self.recent.len() >= self.recent_cap {
            self.recent.pop_back();
        }
        self.recent.push_front(a.clone());
        Some(event(AlertChange::Cleared, a))
    }

    /// Clears every open alert of a scope (it was evicted).
    pub(crate) fn clear_scope(&mut self, scope: &ScopeKey, now: u64) -> Vec<AlertEvent> {
        AlertKind::ALL
            .iter()
            .filter_map(|&k| self.clear(scope, k, now, "scope no longer reported"))
            .collect()
    }

    /// Open alerts, most severe first, then oldest first.
    pub(crate) fn active(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.active.values().cloned().collect();
        v.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
        v
    }

    /// Cleared alerts, newest first.
    pub(crate) fn recent(&self) -> impl Iterator<Item = &Alert> {
        self.recent.iter()
    }
}

fn event(change: AlertChange, alert: Alert) -> AlertEvent {
    AlertEvent { change, alert }
}

/// Counters about alerts for the gateway's `/metrics` (suggested names:
/// `agentmux_analytics_alerts_raised_total{kind,severity}`,
/// `agentmux_analytics_alerts_active{severity}`,
/// `agentmux_analytics_webhook_{sent,failed,dropped}_total`). Written by the
/// analytics task only; read from anywhere.
#[derive(Debug, Default)]
pub struct AlertStats {
    raised: [[AtomicU64; 2]; 6],
    active: [AtomicU64; 2],
    pub(crate) webhook_sent: AtomicU64,
    pub(crate) webhook_failed: AtomicU64,
    pub(crate) webhook_dropped: AtomicU64,
}

fn sev_index(s: Severity) -> usize {
    match s {
        Severity::Warning => 0,
        Severity::Critical => 1,
    }
}

impl AlertStats {
    /// Copies the counts into their Prometheus metrics (at a scrape).
    pub fn export(&self, m: &crate::metrics::Metrics) {
        let bump = |c: &prometheus_client::metrics::counter::Counter, total: u64| {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        };
        for kind in AlertKind::ALL {
            for severity in [Severity::Warning, Severity::Critical] {
                bump(
                    &m.alerts_raised(kind.as_str(), severity.as_str()),
                    self.raised_total(kind, severity),
                );
            }
        }
        for severity in [Severity::Warning, Severity::Critical] {
            m.alerts_active(severity.as_str())
                .set(i64::try_from(self.active(severity)).unwrap_or(i64::MAX));
        }
        for (result, total) in [
            ("sent", self.webhook_sent_total()),
            ("failed", self.webhook_failed_total()),
            ("dropped", self.webhook_dropped_total()),
        ] {
            bump(&m.alert_webhooks(result), total);
        }
    }

    /// Alerts raised, reopened or escalated to this severity, ever.
    pub fn raised_total(&self, kind: AlertKind, severity: Severity) -> u64 {
        self.raised[kind.index()][sev_index(severity)].load(Ordering::Relaxed)
    }

    /// Alerts open now with this severity.
    pub fn active(&self, severity: Severity) -> u64 {
        self.active[sev_index(severity)].load(Ordering::Relaxed)
    }

    /// Webhook deliveries that succeeded.
    pub fn webhook_sent_total(&self) -> u64 {
        self.webhook_sent.load(Ordering::Relaxed)
    }

    /// Webhook deliveries given up after all retries.
    pub fn webhook_failed_total(&self) -> u64 {
        self.webhook_failed.load(Ordering::Relaxed)
    }

    /// Webhook events dropped because the delivery queue was full.
    pub fn webhook_dropped_total(&self) -> u64 {
        self.webhook_dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, e: &AlertEvent) {
        if e.change != AlertChange::Cleared {
            let s = sev_index(e.alert.severity);
            self.raised[e.alert.kind.index()][s].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_active(&self, open: &[Alert]) {
        for sev in [Severity::Warning, Severity::Critical] {
            let n = open.iter().filter(|a| a.severity == sev).count() as u64;
            self.active[sev_index(sev)].store(n, Ordering::Relaxed);
        }
    }
}
