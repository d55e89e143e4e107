//! The session registry: session id → the instance holding the session,
//! its route and upstream endpoint, its `agentmux.v1` session id (mux
//! mode), and the last sequence number the upstream acknowledged. Entries
//! expire `session_ttl` after the session's last sign of life, so a
//! reconnect within that window can be sent back to the same endpoint (or,
//! in mux mode, take its session over).
//!
//! # Storage
//!
//! One Redis hash per session, `{prefix}session:{digest}` (the digest is
//! SHA-256 of the id, cut to 128 bits: ids of any spelling map to short,
//! safe keys and are not stored in clear), with the fields `instance`,
//! `route`, `endpoint`, `mux` (mux sessions), `acked_seq` and `updated_ms`
//! (Redis server time),
//! and a TTL of `session_ttl`. Live sessions are rewritten every third of
//! the TTL and once more when they end, so the TTL counts from the end.
//!
//! # How WebSocket mode uses it (affinity)
//!
//! An upgrade carrying the `session_header` looks its id up (one command,
//! bounded by `command_timeout`, skipped while Redis is down). If the entry
//! names an endpoint of the same route that can take the session (not
//! drained, circuit not open), the session goes there whichever instance
//! it reached; otherwise the balancer picks. Once upgraded, the session is
//! registered for this instance.
//!
//! # How mux mode uses it (takeover by another instance)
//!
//! A mux session opened on an instance with `[cluster_state]` is given an
//! unguessable token (the `agentmux-session` header of its `101`) and
//! registered under it with its `agentmux.v1` session id in the `mux`
//! field. When that instance dies, the agent reconnects to any instance
//! with the token and its count of messages received
//! (`agentmux-received`). That instance:
//!
//! 1. looks the token up ([`ClusterState::lookup_session`]): no entry, or
//!    one of another route, is 404;
//! 2. takes the entry over with [`ClusterState::claim_session`], a
//!    compare-and-set on the owner, so of two instances racing for one
//!    session one gets it and the other answers 409;
//! 3. sends TAKEOVER for the `mux` id on a connection to the entry's
//!    `endpoint` (PROTOCOL.md section 8.1); the upstream replays what the
//!    agent lacks and says how many of the agent's messages it has, which
//!    the `101` passes on (`agentmux-upstream-received`) so the agent
//!    resends the rest;
//! 4. registers the session as its own (the same token).
//!
//! Positions come from the upstream and the agent, not from the registry:
//! a registry written every third of `session_ttl` is always behind. Its
//! `acked_seq` (how far the upstream acknowledged the gateway's stream of
//! the session, recorded at each rewrite) is for operators looking at a
//! session, not for the takeover. While Redis is down a
//! takeover is answered 503 (retry): sessions then survive only on the
//! instance holding them.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use super::{ClusterState, Unavailable};

/// Writes an entry. `ARGV`: instance, route, endpoint, ttl_ms, force, mux
/// session id ('' for none), acknowledged sequence ('' for none; it only
/// moves forward), owner digest ('' for none).
/// Without force (a refresh) it leaves an entry another instance has
/// claimed alone and returns 0.
const REGISTER_SCRIPT: &str = r"
local owner = redis.call('HGET', KEYS[1], 'instance')
if ARGV[5] == '0' and owner and owner ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'route', ARGV[2], 'endpoint', ARGV[3], 'updated_ms', string.format('%.0f', now))
redis.call('HSETNX', KEYS[1], 'acked_seq', '0')
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'mux', ARGV[6]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[8]) end
if ARGV[7] ~= '' and tonumber(ARGV[7]) > tonumber(redis.call('HGET', KEYS[1], 'acked_seq') or '0') then
  redis.call('HSET', KEYS[1], 'acked_seq', ARGV[7])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// Takes a session over. `ARGV`: new owner, expected owner, ttl_ms.
/// Returns 1 (taken, or already ours), 0 (someone else owns it), -1 (no
/// such session).
const CLAIM_SCRIPT: &str = r"
local owner = redis.call('HGET', KEYS[1], 'instance')
if not owner then return -1 end
if owner ~= ARGV[1] and owner ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'updated_ms', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Moves `acked_seq` forward while the caller owns the session. `ARGV`:
/// instance, seq, ttl_ms. Returns 1, or 0 when not the owner.
const ACK_SCRIPT: &str = r"
local owner = redis.call('HGET', KEYS[1], 'instance')
if owner ~= ARGV[1] then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'acked_seq') or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], 'acked_seq', ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

