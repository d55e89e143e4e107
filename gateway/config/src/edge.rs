//! Edge settings of listeners and routes: path normalization, trusted
//! proxies, request body bounds (see the gateway's `edge` module for what they do).

use std::time::Duration;

use super::cidr::Cidr;
use super::error::Errors;

/// What to do with `%2F`, `%5C` and `\` in a path
/// (`listeners[].escaped_slashes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Answer 400 (the default).
    #[default]
    Reject,
    /// Keep them as ordinary characters: routed and forwarded encoded,
    /// never treated as a segment separator.
    Keep,
}

/// How a listener normalizes request paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    /// Normalize at all (`false`: route and forward the path as received).
    pub normalize: bool,
    /// Merge runs of slashes into one.
    pub merge_slashes: bool,
    /// Escaped slashes and backslashes.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// A listener's edge settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgePolicy {
    /// Path normalization.
    pub path: PathPolicy,
    /// Peers whose forwarding headers are kept and appended to.
    pub trusted_proxies: Vec<Cidr>,
}

impl EdgePolicy {
    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }
}

/// Which path a route forwards (`routes[].forward_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ForwardPath {
    /// The normalized path the route matched (the default).
    #[default]
    Normalized,
    /// The path exactly as the agent sent it.
    Raw,
}

/// A route's request body bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyParams {
    /// Bytes at most (413 beyond).
    pub max_bytes: u64,
    /// From the request head to the body's last byte (408 beyond); `None`:
    /// no deadline.
    pub timeout: Option<Duration>,
}

impl Default for BodyParams {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BODY,
            timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// `routes[].max_request_body_bytes` when unset: 32 MiB.
pub(super) const DEFAULT_MAX_BODY: u64 = 32 << 20;

/// Builds a listener's edge policy from its keys (`at` is `listeners[i]`).
pub(super) fn edge_policy(at: &str, spec: &super::spec::ListenerSpec, errs: &mut Errors) -> Option<EdgePolicy> {
    let escaped = match spec.escaped_slashes.as_deref() {
        None | Some("reject") => Some(EscapedSlashes::Reject),
        Some("keep") => Some(EscapedSlashes::Keep),
        Some(other) => {
            errs.push(
                format!("{at}.escaped_slashes"),
                format!("unknown action {other:?} (expected \"reject\" or \"keep\")"),
            );
            None
        }
    };
    let trusted: Vec<Option<Cidr>> = spec
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(j, c)| errs.check(format!("{at}.trusted_proxies[{j}]"), c.parse::<Cidr>()))
        .collect();
    Some(EdgePolicy {
        path: PathPolicy {
            normalize: spec.normalize_path.unwrap_or(true),
            merge_slashes: spec.merge_slashes.unwrap_or(true),
            escaped_slashes: escaped?,
        },
        trusted_proxies: trusted.into_iter().collect::<Option<_>>()?,
    })
}
