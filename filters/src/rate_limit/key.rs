//! What a rate limit is keyed by, and the hashed key itself.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::LazyLock;

use http::header::{AUTHORIZATION, HeaderName};
use http::{Extensions, HeaderMap, Request};

use crate::{AgentIdentity, ClientAddr, InvalidParam};

/// The `x-api-key` header, the alternative to `Authorization: Bearer`.
pub(crate) static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Which part of a request identifies the agent a limit applies to.
///
/// A request that lacks the chosen key (no such header, no API key) falls
/// back to its client IP, so an agent cannot escape its limit by leaving a
/// header out; a request without even a [`ClientAddr`] (never the case
/// behind the gateway's listener) shares one anonymous bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The value of a request header, e.g. `x-agent-id` (config:
    /// `"header:x-agent-id"`).
    Header(HeaderName),
    /// The agent's API key (config: `"api-key"`): the [`AgentIdentity`] set
    /// by auth if present, else the key in `Authorization: Bearer <k>` or
    /// `x-api-key: <k>`. Raw keys are hashed, never kept.
    ApiKey,
    /// The IP address of the agent's connection (config: `"client-ip"`).
    ClientIp,
}

impl KeySource {
    /// The key of `req`.
    pub fn key_for<B>(&self, req: &Request<B>) -> LimitKey {
        self.key_from(req.headers(), req.extensions())
    }

    /// The key of a request given its headers and extensions (for callers
    /// holding `http::request::Parts`, e.g. before a WebSocket upgrade).
    pub fn key_from(&self, headers: &HeaderMap, extensions: &Extensions) -> LimitKey {
        self.with_material(headers, extensions, LimitKey::hashed)
    }

    /// The key of a request as every gateway instance computes it, for
    /// limits shared through a cluster store (see [`GlobalKey`]).
    pub fn global_key_from(&self, headers: &HeaderMap, extensions: &Extensions) -> GlobalKey {
        self.with_material(headers, extensions, GlobalKey::digest)
    }

    /// Hands `f` what identifies the agent: the configured key, else the
    /// client IP, else the anonymous bucket.
    fn with_material<R>(&self, headers: &HeaderMap, extensions: &Extensions, f: impl FnOnce(Domain, &[u8]) -> R) -> R {
        match self {
            Self::Header(name) => {
                if let Some(v) = headers.get(name).filter(|v| !v.is_empty()) {
                    return f(Domain::Header, v.as_bytes());
                }
            }
            Self::ApiKey => {
                if let Some(identity) = extensions.get::<AgentIdentity>() {
                    return f(Domain::Identity, identity.as_str().as_bytes());
                }
                if let Some(k) = presented_api_key(headers) {
                    return f(Domain::Secret, k);
                }
            }
            Self::ClientIp => {}
        }
        match extensions.get::<ClientAddr>().map(|a| a.0.ip().to_canonical()) {
            Some(IpAddr::V4(v4)) => f(Domain::Ip, &v4.octets()),
            Some(IpAddr::V6(v6)) => f(Domain::Ip, &v6.octets()),
            None => f(Domain::Anonymous, b""),
        }
    }
}

impl FromStr for KeySource {
    type Err = InvalidParam;

    /// Parses the config form: `client-ip`, `api-key` or `header:<name>`.
    fn from_str(s: &str) -> Result<Self, InvalidParam> {
        match s {
            "client-ip" => Ok(Self::ClientIp),
            "api-key" => Ok(Self::ApiKey),
            _ => {
                let name = s.strip_prefix("header:").ok_or_else(|| {
                    InvalidParam::new(
                        "key",
                        format!("must be client-ip, api-key or header:<name> (got {s:?})"),
                    )
                })?;
                HeaderName::from_str(name)
                    .map(Self::Header)
                    .map_err(|_| InvalidParam::new("key", format!("has an invalid header name {name:?}")))
            }
        }
    }
}

