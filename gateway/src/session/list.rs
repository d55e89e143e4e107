//! The list of live sessions: what `/api/sessions` shows.
//!
//! A session registers when its relay starts and leaves when it ends (the
//! guard's drop); nothing on the per-message path touches the list.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

/// What the admin API shows of one session.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    /// Gateway-local session id.
    pub id: u64,
    /// The route it came in on.
    pub route: Arc<str>,
    /// The agent: its authenticated identity, else its address.
    pub agent: String,
    /// The agent's address.
    pub client: SocketAddr,
    /// The upstream endpoint serving it.
    pub endpoint: String,
    /// How it reached the gateway: `http/1.1` (an upgraded connection) or
    /// `h2` (an extended CONNECT stream, RFC 8441).
    pub transport: &'static str,
    /// When it started (seconds since the Unix epoch).
    pub started_unix: u64,
}

/// All live sessions.
#[derive(Debug, Default)]
pub struct SessionList {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, SessionInfo>>,
}

/// Removes its session from the list on drop.
#[derive(Debug)]
pub struct Listed {
    list: Arc<SessionList>,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.list.lock().remove(&self.id);
    }
}

/// A page of sessions.
#[derive(Debug, Serialize)]
pub struct Page {
    /// Sessions matching the filter, in all.
    pub total: usize,
    /// This page.
    pub sessions: Vec<SessionInfo>,
}

impl SessionList {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SessionInfo>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a session; it stays listed while the guard lives.
    pub fn register(
        self: &Arc<Self>,
        route: Arc<str>,
        agent: String,
        client: SocketAddr,
        endpoint: String,
        transport: &'static str,
    ) -> Listed {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let started_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let info = SessionInfo {
            id,
            route,
            agent,
            client,
            endpoint,
            transport,
            started_unix,
        };
        self.lock().insert(id, info);
        Listed { list: self.clone(), id }
    }

    /// Live sessions, oldest first, filtered by route and agent, paged.
    pub fn page(&self, route: Option<&str>, agent: Option<&str>, offset: usize, limit: usize) -> Page {
        let live = self.lock();
        let matching = live
            .values()
            .filter(|s| route.is_none_or(|r| &*s.route == r))
            .filter(|s| agent.is_none_or(|a| s.agent == a));
        let mut total = 0;
        let mut sessions = Vec::new();
        for s in matching {
            if total >= offset && sessions.len() < limit {
                sessions.push(s.clone());
            }
            total += 1;
        }
        Page { total, sessions }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