static REGISTER: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REGISTER_SCRIPT));
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CLAIM_SCRIPT));
static ACK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACK_SCRIPT));

/// Longest session id accepted (longer ids get no registry entry).
pub const MAX_SESSION_ID: usize = 256;

/// One registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionEntry {
    /// The instance holding the session (its `instance_id`).
    pub instance: String,
    /// The route it came in on.
    pub route: String,
    /// The upstream endpoint serving it (the endpoint's address label).
    pub endpoint: String,
    /// The last sequence number the upstream acknowledged at the entry's
    /// last rewrite (mux mode; 0 for WebSocket sessions).
    pub acked_seq: u64,
    /// When the entry was last written (Unix milliseconds, Redis clock).
    pub updated_unix_ms: u64,
    /// The `agentmux.v1` session id upstream (mux sessions only).
    pub mux: Option<u64>,
    /// Digest of the authenticated agent identity that opened it (mux
    /// sessions of authenticated routes), see [`digest`].
    pub owner: Option<String>,
}

/// What a takeover found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This instance owns the session now.
    Taken,
    /// Another instance (not the expected one) owns it.
    Lost,
    /// No such session (never registered, or expired).
    Unknown,
}

/// A session registered for this instance; keep it while the session
/// lives here. Dropping it writes the entry once more, so its TTL counts
/// from the end of the session.
#[derive(Debug)]
pub struct SessionHold {
    state: Arc<ClusterState>,
    key: Arc<str>,
    /// Which registration this is: an agent that reconnects with the same
    /// id before its old session is torn down registers again, and the
    /// old hold must not take the new session's entry with it.
    hold: u64,
}

impl Drop for SessionHold {
    fn drop(&mut self) {
        let entry = {
            let mut live = self.state.live_sessions();
            match live.get(&self.key) {
                Some(l) if l.hold == self.hold => live.remove(&self.key),
                _ => None,
            }
        };
        if let Some(live) = entry
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let state = self.state.clone();
            let key = self.key.clone();
            rt.spawn(async move {
                let _ = state.write_entry(&key, &live, false).await;
            });
        }
    }
}

/// A session held on this instance, for refreshes and resyncs.
#[derive(Clone, Debug)]
pub(super) struct LiveSession {
    route: Arc<str>,
    endpoint: Arc<str>,
    /// The mux session, whose acknowledged sequence each write records.
    mux: Option<crate::mux::SessionHandle>,
    /// Digest of the agent identity that owns it, if authenticated.
    owner: Option<Arc<str>>,
    hold: u64,
}

/// Live sessions by registry key.
pub(super) type LiveSessions = HashMap<Arc<str>, LiveSession>;

/// How session ids (in keys) and agent identities (compared on takeover)
/// are kept in the registry, never in clear: SHA-256 cut to 128 bits, in hex.
pub fn digest(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..16])
}

/// Whether `id` may name a session: 1 to 256 visible ASCII characters.
pub fn valid_session_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_SESSION_ID && id.iter().all(|b| b.is_ascii_graphic())
}