/// The API key a request presents: `Authorization: Bearer <k>` first, then
/// `x-api-key: <k>`. Empty keys count as absent.
pub(crate) fn presented_api_key(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers.get(AUTHORIZATION).and_then(|v| {
        let (scheme, key) = v.as_bytes().split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then(|| key.trim_ascii())
    });
    bearer
        .or_else(|| headers.get(&X_API_KEY).map(|v| v.as_bytes().trim_ascii()))
        .filter(|k| !k.is_empty())
}

/// Separates key kinds so a header value can never collide with an IP or
/// an identity of the same spelling.
#[derive(Clone, Copy, Hash)]
enum Domain {
    Header,
    Identity,
    Secret,
    Ip,
    Anonymous,
    Custom,
}

impl Domain {
    /// A fixed byte per kind, for hashes that must agree across processes
    /// and releases.
    fn tag(self) -> u8 {
        match self {
            Self::Header => 1,
            Self::Identity => 2,
            Self::Secret => 3,
            Self::Ip => 4,
            Self::Anonymous => 5,
            Self::Custom => 6,
        }
    }
}

/// One process-wide random hash key: the same input gives the same
/// [`LimitKey`] in every limiter, and keys cannot be reversed or
/// precomputed without it.
static SEED: LazyLock<std::collections::hash_map::RandomState> =
    LazyLock::new(std::collections::hash_map::RandomState::new);

/// A rate-limit key: a 128-bit keyed hash of what identifies the agent.
///
/// Only the hash is stored, so limiters keep no raw API keys in memory.
/// Compute it once per session with [`KeySource::key_for`] and pass it to
/// [`crate::rate_limit::MessageLimiter`] and
/// [`crate::rate_limit::SessionLimiter`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LimitKey {
    hi: u64,
    lo: u64,
}

impl LimitKey {
    /// A key for arbitrary bytes (e.g. a mux session's agent id).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::hashed(Domain::Custom, bytes)
    }

    /// The key of an IP address; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::hashed(Domain::Ip, &v4.octets()),
            IpAddr::V6(v6) => Self::hashed(Domain::Ip, &v6.octets()),
        }
    }

    fn hashed(domain: Domain, bytes: &[u8]) -> Self {
        Self {
            hi: SEED.hash_one((0u8, domain, bytes)),
            lo: SEED.hash_one((1u8, domain, bytes)),
        }
    }
}

impl Hash for LimitKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed hash: feed one word, `PreHashed` passes it through.
        state.write_u64(self.lo);
    }
}

impl fmt::Debug for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LimitKey({:016x}{:016x})", self.hi, self.lo)
    }
}

/// A rate-limit key that every gateway instance computes alike: SHA-256
/// of what identifies the agent (with no per-process seed), cut to 128
/// bits. Limits shared through a cluster store (`scope = "global"`) name
/// their buckets by it; only the digest leaves the process, never a raw
/// API key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlobalKey([u8; 16]);

impl GlobalKey {
    /// A key for arbitrary bytes (e.g. a mux session's agent id).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::digest(Domain::Custom, bytes)
    }

    fn digest(domain: Domain, bytes: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"agentmux-rate-limit\0");
        h.update([domain.tag()]);
        h.update(bytes);
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        Self(out)
    }

    /// A byte of the digest, to spread keys over shards.
    pub(crate) fn shard_byte(&self) -> u8 {
        self.0[0]
    }

    /// Lowercase hex, 32 characters: the bucket's name in the store.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for GlobalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GlobalKey({})", self.to_hex())
    }
}

/// A `BuildHasher` for keys that are already uniformly distributed hashes:
/// skips a second SipHash round per lookup.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PreHashed;

impl BuildHasher for PreHashed {
    type Hasher = PreHashedHasher;

    fn build_hasher(&self) -> PreHashedHasher {
        PreHashedHasher(0)
    }
}

/// The hasher of [`PreHashed`].
#[derive(Debug)]
pub(crate) struct PreHashedHasher(u64);

impl Hasher for PreHashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key type other than `LimitKey` is used; mix the
        // bytes so the result is still a usable (if weak) hash.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
}
