//! Connection lifecycle states and the per-pool snapshot that counts them.

use serde::Serialize;

/// Where a connection is in its life (DESIGN.md "Warm pool"):
/// `Initializing → Ready ⇄ Active`, `Ready → Idle → Ready` on activity,
/// `Idle → Recycling` on timeout, `Active → Unhealthy → Recycling` when the
/// endpoint fails its health checks, `Initializing → Failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LifeState {
    /// Connecting: TCP, TLS and the HTTP/2 handshake are under way.
    Initializing,
    /// Open, available, used or checked recently.
    Ready,
    /// Carrying a request or session.
    Active,
    /// Open and available but unused for a health-check interval.
    Idle,
    /// In use on an endpoint that failed its health checks; closed when
    /// released instead of being pooled again.
    Unhealthy,
    /// Past its TTL and draining its last streams before it is closed.
    Recycling,
    /// A warm-up slot whose connect attempt failed and is backing off.
    Failed,
}

impl LifeState {
    /// Every state, in lifecycle order, for exporting one gauge each.
    pub const ALL: [LifeState; 7] = [
        Self::Initializing,
        Self::Ready,
        Self::Active,
        Self::Idle,
        Self::Unhealthy,
        Self::Recycling,
        Self::Failed,
    ];

    /// The label value used in metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initializing => "initializing",
            Self::Ready => "ready",
            Self::Active => "active",
            Self::Idle => "idle",
            Self::Unhealthy => "unhealthy",
            Self::Recycling => "recycling",
            Self::Failed => "failed",
        }
    }
}

/// Counts of one pool's connections by state, plus its queue, taken under
/// the pool's lock so the numbers are consistent with each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolSnapshot {
    /// Connecting.
    pub initializing: usize,
    /// Available, recently used.
    pub ready: usize,
    /// In use.
    pub active: usize,
    /// Available, unused for a while.
    pub idle: usize,
    /// In use on an ejected endpoint.
    pub unhealthy: usize,
    /// Draining before close.
    pub recycling: usize,
    /// Warm-up slots backing off after a failed connect.
    pub failed: usize,
    /// Acquirers waiting for a connection.
    pub waiters: usize,
    /// Open connections (everything but `failed`), bounded by max.
    pub open: usize,
    /// Connections opened since the pool started.
    pub opened: u64,
}

impl PoolSnapshot {
    /// The count for one state.
    pub fn get(&self, state: LifeState) -> usize {
        match state {
            LifeState::Initializing => self.initializing,
            LifeState::Ready => self.ready,
            LifeState::Active => self.active,
            LifeState::Idle => self.idle,
            LifeState::Unhealthy => self.unhealthy,
            LifeState::Recycling => self.recycling,
            LifeState::Failed => self.failed,
        }
    }

    /// Adds another pool's counts (per-cluster totals).
    pub fn add(&mut self, o: &PoolSnapshot) {
        self.initializing += o.initializing;
        self.ready += o.ready;
        self.active += o.active;
        self.idle += o.idle;
        self.unhealthy += o.unhealthy;
        self.recycling += o.recycling;
        self.failed += o.failed;
        self.waiters += o.waiters;
        self.open += o.open;
    }
}