impl ClusterState {
    /// The registry entry of session `id`, if any. Fails fast while Redis
    /// is down; otherwise bounded by `command_timeout`.
    pub async fn lookup_session(&self, id: &str) -> Result<Option<SessionEntry>, Unavailable> {
        let key = self.keys().session(id);
        let fields: HashMap<String, String> = self
            .link()
            .call("session", |mut conn| async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut conn).await
            })
            .await?;
        let field = |name: &str| fields.get(name).cloned();
        let (Some(instance), Some(route), Some(endpoint)) = (field("instance"), field("route"), field("endpoint"))
        else {
            return Ok(None);
        };
        let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Some(SessionEntry {
            instance,
            route,
            endpoint,
            acked_seq: number("acked_seq"),
            updated_unix_ms: number("updated_ms"),
            mux: fields.get("mux").and_then(|v| v.parse().ok()),
            owner: fields.get("owner").cloned(),
        }))
    }

    /// Registers session `id` as held by this instance on `route` and
    /// `endpoint` (written in the background; refreshed while the hold
    /// lives, and again when it is dropped).
    pub fn register_session(self: &Arc<Self>, id: &str, route: &str, endpoint: &str) -> SessionHold {
        self.register(id, route, endpoint, None, None)
    }

    /// Registers mux session `id` (the agent's token), carried upstream as
    /// the `agentmux.v1` session of `mux`, like
    /// [`register_session`](Self::register_session); every rewrite also
    /// records how far the upstream has acknowledged it.
    pub fn register_mux_session(
        self: &Arc<Self>,
        id: &str,
        route: &str,
        endpoint: &str,
        mux: crate::mux::SessionHandle,
        owner: Option<&str>,
    ) -> SessionHold {
        self.register(id, route, endpoint, Some(mux), owner.map(digest))
    }

    fn register(
        self: &Arc<Self>,
        id: &str,
        route: &str,
        endpoint: &str,
        mux: Option<crate::mux::SessionHandle>,
        owner: Option<String>,
    ) -> SessionHold {
        static HOLDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let hold = HOLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key: Arc<str> = self.keys().session(id).into();
        let live = LiveSession {
            route: route.into(),
            endpoint: endpoint.into(),
            mux,
            owner: owner.map(Into::into),
            hold,
        };
        self.live_sessions().insert(key.clone(), live.clone());
        let state = self.clone();
        let k = key.clone();
        tokio::spawn(async move {
            let _ = state.write_entry(&k, &live, true).await;
        });
        SessionHold {
            state: self.clone(),
            key,
            hold,
        }
    }

    /// Takes session `id` over from instance `from` (mux resume). Atomic:
    /// of two instances racing to resume one session, one gets
    /// [`Claim::Taken`] and the other [`Claim::Lost`].
    pub async fn claim_session(&self, id: &str, from: &str) -> Result<Claim, Unavailable> {
        let key = self.keys().session(id);
        let (me, from, ttl) = (self.instance_id().to_owned(), from.to_owned(), self.ttl_ms());
        let r: i64 = self
            .link()
            .call("session", |mut conn| async move {
                let mut call = CLAIM.prepare_invoke();
                call.key(key).arg(me).arg(from).arg(ttl);
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(match r {
            1 => Claim::Taken,
            0 => Claim::Lost,
            _ => Claim::Unknown,
        })
    }

    /// Records that the upstream acknowledged up to `seq` (it only moves
    /// forward). `Ok(false)`: this instance no longer owns the session.
    pub async fn ack_session(&self, id: &str, seq: u64) -> Result<bool, Unavailable> {
        let key = self.keys().session(id);
        let (me, ttl) = (self.instance_id().to_owned(), self.ttl_ms());
        let r: i64 = self
            .link()
            .call("session", |mut conn| async move {
                let mut call = ACK.prepare_invoke();
                call.key(key).arg(me).arg(seq).arg(ttl);
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(r == 1)
    }

    /// Writes one entry for this instance; `force` takes it from another
    /// owner (a new session here), otherwise only refreshes our own.
    async fn write_entry(&self, key: &str, live: &LiveSession, force: bool) -> Result<bool, Unavailable> {
        let (key, me, route, endpoint, ttl) = (
            key.to_owned(),
            self.instance_id().to_owned(),
            live.route.to_string(),
            live.endpoint.to_string(),
            self.ttl_ms(),
        );
        let (mux, acked) = live
            .mux
            .as_ref()
            .map(|h| (h.id().to_string(), h.acked_seq().to_string()))
            .unwrap_or_default();
        let owner = live.owner.as_deref().unwrap_or("").to_owned();
        let r: i64 = self
            .link()
            .call("session", |mut conn| async move {
                let mut call = REGISTER.prepare_invoke();
                call.key(key)
                    .arg(me)
                    .arg(route)
                    .arg(endpoint)
                    .arg(ttl)
                    .arg(if force { "1" } else { "0" })
                    .arg(mux)
                    .arg(acked)
                    .arg(owner);
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(r == 1)
    }

    /// Rewrites every live session of this instance (a periodic refresh,
    /// and the resync after Redis comes back). A few dozen at a time over
    /// the one multiplexed connection.
    pub(super) async fn refresh_sessions(&self) {
        let live: Vec<(Arc<str>, LiveSession)> = self
            .live_sessions()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if live.is_empty() {
            return;
        }
        let started = Instant::now();
        futures_util::stream::iter(live)
            .for_each_concurrent(32, |(key, s)| async move {
                let _ = self.write_entry(&key, &s, false).await;
            })
            .await;
        tracing::debug!(elapsed = ?started.elapsed(), "session registry refreshed");
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.config().session_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// How often live sessions are rewritten.
    pub(super) fn refresh_every(&self) -> Duration {
        self.config().session_ttl / 3
    }
}
