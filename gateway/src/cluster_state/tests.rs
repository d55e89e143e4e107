//! Unit tests of what needs no Redis: message format, key names, ids.

use super::pubsub::{Body, PeerEvent, decode, encode};
use super::*;

#[test]
fn messages_round_trip_and_skip_our_own() {
    let wire = encode(
        "gw-a",
        Body::CircuitOpen {
            filter: "breaker".into(),
            scope: "endpoint:up/127.0.0.1:80".into(),
        },
    );
    let v: serde_json::Value = serde_json::from_str(&wire).unwrap();
    assert_eq!(v["v"], 1);
    assert_eq!(v["from"], "gw-a");
    assert_eq!(v["kind"], "circuit_open");
    assert_eq!(
        decode(wire.as_bytes(), "gw-b"),
        Some(PeerEvent::CircuitOpen {
            filter: "breaker".into(),
            scope: "endpoint:up/127.0.0.1:80".into()
        })
    );
    assert_eq!(decode(wire.as_bytes(), "gw-a"), None, "our own message");
    let version = "ab12".repeat(16);
    let config = encode(
        "gw-a",
        Body::Config {
            version: version.clone(),
        },
    );
    assert_eq!(decode(config.as_bytes(), "gw-b"), Some(PeerEvent::Config { version }));
    // Anything but a config hash is not from an agentmux instance; a
    // multi-byte version once panicked the log line that shortens it.
    for bad in [
        "ab12",
        "a€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€",
        &"AB12".repeat(16),
    ] {
        let wire = encode("gw-a", Body::Config { version: bad.into() });
        assert_eq!(decode(wire.as_bytes(), "gw-b"), None, "{bad}");
    }
    assert_eq!(
        decode(br#"{"v":2,"from":"x","kind":"config","version":"1"}"#, "gw-b"),
        None
    );
    assert_eq!(decode(b"not json", "gw-b"), None);
}

#[test]
fn keys_live_under_the_prefix_and_hide_session_ids() {
    let k = Keys("fleet-a:".into());
    assert_eq!(k.rate_limit("per-agent", "00ff"), "fleet-a:rl:per-agent:00ff");
    assert_eq!(k.channel("config"), "fleet-a:config");
    assert_eq!(k.config_version(), "fleet-a:config:version");
    let s = k.session("agent-7/session 1");
    assert!(s.starts_with("fleet-a:session:"), "{s}");
    assert_eq!(s.len(), "fleet-a:session:".len() + 32);
    assert!(!s.contains("agent-7"));
    assert_eq!(s, k.session("agent-7/session 1"));
}

#[test]
fn session_ids_are_bounded_visible_ascii() {
    assert!(valid_session_id(b"abc-123"));
    assert!(!valid_session_id(b""));
    assert!(!valid_session_id(b"has space"));
    assert!(!valid_session_id(&[b'a'; registry::MAX_SESSION_ID + 1]));
}

#[test]
fn config_versions_are_content_hashes() {
    let a = ConfigVersion::of(b"[[routes]]\n");
    assert_eq!(a, ConfigVersion::of(b"[[routes]]\n"));
    assert_ne!(a, ConfigVersion::of(b"[[routes]] \n"));
    assert_eq!(a.as_str().len(), 64);
    assert_eq!(a.to_string().len(), 12);
}

#[tokio::test]
async fn an_old_hold_does_not_drop_the_entry_of_a_reconnected_session() {
    // Redis on a closed port: registrations are kept locally all the same.
    let text = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nname = \"r\"\ncluster = \"c\"\n\
                [clusters.c]\nkind = \"echo\"\n[cluster_state]\nredis = \"redis://127.0.0.1:1\"\n";
    let config = crate::config::Config::parse(text, "t.toml").unwrap();
    let metrics = crate::metrics::Metrics::with_cluster_state();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (state, _peers) = ClusterState::start(config.cluster_state().unwrap(), &metrics, shutdown.clone()).unwrap();
    let key: std::sync::Arc<str> = state.keys().session("agent-7").into();
    let old = state.register_session("agent-7", "r", "127.0.0.1:80");
    // The agent reconnects before its old session is torn down.
    let new = state.register_session("agent-7", "r", "127.0.0.1:80");
    drop(old);
    assert!(
        state.live_sessions().contains_key(&key),
        "the new session's entry stays"
    );
    drop(new);
    assert!(!state.live_sessions().contains_key(&key));
    shutdown.cancel();
}
