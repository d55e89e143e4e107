//! Pub/sub between instances: config reloads and circuit opens.
//!
//! Two channels, `{prefix}config` and `{prefix}circuits`, carry one JSON
//! object per message:
//!
//! ```json
//! {"v":1,"from":"gw-a-812","kind":"config","version":"<sha256 of the file, hex>"}
//! {"v":1,"from":"gw-a-812","kind":"circuit_open","filter":"breaker","scope":"endpoint:llm/10.0.0.5:443"}
//! ```
//!
//! A config announcement is also kept in `{prefix}config:version`, so an
//! instance that was away (Redis down, pub/sub reconnecting) catches up.
//! Messages from the instance itself, of another version `v`, or that do
//! not parse are ignored. Delivery is best-effort, like Redis pub/sub:
//! the version key covers missed reloads, and a missed circuit open only
//! means that instance finds out on its own.

use std::sync::Weak;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ClusterState;

/// The message format version.
const VERSION: u32 = 1;

/// One message on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) v: u32,
    pub(crate) from: String,
    #[serde(flatten)]
    pub(crate) body: Body,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Body {
    /// The sender reloaded its config file; `version` is the file's SHA-256.
    Config { version: String },
    /// A circuit of the sender's opened on its own outcomes.
    CircuitOpen { filter: String, scope: String },
}

impl Body {
    /// The channel's short name (`config` or `circuits`), for keys and metrics.
    pub(crate) fn channel(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::CircuitOpen { .. } => "circuits",
        }
    }
}

/// What the gateway is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer reloaded to this config version.
    Config {
        /// SHA-256 of the file the peer loaded, hex.
        version: String,
    },
    /// A peer's circuit opened.
    CircuitOpen {
        /// The circuit-breaker filter.
        filter: String,
        /// `cluster:NAME` or `endpoint:CLUSTER/ADDR`.
        scope: String,
    },
    /// Messages may have been missed (pub/sub reconnected, Redis came
    /// back): compare the stored config version with the running one.
    Resync,
}

/// Decodes a message; `None` for garbage, other versions and our own.
pub(crate) fn decode(payload: &[u8], me: &str) -> Option<PeerEvent> {
    let e: Envelope = serde_json::from_slice(payload).ok()?;
    if e.v != VERSION || e.from == me {
        return None;
    }
    Some(match e.body {
        Body::Config { version } if is_config_version(&version) => PeerEvent::Config { version },
        Body::Config { .. } => return None,
        Body::CircuitOpen { filter, scope } => PeerEvent::CircuitOpen { filter, scope },
    })
}

/// Whether `v` looks like a [`ConfigVersion`](crate::config::ConfigVersion)
/// (64 lowercase hex digits): anything else on the channel or in the
/// stored key is not from an agentmux instance and is ignored.
pub(crate) fn is_config_version(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Encodes a message from `me`.
pub(crate) fn encode(me: &str, body: Body) -> String {
    let e = Envelope {
        v: VERSION,
        from: me.to_owned(),
        body,
    };
    serde_json::to_string(&e).unwrap_or_default()
}

/// Sends queued announcements while Redis answers (dropped while not).
pub(super) async fn publish(state: Weak<ClusterState>, mut outbox: mpsc::Receiver<Body>) {
    while let Some(body) = outbox.recv().await {
        let Some(s) = state.upgrade() else { return };
        let channel = s.keys().channel(body.channel());
        let version = match &body {
            Body::Config { version } => Some((s.keys().config_version(), version.clone())),
            Body::CircuitOpen { .. } => None,
        };
        let payload = encode(s.instance_id(), body.clone());
        let sent = s
            .link()
            .call("publish", |mut conn| async move {
                let mut p = redis::pipe();
                if let Some((key, v)) = version {
                    p.cmd("SET").arg(key).arg(v).ignore();
                }
                p.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                p.query_async::<()>(&mut conn).await
            })
            .await;
        if sent.is_ok() {
            s.link().metrics.message(body.channel(), "sent");
            if let Body::Config { version } = &body {
                s.announced(version);
            }
        }
    }
}

/// Listens on both channels over a connection of its own, reconnecting
/// after every loss (and when the link comes back up), and tells the
/// gateway what peers said.
pub(super) async fn subscribe(state: Weak<ClusterState>, inbox: mpsc::Sender<PeerEvent>, shutdown: CancellationToken) {
    loop {
        let Some(s) = state.upgrade() else { return };
        let (retry, resubscribe) = (s.config().heartbeat_interval, s.resubscribe.clone());
        let outages = s.link().outages();
        if let Some(mut pubsub) = connect(&s).await {
            // Whatever was announced while we were not listening.
            let _ = inbox.try_send(PeerEvent::Resync);
            let me = s.instance_id().to_owned();
            let metrics = s.link().metrics.clone();
            drop(s);
            let mut stream = pubsub.on_message();
            loop {
                // Registered before the outage count is read, so a return
                // of the link while a message was being handled is not
                // missed.
                let resubscribed = resubscribe.notified();
                tokio::pin!(resubscribed);
                resubscribed.as_mut().enable();
                if link_outages(&state) != Some(outages) {
                    break;
                }
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        let Some(incoming) = decode(msg.get_payload_bytes(), &me) else { continue };
                        metrics.message(
                            if matches!(incoming, PeerEvent::CircuitOpen { .. }) { "circuits" } else { "config" },
                            "received",
                        );
                        if inbox.try_send(incoming).is_err() {
                            tracing::warn!("cluster-state inbox full; dropped a peer announcement");
                        }
                    }
                    // The link came back after an outage: a connection
                    // older than the outage may be dead without knowing it.
                    () = resubscribed => {
                        if link_outages(&state) != Some(outages) {
                            break;
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
            }
            tracing::debug!("pub/sub connection ended; reconnecting");
        } else {
            drop(s);
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn link_outages(state: &Weak<ClusterState>) -> Option<u64> {
    state.upgrade().map(|s| s.link().outages())
}

/// A subscribed pub/sub connection, or `None` within the bounds.
async fn connect(s: &ClusterState) -> Option<redis::aio::PubSub> {
    let limit = s.config().connect_timeout + s.config().command_timeout;
    let channels = [s.keys().channel("config"), s.keys().channel("circuits")];
    let client = s.link().client.clone();
    let attempt = async move {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channels).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "pub/sub connection failed");
            None
        }
        Err(_) => None,
    }
}
